/*
 * test_db.c -- the lsm end to end through the public API with small
 * memtables: write-outs, merges, checkpoints, recovery from the log, and
 * the catalog, each checked by reading everything back.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shale.h"
#include "../../src/lsm/db.h"
#include "../support/testutil.h"

static char dir[256];

static void small_opts(shale_options *o)
{
    shale_options_default(o);
    o->memtable_size = 64 << 10;
    o->page_size = 1024;
    o->cache_size = 256 << 10;
    o->max_young_segments = 3;
    o->flush_every_ms = 0;
}

static void setup(void) { cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0); }
static void teardown(void) { tu_rmrf(dir); }

/* checked -- the database at dir passes shale_verify. */
static void checked(void)
{
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "check: %s", fault);
}

static void kv(int i, int gen, char *k, char *v)
{
    snprintf(k, 32, "k%08d", i);
    snprintf(v, 64, "value-%d-%d-%s", i, gen, i % 7 ? "" : "padding-padding-padding");
}

/* check_all -- every key i < n has generation gen (or is absent if gen < 0). */
static void check_all(shale_tree *t, int n, int gen_even, int gen_odd)
{
    shale_buf b = SHALE_BUF_INIT;
    for (int i = 0; i < n; i++) {
        char k[32], v[64];
        int gen = i % 2 ? gen_odd : gen_even;
        kv(i, gen, k, v);
        int rc = shale_get(t, k, strlen(k), &b);
        if (gen < 0) {
            cr_assert_eq(rc, SHALE_NOTFOUND, "key %d rc %d", i, rc);
            continue;
        }
        cr_assert_eq(rc, SHALE_OK, "key %d rc %d", i, rc);
        cr_assert_eq(b.len, strlen(v), "key %d", i);
        cr_assert_eq(memcmp(b.data, v, b.len), 0, "key %d", i);
    }
    shale_buf_free(&b);
}

Test(db, writes_survive_writeouts_merges_and_reopen, .init = setup, .fini = teardown)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    small_opts(&o);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    const int n = 20000;
    for (int gen = 0; gen < 2; gen++)
        for (int i = 0; i < n; i++) {
            char k[32], v[64];
            kv(i, gen, k, v);
            if (gen == 1 && i % 2)
                cr_assert_eq(shale_remove(t, k, strlen(k), NULL), SHALE_OK);
            else
                cr_assert_eq(shale_insert(t, k, strlen(k), v, strlen(v), NULL), SHALE_OK);
            if (i % 500 == 0) {
                /* Writers wait for merges before young segments exceed
                 * twice the limit; queued write-outs can add two more. */
                shale_stats s;
                cr_assert_eq(shale_stats_get(db, &s), SHALE_OK);
                cr_assert_leq(s.young_segments, 2 * o.max_young_segments + 2, "%d segments",
                              (int)s.young_segments);
            }
        }
    check_all(t, n, 1, -1);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert_gt(st.flushes, 0);
    cr_assert_eq(shale_close(db), SHALE_OK);

    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    check_all(t, n, 1, -1);
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert(!st.recovered);
    /* Scan: exactly the even keys, in order. */
    shale_iter *it;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    int i = 0, rc;
    for (rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it), i += 2) {
        char k[32], v[64];
        size_t kl;
        kv(i, 1, k, v);
        const void *key = shale_iter_key(it, &kl);
        cr_assert_eq(kl, strlen(k));
        cr_assert_eq(memcmp(key, k, kl), 0, "at %d", i);
    }
    cr_assert_eq(rc, SHALE_NOTFOUND);
    cr_assert_eq(i, n);
    shale_iter_close(it);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

/* level_check -- regular levels in strictly increasing order and each
 * listed once; returns how many. */
static int level_check(shale_db *db)
{
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    int n = 0;
    uint64_t blocks = st.level_blocks[0];
    for (int l = 1; l < SHALE_STATS_LEVELS; l++) {
        n += st.level_bytes[l] > 0;
        cr_assert_eq(st.level_bytes[l] > 0, st.level_blocks[l] > 0, "level %d", l);
        blocks += st.level_blocks[l];
    }
    cr_assert_eq(blocks, st.segment_blocks, "every segment's blocks, by level");
    cr_assert_eq((uint64_t)n, st.levels);
    cr_assert_eq(st.segments, st.young_segments + st.levels);
    return n;
}

