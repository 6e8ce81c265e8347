/*
 * test_promote.c -- partial promotion: a level over its cap sends a window
 * of its keys down, not the whole level.  The window is the run of subtrees
 * densest in tombstones when there is one, else the next run after the
 * level's last window.  A hook on the merger records every merge's plan.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "shale.h"
#include "../../src/lsm/db.h"
#include "../support/testutil.h"

static char dir[256];
static void setup(void) { cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0); }
static void teardown(void) { tu_rmrf(dir); }

/* What the hook saw of one merge (user keys, the tree prefix stripped). */
typedef struct seen {
    uint32_t from, out;
    uint64_t tombstones;
    bool window, has_lo, has_hi;
    char lo[32], hi[32];
} seen;

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static seen seen_v[4096];
static size_t seen_n;

static void user_key(const uint8_t *ik, size_t len, char *out)
{
    size_t n = len > IKEY_PREFIX ? len - IKEY_PREFIX : 0;
    n = n < 31 ? n : 31;
    memcpy(out, ik + IKEY_PREFIX, n);
    out[n] = 0;
}

static void hook(void *ctx, const db_merge_info *m)
{
    (void)ctx;
    pthread_mutex_lock(&seen_mu);
    if (seen_n < sizeof seen_v / sizeof *seen_v) {
        seen *s = &seen_v[seen_n++];
        *s = (seen){.from = m->from_level, .out = m->out_level, .tombstones = m->from_tombstones,
                    .window = m->window,
                    .has_lo = m->has_lo, .has_hi = m->has_hi};
        if (m->has_lo)
            user_key(m->lo, m->lolen, s->lo);
        if (m->has_hi)
            user_key(m->hi, m->hilen, s->hi);
    }
    pthread_mutex_unlock(&seen_mu);
}

static void open_hooked(shale_db **db, shale_tree **t)
{
    shale_options o;
    shale_options_default(&o);
    o.memtable_size = 64 << 10;
    o.page_size = 1024;
    o.cache_size = 256 << 10;
    o.level_factor = 4;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    seen_n = 0;
    cr_assert_eq(shale_open(dir, &o, db), SHALE_OK);
    pthread_mutex_lock(&(*db)->ver_mu);
    (*db)->merge_hook = hook;
    pthread_mutex_unlock(&(*db)->ver_mu);
    cr_assert_eq(shale_open_tree(*db, NULL, t), SHALE_OK);
}

/* quiesce -- wait until no write-out or merge runs or is due, so the hook's
 * record is complete (merges and write-outs broadcast room_cv; the timed
 * wait covers the merger's last step, which does not). */
static void quiesce(shale_db *db)
{
    cr_assert_eq(shale_flush(db), SHALE_OK);
    pthread_mutex_lock(&db->ver_mu);
    while (db->merging || db_merge_due(db) || db->current->nimm) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&db->room_cv, &db->ver_mu, &ts);
    }
    pthread_mutex_unlock(&db->ver_mu);
}

static void key_of(int i, char *k) { snprintf(k, 32, "k%08d", i); }

static size_t val_of(int i, int gen, char *v)
{
    return (size_t)snprintf(v, 128, "value-%d-%d-%.*s", i, gen, 40 + i % 50,
                            "padding-padding-padding-padding-padding-padding-padding-padding-pad");
}

static void check(shale_tree *t, const int *gen, int n)
{
    shale_buf b = SHALE_BUF_INIT;
    for (int i = 0; i < n; i++) {
        char k[32], v[128];
        key_of(i, k);
        int rc = shale_get(t, k, strlen(k), &b);
        if (gen[i] < 0) {
            cr_assert_eq(rc, SHALE_NOTFOUND, "key %d", i);
            continue;
        }
        size_t vl = val_of(i, gen[i], v);
        cr_assert_eq(rc, SHALE_OK, "key %d", i);
        cr_assert(b.len == vl && memcmp(b.data, v, vl) == 0, "key %d", i);
    }
    shale_buf_free(&b);
}

