/*
 * test_concurrency.c -- two writers and two readers on one database while
 * memtable write-outs and merges run underneath (built for `make tsan` too).
 *
 * Each writer owns half the keys (by index parity) and writes versions 1, 2,
 * 3, ... of each; version v is a remove when v % 5 == 0, otherwise a value
 * that encodes the key index and v (self-checking, sometimes over 2 KiB).
 * Before a write starts the writer publishes started[k] = v, after it
 * returns completed[k] = v (seq_cst atomics).  A reader loads completed[k]
 * before a read and started[k] after it; the state it sees must be a version
 * r of that key with completed <= r <= started -- a value of version r, or
 * absence when r is a remove (or 0, never written).  Scans must be strictly
 * ordered and satisfy the same per-key rule for every key in their range,
 * with completed[] loaded before the iterator was opened.  Writers check the
 * old value returned by read-modify-write inserts exactly.  At the end the
 * database is reopened and every key must hold its last completed version.
 *
 * Threads never call Criterion asserts: the first failure is recorded and
 * checked by the main thread after the join.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../support/testutil.h"
#include "shale.h"

#define NKEYS 2048
#define MAXVAL 5000

static _Atomic uint64_t started[NKEYS], completed[NKEYS];
static atomic_bool stop;
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[512];
static atomic_bool failed;
static shale_tree *tree;
static shale_db *db;
static atomic_uint_fast64_t n_writes, n_gets, n_scans, n_scanned, n_seeks;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&fail_mu);
    if (!atomic_load(&failed)) {
        va_start(ap, fmt);
        vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
        va_end(ap);
        atomic_store(&failed, true);
    }
    pthread_mutex_unlock(&fail_mu);
    atomic_store(&stop, true);
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t make_key(unsigned k, char *buf)
{
    return (size_t)sprintf(buf, "k%08x", k);
}

static bool is_remove(uint64_t v)
{
    return v % 5 == 0;
}

static size_t make_value(unsigned k, uint64_t v, uint8_t *buf)
{
    uint64_t h = mix(((uint64_t)k << 40) ^ v);
    size_t hdr = (size_t)sprintf((char *)buf, "%08x:%" PRIu64 ":", k, v);
    size_t fill = (h % 32) == 0 ? 2100 + (size_t)(h >> 8) % 2500 : (size_t)(h >> 8) % 200;
    uint64_t x = h | 1;
    for (size_t i = 0; i < fill; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[hdr + i] = (uint8_t)x;
    }
    return hdr + fill;
}

/* parse_value -- the version of a well-formed value of key k, or 0. */
static uint64_t parse_value(unsigned k, const void *val, size_t len)
{
    uint8_t want[MAXVAL];
    char head[40];
    unsigned vk;
    uint64_t v;
    size_t n = len < sizeof head - 1 ? len : sizeof head - 1;
    memcpy(head, val, n);
    head[n] = 0;
    if (sscanf(head, "%8x:%" SCNu64 ":", &vk, &v) != 2 || vk != k || v == 0 || is_remove(v))
        return 0;
    size_t wl = make_value(k, v, want);
    return (wl == len && memcmp(want, val, len) == 0) ? v : 0;
}

/* visible_ok -- a read may see version r (0: absent) given completed c and started s. */
static bool absent_ok(uint64_t c, uint64_t s)
{
    if (c == 0)
        return true;
    uint64_t r = (c + 4) / 5 * 5; /* the first remove version >= c */
    return r <= s;
}

/* ---- writers --------------------------------------------------------------------- */

typedef struct wctx {
    int id;
    uint64_t seed;
    uint64_t ver[NKEYS]; /* last version written by this writer */
} wctx;