Test(db, levels_form_below_the_young_segments, .init = setup, .fini = teardown, .timeout = 300)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    small_opts(&o);
    o.level_factor = 2;
    o.max_young_segments = 2;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    const int n = 30000;
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    int *gen = calloc(n, sizeof *gen); /* the generation each key holds; -1 removed */
    for (int i = 0; i < n; i++)
        gen[i] = -1;
    int most = 0;
    for (int op = 0; op < 3 * n; op++) {
        int i = (int)tu_rng_range(&r, n);
        char k[32], v[64];
        if (tu_rng_range(&r, 5) == 0) {
            kv(i, 0, k, v);
            cr_assert_eq(shale_remove(t, k, strlen(k), NULL), SHALE_OK);
            gen[i] = -1;
        } else {
            gen[i] = op % 1000;
            kv(i, gen[i], k, v);
            cr_assert_eq(shale_insert(t, k, strlen(k), v, strlen(v), NULL), SHALE_OK);
        }
        if (op % 2000 == 0) {
            int l = level_check(db);
            most = l > most ? l : most;
        }
    }
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_log_info("levels: merges %llu (%llu partial), leaves rewritten %llu, recycled %llu",
                (unsigned long long)st.merges, (unsigned long long)st.merge_windows,
                (unsigned long long)st.merge_leaves_rewritten,
                (unsigned long long)st.merge_leaves_recycled);
    for (int pass = 0; pass < 2; pass++) {
        shale_buf b = SHALE_BUF_INIT;
        for (int i = 0; i < n; i++) {
            char k[32], v[64];
            kv(i, gen[i] < 0 ? 0 : gen[i], k, v);
            int rc = shale_get(t, k, strlen(k), &b);
            if (gen[i] < 0) {
                cr_assert_eq(rc, SHALE_NOTFOUND, "key %d", i);
            } else {
                cr_assert_eq(rc, SHALE_OK, "key %d", i);
                cr_assert(b.len == strlen(v) && memcmp(b.data, v, b.len) == 0, "key %d", i);
            }
        }
        shale_buf_free(&b);
        most = level_check(db) > most ? level_check(db) : most;
        cr_assert_eq(shale_close(db), SHALE_OK);
        cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
        cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    }
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_log_info("levels: most %d, now %d", most, (int)st.levels);
    cr_assert_geq(most, 2, "with level_factor 2 the data spreads over levels");
    free(gen);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

/* seq_value -- the value of key i: 60 bytes, every 50th a few KiB (a run). */
static size_t seq_value(int i, char *v)
{
    size_t n = i % 50 == 0 ? 3000 + (size_t)(i % 7) : 60;
    for (size_t j = 0; j < n; j++)
        v[j] = (char)('a' + (i + (int)j) % 26);
    return n;
}

/* seq_check -- keys [0, n) hold their values, in order. */
static void seq_check(shale_tree *t, int n)
{
    shale_iter *it;
    char k[32], v[4096];
    int i = 0, rc;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    for (rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it), i++) {
        size_t kl, vl, want = seq_value(i, v);
        snprintf(k, sizeof k, "k%08d", i);
        const void *key = shale_iter_key(it, &kl);
        const void *val = shale_iter_value(it, &vl);
        cr_assert(kl == strlen(k) && memcmp(key, k, kl) == 0, "key %d", i);
        cr_assert(vl == want && memcmp(val, v, vl) == 0, "value %d", i);
    }
    cr_assert_eq(rc, SHALE_NOTFOUND);
    cr_assert_eq(i, n);
    shale_iter_close(it);
}

/* Ascending keys: young segments enter the levels whole and merges reuse
 * what they do not touch, so pages are written about once. */
Test(db, sequential_loads_are_written_about_once, .init = setup, .fini = teardown,
     .timeout = 300)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    small_opts(&o);
    o.level_factor = 3;
    o.max_young_segments = 2;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    const int n = 60000;
    char k[32], v[4096];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "k%08d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), v, seq_value(i, v), NULL), SHALE_OK);
    }
    seq_check(t, n);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    uint64_t live = st.live_pages * st.page_size;
    cr_log_info("merges wrote %llu bytes for %llu live; %llu merges, %llu leaves recycled",
                (unsigned long long)st.merge_bytes_written, (unsigned long long)live,
                (unsigned long long)st.merges, (unsigned long long)st.merge_leaves_recycled);
    cr_assert_gt(st.merges, 3);
    cr_assert_lt(st.merge_bytes_written * 5, live, "merges rewrote little of the data");
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    seq_check(t, n);
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert_geq(st.levels, 1);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

/* Random overwrites: merges rewrite the leaves the new keys land in, reuse
 * the rest, and everything reads back. */
