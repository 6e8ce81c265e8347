/*
 * test_range_atomicity.c -- range tombstones under concurrency (built for
 * `make tsan` too).  A writer fills a tree with a batch of NK keys all
 * carrying one generation, then empties it again with a range tombstone
 * (shale_clear_tree, shale_remove_range, or a batch whose range comes first
 * and refills it), over and over, while memtable write-outs and merges run.
 * Readers scan the tree the whole time: every scan must see either nothing
 * or exactly the NK keys of one generation -- never a mix, never a part.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

#define NK 64

static atomic_bool ra_stop;
static pthread_mutex_t ra_mu = PTHREAD_MUTEX_INITIALIZER;
static char ra_fail[256];
static atomic_ullong ra_scans, ra_full;

static void ra_failed(const char *what, int n, unsigned g)
{
    pthread_mutex_lock(&ra_mu);
    if (!ra_fail[0])
        snprintf(ra_fail, sizeof ra_fail, "%s (%d keys, generation %u)", what, n, g);
    pthread_mutex_unlock(&ra_mu);
    atomic_store(&ra_stop, true);
}

static size_t ra_key(int i, char *k) { return (size_t)snprintf(k, 16, "r%03d", i); }

static size_t ra_val(unsigned g, int i, char *v)
{
    return (size_t)snprintf(v, 128, "%u|%d|%.*s", g, i, 40 + i, "................................"
                                                               "..............................."
                                                               "...............................");
}

typedef struct ra_ctx {
    shale_db *db;
    shale_tree *t;
    unsigned rounds;
} ra_ctx;

static int ra_fill(shale_batch *b, shale_tree *t, unsigned g)
{
    char k[16], v[128];
    int rc = SHALE_OK;
    for (int i = 0; i < NK && rc == SHALE_OK; i++) {
        size_t kl = ra_key(i, k), vl = ra_val(g, i, v);
        rc = shale_batch_insert(b, t, k, kl, v, vl);
    }
    return rc;
}

static void *ra_writer(void *arg)
{
    ra_ctx *c = arg;
    shale_batch *b;
    if (shale_batch_new(&b) != SHALE_OK) {
        ra_failed("batch_new", 0, 0);
        return NULL;
    }
    for (unsigned g = 1; g <= c->rounds && !atomic_load(&ra_stop); g++) {
        int rc;
        shale_batch_clear(b);
        if (g % 3 == 0) { /* one batch: the range first, then the refill */
            rc = shale_batch_remove_range(b, c->t, "r", 1, "s", 1);
            if (rc == SHALE_OK)
                rc = ra_fill(b, c->t, g);
            if (rc == SHALE_OK)
                rc = shale_batch_apply(c->db, b);
        } else {
            rc = ra_fill(b, c->t, g);
            if (rc == SHALE_OK)
                rc = shale_batch_apply(c->db, b);
            if (rc == SHALE_OK)
                rc = g % 3 == 1 ? shale_clear_tree(c->t) : shale_remove_range(c->t, "", 0, NULL, 0);
        }
        if (rc != SHALE_OK) {
            ra_failed(shale_strerror(rc), 0, g);
            break;
        }
    }
    shale_batch_free(b);
    atomic_store(&ra_stop, true);
    return NULL;
}

static void *ra_reader(void *arg)
{
    ra_ctx *c = arg;
    while (!atomic_load(&ra_stop)) {
        shale_iter *it;
        if (shale_iter_open(c->t, &it) != SHALE_OK) {
            ra_failed("iter_open", 0, 0);
            return NULL;
        }
        int n = 0, rc;
        unsigned g0 = 0;
        for (rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it), n++) {
            size_t kl, vl;
            const char *k = shale_iter_key(it, &kl);
            const char *v = shale_iter_value(it, &vl);
            char want_k[16], want_v[128];
            unsigned g = (unsigned)strtoul(v, NULL, 10);
            if (n == 0)
                g0 = g;
            size_t wkl = ra_key(n, want_k), wvl = ra_val(g0, n, want_v);
            if (n >= NK || g != g0 || kl != wkl || memcmp(k, want_k, kl) || vl != wvl ||
                memcmp(v, want_v, vl)) {
                ra_failed("a scan saw a torn state", n, g);
                break;
            }
        }
        if (rc < 0)
            ra_failed(shale_strerror(rc), n, g0);
        else if (n != 0 && n != NK)
            ra_failed("a scan saw part of a generation", n, g0);
        shale_iter_close(it);
        atomic_fetch_add(&ra_scans, 1);
        atomic_fetch_add(&ra_full, n == NK);
    }
    return NULL;
}

Test(concurrency, ranges_empty_a_tree_atomically_while_readers_scan, .timeout = 600)
{
    char dir[256];
    shale_options o;
    ra_ctx c = {0};
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.page_size = 1024;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &c.db), SHALE_OK);
    cr_assert_eq(shale_open_tree(c.db, "ranges", &c.t), SHALE_OK);
    c.rounds = (unsigned)tu_scaled(1500);
    pthread_t w, r[2];
    cr_assert_eq(pthread_create(&w, NULL, ra_writer, &c), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&r[i], NULL, ra_reader, &c), 0);
    pthread_join(w, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(r[i], NULL);
    shale_stats st;
    cr_assert_eq(shale_stats_get(c.db, &st), SHALE_OK);
    fprintf(stderr, "ranges: %u rounds, %llu scans (%llu full), %llu merges, %llu range tombstones left\n",
            c.rounds, (unsigned long long)atomic_load(&ra_scans),
            (unsigned long long)atomic_load(&ra_full), (unsigned long long)st.merges,
            (unsigned long long)st.range_tombstones);
    cr_assert(ra_fail[0] == 0, "%s", ra_fail);
    cr_assert_gt(st.merges, 0);
    cr_assert_eq(shale_close(c.db), SHALE_OK);
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "check: %s", fault);
    tu_rmrf(dir);
}