static void write_one(wctx *w, tu_rng *r, shale_buf *old, uint8_t *val)
{
    char key[32];
    unsigned k = (unsigned)(tu_rng_range(r, NKEYS / 2) * 2 + (unsigned)w->id);
    uint64_t v = w->ver[k] + 1;
    size_t kl = make_key(k, key);
    bool rmw = tu_rng_range(r, 4) == 0;
    int rc;

    atomic_store(&started[k], v);
    if (is_remove(v)) {
        rc = shale_remove(tree, key, kl, rmw ? old : NULL);
    } else {
        size_t vl = make_value(k, v, val);
        rc = shale_insert(tree, key, kl, val, vl, rmw ? old : NULL);
    }
    if (rc < 0) {
        fail("writer %d: write of %s v%" PRIu64 ": %s", w->id, key, v, shale_strerror(rc));
        return;
    }
    if (rmw) {
        uint64_t prev = v - 1;
        if (prev == 0 || is_remove(prev)) {
            if (rc != SHALE_NOTFOUND)
                fail("writer %d: %s v%" PRIu64 ": old value reported for an absent key (rc %d)",
                     w->id, key, v, rc);
        } else if (rc != SHALE_OK || parse_value(k, old->data, old->len) != prev) {
            fail("writer %d: %s v%" PRIu64 ": old value is not v%" PRIu64 " (rc %d, len %zu)",
                 w->id, key, v, prev, rc, old->len);
        }
    }
    w->ver[k] = v;
    atomic_store(&completed[k], v);
}

static void write_batch(wctx *w, tu_rng *r, shale_batch *b, uint8_t *val)
{
    char key[32];
    unsigned ks[8];
    int n = 2 + (int)tu_rng_range(r, 7);
    shale_batch_clear(b);
    for (int i = 0; i < n; i++) {
        unsigned k;
        bool dup;
        do {
            k = (unsigned)(tu_rng_range(r, NKEYS / 2) * 2 + (unsigned)w->id);
            dup = false;
            for (int j = 0; j < i; j++)
                dup |= ks[j] == k;
        } while (dup);
        ks[i] = k;
        uint64_t v = w->ver[k] + 1;
        size_t kl = make_key(k, key);
        int rc = is_remove(v) ? shale_batch_remove(b, tree, key, kl)
                              : shale_batch_insert(b, tree, key, kl, val, make_value(k, v, val));
        if (rc != SHALE_OK) {
            fail("writer %d: batch add: %s", w->id, shale_strerror(rc));
            return;
        }
    }
    for (int i = 0; i < n; i++)
        atomic_store(&started[ks[i]], w->ver[ks[i]] + 1);
    int rc = shale_batch_apply(db, b);
    if (rc != SHALE_OK) {
        fail("writer %d: batch_apply: %s", w->id, shale_strerror(rc));
        return;
    }
    for (int i = 0; i < n; i++) {
        w->ver[ks[i]]++;
        atomic_store(&completed[ks[i]], w->ver[ks[i]]);
    }
}

static void *writer(void *arg)
{
    wctx *w = arg;
    tu_rng r;
    shale_buf old = SHALE_BUF_INIT;
    shale_batch *b;
    uint8_t *val = malloc(MAXVAL);
    tu_rng_seed(&r, w->seed);
    if (!val || shale_batch_new(&b) != SHALE_OK) {
        fail("writer setup");
        free(val);
        return NULL;
    }
    while (!atomic_load(&stop)) {
        if (tu_rng_range(&r, 10) == 0)
            write_batch(w, &r, b, val);
        else
            write_one(w, &r, &old, val);
        if (tu_rng_range(&r, 2000) == 0) {
            int rc = shale_flush(db);
            if (rc != SHALE_OK)
                fail("writer %d: flush: %s", w->id, shale_strerror(rc));
        }
        atomic_fetch_add(&n_writes, 1);
    }
    shale_batch_free(b);
    shale_buf_free(&old);
    free(val);
    return NULL;
}

/* ---- readers --------------------------------------------------------------------- */