static void verified(void)
{
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "check: %s", fault);
}

/* Without tombstones, each level's windows rotate: the next one starts where
 * the last ended (at a subtree boundary at or before it) and reaches past
 * it, until one runs to the end and the next starts again at the beginning. */
Test(promote, windows_rotate_through_the_key_space, .init = setup, .fini = teardown,
     .timeout = 300)
{
    shale_db *db;
    shale_tree *t;
    open_hooked(&db, &t);
    const int n = 30000;
    int *gen = malloc(n * sizeof *gen);
    for (int i = 0; i < n; i++)
        gen[i] = -1;
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    for (int op = 0; op < 4 * n; op++) {
        int i = (int)tu_rng_range(&r, n);
        char k[32], v[128];
        key_of(i, k);
        gen[i] = op;
        size_t vl = val_of(i, op, v);
        cr_assert_eq(shale_insert(t, k, strlen(k), v, vl, NULL), SHALE_OK);
    }
    quiesce(db);
    size_t windows = 0, wraps = 0;
    for (uint32_t level = 1; level < 8; level++) {
        const seen *prev = NULL;
        for (size_t i = 0; i < seen_n; i++) {
            const seen *s = &seen_v[i];
            if (s->from != level || !s->window)
                continue;
            cr_assert(s->has_lo || s->has_hi, "a window is never the whole level");
            if (s->has_lo && s->has_hi)
                cr_assert_lt(strcmp(s->lo, s->hi), 0);
            windows++;
            if (prev && prev->has_hi) {
                if (s->has_lo) {
                    cr_assert_leq(strcmp(s->lo, prev->hi), 0,
                                  "level %u: window (%s, %s] skips past the last one's end %s",
                                  level, s->lo, s->hi, prev->hi);
                    cr_assert(!s->has_hi || strcmp(s->hi, prev->hi) > 0,
                              "level %u: window (%s, %s] does not advance past %s", level, s->lo,
                              s->hi, prev->hi);
                } else {
                    wraps++; /* the last one's end is past every subtree now */
                }
            } else if (prev) {
                cr_assert(!s->has_lo, "level %u: after a window to the end, one from the start",
                          level);
                wraps++;
            }
            prev = s;
        }
    }
    cr_log_info("%zu merges, %zu windows, %zu wraps", seen_n, windows, wraps);
    cr_assert_geq(windows, 4, "levels over their caps promote windows");
    check(t, gen, n);
    cr_assert_eq(shale_close(db), SHALE_OK);
    verified();
    free(gen);
}

/* A level holding a run of tombstones promotes that run first, so deletes
 * leave the upper levels soon: after a run of deletes, new keys past the end
 * drive merges until a level holding most of the tombstones promotes a
 * window, which must hold some of the run.  (The choice itself is checked
 * exactly by choosing_the_densest_run below.)  (Which level holds them when
 * depends on the merger's timing; a run where no such window comes is tried
 * again with a new database, up to 3 times.) */
