/*
 * watch.c -- prefix subscriptions (shale_watch_prefix).
 *
 * The writer that commits a batch publishes it while it still holds
 * write_mu (db_watch_publish, called by write.c), so every subscriber sees
 * batches in commit order.  Publishing copies each matching op into the
 * subscriber's ring under the subscriber's own mutex and never waits: a full
 * ring starts dropping (and counting) events until the subscriber has read
 * it empty, then the subscriber is told how many it lost before any later
 * event.
 *
 * Locks: write_mu, then db->watch_mu (the list), then a watcher's mu.
 * Closing a watcher unlinks it under watch_mu, after which no writer can
 * reach it.
 */
#include <stdlib.h>
#include <time.h>

#include "../space/common.h"
#include "db.h"

typedef struct wq_event {
    uint64_t seq;
    int kind;
    uint8_t *buf; /* key, then value */
    size_t klen, vlen;
    bool val_null; /* a range to the tree's end */
} wq_event;

struct shale_watcher {
    shale_db *db;
    uint8_t *prefix; /* internal: tree id + the user's prefix */
    size_t plen;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wq_event *q; /* a ring of cap */
    size_t cap, head, n;
    uint64_t lost, lost_seq; /* dropping since the ring filled */
    wq_event cur;            /* the event last handed out (its bytes) */
    struct shale_watcher *next;
};