static void check_seen(const char *what, unsigned k, uint64_t v, uint64_t c, uint64_t s)
{
    if (v == 0) {
        if (!absent_ok(c, s))
            fail("%s: key %u absent, but v%" PRIu64 " was complete and no remove followed "
                 "(started v%" PRIu64 ")",
                 what, k, c, s);
    } else if (v < c || v > s) {
        fail("%s: key %u shows v%" PRIu64 ", outside [completed v%" PRIu64 ", started v%" PRIu64
             "]",
             what, k, v, c, s);
    }
}

static void read_get(tu_rng *r, shale_buf *b)
{
    char key[32];
    unsigned k = (unsigned)tu_rng_range(r, NKEYS);
    size_t kl = make_key(k, key);
    uint64_t c = atomic_load(&completed[k]);
    int rc = shale_get(tree, key, kl, b);
    uint64_t s = atomic_load(&started[k]);
    if (rc < 0) {
        fail("get %s: %s", key, shale_strerror(rc));
        return;
    }
    uint64_t v = 0;
    if (rc == SHALE_OK && (v = parse_value(k, b->data, b->len)) == 0) {
        fail("get %s: malformed value (%zu bytes)", key, b->len);
        return;
    }
    check_seen("get", k, v, c, s);
    atomic_fetch_add(&n_gets, 1);
}

/* key_index -- the index of a key of our format, or -1. */
static long key_index(const void *key, size_t kl)
{
    char buf[16];
    unsigned k;
    char tail;
    if (kl != 9)
        return -1;
    memcpy(buf, key, 9);
    buf[9] = 0;
    if (sscanf(buf, "k%8x%c", &k, &tail) != 1 || k >= NKEYS)
        return -1;
    make_key(k, buf);
    return memcmp(buf, key, 9) == 0 ? (long)k : -1;
}

static void read_scan(tu_rng *r, uint64_t *c, uint64_t *seen)
{
    char lo[32], hi[32];
    unsigned a = (unsigned)tu_rng_range(r, NKEYS);
    unsigned z = a + 1 + (unsigned)tu_rng_range(r, 300);
    if (z > NKEYS)
        z = NKEYS;
    bool backward = tu_rng_range(r, 2);
    bool bounded = tu_rng_range(r, 8) != 0;
    if (!bounded)
        a = 0, z = NKEYS;
    for (unsigned k = a; k < z; k++) {
        c[k] = atomic_load(&completed[k]);
        seen[k] = 0;
    }
    shale_iter *it;
    int rc = shale_iter_open(tree, &it);
    if (rc != SHALE_OK) {
        fail("iter_open: %s", shale_strerror(rc));
        return;
    }
    make_key(a, lo);
    make_key(z, hi);
    if (bounded && (rc = shale_iter_set_bounds(it, lo, 9, hi, 9)) != SHALE_OK) {
        fail("set_bounds: %s", shale_strerror(rc));
        shale_iter_close(it);
        return;
    }
    long prev = backward ? (long)z : (long)a - 1;
    for (rc = backward ? shale_iter_last(it) : shale_iter_first(it); rc == SHALE_OK;
         rc = backward ? shale_iter_prev(it) : shale_iter_next(it)) {
        size_t kl, vl;
        const void *key = shale_iter_key(it, &kl);
        const void *val = shale_iter_value(it, &vl);
        long k = key_index(key, kl);
        if (k < 0 || (backward ? k >= prev : k <= prev) || k < (long)a || k >= (long)z) {
            fail("scan [%u, %u) %s: key %ld out of order or range after %ld", a, z,
                 backward ? "backward" : "forward", k, prev);
            break;
        }
        uint64_t v = parse_value((unsigned)k, val, vl);
        if (v == 0) {
            fail("scan: key %ld has a malformed value (%zu bytes)", k, vl);
            break;
        }
        seen[k] = v;
        prev = k;
        atomic_fetch_add(&n_scanned, 1);
    }
    shale_iter_close(it);
    if (rc < 0) {
        fail("scan: %s", shale_strerror(rc));
        return;
    }
    if (atomic_load(&failed))
        return;
    for (unsigned k = a; k < z; k++)
        check_seen("scan", k, seen[k], c[k], atomic_load(&started[k]));
    atomic_fetch_add(&n_scans, 1);
}