static int densest_once(void)
{
    shale_db *db;
    shale_tree *t;
    tu_rmrf(dir);
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    open_hooked(&db, &t);
    const int n = 40000, del_lo = 24000, del_hi = 28000, extra = 40000;
    int *gen = malloc((n + extra) * sizeof *gen);
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    for (int i = 0; i < n + extra; i++)
        gen[i] = -1;
    for (int i = 0; i < n; i++) { /* a base in random order */
        int k = (int)tu_rng_range(&r, n);
        char kb[32], v[128];
        key_of(k, kb);
        gen[k] = 1;
        cr_assert_eq(shale_insert(t, kb, strlen(kb), v, val_of(k, 1, v), NULL), SHALE_OK);
    }
    quiesce(db);
    size_t before = seen_n;
    for (int i = del_lo; i < del_hi; i++) { /* a dense run of deletes */
        char kb[32];
        key_of(i, kb);
        gen[i] = -1;
        cr_assert_eq(shale_remove(t, kb, strlen(kb), NULL), SHALE_OK);
    }
    const seen *first = NULL;
    int last = n;
    for (int i = n; i < n + extra && !first; i++, last = i) {
        char kb[32], v[128];
        key_of(i, kb);
        gen[i] = 2;
        cr_assert_eq(shale_insert(t, kb, strlen(kb), v, val_of(i, 2, v), NULL), SHALE_OK);
        if (i % 500 == 499) {
            quiesce(db);
            for (size_t j = before; j < seen_n && !first; j++)
                if (seen_v[j].window && seen_v[j].tombstones >= (uint64_t)(del_hi - del_lo) / 2)
                    first = &seen_v[j];
        }
    }
    if (first) {
        char lo[32], hi[32];
        key_of(del_lo, lo);
        key_of(del_hi - 1, hi);
        cr_log_info("first window after the deletes: level %u (%llu tombstones), (%s, %s]",
                    first->from, (unsigned long long)first->tombstones,
                    first->has_lo ? first->lo : "-", first->has_hi ? first->hi : "+");
        /* (lo, hi] meets [del_lo, del_hi) */
        cr_assert((!first->has_lo || strcmp(first->lo, hi) < 0) &&
                      (!first->has_hi || strcmp(first->hi, lo) >= 0),
                  "the window (%s, %s] misses the deleted run [%s, %s]", first->lo, first->hi,
                  lo, hi);
    }
    check(t, gen, last);
    cr_assert_eq(shale_close(db), SHALE_OK);
    verified();
    free(gen);
    return first != NULL;
}

Test(promote, the_window_densest_in_tombstones_goes_first, .init = setup, .fini = teardown,
     .timeout = 600)
{
    int tries = 0;
    while (tries < 3 && !densest_once())
        tries++;
    cr_assert_lt(tries, 3, "no level holding the tombstones promoted a window, 3 times");
}

/* The choice of window over a level's subtrees, on exact figures. */
Test(promote, choosing_the_densest_run)
{
    uint64_t ent[40], tomb[40];
    size_t start = 99;
    for (int i = 0; i < 40; i++)
        ent[i] = 100, tomb[i] = 0;
    cr_assert_not(db_window_densest(ent, tomb, 40, 5, &start), "no tombstones: rotate");
    for (int i = 10; i < 15; i++)
        tomb[i] = 90;
    cr_assert(db_window_densest(ent, tomb, 40, 5, &start));
    cr_assert_eq(start, 10, "a window of the run's size is the run");
    cr_assert(db_window_densest(ent, tomb, 40, 8, &start));
    cr_assert_eq(start, 7, "a wider window is the first that holds all of it");
    cr_assert(db_window_densest(ent, tomb, 40, 3, &start));
    cr_assert_eq(start, 10, "a narrower one lies inside it");
    tomb[12] = 100; /* the densest part wins */
    cr_assert(db_window_densest(ent, tomb, 40, 1, &start));
    cr_assert_eq(start, 12);
    for (int i = 0; i < 40; i++)
        tomb[i] = i == 30 ? 20 : 0; /* 20 of 800 entries: under 1/16 */
    cr_assert_not(db_window_densest(ent, tomb, 40, 8, &start), "too sparse: rotate");
    tomb[31] = 40; /* 60 of 800: at least 1/16 */
    cr_assert(db_window_densest(ent, tomb, 40, 8, &start));
    cr_assert_eq(start, 24);
    cr_assert_not(db_window_densest(ent, tomb, 40, 0, &start));
    cr_assert_not(db_window_densest(ent, tomb, 40, 41, &start));
    cr_assert_not(db_window_densest(ent, tomb, 40, 40, &start), "60 of 4000: too sparse");
    tomb[0] = 200;
    cr_assert(db_window_densest(ent, tomb, 40, 40, &start));
    cr_assert_eq(start, 0);
}
