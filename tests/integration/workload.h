/*
 * workload.h -- the "generation" workload shared by the crash, power-loss and
 * fault tests (static inline helpers, no Criterion dependence, so a forked
 * child can use them too).
 *
 * Batch g (g = 1, 2, ...) is a pure function of (seed, g): 1..WL_MAXOPS
 * distinct keys out of WL_NKEYS, each written the same way in both trees --
 * its first op is always an insert, the others inserts or (1 in 8) removes.
 * One batch in 12 first removes a run of 1..12 keys (in key order, possibly
 * to the end of the tree) with a range tombstone in both trees.
 * The value of key k in tree t written by batch g is a pure function of
 * (g, t, k) that starts with "g<generation>|", so a value read back names the
 * batch that wrote it and can be verified byte for byte.
 *
 * The state after batches 1..G is, per key, the last batch <= G that touched
 * it (0 when that was a remove or nothing touched it).  Because batch G always
 * inserts, the largest generation visible in a state that is such a prefix is
 * G itself; wl_check finds that G and then compares every key and a full scan
 * of both trees in both directions with the replayed state, so any state that
 * is not exactly some prefix (a torn batch, a lost middle write, a resurrected
 * key) is reported.
 */
#ifndef SHALE_TEST_WORKLOAD_H
#define SHALE_TEST_WORKLOAD_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shale.h"

#define WL_NKEYS 96
#define WL_MAXOPS 6
#define WL_TREES 2
#define WL_MAXVAL 5000

static const char *const wl_tree_names[WL_TREES] = {"alpha", "beta"};

/* wl_sanitized -- whether this is an ASan or TSan build, where each database
 * open costs tens of milliseconds (thread stacks, large buffers and TLB
 * shootdowns): the fault and corruption loops then sample fewer cases. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WL_SANITIZED 1
#endif
#endif
#ifndef WL_SANITIZED
#define WL_SANITIZED 0
#endif

typedef struct wl_plan {
    bool range;          /* first remove the keys at positions [rlo, rhi) of */
    unsigned rlo, rhi;   /* the key order (wl_key_order); rhi WL_NKEYS: to the end */
    int n;
    unsigned key[WL_MAXOPS];
    bool remove[WL_MAXOPS];
} wl_plan;

/* The replayed state after batches 1..g. */
typedef struct wl_model {
    uint64_t seed;
    uint64_t g;
    uint64_t st[WL_TREES][WL_NKEYS];
} wl_model;

static inline uint64_t wl_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* wl_plan_of -- which keys batch g touches, and how. */
static inline void wl_plan_of(uint64_t seed, uint64_t g, wl_plan *p)
{
    uint64_t s = wl_mix(seed ^ wl_mix(g));
    uint64_t r = wl_mix(s ^ 0x7a11);
    p->range = r % 12 == 0;
    p->rlo = (unsigned)((r >> 8) % WL_NKEYS);
    p->rhi = p->rlo + 1 + (unsigned)((r >> 16) % 12);
    if (p->rhi > WL_NKEYS)
        p->rhi = WL_NKEYS;
    p->n = 1 + (int)(s % WL_MAXOPS);
    for (int i = 0; i < p->n; i++) {
        unsigned k;
        bool dup;
        do {
            s = wl_mix(s);
            k = (unsigned)(s % WL_NKEYS);
            dup = false;
            for (int j = 0; j < i; j++)
                dup |= p->key[j] == k;
        } while (dup);
        p->key[i] = k;
        p->remove[i] = i > 0 && ((s >> 20) & 7) == 0;
    }
}

/* wl_key -- key k (keys with a shared long prefix, short ones, one empty). */
static inline size_t wl_key(unsigned k, char *buf)
{
    if (k == 0)
        return 0;
    switch (k % 3) {
    case 0:
        return (size_t)sprintf(buf, "k%u", k);
    case 1:
        return (size_t)sprintf(buf, "shared/prefix/that/is/fairly/long/for/every/key/%04u", k);
    default:
        return (size_t)sprintf(buf, "%04u-key", k);
    }
}

