/*
 * nodecache.c -- pinned nodes and the shared cache of decompressed leaf
 * images (nodecache.h).
 *
 * Shards.  Up to NC_SHARDS shards (fewer for a small budget, so that a
 * shard holds at least NC_MIN_SHARD bytes: several of the largest images),
 * chosen by a hash of (pgno, gen); each holds a chained hash table of its
 * images (doubled when it holds more images than buckets), an LRU list of the
 * images nobody pins (most recently unpinned at the head), its byte count and
 * its budget (the cache's / nshards).  An
 * image is in the table from insert to eviction; it is on the LRU list
 * exactly while refs == 0.  Eviction takes from the LRU tail until the shard
 * is within budget, so pinned images are never freed under a reader.
 *
 * A private image (nc NULL) has owner NULL and is freed at unpin.
 */
#include "nodecache.h"

#include <pthread.h>
#include <stdlib.h>

#include "../space/common.h"
#include "cleaf.h"
#include "node.h"

#define NC_SHARDS 16u
#define NC_MIN_BUCKETS 64u
#define NC_MIN_SHARD (4u * NODE_IMAGE_MAX)

struct nc_image {
    uint64_t pgno, gen;
    uint8_t *data;
    uint32_t size;
    uint64_t pages;
    unsigned refs;
    struct nc_shard *owner; /* NULL: a private image */
    nc_image *hnext;        /* hash chain */
    nc_image *lprev, *lnext; /* LRU list, while refs == 0 */
};

typedef struct nc_shard {
    pthread_mutex_t mu;
    nc_image **tab;
    size_t nbuckets, n;
    size_t bytes, budget;
    nc_image lru; /* sentinel: lru.lnext is the most recently unpinned */
    uint64_t hits, misses;
} nc_shard;

struct node_cache {
    unsigned nshards;
    nc_shard shard[NC_SHARDS];
};

