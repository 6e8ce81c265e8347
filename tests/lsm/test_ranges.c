/*
 * test_ranges.c -- range tombstones end to end: shale_clear_tree,
 * shale_drop_tree and shale_remove_range are one small write whatever they
 * delete; snapshots taken before them keep seeing the keys; they survive
 * restarts (from the header and from the log); and merges apply them to
 * every older segment, after which they leave the graveyard and the keys'
 * pages are reclaimed.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shale.h"
#include "../support/testutil.h"

static char dir[256];
static void setup(void) { cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0); }
static void teardown(void) { tu_rmrf(dir); }

static void opts(shale_options *o)
{
    shale_options_default(o);
    o->memtable_size = 64 << 10;
    o->page_size = 1024;
    o->cache_size = 256 << 10;
    o->level_factor = 4;
    o->max_young_segments = 2;
    o->flush_every_ms = 0;
}

static size_t key(int i, char *k) { return (size_t)snprintf(k, 32, "k%08d", i); }

static size_t val(int i, char *v)
{
    return (size_t)snprintf(v, 96, "value-%d-%.*s", i, 20 + i % 40,
                            "padding-padding-padding-padding-padding-padding-padding");
}

static void load(shale_tree *t, int from, int to)
{
    for (int i = from; i < to; i++) {
        char k[32], v[96];
        cr_assert_eq(shale_insert(t, k, key(i, k), v, val(i, v), NULL), SHALE_OK);
    }
}

/* present -- keys [from, to) of t are there (want) or gone (!want). */
static void present(shale_tree *t, int from, int to, bool want)
{
    shale_buf b = SHALE_BUF_INIT;
    for (int i = from; i < to; i++) {
        char k[32], v[96];
        size_t vl = val(i, v);
        int rc = shale_get(t, k, key(i, k), &b);
        if (!want) {
            cr_assert_eq(rc, SHALE_NOTFOUND, "key %d should be gone", i);
            continue;
        }
        cr_assert_eq(rc, SHALE_OK, "key %d should be there", i);
        cr_assert(b.len == vl && memcmp(b.data, v, vl) == 0, "key %d", i);
    }
    shale_buf_free(&b);
}

/* count -- the keys an iterator over t sees. */
static int count(shale_tree *t)
{
    shale_iter *it;
    int n = 0;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    for (int rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it))
        n++;
    shale_iter_close(it);
    return n;
}

static shale_stats stats(shale_db *db)
{
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    return st;
}

Test(ranges, clear_and_drop_are_one_small_write_and_merges_reclaim_the_space, .init = setup,
     .fini = teardown, .timeout = 300)
{
    shale_options o;
    shale_db *db;
    shale_tree *big, *gone, *other;
    opts(&o);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "big", &big), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "gone", &gone), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "other", &other), SHALE_OK);
    load(big, 0, 30000);
    load(gone, 0, 10000);
    load(other, 0, 2000);
    cr_assert_eq(shale_flush(db), SHALE_OK);
    uint64_t entries_before = stats(db).entries;

    shale_iter *snap; /* a snapshot from before the clear keeps every key */
    cr_assert_eq(shale_iter_open(big, &snap), SHALE_OK);
    uint64_t log0 = stats(db).bytes_written_log;
    cr_assert_eq(shale_clear_tree(big), SHALE_OK);
    cr_assert_eq(shale_drop_tree(db, "gone"), SHALE_OK);
    uint64_t logged = stats(db).bytes_written_log - log0;
    cr_log_info("clear + drop logged %llu bytes for 40,000 keys", (unsigned long long)logged);
    cr_assert_lt(logged, 200, "clear and drop are O(1) writes");
    cr_assert_geq(stats(db).range_tombstones, 2);

    present(big, 0, 30000, false);
    cr_assert_eq(count(big), 0);
    present(other, 0, 2000, true);
    int seen = 0;
    for (int rc = shale_iter_first(snap); rc == SHALE_OK; rc = shale_iter_next(snap))
        seen++;
    cr_assert_eq(seen, 30000, "the snapshot taken before the clear sees every key");
    shale_iter_close(snap);

    /* the tree stays usable: new keys after the clear are kept */
    load(big, 100, 200);
    present(big, 100, 200, true);
    present(big, 0, 100, false);

    /* across a restart (the ranges come back from the header or the log) */
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "big", &big), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "other", &other), SHALE_OK);
    present(big, 0, 100, false);
    present(big, 100, 200, true);
    present(big, 200, 30000, false);
    cr_assert_eq(shale_open_tree(db, "gone", &gone), SHALE_OK);
    cr_assert_eq(count(gone), 0, "a dropped tree comes back empty");

    /* Writes elsewhere drive merges; they apply the ranges to every older
     * segment, then the ranges leave the graveyard and the pages are free. */
    shale_stats st = stats(db);
    for (int round = 0; round < 200 && (st.range_tombstones > 0 || st.entries > 60000); round++) {
        load(other, 2000 + round * 1000, 3000 + round * 1000);
        cr_assert_eq(shale_flush(db), SHALE_OK);
        st = stats(db);
    }
    cr_log_info("after: %llu range tombstones, %llu entries (%llu before)",
                (unsigned long long)st.range_tombstones, (unsigned long long)st.entries,
                (unsigned long long)entries_before);
    cr_assert_eq(st.range_tombstones, 0, "merges retire the ranges");
    present(big, 100, 200, true);
    present(big, 0, 100, false);
    present(other, 0, 2000, true);
    /* the cleared keys are gone from the segments, not just hidden */
    cr_assert_lt(st.entries, (uint64_t)count(other) + 100 + 100);
    cr_assert_eq(shale_close(db), SHALE_OK);
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "check: %s", fault);
}