/* read_seek -- seek / seek_prev to a random key, then a few moves either way. */
static void read_seek(tu_rng *r)
{
    char key[32];
    unsigned k = (unsigned)tu_rng_range(r, NKEYS);
    make_key(k, key);
    shale_iter *it;
    int rc = shale_iter_open(tree, &it);
    if (rc != SHALE_OK) {
        fail("iter_open: %s", shale_strerror(rc));
        return;
    }
    bool fwd = tu_rng_range(r, 2);
    rc = fwd ? shale_iter_seek(it, key, 9) : shale_iter_seek_prev(it, key, 9);
    long last = -1;
    for (int i = 0; i < 8 && rc == SHALE_OK; i++) {
        size_t kl, vl;
        const void *ik = shale_iter_key(it, &kl);
        const void *iv = shale_iter_value(it, &vl);
        long x = key_index(ik, kl);
        if (x < 0 || parse_value((unsigned)x, iv, vl) == 0) {
            fail("seek: bad entry (key index %ld)", x);
            break;
        }
        if (i == 0 && (fwd ? x < (long)k : x > (long)k)) {
            fail("%s to %u landed on %ld", fwd ? "seek" : "seek_prev", k, x);
            break;
        }
        if (last >= 0 && (fwd ? x <= last : x >= last)) {
            fail("%s: %ld after %ld", fwd ? "next" : "prev", x, last);
            break;
        }
        last = x;
        if (tu_rng_range(r, 4) == 0) {
            /* A direction change: step back and forth, must return to x. */
            rc = fwd ? shale_iter_prev(it) : shale_iter_next(it);
            if (rc == SHALE_OK)
                rc = fwd ? shale_iter_next(it) : shale_iter_prev(it);
            if (rc == SHALE_OK) {
                ik = shale_iter_key(it, &kl);
                if (key_index(ik, kl) != x) {
                    fail("direction change did not return to key %ld", x);
                    break;
                }
            } else if (rc == SHALE_NOTFOUND) {
                break;
            }
            if (rc != SHALE_OK)
                break;
        }
        rc = fwd ? shale_iter_next(it) : shale_iter_prev(it);
    }
    if (rc < 0)
        fail("seek walk: %s", shale_strerror(rc));
    shale_iter_close(it);
    atomic_fetch_add(&n_seeks, 1);
}