/* wl_key_order -- key indexes in key order (memcmp, shorter first). */
static inline int wl_key_cmp_idx(const void *a, const void *b)
{
    char ka[128], kb[128];
    size_t la = wl_key(*(const unsigned *)a, ka), lb = wl_key(*(const unsigned *)b, kb);
    int c = memcmp(ka, kb, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

static inline void wl_key_order(unsigned order[WL_NKEYS])
{
    for (unsigned i = 0; i < WL_NKEYS; i++)
        order[i] = i;
    qsort(order, WL_NKEYS, sizeof order[0], wl_key_cmp_idx);
}

/* wl_sorted -- the key order, computed once per thread. */
static inline const unsigned *wl_sorted(void)
{
    static _Thread_local unsigned order[WL_NKEYS];
    static _Thread_local bool done;
    if (!done) {
        wl_key_order(order);
        done = true;
    }
    return order;
}

/* wl_value -- the value batch g writes to key k of tree t; returns its length
 * (at most WL_MAXVAL). */
static inline size_t wl_value(uint64_t g, unsigned t, unsigned k, uint8_t *buf)
{
    uint64_t h = wl_mix(g * 1000003u + t * 7919u + k);
    size_t hdr = (size_t)sprintf((char *)buf, "g%" PRIu64 "|t%u|k%u|", g, t, k);
    size_t fill = (h % 64) == 0 ? 2100 + (size_t)(h >> 8) % 2800 : (size_t)(h >> 8) % 300;
    uint64_t x = h | 1;
    for (size_t i = 0; i < fill; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[hdr + i] = (uint8_t)x;
    }
    return hdr + fill;
}

/* wl_value_gen -- the generation a value claims to come from (0 if none). */
static inline uint64_t wl_value_gen(const void *v, size_t len)
{
    const char *p = v;
    uint64_t g = 0;
    size_t i = 1;
    if (len < 2 || p[0] != 'g')
        return 0;
    for (; i < len && i < 21 && p[i] >= '0' && p[i] <= '9'; i++)
        g = g * 10 + (uint64_t)(p[i] - '0');
    return (i < len && p[i] == '|') ? g : 0;
}

/* wl_fill -- put batch g into b (cleared first). */
static inline int wl_fill(shale_batch *b, shale_tree *const trees[WL_TREES], uint64_t seed,
                          uint64_t g)
{
    wl_plan p;
    char key[128];
    static _Thread_local uint8_t val[WL_MAXVAL];
    int rc = SHALE_OK;

    shale_batch_clear(b);
    wl_plan_of(seed, g, &p);
    if (p.range) {
        const unsigned *order = wl_sorted();
        char hi[128];
        size_t lol = wl_key(order[p.rlo], key), hil = 0;
        if (p.rhi < WL_NKEYS)
            hil = wl_key(order[p.rhi], hi);
        for (unsigned t = 0; t < WL_TREES && rc == SHALE_OK; t++)
            rc = shale_batch_remove_range(b, trees[t], key, lol, p.rhi < WL_NKEYS ? hi : NULL,
                                          hil);
    }
    for (int i = 0; i < p.n && rc == SHALE_OK; i++) {
        size_t kl = wl_key(p.key[i], key);
        for (unsigned t = 0; t < WL_TREES && rc == SHALE_OK; t++) {
            if (p.remove[i]) {
                rc = shale_batch_remove(b, trees[t], key, kl);
            } else {
                size_t vl = wl_value(g, t, p.key[i], val);
                rc = shale_batch_insert(b, trees[t], key, kl, val, vl);
            }
        }
    }
    return rc;
}

static inline void wl_model_init(wl_model *m, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->seed = seed;
}

/* wl_model_to -- replay up to batch g (from scratch if g is behind). */
static inline void wl_model_to(wl_model *m, uint64_t g)
{
    if (g < m->g)
        wl_model_init(m, m->seed);
    for (uint64_t x = m->g + 1; x <= g; x++) {
        wl_plan p;
        wl_plan_of(m->seed, x, &p);
        for (unsigned pos = p.rlo; p.range && pos < p.rhi; pos++)
            for (unsigned t = 0; t < WL_TREES; t++)
                m->st[t][wl_sorted()[pos]] = 0;
        for (int i = 0; i < p.n; i++)
            for (unsigned t = 0; t < WL_TREES; t++)
                m->st[t][p.key[i]] = p.remove[i] ? 0 : x;
    }
    m->g = g;
}

/* wl_open_trees -- open both trees. */
static inline int wl_open_trees(shale_db *db, shale_tree *trees[WL_TREES])
{
    for (unsigned t = 0; t < WL_TREES; t++) {
        int rc = shale_open_tree(db, wl_tree_names[t], &trees[t]);
        if (rc != SHALE_OK)
            return rc;
    }
    return SHALE_OK;
}

/* wl_scan_check -- a full scan of tree t in one direction against m. */
static inline int wl_scan_check(shale_tree *tr, unsigned t, const wl_model *m, bool backward,
                                char *err, size_t errn)
{
    unsigned order[WL_NKEYS];
    shale_iter *it = NULL;
    char key[128];
    uint8_t val[WL_MAXVAL];
    int rc, pos;

    wl_key_order(order);
    rc = shale_iter_open(tr, &it);
    if (rc != SHALE_OK) {
        snprintf(err, errn, "iter_open(%s): %s", wl_tree_names[t], shale_strerror(rc));
        return -1;
    }
    pos = backward ? WL_NKEYS - 1 : 0;
    rc = backward ? shale_iter_last(it) : shale_iter_first(it);
    for (;;) {
        while (pos >= 0 && pos < WL_NKEYS && m->st[t][order[pos]] == 0)
            pos += backward ? -1 : 1;
        bool more = pos >= 0 && pos < WL_NKEYS;
        if (rc != SHALE_OK || !more) {
            if (rc == SHALE_NOTFOUND && !more)
                break;
            if (rc < 0)
                snprintf(err, errn, "scan %s %s: %s", wl_tree_names[t],
                         backward ? "backward" : "forward", shale_strerror(rc));
            else if (rc == SHALE_NOTFOUND)
                snprintf(err, errn, "scan %s %s ended early: key %u (gen %" PRIu64 ") missing",
                         wl_tree_names[t], backward ? "backward" : "forward", order[pos],
                         m->st[t][order[pos]]);
            else
                snprintf(err, errn, "scan %s %s: extra key after the expected ones",
                         wl_tree_names[t], backward ? "backward" : "forward");
            shale_iter_close(it);
            return -1;
        }
        unsigned k = order[pos];
        size_t kl = wl_key(k, key), gkl, gvl;
        const void *gk = shale_iter_key(it, &gkl);
        const void *gv = shale_iter_value(it, &gvl);
        size_t vl = wl_value(m->st[t][k], t, k, val);
        if (gkl != kl || (kl && memcmp(gk, key, kl)) || gvl != vl || memcmp(gv, val, vl)) {
            snprintf(err, errn,
                     "scan %s %s: expected key %u gen %" PRIu64 ", got key '%.*s' gen %" PRIu64,
                     wl_tree_names[t], backward ? "backward" : "forward", k, m->st[t][k],
                     (int)(gkl > 60 ? 60 : gkl), (const char *)gk, wl_value_gen(gv, gvl));
            shale_iter_close(it);
            return -1;
        }
        pos += backward ? -1 : 1;
        rc = backward ? shale_iter_prev(it) : shale_iter_next(it);
    }
    shale_iter_close(it);
    return 0;
}

/* wl_check -- read both trees; the state must equal the replay of batches
 * 1..G for some G in [lo, hi].  Returns G, or -1 with a message in err.
 * m is advanced (or reset) to G. */
static inline int64_t wl_check(shale_db *db, wl_model *m, uint64_t lo, uint64_t hi, char *err,
                               size_t errn)
{
    shale_tree *trees[WL_TREES];
    uint64_t got[WL_TREES][WL_NKEYS];
    shale_buf b = SHALE_BUF_INIT;
    uint8_t val[WL_MAXVAL];
    char key[128];
    uint64_t G = 0;
    int rc;

    rc = wl_open_trees(db, trees);
    if (rc != SHALE_OK) {
        snprintf(err, errn, "open_tree: %s", shale_strerror(rc));
        return -1;
    }
    for (unsigned t = 0; t < WL_TREES; t++) {
        for (unsigned k = 0; k < WL_NKEYS; k++) {
            size_t kl = wl_key(k, key);
            rc = shale_get(trees[t], key, kl, &b);
            if (rc < 0) {
                snprintf(err, errn, "get %s/%u: %s", wl_tree_names[t], k, shale_strerror(rc));
                shale_buf_free(&b);
                return -1;
            }
            got[t][k] = rc == SHALE_OK ? wl_value_gen(b.data, b.len) : 0;
            if (rc == SHALE_OK) {
                size_t vl = got[t][k] ? wl_value(got[t][k], t, k, val) : 0;
                if (got[t][k] == 0 || vl != b.len || memcmp(val, b.data, vl)) {
                    snprintf(err, errn,
                             "get %s/%u: malformed value (len %zu, claims gen %" PRIu64 ")",
                             wl_tree_names[t], k, b.len, got[t][k]);
                    shale_buf_free(&b);
                    return -1;
                }
            }
            if (got[t][k] > G)
                G = got[t][k];
        }
    }
    shale_buf_free(&b);
    if (G < lo || G > hi) {
        snprintf(err, errn,
                 "recovered generation %" PRIu64 " outside [%" PRIu64 ", %" PRIu64
                 "] (lost a durable batch, or invented one)",
                 G, lo, hi);
        return -1;
    }
    wl_model_to(m, G);
    for (unsigned t = 0; t < WL_TREES; t++) {
        for (unsigned k = 0; k < WL_NKEYS; k++) {
            if (got[t][k] != m->st[t][k]) {
                snprintf(err, errn,
                         "state is not the prefix 1..%" PRIu64 ": %s key %u holds gen %" PRIu64
                         ", expected %" PRIu64 " (0 = absent)",
                         G, wl_tree_names[t], k, got[t][k], m->st[t][k]);
                return -1;
            }
        }
    }
    for (unsigned t = 0; t < WL_TREES; t++)
        for (int dir = 0; dir < 2; dir++)
            if (wl_scan_check(trees[t], t, m, dir == 1, err, errn) < 0)
                return -1;
    return (int64_t)G;
}

#endif /* SHALE_TEST_WORKLOAD_H */