/* nc_hash -- mix the key (pgno, gen). */
static inline uint64_t nc_hash(uint64_t pgno, uint64_t gen)
{
    uint64_t h = (pgno ^ (gen * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
    return h ^ (h >> 29);
}

/* image_free -- release an image's memory. */
static void image_free(nc_image *im)
{
    if (im) {
        free(im->data);
        free(im);
    }
}

/* node_cache_open -- allocate the shards. */
int node_cache_open(size_t bytes, node_cache **ncp)
{
    if (!ncp)
        return SHALE_EINVAL;
    node_cache *nc = calloc(1, sizeof(*nc));
    if (!nc)
        return SHALE_ENOMEM;
    nc->nshards = NC_SHARDS;
    while (nc->nshards > 1 && bytes / nc->nshards < NC_MIN_SHARD)
        nc->nshards /= 2;
    for (unsigned i = 0; i < nc->nshards; i++) {
        nc_shard *s = &nc->shard[i];
        s->nbuckets = NC_MIN_BUCKETS;
        s->tab = calloc(s->nbuckets, sizeof(*s->tab));
        s->budget = bytes / nc->nshards;
        s->lru.lnext = s->lru.lprev = &s->lru;
        pthread_mutex_init(&s->mu, NULL);
        if (!s->tab) {
            for (unsigned j = 0; j <= i; j++) {
                pthread_mutex_destroy(&nc->shard[j].mu);
                free(nc->shard[j].tab);
            }
            free(nc);
            return SHALE_ENOMEM;
        }
    }
    *ncp = nc;
    return SHALE_OK;
}

/* node_cache_close -- free every image and the shards. */
void node_cache_close(node_cache *nc)
{
    if (!nc)
        return;
    for (unsigned i = 0; i < nc->nshards; i++) {
        nc_shard *s = &nc->shard[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            nc_image *im = s->tab[b];
            while (im) {
                nc_image *next = im->hnext;
                image_free(im);
                im = next;
            }
        }
        free(s->tab);
        pthread_mutex_destroy(&s->mu);
    }
    free(nc);
}

/* node_cache_stats_get -- the counters summed over the shards. */
void node_cache_stats_get(node_cache *nc, node_cache_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (unsigned i = 0; nc && i < nc->nshards; i++) {
        nc_shard *s = &nc->shard[i];
        pthread_mutex_lock(&s->mu);
        st->hits += s->hits;
        st->misses += s->misses;
        st->images += s->n;
        st->bytes += s->bytes;
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---- a shard, under its mutex -------------------------------------------- */

static void lru_unlink(nc_image *im)
{
    im->lprev->lnext = im->lnext;
    im->lnext->lprev = im->lprev;
    im->lprev = im->lnext = NULL;
}

static void lru_push(nc_shard *s, nc_image *im)
{
    im->lnext = s->lru.lnext;
    im->lprev = &s->lru;
    s->lru.lnext->lprev = im;
    s->lru.lnext = im;
}

/* bucket -- the chain head for a key. */
static nc_image **bucket(nc_shard *s, uint64_t h)
{
    return &s->tab[(h / NC_SHARDS) & (s->nbuckets - 1)];
}

/* find -- the image for (pgno, gen), or NULL. */
static nc_image *find(nc_shard *s, uint64_t h, uint64_t pgno, uint64_t gen)
{
    for (nc_image *im = *bucket(s, h); im; im = im->hnext)
        if (im->pgno == pgno && im->gen == gen)
            return im;
    return NULL;
}

/* pin -- take a reference (off the LRU list if it was unpinned). */
static void pin(nc_image *im)
{
    if (im->refs++ == 0)
        lru_unlink(im);
}

/* grow -- double the buckets (best effort: a failed grow keeps longer chains). */
static void grow(nc_shard *s)
{
    size_t nb = s->nbuckets * 2;
    nc_image **t = calloc(nb, sizeof(*t));
    if (!t)
        return;
    for (size_t b = 0; b < s->nbuckets; b++) {
        for (nc_image *im = s->tab[b], *next; im; im = next) {
            next = im->hnext;
            nc_image **head = &t[(nc_hash(im->pgno, im->gen) / NC_SHARDS) & (nb - 1)];
            im->hnext = *head;
            *head = im;
        }
    }
    free(s->tab);
    s->tab = t;
    s->nbuckets = nb;
}

/* unhash -- remove an image from its chain. */
static void unhash(nc_shard *s, nc_image *im)
{
    nc_image **pp = bucket(s, nc_hash(im->pgno, im->gen));
    while (*pp != im)
        pp = &(*pp)->hnext;
    *pp = im->hnext;
    s->n--;
    s->bytes -= im->size;
}

/* evict -- free unpinned images, least recently used first, down to the
 * budget; returns them chained through hnext for freeing outside the lock. */
static nc_image *evict(nc_shard *s)
{
    nc_image *dead = NULL;
    while (s->bytes > s->budget && s->lru.lprev != &s->lru) {
        nc_image *im = s->lru.lprev;
        lru_unlink(im);
        unhash(s, im);
        im->hnext = dead;
        dead = im;
    }
    return dead;
}

/* free_chain -- free images chained through hnext. */
static void free_chain(nc_image *im)
{
    while (im) {
        nc_image *next = im->hnext;
        image_free(im);
        im = next;
    }
}

/* node_cache_set_budget -- a new budget, spread over the shards. */
void node_cache_set_budget(node_cache *nc, size_t bytes)
{
    for (unsigned i = 0; i < nc->nshards; i++) {
        nc_shard *s = &nc->shard[i];
        pthread_mutex_lock(&s->mu);
        s->budget = bytes / nc->nshards;
        nc_image *dead = evict(s);
        pthread_mutex_unlock(&s->mu);
        free_chain(dead);
    }
}

/* ---- pinning -------------------------------------------------------------- */

/* image_load -- decompress the leaf at pgno into a new, pinned image. */
static int image_load(sp_space *sp, uint64_t pgno, uint64_t gen, nc_image **imp)
{
    nc_image *im = calloc(1, sizeof(*im));
    if (!im)
        return SHALE_ENOMEM;
    int rc = cleaf_load(sp, pgno, gen, &im->data, &im->size, &im->pages);
    if (rc < 0) {
        free(im);
        return rc;
    }
    im->pgno = pgno;
    im->gen = gen;
    im->refs = 1;
    *imp = im;
    return SHALE_OK;
}

/* image_pin -- the cached image for (pgno, gen), loading it on a miss. */
static int image_pin(sp_space *sp, node_cache *nc, uint64_t pgno, uint64_t gen, nc_image **imp)
{
    if (!nc)
        return image_load(sp, pgno, gen, imp);
    uint64_t h = nc_hash(pgno, gen);
    nc_shard *s = &nc->shard[h % NC_SHARDS % nc->nshards];
    pthread_mutex_lock(&s->mu);
    nc_image *im = find(s, h, pgno, gen);
    if (im) {
        pin(im);
        s->hits++;
    } else {
        s->misses++;
    }
    pthread_mutex_unlock(&s->mu);
    if (im) {
        *imp = im;
        return SHALE_OK;
    }
    RET(image_load(sp, pgno, gen, &im));
    pthread_mutex_lock(&s->mu);
    nc_image *other = find(s, h, pgno, gen);
    if (other) { /* another reader loaded it meanwhile: keep theirs */
        pin(other);
    } else {
        im->owner = s;
        if (s->n >= s->nbuckets)
            grow(s);
        nc_image **head = bucket(s, h);
        im->hnext = *head;
        *head = im;
        s->n++;
        s->bytes += im->size;
    }
    nc_image *dead = evict(s);
    pthread_mutex_unlock(&s->mu);
    free_chain(dead);
    if (other) {
        image_free(im);
        im = other;
    }
    *imp = im;
    return SHALE_OK;
}

/* node_pin -- a leaf or parent page in place, or a compressed leaf's image. */
int node_pin(sp_space *sp, node_cache *nc, uint64_t pgno, node_ref *r)
{
    sp_page *pg;

    if (!sp || !r)
        return SHALE_EINVAL;
    RET(sp_page_get(sp, pgno, &pg));
    const uint8_t *d = sp_page_data(pg);
    uint8_t t = sp_page_type(d);
    if ((t == SP_PT_LEAF || t == SP_PT_PARENT) && sp_page_count(d) > 0 &&
        sp_page_flags(d) == 0) {
        *r = (node_ref){.data = d, .size = sp_page_size(sp), .pages = 1, .pg = pg};
        return SHALE_OK;
    }
    uint64_t gen = sp_page_gen(d);
    bool cleaf = t == SP_PT_CLEAF && sp_page_aux(d) == 0;
    sp_page_put(sp, pg);
    if (!cleaf)
        return SHALE_ECORRUPT;
    nc_image *im;
    RET(image_pin(sp, nc, pgno, gen, &im));
    *r = (node_ref){.data = im->data, .size = im->size, .pages = im->pages, .img = im};
    return SHALE_OK;
}

/* node_unpin -- release a page, or an image (freed now if private). */
void node_unpin(sp_space *sp, node_ref *r)
{
    if (!r)
        return;
    sp_page_put(sp, r->pg);
    nc_image *im = r->img;
    *r = (node_ref){0};
    if (!im)
        return;
    nc_shard *s = im->owner;
    if (!s) {
        image_free(im);
        return;
    }
    pthread_mutex_lock(&s->mu);
    nc_image *dead = NULL;
    if (--im->refs == 0) {
        lru_push(s, im);
        dead = evict(s);
    }
    pthread_mutex_unlock(&s->mu);
    free_chain(dead);
}