static void *reader(void *arg)
{
    tu_rng r;
    shale_buf b = SHALE_BUF_INIT;
    uint64_t *c = malloc(NKEYS * sizeof *c), *seen = malloc(NKEYS * sizeof *seen);
    tu_rng_seed(&r, *(uint64_t *)arg);
    if (!c || !seen) {
        fail("reader setup");
        free(c);
        free(seen);
        return NULL;
    }
    while (!atomic_load(&stop)) {
        uint64_t x = tu_rng_range(&r, 20);
        if (x < 14)
            read_get(&r, &b);
        else if (x < 17)
            read_scan(&r, c, seen);
        else
            read_seek(&r);
    }
    shale_buf_free(&b);
    free(c);
    free(seen);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* run -- the test on a database created with `compression`, for secs seconds. */
static void run(int compression, double secs, uint64_t salt)
{
    char dir[256];
    uint64_t seed = tu_seed() + salt;
    shale_options o;
    pthread_t wt[2], rt[2];
    static wctx w[2];
    uint64_t rseed[2];

    for (unsigned k = 0; k < NKEYS; k++) { /* a fresh start for each run */
        atomic_store(&started[k], 0);
        atomic_store(&completed[k], 0);
    }
    atomic_store(&stop, false);
    atomic_store(&failed, false);
    atomic_store(&n_writes, 0);
    atomic_store(&n_gets, 0);
    atomic_store(&n_scans, 0);
    atomic_store(&n_scanned, 0);
    atomic_store(&n_seeks, 0);
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.compression = compression;
    o.memtable_size = 96u << 10;
    o.page_size = 1024;
    o.max_young_segments = 2;
    o.cache_size = 512u << 10;
    o.flush_every_ms = 20;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "c", &tree), SHALE_OK);
    fprintf(stderr, "concurrency: seed %" PRIu64 ", %.1f s, compression %d\n", seed, secs,
            compression);

    for (int i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i;
        w[i].seed = seed + 11 * (uint64_t)i;
        rseed[i] = seed + 101 * (uint64_t)i + 7;
        cr_assert_eq(pthread_create(&wt[i], NULL, writer, &w[i]), 0);
        cr_assert_eq(pthread_create(&rt[i], NULL, reader, &rseed[i]), 0);
    }
    /* Run for the time given (or until a thread fails); the main thread
     * waits on the clock, nothing else depends on the timing. */
    double end = now_s() + secs;
    while (!atomic_load(&stop) && now_s() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(wt[i], NULL);
        pthread_join(rt[i], NULL);
    }
    cr_assert(!atomic_load(&failed), "%s (seed %" PRIu64 ")", fail_msg, seed);

    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    fprintf(stderr,
            "concurrency: %" PRIu64 " writes, %" PRIu64 " gets, %" PRIu64 " scans (%" PRIu64
            " entries), %" PRIu64 " seeks; %" PRIu64 " memtables written out, %" PRIu64
            " merges, %" PRIu64 " segments\n",
            (uint64_t)n_writes, (uint64_t)n_gets, (uint64_t)n_scans, (uint64_t)n_scanned,
            (uint64_t)n_seeks, st.flushes, st.merges, st.segments);
    fprintf(stderr, "concurrency: %" PRIu64 " leaves, %" PRIu64 " compressed; leaf cache %" PRIu64
            " hits, %" PRIu64 " misses\n",
            st.leaves, st.compressed_leaves, st.leaf_cache_hits, st.leaf_cache_misses);
    if (compression != SHALE_COMPRESSION_NONE)
        cr_assert_gt(st.leaf_cache_hits + st.leaf_cache_misses, 0, "reads went through the cache");
    cr_assert_eq(shale_close(db), SHALE_OK);

    /* Every key holds exactly its last completed version after a reopen. */
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "c", &tree), SHALE_OK);
    shale_buf b = SHALE_BUF_INIT;
    char key[32];
    for (unsigned k = 0; k < NKEYS; k++) {
        uint64_t v = atomic_load(&completed[k]);
        cr_assert_eq(v, atomic_load(&started[k]));
        int rc = shale_get(tree, key, make_key(k, key), &b);
        uint64_t got = rc == SHALE_OK ? parse_value(k, b.data, b.len) : 0;
        cr_assert(rc == SHALE_OK || rc == SHALE_NOTFOUND, "get: %s", shale_strerror(rc));
        cr_assert(rc == SHALE_NOTFOUND || got != 0, "key %u: malformed value after reopen", k);
        if (v == 0 || is_remove(v))
            cr_assert_eq(rc, SHALE_NOTFOUND,
                         "key %u: v%" PRIu64 " was a remove, yet v%" PRIu64 " is there", k, v, got);
        else
            cr_assert_eq(got, v, "key %u: v%" PRIu64 " after reopen, expected v%" PRIu64, k, got,
                         v);
    }
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
    tu_rmrf(dir);
}

Test(concurrency, readers_never_see_torn_or_stale_values_while_writers_write, .timeout = 600)
{
    run(SHALE_COMPRESSION_NONE, 3.0 * tu_scale(), 0);
}

/* The same with compressed leaves: readers share decompressed leaves. */
Test(concurrency, the_same_with_compressed_leaves, .timeout = 600)
{
    run(SHALE_COMPRESSION_LZ4, 2.0 * tu_scale(), 1);
}