Test(db, merges_recycle_untouched_leaves, .init = setup, .fini = teardown, .timeout = 300)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    small_opts(&o);
    o.level_factor = 4;
    o.max_young_segments = 2;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    const int n = 40000;
    char k[32], v[4096];
    for (int i = 0; i < n; i++) { /* a base, sequential */
        snprintf(k, sizeof k, "k%08d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), v, seq_value(i, v), NULL), SHALE_OK);
    }
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    for (int j = 0; j < 20000; j++) { /* then overwrites clustered in a few places */
        int i = (int)(tu_rng_range(&r, 8) * 5000 + tu_rng_range(&r, 200));
        snprintf(k, sizeof k, "k%08d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), v, seq_value(i, v), NULL), SHALE_OK);
    }
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_log_info("recycled %llu leaves, rewrote %llu", (unsigned long long)st.merge_leaves_recycled,
                (unsigned long long)st.merge_leaves_rewritten);
    cr_assert_gt(st.merge_leaves_recycled, st.merge_leaves_rewritten,
                 "clustered updates leave most leaves alone");
    cr_assert_gt(st.merge_keys_promoted, 0);
    cr_assert_gt(st.merge_parents_written, 0);
    cr_assert_gt(st.merge_micros, 0);
    cr_assert_gt(st.merge_bytes_written, 0);
    seq_check(t, n);
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    seq_check(t, n);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

/* A dropped tree's keys leave the segments as merges pass over them, even
 * inside subtrees that would otherwise be reused whole. */
Test(db, merges_purge_a_dropped_trees_keys, .init = setup, .fini = teardown, .timeout = 300)
{
    shale_options o;
    shale_db *db;
    shale_tree *t[3];
    const char *names[3] = {"a", "b", "c"};
    small_opts(&o);
    o.level_factor = 2;
    o.max_young_segments = 2;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shale_open_tree(db, names[i], &t[i]), SHALE_OK);
    const int n = 5000, more = 40000;
    char k[32], v[64];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++) {
            kv(i, j, k, v);
            cr_assert_eq(shale_insert(t[j], k, strlen(k), v, strlen(v), NULL), SHALE_OK);
        }
    cr_assert_eq(shale_drop_tree(db, "b"), SHALE_OK);
    for (int i = n; i < n + more; i++) { /* new keys in a only */
        kv(i, 0, k, v);
        cr_assert_eq(shale_insert(t[0], k, strlen(k), v, strlen(v), NULL), SHALE_OK);
    }
    /* every merge due runs before the count, whatever the background
     * threads had got to */
    db_stop_threads(db);
    cr_assert_eq(db_flush_memtables(db), SHALE_OK);
    int rc;
    while ((rc = db_merge_one(db)) == SHALE_OK)
        ;
    cr_assert_eq(rc, SHALE_NOTFOUND);
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_log_info("entries %llu, live keys %d", (unsigned long long)st.entries, n + more + n);
    cr_assert_lt(st.entries, (uint64_t)(n + more + n + 100),
                 "b's %d keys are (mostly) gone: %llu entries", n,
                 (unsigned long long)st.entries);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

/* Smooth back-pressure: with merges behind, writes are slowed by a delay
 * in proportion to the bytes written and the excess young segments, paid a
 * millisecond at a time; without excess, nothing waits. */
Test(db, writers_are_slowed_in_proportion_when_merges_fall_behind, .init = setup,
     .fini = teardown)
{
    shale_db *db;
    shale_tree *t;
    cr_assert_eq(shale_open(dir, NULL, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    db_stop_threads(db); /* nothing installs versions behind the test's back */
    /* ... but writers must not take the db for closing (which skips the
     * waits): the delays are what is measured */
    pthread_mutex_lock(&db->ver_mu);
    db->stopping = false;
    pthread_mutex_unlock(&db->ver_mu);
    shale_stats st;
    char k[32], v[1000];
    memset(v, 'x', sizeof v);
    atomic_store(&db->young_excess, 4u); /* as if 4 young segments too many */
    for (int i = 0; i < 1000; i++) { /* ~1 MB: 1e6 B * 4 * 16 ns = 64 ms of delay */
        int n = snprintf(k, sizeof k, "k%06d", i);
        cr_assert_eq(shale_insert(t, k, (size_t)n, v, sizeof v, NULL), SHALE_OK);
    }
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert_geq(st.write_slowdowns, 60, "%llu", (unsigned long long)st.write_slowdowns);
    cr_assert_leq(st.write_slowdowns, 70, "%llu", (unsigned long long)st.write_slowdowns);
    cr_assert_gt(st.stall_max_micros, 0);
    uint64_t before = st.write_slowdowns;
    atomic_store(&db->young_excess, 0u);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(k, sizeof k, "k%06d", i);
        cr_assert_eq(shale_insert(t, k, (size_t)n, v, sizeof v, NULL), SHALE_OK);
    }
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert_eq(st.write_slowdowns, before, "no excess, no waiting");
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* One key overwritten 10,000 times leaves next to nothing on disk. */
Test(db, overwrites_of_one_key_leave_little_behind, .init = setup, .fini = teardown)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    small_opts(&o);
    o.page_size = 4096;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    char v[64];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(v, sizeof v, "version %d of the one value", i);
        cr_assert_eq(shale_insert(t, "the-key", 7, v, (size_t)n, NULL), SHALE_OK);
    }
    cr_assert_eq(shale_flush(db), SHALE_OK);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert_gt(st.flushes, 0, "memtables were written out");
    cr_assert_leq(st.live_pages * st.page_size, 64u << 10, "%llu live pages",
                  (unsigned long long)st.live_pages);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

/* Steady state: overwriting the same keys round after round, the file stops
 * growing: freed pages are reused (seeds/004's complaint). */
Test(db, the_file_stops_growing_under_overwrites, .init = setup, .fini = teardown,
     .timeout = 900)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    shale_options_default(&o);
    o.memtable_size = 1u << 20;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    const int n = (int)tu_scaled(200000), rounds = 20;
    uint64_t size5 = 0, size = 0;
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    char k[32], v[100];
    for (int round = 1; round <= rounds; round++) {
        for (int j = 0; j < n; j++) {
            int i = (int)tu_rng_range(&r, (uint64_t)n);
            int kl = snprintf(k, sizeof k, "key%09d", i);
            snprintf(v, sizeof v, "round %d value of key %d ......................................",
                     round, i);
            cr_assert_eq(shale_insert(t, k, (size_t)kl, v, 80, NULL), SHALE_OK);
        }
        shale_stats st;
        cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
        size = st.file_bytes;
        if (round == 5)
            size5 = size;
        if (round % 5 == 0)
            cr_log_info("round %d: file %llu bytes, live %llu pages, levels %llu", round,
                        (unsigned long long)size, (unsigned long long)st.live_pages,
                        (unsigned long long)st.levels);
    }
    cr_assert_leq(size * 10, size5 * 13, "file %llu bytes after round %d, %llu after round 5",
                  (unsigned long long)size, rounds, (unsigned long long)size5);
    cr_assert_eq(shale_close(db), SHALE_OK);
    checked();
}

Test(db, unflushed_log_is_replayed_after_a_crash, .init = setup, .fini = teardown)
{
    shale_options o;
    small_opts(&o);
    o.memtable_size = 8 << 20; /* nothing written out: all in the log */
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        shale_db *db;
        shale_tree *t, *t2;
        if (shale_open(dir, &o, &db) || shale_open_tree(db, NULL, &t) ||
            shale_open_tree(db, "second", &t2))
            _exit(2);
        for (int i = 0; i < 5000; i++) {
            char k[32], v[64];
            kv(i, 0, k, v);
            if (shale_insert(i % 2 ? t2 : t, k, strlen(k), v, strlen(v), NULL))
                _exit(3);
        }
        if (shale_flush(db))
            _exit(4);
        _exit(0); /* no close: like a crash after the flush */
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    shale_db *db;
    shale_tree *t, *t2;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "second", &t2), SHALE_OK);
    check_all(t, 5000, 0, -1);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert(st.recovered);
    cr_assert_eq(shale_close(db), SHALE_OK);
    /* After a clean close nothing is left to recover. */
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert(!st.recovered);
    cr_assert_eq(shale_open_tree(db, "second", &t2), SHALE_OK);
    shale_buf b = SHALE_BUF_INIT;
    cr_assert_eq(shale_get(t2, "k00000001", 9, &b), SHALE_OK);
    cr_assert_eq(shale_get(t2, "k00000002", 9, &b), SHALE_NOTFOUND);
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(db, dropped_tree_is_gone_and_its_name_reusable, .init = setup, .fini = teardown)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    shale_buf b = SHALE_BUF_INIT;
    small_opts(&o);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "x", &t), SHALE_OK);
    cr_assert_eq(shale_insert(t, "a", 1, "1", 1, NULL), SHALE_OK);
    cr_assert_eq(shale_drop_tree(db, "x"), SHALE_OK);
    cr_assert_eq(shale_drop_tree(db, "x"), SHALE_NOTFOUND);
    cr_assert_eq(shale_open_tree(db, "x", &t), SHALE_OK);
    cr_assert_eq(shale_get(t, "a", 1, &b), SHALE_NOTFOUND);
    cr_assert_eq(shale_insert(t, "b", 1, "2", 1, NULL), SHALE_OK);
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "x", &t), SHALE_OK);
    cr_assert_eq(shale_get(t, "a", 1, &b), SHALE_NOTFOUND);
    cr_assert_eq(shale_get(t, "b", 1, &b), SHALE_OK);
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
}