int shale_watch_prefix(shale_tree *t, const void *prefix, size_t plen, size_t capacity,
                       shale_watcher **wp)
{
    if (!wp)
        return SHALE_EINVAL;
    *wp = NULL;
    RET(tree_check_key(t, prefix, plen));
    if (capacity == 0)
        capacity = 4096;
    shale_watcher *w = calloc(1, sizeof *w);
    if (!w)
        return SHALE_ENOMEM;
    w->db = t->db;
    w->plen = plen + IKEY_PREFIX;
    w->cap = capacity;
    w->prefix = malloc(w->plen);
    w->q = calloc(capacity, sizeof *w->q);
    pthread_condattr_t ca;
    if (!w->prefix || !w->q || pthread_condattr_init(&ca) != 0) {
        free(w->prefix);
        free(w->q);
        free(w);
        return SHALE_ENOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    ikey_make(w->prefix, t->id, prefix, plen);
    shale_db *db = t->db;
    pthread_mutex_lock(&db->watch_mu);
    w->next = db->watchers;
    db->watchers = w;
    atomic_fetch_add(&db->nwatchers, 1);
    pthread_mutex_unlock(&db->watch_mu);
    *wp = w;
    return SHALE_OK;
}

static void watcher_free(shale_watcher *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->q[(w->head + i) % w->cap].buf);
    free(w->cur.buf);
    free(w->q);
    free(w->prefix);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void shale_watch_close(shale_watcher *w)
{
    if (!w)
        return;
    shale_db *db = w->db;
    pthread_mutex_lock(&db->watch_mu);
    for (shale_watcher **p = &db->watchers; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            atomic_fetch_sub(&db->nwatchers, 1);
            break;
        }
    pthread_mutex_unlock(&db->watch_mu);
    watcher_free(w);
}

void db_watch_free_all(shale_db *db)
{
    while (db->watchers) {
        shale_watcher *w = db->watchers;
        db->watchers = w->next;
        watcher_free(w);
    }
    atomic_store(&db->nwatchers, 0);
}

int shale_watch_next(shale_watcher *w, shale_event *ev, int timeout_ms)
{
    if (!w || !ev)
        return SHALE_EINVAL;
    struct timespec until;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    int rc = SHALE_OK;
    pthread_mutex_lock(&w->mu);
    while (w->n == 0 && w->lost == 0) {
        if (timeout_ms == 0 ||
            (timeout_ms > 0 && pthread_cond_timedwait(&w->cv, &w->mu, &until) != 0 &&
             w->n == 0 && w->lost == 0)) {
            rc = SHALE_NOTFOUND;
            break;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&w->cv, &w->mu);
    }
    free(w->cur.buf);
    w->cur.buf = NULL;
    *ev = (shale_event){0};
    if (rc == SHALE_OK && w->n) {
        w->cur = w->q[w->head];
        w->q[w->head].buf = NULL;
        w->head = (w->head + 1) % w->cap;
        w->n--;
        ev->seq = w->cur.seq;
        ev->kind = w->cur.kind;
        ev->key = w->cur.buf;
        ev->klen = w->cur.klen;
        ev->val = w->cur.val_null ? NULL : w->cur.buf + w->cur.klen;
        ev->vlen = w->cur.vlen;
    } else if (rc == SHALE_OK) { /* the ring is empty: now the loss is told */
        ev->seq = w->lost_seq;
        ev->lost = w->lost;
        w->lost = 0;
        rc = SHALE_EOVERFLOW;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* push -- one event to w (its mutex held): queued, or counted as lost. */
static void push(shale_watcher *w, uint64_t seq, int kind, const uint8_t *k, size_t kl,
                 const uint8_t *v, size_t vl, bool val_null)
{
    uint8_t *buf = NULL;
    if (w->lost == 0 && w->n < w->cap && (buf = malloc(kl + vl + 1))) {
        if (kl)
            memcpy(buf, k, kl);
        if (vl)
            memcpy(buf + kl, v, vl);
        w->q[(w->head + w->n) % w->cap] = (wq_event){seq, kind, buf, kl, vl, val_null};
        w->n++;
        return;
    }
    if (w->lost++ == 0)
        w->lost_seq = seq;
}

static bool has_prefix(const uint8_t *k, size_t kl, const uint8_t *p, size_t pl)
{
    return kl >= pl && memcmp(k, p, pl) == 0;
}

void db_watch_publish(shale_db *db, uint64_t seq, const void *payload, size_t len)
{
    batch_reader br;
    batch_op op;
    if (batch_reader_init(&br, payload, len) != SHALE_OK)
        return;
    pthread_mutex_lock(&db->watch_mu);
    for (shale_watcher *w = db->watchers; w; w = w->next) {
        bool any = false;
        batch_reader r = br;
        pthread_mutex_lock(&w->mu);
        while (batch_reader_next(&r, &op) == SHALE_OK) {
            if (op.kind == BATCH_KIND_RANGE) {
                /* [lo, hi) meets the keys under the prefix */
                const uint8_t *p = w->prefix;
                size_t pl = w->plen;
                bool meets = (key_cmp(op.ikey, op.iklen, p, pl) < 0 ||
                              has_prefix(op.ikey, op.iklen, p, pl)) &&
                             key_cmp(p, pl, op.val, op.vlen) < 0;
                if (!meets)
                    continue;
                bool to_end = get_be32(op.val) != get_be32(op.ikey);
                push(w, seq, SHALE_WATCH_REMOVE_RANGE, op.ikey + IKEY_PREFIX,
                     op.iklen - IKEY_PREFIX, to_end ? NULL : op.val + IKEY_PREFIX,
                     to_end ? 0 : op.vlen - IKEY_PREFIX, to_end);
                any = true;
                continue;
            }
            if (!has_prefix(op.ikey, op.iklen, w->prefix, w->plen))
                continue;
            int kind = op.kind == NODE_KIND_VALUE       ? SHALE_WATCH_INSERT
                       : op.kind == NODE_KIND_TOMBSTONE ? SHALE_WATCH_REMOVE
                                                        : SHALE_WATCH_MERGE;
            push(w, seq, kind, op.ikey + IKEY_PREFIX, op.iklen - IKEY_PREFIX, op.val, op.vlen,
                 kind == SHALE_WATCH_REMOVE);
            any = true;
        }
        if (any)
            pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_unlock(&db->watch_mu);
}