Test(ranges, remove_range_deletes_exactly_its_keys, .init = setup, .fini = teardown,
     .timeout = 300)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    opts(&o);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    load(t, 0, 20000);
    char lo[32], hi[32];
    key(5000, lo);
    key(7000, hi);
    cr_assert_eq(shale_remove_range(t, lo, strlen(lo), hi, strlen(hi)), SHALE_OK);
    present(t, 4990, 5000, true);
    present(t, 5000, 7000, false);
    present(t, 7000, 7010, true);
    /* bounds out of order or equal are refused and change nothing */
    cr_assert_eq(shale_remove_range(t, hi, strlen(hi), lo, strlen(lo)), SHALE_EINVAL);
    cr_assert_eq(shale_remove_range(t, lo, strlen(lo), lo, strlen(lo)), SHALE_EINVAL);
    cr_assert_eq(shale_remove_range(NULL, lo, 1, hi, 1), SHALE_EINVAL);
    present(t, 7000, 7010, true);
    /* to the end of the tree, from a key */
    key(19000, lo);
    cr_assert_eq(shale_remove_range(t, lo, strlen(lo), NULL, 0), SHALE_OK);
    present(t, 18990, 19000, true);
    present(t, 19000, 20000, false);
    /* in a batch, ordered with its other writes: a key written before the
     * range in the batch is deleted, one written after it is kept */
    shale_batch *b;
    char k1[32], k2[32], v[96];
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    key(100, k1);
    key(150, k2);
    cr_assert_eq(shale_batch_insert(b, t, "k00000120x", 10, "early", 5), SHALE_OK);
    cr_assert_eq(shale_batch_remove_range(b, t, k1, strlen(k1), k2, strlen(k2)), SHALE_OK);
    cr_assert_eq(shale_batch_insert(b, t, "k00000130x", 10, "late", 4), SHALE_OK);
    cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
    shale_batch_free(b);
    shale_buf got = SHALE_BUF_INIT;
    cr_assert_eq(shale_get(t, "k00000120x", 10, &got), SHALE_NOTFOUND);
    cr_assert_eq(shale_get(t, "k00000130x", 10, &got), SHALE_OK);
    cr_assert(got.len == 4 && memcmp(got.data, "late", 4) == 0);
    present(t, 100, 150, false);
    present(t, 150, 160, true);
    /* written over after the range: the new value stands */
    cr_assert_eq(shale_insert(t, "k00005500", 9, v, val(5500, v), NULL), SHALE_OK);
    cr_assert_eq(shale_get(t, "k00005500", 9, &got), SHALE_OK);
    shale_buf_free(&got);
    int n = count(t);
    cr_assert_eq(n, 20000 - 2000 - 1000 - 50 + 1 + 1, "an iterator sees the same (%d)", n);
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    cr_assert_eq(count(t), n, "and after a restart");
    cr_assert_eq(shale_close(db), SHALE_OK);
    /* offline compaction writes only what the ranges left */
    char out[300];
    snprintf(out, sizeof out, "%s/compacted", dir);
    cr_assert_eq(shale_compact(dir, out, NULL, NULL), SHALE_OK);
    cr_assert_eq(shale_open(out, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    cr_assert_eq(count(t), n, "the compacted copy holds the same keys");
    present(t, 5000, 5500, false);
    present(t, 5500, 5501, true);
    present(t, 5501, 7000, false);
    shale_stats st = stats(db);
    cr_assert_eq(st.range_tombstones, 0);
    cr_assert_eq(st.entries, (uint64_t)n, "and no entry a range deleted");
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* A range tombstone in the log only (no checkpoint after it) is replayed. */
Test(ranges, a_range_in_the_log_is_replayed_after_a_crash, .init = setup, .fini = teardown)
{
    shale_options o;
    opts(&o);
    o.memtable_size = 8 << 20; /* nothing written out after the load */
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        shale_db *db;
        shale_tree *t;
        if (shale_open(dir, &o, &db) || shale_open_tree(db, NULL, &t))
            _exit(2);
        for (int i = 0; i < 5000; i++) {
            char k[32], v[96];
            if (shale_insert(t, k, key(i, k), v, val(i, v), NULL))
                _exit(3);
        }
        if (shale_remove_range(t, "k00001000", 9, "k00002000", 9) || shale_flush(db))
            _exit(4);
        _exit(0); /* no close: like a crash after the flush */
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    shale_db *db;
    shale_tree *t;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    cr_assert(stats(db).recovered);
    present(t, 0, 1000, true);
    present(t, 1000, 2000, false);
    present(t, 2000, 5000, true);
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    present(t, 1000, 2000, false);
    present(t, 2000, 2100, true);
    cr_assert_eq(shale_close(db), SHALE_OK);
}
