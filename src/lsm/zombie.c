/*
 * zombie.c -- zombie pages held until no live version can reach them
 * (zombie.h).
 *
 * State, under mu:
 *   live      the versions not yet ended, a doubly linked list in id order
 *             (ids are handed out increasing, so a new one goes at the tail);
 *   zombies   (tag, blocklist) records in tag order: a zombie is added with
 *             the id of the version being replaced, which is the newest
 *             version so far or older, and tags never decrease because
 *             installs are serialised by the db's version lock;
 *   next_id   the next version id (ids start at 1).
 * Invariant: every zombie's tag is >= the oldest live id (else it would have
 * been retired), or there is no live version and no zombie.
 *
 * Release: after a version ends, and after an add, the zombies whose tag is
 * below the oldest live id (all of them when none is live) are retired to
 * space.  A failed fs_retire (ENOMEM in the allocator) cannot be reported to
 * anyone: the pages are counted as lost; a checkpoint writes the complement
 * of the live set as free, so they are free again after the next open.
 */
#include "zombie.h"

#include <pthread.h>
#include <stdlib.h>

#include "../space/common.h"

typedef struct zb_rec {
    uint64_t tag;
    sp_blocklist pages;
} zb_rec;

struct zb_set {
    pthread_mutex_t mu;
    sp_freespace *fs;
    zb_node head; /* sentinel of the live list */
    uint64_t next_id, nlive;
    zb_rec *v;    /* zombies v[first .. n) in tag order */
    size_t first, n, cap;
    uint64_t pages, retired, lost;
};

int zb_open(sp_freespace *fs, zb_set **zp)
{
    zb_set *z = calloc(1, sizeof *z);
    if (!z)
        return SHALE_ENOMEM;
    pthread_mutex_init(&z->mu, NULL);
    z->fs = fs;
    z->head.next = z->head.prev = &z->head;
    z->next_id = 1;
    *zp = z;
    return SHALE_OK;
}

/* retire -- hand one record's pages to space. */
static void retire(zb_set *z, zb_rec *r)
{
    uint64_t n = bl_pages(&r->pages);
    if (fs_retire(z->fs, &r->pages) < 0)
        z->lost += n;
    else
        z->retired += n;
    z->pages -= n;
    bl_free(&r->pages);
}

/* release -- retire the zombies no live version can reach. */
static void release(zb_set *z)
{
    uint64_t oldest = z->head.next == &z->head ? UINT64_MAX : z->head.next->id;
    while (z->first < z->n && z->v[z->first].tag < oldest)
        retire(z, &z->v[z->first++]);
    if (z->first == z->n)
        z->first = z->n = 0;
}

void zb_close(zb_set *z)
{
    if (!z)
        return;
    release(z); /* with no live version: everything */
    free(z->v);
    pthread_mutex_destroy(&z->mu);
    free(z);
}

void zb_version_begin(zb_set *z, zb_node *n)
{
    pthread_mutex_lock(&z->mu);
    n->id = z->next_id++;
    n->prev = z->head.prev;
    n->next = &z->head;
    z->head.prev->next = n;
    z->head.prev = n;
    z->nlive++;
    pthread_mutex_unlock(&z->mu);
}

void zb_version_end(zb_set *z, zb_node *n)
{
    pthread_mutex_lock(&z->mu);
    bool was_oldest = z->head.next == n;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    z->nlive--;
    if (was_oldest)
        release(z);
    pthread_mutex_unlock(&z->mu);
}

int zb_add(zb_set *z, uint64_t tag, sp_blocklist *pages)
{
    int rc = SHALE_OK;
    pthread_mutex_lock(&z->mu);
    if (z->n == z->cap && z->first > 0) { /* slide the live records down */
        memmove(z->v, z->v + z->first, (z->n - z->first) * sizeof *z->v);
        z->n -= z->first;
        z->first = 0;
    }
    if (z->n == z->cap) {
        size_t ncap = z->cap ? 2 * z->cap : 16;
        zb_rec *nv = realloc(z->v, ncap * sizeof *nv);
        if (!nv) {
            rc = SHALE_ENOMEM;
            goto out;
        }
        z->v = nv;
        z->cap = ncap;
    }
    zb_rec *r = &z->v[z->n++];
    r->tag = tag;
    r->pages = *pages;
    bl_init(pages);
    z->pages += bl_pages(&r->pages);
    release(z);
out:
    pthread_mutex_unlock(&z->mu);
    return rc;
}

void zb_stats_get(zb_set *z, zb_stats *st)
{
    pthread_mutex_lock(&z->mu);
    st->pages = z->pages;
    st->versions = z->nlive;
    st->oldest = z->head.next == &z->head ? 0 : z->head.next->id;
    st->retired = z->retired;
    st->lost = z->lost;
    pthread_mutex_unlock(&z->mu);
}
