/*
 * test_api.c -- the small semantics of the public API: options, argument
 * checks, limits, locking, trees, iterators on a known set, read-only mode,
 * error strings, a big value and a maximal key.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/testutil.h"
#include "shale.h"

/* ---- helpers ---------------------------------------------------------------- */

static char dir[256];

static void setup(void)
{
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
}
static void teardown(void)
{
    tu_rmrf(dir);
}

TestSuite(api, .init = setup, .fini = teardown, .timeout = 300);

static shale_db *open_ok(const shale_options *o)
{
    shale_db *db = NULL;
    int rc = shale_open(dir, o, &db);
    cr_assert_eq(rc, SHALE_OK, "open: %s", shale_strerror(rc));
    cr_assert_not_null(db);
    return db;
}

static shale_tree *tree_ok(shale_db *db, const char *name)
{
    shale_tree *t = NULL;
    int rc = shale_open_tree(db, name, &t);
    cr_assert_eq(rc, SHALE_OK, "open_tree(%s): %s", name ? name : "NULL", shale_strerror(rc));
    cr_assert_not_null(t);
    return t;
}

static void put_s(shale_tree *t, const char *k, const char *v)
{
    int rc = shale_insert(t, k, strlen(k), v, strlen(v), NULL);
    cr_assert_eq(rc, SHALE_OK, "insert %s: %s", k, shale_strerror(rc));
}

/* expect_s -- key k holds v (NULL: absent). */
static void expect_s(shale_tree *t, const char *k, const char *v)
{
    shale_buf b = SHALE_BUF_INIT;
    int rc = shale_get(t, k, strlen(k), &b);
    if (!v) {
        cr_assert_eq(rc, SHALE_NOTFOUND, "get %s: expected absent, got %d", k, rc);
    } else {
        cr_assert_eq(rc, SHALE_OK, "get %s: %s", k, shale_strerror(rc));
        cr_assert(b.len == strlen(v) && memcmp(b.data, v, b.len) == 0,
                  "get %s: got '%.*s', want '%s'", k, (int)b.len, (char *)b.data, v);
    }
    shale_buf_free(&b);
}

/* expect_at -- the iterator is on key k (NULL: expect rc NOTFOUND). */
static void expect_at(shale_iter *it, int rc, const char *k)
{
    if (!k) {
        cr_assert_eq(rc, SHALE_NOTFOUND, "expected the end, got %d", rc);
        size_t kl = 99;
        cr_assert_null(shale_iter_key(it, &kl), "an iterator past the end has no key");
        cr_assert_eq(kl, 0);
        return;
    }
    cr_assert_eq(rc, SHALE_OK, "expected '%s', got %d (%s)", k, rc, shale_strerror(rc));
    size_t kl, vl;
    const char *key = shale_iter_key(it, &kl);
    const char *val = shale_iter_value(it, &vl);
    cr_assert(kl == strlen(k) && memcmp(key, k, kl) == 0, "expected key '%s', got '%.*s'", k,
              (int)kl, key);
    /* Every value in the known set is "v" + key. */
    cr_assert(vl == kl + 1 && val[0] == 'v' && memcmp(val + 1, k, kl) == 0, "wrong value at '%s'",
              k);
}

/* ---- options and arguments -------------------------------------------------------- */

Test(api, options_defaults_match_the_documentation)
{
    shale_options o;
    memset(&o, 0xa5, sizeof o);
    shale_options_default(&o);
    cr_assert(o.create_if_missing);
    cr_assert(!o.read_only);
    cr_assert(!o.sync_writes);
    cr_assert_eq(o.flush_every_ms, 500);
    cr_assert_eq(o.cache_size, (size_t)64 << 20);
    cr_assert_eq(o.memtable_size, (size_t)32 << 20);
    cr_assert_eq(o.page_size, 4096);
    cr_assert_eq(o.compression, SHALE_COMPRESSION_NONE);
    cr_assert_eq(o.compression_level, 0);
    cr_assert_eq(o.level_factor, 10);
    cr_assert_eq(o.max_young_segments, 6);
    shale_options_default(NULL); /* a no-op, not a crash */
    /* NULL options mean the defaults. */
    shale_db *db = open_ok(NULL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, null_arguments_are_einval)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf b = SHALE_BUF_INIT;
    shale_iter *it = NULL;
    shale_batch *bt = NULL;

    cr_assert_eq(shale_open(NULL, NULL, &db), SHALE_EINVAL);
    cr_assert_eq(shale_open(dir, NULL, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_open("", NULL, &db), SHALE_EINVAL);
    cr_assert_eq(shale_flush(NULL), SHALE_EINVAL);
    cr_assert_eq(shale_close(NULL), SHALE_OK);
    cr_assert_eq(shale_open_tree(NULL, "x", &t), SHALE_EINVAL);
    cr_assert_eq(shale_open_tree(db, "x", NULL), SHALE_EINVAL);
    cr_assert_eq(shale_drop_tree(NULL, "x"), SHALE_EINVAL);
    cr_assert_eq(shale_get(NULL, "k", 1, &b), SHALE_EINVAL);
    cr_assert_eq(shale_get(t, "k", 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_get(t, NULL, 1, &b), SHALE_EINVAL);
    cr_assert_eq(shale_insert(NULL, "k", 1, "v", 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_insert(t, NULL, 1, "v", 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_insert(t, "k", 1, NULL, 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_remove(NULL, "k", 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_remove(t, NULL, 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_iter_open(NULL, &it), SHALE_EINVAL);
    cr_assert_eq(shale_iter_open(t, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_iter_first(NULL), SHALE_EINVAL);
    cr_assert_eq(shale_iter_last(NULL), SHALE_EINVAL);
    cr_assert_eq(shale_iter_next(NULL), SHALE_EINVAL);
    cr_assert_eq(shale_iter_prev(NULL), SHALE_EINVAL);
    cr_assert_eq(shale_iter_seek(NULL, "k", 1), SHALE_EINVAL);
    cr_assert_eq(shale_iter_seek_prev(NULL, "k", 1), SHALE_EINVAL);
    cr_assert_eq(shale_iter_set_bounds(NULL, NULL, 0, NULL, 0), SHALE_EINVAL);
    cr_assert_null(shale_iter_key(NULL, NULL));
    cr_assert_null(shale_iter_value(NULL, NULL));
    shale_iter_close(NULL);
    cr_assert_eq(shale_batch_new(NULL), SHALE_EINVAL);
    cr_assert_eq(shale_batch_new(&bt), SHALE_OK);
    cr_assert_eq(shale_batch_insert(NULL, t, "k", 1, "v", 1), SHALE_EINVAL);
    cr_assert_eq(shale_batch_insert(bt, NULL, "k", 1, "v", 1), SHALE_EINVAL);
    cr_assert_eq(shale_batch_insert(bt, t, NULL, 1, "v", 1), SHALE_EINVAL);
    cr_assert_eq(shale_batch_remove(bt, NULL, "k", 1), SHALE_EINVAL);
    cr_assert_eq(shale_batch_apply(NULL, bt), SHALE_EINVAL);
    cr_assert_eq(shale_batch_apply(db, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_batch_count(NULL), 0);
    shale_batch_clear(NULL);
    shale_batch_free(NULL);
    shale_buf_free(NULL);
    cr_assert_eq(shale_stats_get(NULL, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_stats_get(db, NULL), SHALE_EINVAL);
    /* A tree name over the limit. */
    char name[SHALE_MAX_TREE_NAME + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    cr_assert_eq(shale_open_tree(db, name, &t), SHALE_EINVAL);
    name[SHALE_MAX_TREE_NAME] = 0;
    tree_ok(db, name);
    /* An empty batch applies as a no-op. */
    cr_assert_eq(shale_batch_apply(db, bt), SHALE_OK);
    shale_batch_free(bt);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, bad_options_are_einval)
{
    static const struct {
        const char *what;
        int field;
        uint64_t value;
    } bad[] = {
        {"page_size 3000", 0, 3000},
        {"page_size 512", 0, 512},
        {"page_size 128 KiB", 0, 128 << 10},
        {"page_size 0", 0, 0},
        {"memtable 60 KiB", 1, 60 << 10},
        {"memtable 2 GiB", 1, (uint64_t)2 << 30},
        {"cache 100 KiB", 2, 100 << 10},
        {"compression 7", 3, 7},
        {"compression -1", 3, (uint64_t)-1},
        {"none at level 1", 6, (uint64_t)SHALE_COMPRESSION_NONE << 32 | 1},
        {"lz4 at level 13", 6, (uint64_t)SHALE_COMPRESSION_LZ4 << 32 | 13},
        {"lz4 at level -65538", 6, (uint64_t)SHALE_COMPRESSION_LZ4 << 32 | (uint32_t)-65538},
        {"zstd at level 23", 6, (uint64_t)SHALE_COMPRESSION_ZSTD << 32 | 23},
        {"level_factor 1", 4, 1},
        {"level_factor 101", 4, 101},
        {"max_young 1", 5, 1},
        {"max_young 65", 5, 65},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shale_options o;
        shale_db *db = NULL;
        shale_options_default(&o);
        switch (bad[i].field) {
        case 0:
            o.page_size = (uint32_t)bad[i].value;
            break;
        case 1:
            o.memtable_size = (size_t)bad[i].value;
            break;
        case 2:
            o.cache_size = (size_t)bad[i].value;
            break;
        case 3:
            o.compression = (int)bad[i].value;
            break;
        case 4:
            o.level_factor = (uint32_t)bad[i].value;
            break;
        case 6:
            o.compression = (int)(bad[i].value >> 32);
            o.compression_level = (int)(uint32_t)bad[i].value;
            break;
        default:
            o.max_young_segments = (uint32_t)bad[i].value;
            break;
        }
        int rc = shale_open(dir, &o, &db);
        cr_assert_eq(rc, SHALE_EINVAL, "%s: got %d", bad[i].what, rc);
        cr_assert_null(db, "%s: a failed open hands out no db", bad[i].what);
    }
    /* The limits themselves are accepted. */
    shale_options o;
    shale_options_default(&o);
    o.page_size = 1024;
    o.memtable_size = 64 << 10;
    o.cache_size = 256 << 10;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.compression = SHALE_COMPRESSION_ZSTD;
    o.compression_level = 22;
    shale_db *db = open_ok(&o);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* text_value -- a compressible value for key i (about 200 bytes). */
static size_t text_value(unsigned i, char *buf)
{
    static const char rest[] = "\"tags\": [\"alpha\", \"beta\", \"gamma\", \"delta\"], "
                               "\"bio\": \"nothing much to say here, nothing at all\"}";
    int n = snprintf(buf, 64, "{\"id\": %u, \"name\": \"user-%u\", ", i, i % 977);
    memcpy(buf + n, rest, sizeof rest - 1);
    return (size_t)n + sizeof rest - 1;
}

/* load_text -- n keys with text values from `from` on. */
static void load_text(shale_db *db, unsigned from, unsigned n)
{
    shale_tree *t;
    char k[32], v[200];
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    for (unsigned i = from; i < from + n; i++) {
        int kl = snprintf(k, sizeof k, "doc/%08u", i);
        cr_assert_eq(shale_insert(t, k, (size_t)kl, v, text_value(i, v), NULL), SHALE_OK);
    }
}

/* reopen_stats -- close db (which writes every memtable out), open path
 * again with o and read the stats. */
static shale_db *reopen_stats(shale_db *db, const char *path, const shale_options *o,
                              shale_stats *st)
{
    cr_assert_eq(shale_close(db), SHALE_OK);
    int rc = shale_open(path, o, &db);
    cr_assert_eq(rc, SHALE_OK, "reopen: %s", shale_strerror(rc));
    cr_assert_eq(shale_stats_get(db, st), SHALE_OK);
    return db;
}

/* check_text -- every key of [0, n) reads back its value. */
static void check_text(shale_db *db, unsigned n)
{
    shale_tree *t;
    shale_buf b = SHALE_BUF_INIT;
    char k[32], v[200];
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    for (unsigned i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "doc/%08u", i);
        size_t vl = text_value(i, v);
        cr_assert_eq(shale_get(t, k, (size_t)kl, &b), SHALE_OK, "key %u", i);
        cr_assert(b.len == vl && memcmp(b.data, v, vl) == 0, "key %u", i);
    }
    shale_buf_free(&b);
}

Test(api, compression_shrinks_the_file_and_is_kept_by_the_database)
{
    char plain[300], packed[300];
    shale_options o, d;
    shale_db *db;
    shale_stats st;
    snprintf(plain, sizeof plain, "%s/plain", dir);
    snprintf(packed, sizeof packed, "%s/packed", dir);
    shale_options_default(&o);
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(plain, &o, &db), SHALE_OK);
    load_text(db, 0, 20000);
    db = reopen_stats(db, plain, &o, &st);
    uint64_t plain_pages = st.live_pages;
    cr_assert_eq(st.compression, SHALE_COMPRESSION_NONE);
    cr_assert_eq(st.compressed_leaves, 0);
    cr_assert_gt(st.leaves, 0);
    cr_assert_eq(shale_close(db), SHALE_OK);

    shale_options_default(&d); /* reopened with the defaults, a database keeps its codec */
    d.flush_every_ms = 0;
    for (int codec = SHALE_COMPRESSION_LZ4; codec <= SHALE_COMPRESSION_ZSTD; codec++) {
        tu_rmrf(packed);
        o.compression = codec;
        cr_assert_eq(shale_open(packed, &o, &db), SHALE_OK);
        load_text(db, 0, 20000);
        db = reopen_stats(db, packed, &d, &st);
        cr_assert_lt(st.live_pages * 3, plain_pages, "codec %d: %llu pages, %llu plain", codec,
                     (unsigned long long)st.live_pages, (unsigned long long)plain_pages);
        cr_assert_eq(st.compression, codec);
        cr_assert_gt(st.compressed_leaves, 0);
        uint64_t before = st.compressed_leaves;
        check_text(db, 20000);
        cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
        cr_assert_gt(st.leaf_cache_hits, st.leaf_cache_misses, "reads hit decompressed leaves");
        load_text(db, 20000, 5000);
        db = reopen_stats(db, packed, &d, &st);
        cr_assert_eq(st.compression, codec);
        cr_assert_gt(st.compressed_leaves, before, "new segments are compressed too");
        check_text(db, 25000);
        cr_assert_eq(shale_close(db), SHALE_OK);
    }
}

Test(api, missing_database_without_create_is_enoent)
{
    char path[300];
    shale_options o;
    shale_db *db = NULL;
    snprintf(path, sizeof path, "%s/nope", dir);
    shale_options_default(&o);
    o.create_if_missing = false;
    cr_assert_eq(shale_open(path, &o, &db), SHALE_ENOENT);
    cr_assert_null(db);
    shale_options_default(&o);
    o.read_only = true;
    cr_assert_eq(shale_open(path, &o, &db), SHALE_ENOENT);
    cr_assert_eq(access(path, F_OK), -1, "a read-only open must not create the directory");
}

Test(api, oversized_key_and_value_are_etoobig)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf b = SHALE_BUF_INIT;
    shale_batch *bt;
    shale_iter *it;
    size_t big = SHALE_MAX_KEY_SIZE + 1;
    char *key = malloc(big);
    char small[16] = "tiny";
    cr_assert_not_null(key);
    memset(key, 'k', big);

    cr_assert_eq(shale_insert(t, key, big, "v", 1, NULL), SHALE_ETOOBIG);
    cr_assert_eq(shale_insert(t, key, big, "v", 1, &b), SHALE_ETOOBIG);
    cr_assert_eq(shale_remove(t, key, big, NULL), SHALE_ETOOBIG);
    cr_assert_eq(shale_get(t, key, big, &b), SHALE_ETOOBIG);
    /* The length check comes before any use of the (16-byte) buffer. */
    cr_assert_eq(shale_insert(t, "k", 1, small, SHALE_MAX_VALUE_SIZE + 1, NULL), SHALE_ETOOBIG);
    cr_assert_eq(shale_insert(t, "k", 1, small, SIZE_MAX, NULL), SHALE_ETOOBIG);
    cr_assert_eq(shale_batch_new(&bt), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, t, key, big, "v", 1), SHALE_ETOOBIG);
    cr_assert_eq(shale_batch_remove(bt, t, key, big), SHALE_ETOOBIG);
    cr_assert_eq(shale_batch_insert(bt, t, "k", 1, small, SHALE_MAX_VALUE_SIZE + 1), SHALE_ETOOBIG);
    cr_assert_eq(shale_batch_count(bt), 0, "a rejected write is not added to the batch");
    shale_batch_free(bt);
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    cr_assert_lt(shale_iter_seek(it, key, big), 0);
    shale_iter_close(it);
    /* Nothing was written. */
    expect_s(t, "k", NULL);
    free(key);
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* ---- locking and close ------------------------------------------------------------- */

Test(api, second_open_in_the_same_process_is_ebusy)
{
    shale_db *db = open_ok(NULL), *db2 = NULL;
    cr_assert_eq(shale_open(dir, NULL, &db2), SHALE_EBUSY);
    cr_assert_null(db2);
    shale_options o;
    shale_options_default(&o);
    o.read_only = true;
    cr_assert_eq(shale_open(dir, &o, &db2), SHALE_EBUSY);
    cr_assert_eq(shale_close(db), SHALE_OK);
    /* Released by close. */
    db = open_ok(NULL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* child_open -- in a forked child, open dir; the exit code is -rc (0 = OK). */
static int child_open(void)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        shale_db *db = NULL;
        int rc = shale_open(dir, NULL, &db);
        if (rc == SHALE_OK)
            rc = shale_close(db);
        _exit(rc <= 0 ? -rc : 100);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        cr_assert_eq(errno, EINTR);
    cr_assert(WIFEXITED(status), "the child crashed");
    return -WEXITSTATUS(status);
}

Test(api, second_open_from_another_process_is_ebusy)
{
    shale_db *db = open_ok(NULL);
    put_s(tree_ok(db, NULL), "k", "v");
    int rc = child_open();
    cr_assert_eq(rc, SHALE_EBUSY, "open from a child while the parent holds it: %d (%s)", rc,
                 shale_strerror(rc));
    cr_assert_eq(shale_close(db), SHALE_OK);
    rc = child_open();
    cr_assert_eq(rc, SHALE_OK, "open from a child after close: %d (%s)", rc, shale_strerror(rc));
    db = open_ok(NULL);
    expect_s(tree_ok(db, NULL), "k", "v");
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, close_is_synchronous_so_an_immediate_reopen_succeeds)
{
    shale_options o;
    shale_options_default(&o);
    o.memtable_size = 64 << 10;
    o.max_young_segments = 2;
    o.flush_every_ms = 1;
    char key[32], val[300];
    for (int round = 0; round < 20; round++) {
        shale_db *db = open_ok(&o);
        shale_tree *t = tree_ok(db, "t");
        /* Enough to leave background write-outs and merges running at close. */
        for (int i = 0; i < 400; i++) {
            snprintf(key, sizeof key, "r%02d-%04d", round, i);
            memset(val, 'a' + round % 26, sizeof val);
            cr_assert_eq(shale_insert(t, key, strlen(key), val, sizeof val, NULL), SHALE_OK);
        }
        cr_assert_eq(shale_close(db), SHALE_OK);
    }
    shale_db *db = open_ok(&o);
    shale_tree *t = tree_ok(db, "t");
    shale_buf b = SHALE_BUF_INIT;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 400; i += 37) {
            snprintf(key, sizeof key, "r%02d-%04d", round, i);
            cr_assert_eq(shale_get(t, key, strlen(key), &b), SHALE_OK, "%s lost", key);
            cr_assert_eq(b.len, sizeof val);
            cr_assert_eq(((char *)b.data)[0], 'a' + round % 26);
        }
    }
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* ---- keys, values, trees ------------------------------------------------------------ */

Test(api, empty_key_and_empty_value_are_distinct_from_absent)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf b = SHALE_BUF_INIT;

    cr_assert_eq(shale_get(t, "", 0, &b), SHALE_NOTFOUND);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(shale_insert(t, "", 0, "empty-key", 9, NULL), SHALE_OK);
    cr_assert_eq(shale_insert(t, "e", 1, "", 0, NULL), SHALE_OK);
    cr_assert_eq(shale_insert(t, "n", 1, NULL, 0, NULL), SHALE_OK); /* NULL, 0 = "" */
    for (int pass = 0; pass < 2; pass++) {
        cr_assert_eq(shale_get(t, NULL, 0, &b), SHALE_OK);
        cr_assert(b.len == 9 && memcmp(b.data, "empty-key", 9) == 0);
        b.len = 77;
        cr_assert_eq(shale_get(t, "e", 1, &b), SHALE_OK, "an empty value is a value");
        cr_assert_eq(b.len, 0);
        cr_assert_eq(shale_get(t, "n", 1, &b), SHALE_OK);
        cr_assert_eq(b.len, 0);
        cr_assert_eq(shale_get(t, "x", 1, &b), SHALE_NOTFOUND);
        /* The empty key is the first key; an empty value iterates as one. */
        shale_iter *it;
        cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
        cr_assert_eq(shale_iter_first(it), SHALE_OK);
        size_t kl = 99, vl = 99;
        cr_assert_not_null(shale_iter_key(it, &kl));
        cr_assert_eq(kl, 0);
        cr_assert_eq(shale_iter_next(it), SHALE_OK);
        cr_assert_not_null(shale_iter_value(it, &vl));
        cr_assert_eq(vl, 0);
        shale_iter_close(it);
        /* Survives a reopen (written out to a segment by close). */
        cr_assert_eq(shale_close(db), SHALE_OK);
        db = open_ok(NULL);
        t = tree_ok(db, NULL);
    }
    /* Removing them makes them absent. */
    cr_assert_eq(shale_remove(t, "", 0, &b), SHALE_OK);
    cr_assert(b.len == 9);
    cr_assert_eq(shale_remove(t, "e", 1, &b), SHALE_OK);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(shale_get(t, "", 0, &b), SHALE_NOTFOUND);
    cr_assert_eq(shale_get(t, "e", 1, &b), SHALE_NOTFOUND);
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, insert_and_remove_with_old_report_the_previous_value)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf old = SHALE_BUF_INIT;

    cr_assert_eq(shale_insert(t, "k", 1, "one", 3, &old), SHALE_NOTFOUND, "no previous value");
    cr_assert_eq(old.len, 0);
    expect_s(t, "k", "one");
    cr_assert_eq(shale_insert(t, "k", 1, "two", 3, &old), SHALE_OK);
    cr_assert(old.len == 3 && memcmp(old.data, "one", 3) == 0);
    cr_assert_eq(shale_remove(t, "k", 1, &old), SHALE_OK);
    cr_assert(old.len == 3 && memcmp(old.data, "two", 3) == 0);
    expect_s(t, "k", NULL);
    cr_assert_eq(shale_remove(t, "k", 1, &old), SHALE_NOTFOUND);
    cr_assert_eq(shale_remove(t, "k", 1, NULL), SHALE_OK, "a blind remove of an absent key is OK");
    cr_assert_eq(shale_insert(t, "k", 1, "3", 1, NULL), SHALE_OK);
    shale_buf_free(&old);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, a_large_enough_buffer_is_reused)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf b = SHALE_BUF_INIT;
    char big[1000];
    memset(big, 'b', sizeof big);
    cr_assert_eq(shale_insert(t, "big", 3, big, sizeof big, NULL), SHALE_OK);
    put_s(t, "small", "s");
    cr_assert_eq(shale_get(t, "big", 3, &b), SHALE_OK);
    cr_assert_geq(b.cap, sizeof big);
    void *data = b.data;
    cr_assert_eq(shale_get(t, "small", 5, &b), SHALE_OK);
    cr_assert_eq(b.data, data, "a buffer large enough is not reallocated");
    cr_assert_eq(b.len, 1);
    shale_buf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.cap, 0);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, named_trees_are_separate_and_persist_across_reopen)
{
    shale_db *db = open_ok(NULL);
    shale_tree *a = tree_ok(db, "alpha"), *b = tree_ok(db, "beta"), *d = tree_ok(db, NULL);
    cr_assert_eq(tree_ok(db, "alpha"), a, "the same name gives the same handle");
    cr_assert_eq(tree_ok(db, ""), d, "\"\" is the default tree");
    put_s(a, "k", "in-alpha");
    put_s(b, "k", "in-beta");
    put_s(d, "k", "in-default");
    put_s(a, "only-alpha", "1");
    expect_s(b, "only-alpha", NULL);
    cr_assert_eq(shale_close(db), SHALE_OK);

    db = open_ok(NULL);
    a = tree_ok(db, "alpha");
    b = tree_ok(db, "beta");
    d = tree_ok(db, NULL);
    expect_s(a, "k", "in-alpha");
    expect_s(b, "k", "in-beta");
    expect_s(d, "k", "in-default");
    expect_s(a, "only-alpha", "1");
    expect_s(d, "only-alpha", NULL);
    /* A scan of one tree sees only its keys. */
    shale_iter *it;
    cr_assert_eq(shale_iter_open(b, &it), SHALE_OK);
    cr_assert_eq(shale_iter_first(it), SHALE_OK);
    cr_assert_eq(shale_iter_next(it), SHALE_NOTFOUND);
    shale_iter_close(it);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, drop_tree_removes_every_key)
{
    shale_db *db = open_ok(NULL);
    shale_tree *a = tree_ok(db, "alpha"), *b = tree_ok(db, "beta");
    char key[16];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "k%04d", i);
        put_s(a, key, "a");
        put_s(b, key, "b");
    }
    cr_assert_eq(shale_flush(db), SHALE_OK);
    cr_assert_eq(shale_drop_tree(db, "alpha"), SHALE_OK);
    cr_assert_eq(shale_drop_tree(db, "alpha"), SHALE_NOTFOUND);
    cr_assert_eq(shale_drop_tree(db, "never-made"), SHALE_NOTFOUND);
    a = tree_ok(db, "alpha");
    expect_s(a, "k0000", NULL);
    expect_s(b, "k0000", "b");
    shale_iter *it;
    cr_assert_eq(shale_iter_open(a, &it), SHALE_OK);
    cr_assert_eq(shale_iter_first(it), SHALE_NOTFOUND, "a re-created tree starts empty");
    shale_iter_close(it);
    put_s(a, "new", "n");
    cr_assert_eq(shale_close(db), SHALE_OK);

    db = open_ok(NULL);
    a = tree_ok(db, "alpha");
    b = tree_ok(db, "beta");
    expect_s(a, "k0499", NULL);
    expect_s(a, "new", "n");
    expect_s(b, "k0499", "b");
    /* The default tree cannot be dropped: it is cleared. */
    shale_tree *d = tree_ok(db, NULL);
    put_s(d, "d", "1");
    cr_assert_eq(shale_drop_tree(db, NULL), SHALE_OK);
    expect_s(tree_ok(db, NULL), "d", NULL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, batch_is_applied_in_order_across_trees)
{
    shale_db *db = open_ok(NULL);
    shale_tree *a = tree_ok(db, "a"), *b = tree_ok(db, "b");
    shale_batch *bt;
    put_s(b, "gone", "x");
    cr_assert_eq(shale_batch_new(&bt), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, a, "k", 1, "first", 5), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, b, "k", 1, "b", 1), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, a, "k", 1, "second", 6), SHALE_OK);
    cr_assert_eq(shale_batch_remove(bt, b, "gone", 4), SHALE_OK);
    cr_assert_eq(shale_batch_count(bt), 4);
    cr_assert_eq(shale_batch_apply(db, bt), SHALE_OK);
    expect_s(a, "k", "second");
    expect_s(b, "k", "b");
    expect_s(b, "gone", NULL);
    /* The batch is left as it was: applying it again is fine. */
    cr_assert_eq(shale_batch_count(bt), 4);
    shale_batch_clear(bt);
    cr_assert_eq(shale_batch_count(bt), 0);
    shale_batch_free(bt);

    /* A batch cannot mix trees of two databases. */
    char dir2[256];
    cr_assert_eq(tu_tmpdir(dir2, sizeof dir2), 0);
    shale_db *db2;
    cr_assert_eq(shale_open(dir2, NULL, &db2), SHALE_OK);
    shale_tree *c = tree_ok(db2, NULL);
    cr_assert_eq(shale_batch_new(&bt), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, a, "k", 1, "v", 1), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, c, "k", 1, "v", 1), SHALE_EINVAL);
    cr_assert_eq(shale_batch_apply(db2, bt), SHALE_EINVAL, "a batch of db's trees applied to db2");
    shale_batch_free(bt);
    cr_assert_eq(shale_close(db2), SHALE_OK);
    tu_rmrf(dir2);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* ---- iterators on a known set ------------------------------------------------------- */

static const char *const known[] = {"", "a", "ab", "abc", "b", "ba", "c"};
#define NKNOWN (sizeof known / sizeof known[0])

static void fill_known(shale_tree *t)
{
    char v[8];
    for (size_t i = 0; i < NKNOWN; i++) {
        snprintf(v, sizeof v, "v%s", known[i]);
        put_s(t, known[i], v);
    }
    put_s(t, "zz-removed", "x");
    cr_assert_eq(shale_remove(t, "zz-removed", 10, NULL), SHALE_OK);
}

static void iterator_checks(shale_tree *t)
{
    shale_iter *it;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    /* Unpositioned: next/prev find nothing, no key. */
    expect_at(it, shale_iter_next(it), NULL);
    expect_at(it, shale_iter_prev(it), NULL);
    /* Forward and backward over everything. */
    int rc = shale_iter_first(it);
    for (size_t i = 0; i < NKNOWN; i++, rc = shale_iter_next(it))
        expect_at(it, rc, known[i]);
    expect_at(it, rc, NULL);
    rc = shale_iter_last(it);
    for (size_t i = NKNOWN; i-- > 0; rc = shale_iter_prev(it))
        expect_at(it, rc, known[i]);
    expect_at(it, rc, NULL);
    /* Seeks. */
    expect_at(it, shale_iter_seek(it, "", 0), "");
    expect_at(it, shale_iter_seek(it, "ab", 2), "ab");
    expect_at(it, shale_iter_seek(it, "aa", 2), "ab");
    expect_at(it, shale_iter_seek(it, "abd", 3), "b");
    expect_at(it, shale_iter_seek(it, "c", 1), "c");
    expect_at(it, shale_iter_seek(it, "c\0", 2), NULL);
    expect_at(it, shale_iter_seek_prev(it, "c\0", 2), "c");
    expect_at(it, shale_iter_seek_prev(it, "abd", 3), "abc");
    expect_at(it, shale_iter_seek_prev(it, "ab", 2), "ab");
    expect_at(it, shale_iter_seek_prev(it, "\0", 1), "");
    expect_at(it, shale_iter_seek_prev(it, "", 0), "");
    /* Direction changes. */
    expect_at(it, shale_iter_seek(it, "b", 1), "b");
    expect_at(it, shale_iter_prev(it), "abc");
    expect_at(it, shale_iter_next(it), "b");
    expect_at(it, shale_iter_next(it), "ba");
    expect_at(it, shale_iter_prev(it), "b");
    expect_at(it, shale_iter_seek_prev(it, "a", 1), "a");
    expect_at(it, shale_iter_prev(it), "");
    expect_at(it, shale_iter_prev(it), NULL);
    /* Bounds [lo, hi). */
    cr_assert_eq(shale_iter_set_bounds(it, "ab", 2, "ba", 2), SHALE_OK);
    expect_at(it, shale_iter_next(it), NULL); /* set_bounds unpositions */
    expect_at(it, shale_iter_first(it), "ab");
    expect_at(it, shale_iter_prev(it), NULL);
    expect_at(it, shale_iter_last(it), "b");
    expect_at(it, shale_iter_next(it), NULL);
    expect_at(it, shale_iter_seek(it, "", 0), "ab");
    expect_at(it, shale_iter_seek(it, "b\0", 2), NULL);
    expect_at(it, shale_iter_seek_prev(it, "zzz", 3), "b");
    expect_at(it, shale_iter_seek_prev(it, "aa", 2), NULL);
    cr_assert_eq(shale_iter_set_bounds(it, NULL, 0, "b", 1), SHALE_OK);
    expect_at(it, shale_iter_last(it), "abc");
    expect_at(it, shale_iter_first(it), "");
    cr_assert_eq(shale_iter_set_bounds(it, "b", 1, NULL, 0), SHALE_OK);
    expect_at(it, shale_iter_first(it), "b");
    expect_at(it, shale_iter_last(it), "c");
    cr_assert_eq(shale_iter_set_bounds(it, "b", 1, "b", 1), SHALE_OK);
    expect_at(it, shale_iter_first(it), NULL);
    expect_at(it, shale_iter_last(it), NULL);
    cr_assert_eq(shale_iter_set_bounds(it, "", 0, NULL, 0), SHALE_OK);
    expect_at(it, shale_iter_first(it), "");
    shale_iter_close(it);
}

Test(api, iterator_moves_on_a_small_known_set)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    fill_known(t);
    tree_ok(db, "other");
    put_s(tree_ok(db, "other"), "b0", "other tree");
    iterator_checks(t); /* from the memtable */
    cr_assert_eq(shale_close(db), SHALE_OK);
    db = open_ok(NULL);
    iterator_checks(tree_ok(db, NULL)); /* from a segment */
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, iterator_sees_the_snapshot_taken_at_open)
{
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    fill_known(t);
    shale_iter *it;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    put_s(t, "aa", "vaa");
    cr_assert_eq(shale_remove(t, "b", 1, NULL), SHALE_OK);
    put_s(t, "c", "changed");
    cr_assert_eq(shale_flush(db), SHALE_OK);
    int rc = shale_iter_first(it);
    for (size_t i = 0; i < NKNOWN; i++, rc = shale_iter_next(it))
        expect_at(it, rc, known[i]);
    expect_at(it, rc, NULL);
    shale_iter_close(it);
    expect_s(t, "aa", "vaa");
    expect_s(t, "b", NULL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* ---- read-only ------------------------------------------------------------------- */

Test(api, read_only_open_reads_but_rejects_writes)
{
    shale_db *db = open_ok(NULL);
    put_s(tree_ok(db, "t"), "k", "v");
    cr_assert_eq(shale_close(db), SHALE_OK);

    shale_options o;
    shale_options_default(&o);
    o.read_only = true;
    db = open_ok(&o);
    shale_tree *t = tree_ok(db, "t"), *x;
    shale_buf old = SHALE_BUF_INIT;
    shale_batch *bt;
    expect_s(t, "k", "v");
    cr_assert_eq(shale_insert(t, "k2", 2, "v", 1, NULL), SHALE_EREADONLY);
    cr_assert_eq(shale_insert(t, "k", 1, "w", 1, &old), SHALE_EREADONLY);
    cr_assert_eq(shale_remove(t, "k", 1, NULL), SHALE_EREADONLY);
    cr_assert_eq(shale_remove(t, "k", 1, &old), SHALE_EREADONLY);
    cr_assert_eq(shale_batch_new(&bt), SHALE_OK);
    cr_assert_eq(shale_batch_insert(bt, t, "k", 1, "w", 1), SHALE_OK);
    cr_assert_eq(shale_batch_apply(db, bt), SHALE_EREADONLY);
    shale_batch_free(bt);
    cr_assert_eq(shale_drop_tree(db, "t"), SHALE_EREADONLY);
    cr_assert_eq(shale_open_tree(db, "missing", &x), SHALE_EREADONLY);
    expect_s(t, "k", "v");
    shale_buf_free(&old);
    cr_assert_eq(shale_close(db), SHALE_OK);
    /* Nothing changed on disk. */
    db = open_ok(NULL);
    t = tree_ok(db, "t");
    expect_s(t, "k", "v");
    expect_s(t, "k2", NULL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, read_only_open_recovers_a_log_without_changing_files)
{
    /* A child writes, flushes and is killed: the directory holds a log. */
    fflush(NULL);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        shale_db *db;
        shale_tree *t;
        char ok = 1;
        close(fds[0]);
        if (shale_open(dir, NULL, &db) || shale_open_tree(db, "t", &t) ||
            shale_insert(t, "k", 1, "logged", 6, NULL) || shale_flush(db) ||
            write(fds[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    char ok = 0;
    ssize_t got = read(fds[0], &ok, 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    cr_assert_eq(got, 1, "the child failed");

    char listing[2][4096];
    for (int pass = 0; pass < 2; pass++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "cd '%s' && ls -l --time-style=+%%s%%N | grep -v LOCK", dir);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t n = fread(listing[pass], 1, sizeof listing[pass] - 1, p);
        listing[pass][n] = 0;
        pclose(p);
        if (pass == 1)
            break;
        shale_options o;
        shale_options_default(&o);
        o.read_only = true;
        shale_db *db = open_ok(&o);
        expect_s(tree_ok(db, "t"), "k", "logged");
        cr_assert_eq(shale_close(db), SHALE_OK);
    }
    cr_assert_str_eq(listing[0], listing[1], "a read-only open changed the files");
    /* A normal open recovers the same. */
    shale_db *db = open_ok(NULL);
    expect_s(tree_ok(db, "t"), "k", "logged");
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, page_size_is_fixed_at_creation)
{
    shale_options o;
    shale_options_default(&o);
    o.page_size = 1024;
    shale_db *db = open_ok(&o);
    put_s(tree_ok(db, NULL), "k", "v");
    cr_assert_eq(shale_close(db), SHALE_OK);
    o.page_size = 16384;
    db = open_ok(&o);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_assert_eq(st.page_size, 1024, "the page size given at a later open is ignored");
    expect_s(tree_ok(db, NULL), "k", "v");
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, opening_a_regular_file_is_an_error)
{
    char path[300];
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not a database", f);
    fclose(f);
    shale_db *db = NULL;
    int rc = shale_open(path, NULL, &db);
    cr_assert_lt(rc, 0, "open of a regular file: %d", rc);
    cr_assert_null(db);
    /* A directory holding garbage as its page file. */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/db", dir);
    cr_assert_eq(mkdir(sub, 0755), 0);
    snprintf(path, sizeof path, "%s/db/data", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 3000; i++)
        fputs("garbage!", f);
    fclose(f);
    rc = shale_open(sub, NULL, &db);
    cr_assert(rc == SHALE_ECORRUPT || rc == SHALE_EFORMAT, "open of a garbage page file: %d (%s)",
              rc, shale_strerror(rc));
}

/* ---- error strings ------------------------------------------------------------------ */

Test(api, strerror_names_every_code)
{
    static const int codes[] = {SHALE_OK,        SHALE_NOTFOUND,  SHALE_EINVAL,    SHALE_EIO,
                                SHALE_ECORRUPT,  SHALE_ENOMEM,    SHALE_EBUSY,     SHALE_ETOOBIG,
                                SHALE_EMISMATCH, SHALE_ECONFLICT, SHALE_EREADONLY, SHALE_ENOSPC,
                                SHALE_EEXIST,    SHALE_ENOENT,    SHALE_EFORMAT};
    const size_t n = sizeof codes / sizeof codes[0];
    const char *unknown = shale_strerror(-9999);
    cr_assert_not_null(unknown);
    cr_assert_not_null(shale_strerror(12345));
    for (size_t i = 0; i < n; i++) {
        const char *s = shale_strerror(codes[i]);
        cr_assert(s && *s, "code %d has no message", codes[i]);
        cr_assert_str_neq(s, unknown, "code %d is unnamed", codes[i]);
        cr_assert_eq(shale_strerror(codes[i]), s, "the message is static");
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(s, shale_strerror(codes[j]), "codes %d and %d share a message",
                              codes[i], codes[j]);
    }
}

/* ---- big things ---------------------------------------------------------------------- */

Test(api, value_of_64_mib_round_trips)
{
    size_t n = (size_t)64 << 20;
    uint8_t *v = malloc(n);
    cr_assert_not_null(v);
    tu_rng r;
    tu_rng_seed(&r, 64);
    tu_rng_bytes(&r, v, n);
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf b = SHALE_BUF_INIT;
    cr_assert_eq(shale_insert(t, "big", 3, v, n, NULL), SHALE_OK);
    put_s(t, "after", "a");
    cr_assert_eq(shale_get(t, "big", 3, &b), SHALE_OK);
    cr_assert(b.len == n && memcmp(b.data, v, n) == 0, "the value differs before a reopen");
    cr_assert_eq(shale_close(db), SHALE_OK);
    db = open_ok(NULL);
    t = tree_ok(db, NULL);
    memset(b.data, 0, b.len);
    cr_assert_eq(shale_get(t, "big", 3, &b), SHALE_OK);
    cr_assert(b.len == n && memcmp(b.data, v, n) == 0, "the value differs after a reopen");
    shale_iter *it;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    cr_assert_eq(shale_iter_seek(it, "b", 1), SHALE_OK);
    size_t vl;
    const void *iv = shale_iter_value(it, &vl);
    cr_assert(vl == n && memcmp(iv, v, n) == 0, "the iterator's value differs");
    shale_iter_close(it);
    expect_s(t, "after", "a");
    shale_buf_free(&b);
    free(v);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(api, key_of_exactly_the_maximum_size_round_trips)
{
    size_t n = SHALE_MAX_KEY_SIZE;
    uint8_t *k = malloc(n), *k2 = malloc(n);
    cr_assert(k && k2);
    memset(k, 'K', n);
    memcpy(k2, k, n);
    k2[n - 1] = 'L';
    shale_db *db = open_ok(NULL);
    shale_tree *t = tree_ok(db, NULL);
    shale_buf b = SHALE_BUF_INIT;
    cr_assert_eq(shale_insert(t, k, n, "max", 3, NULL), SHALE_OK);
    cr_assert_eq(shale_insert(t, k2, n, "max2", 4, NULL), SHALE_OK);
    cr_assert_eq(shale_insert(t, k, n - 1, "max-1", 5, NULL), SHALE_OK);
    for (int pass = 0; pass < 2; pass++) {
        cr_assert_eq(shale_get(t, k, n, &b), SHALE_OK);
        cr_assert(b.len == 3 && memcmp(b.data, "max", 3) == 0);
        cr_assert_eq(shale_get(t, k, n - 1, &b), SHALE_OK);
        cr_assert(b.len == 5 && memcmp(b.data, "max-1", 5) == 0);
        shale_iter *it;
        cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
        cr_assert_eq(shale_iter_seek(it, k, n), SHALE_OK);
        size_t kl;
        const void *ik = shale_iter_key(it, &kl);
        cr_assert(kl == n && memcmp(ik, k, n) == 0);
        cr_assert_eq(shale_iter_next(it), SHALE_OK);
        ik = shale_iter_key(it, &kl);
        cr_assert(kl == n && memcmp(ik, k2, n) == 0);
        cr_assert_eq(shale_iter_prev(it), SHALE_OK);
        cr_assert_eq(shale_iter_prev(it), SHALE_OK);
        ik = shale_iter_key(it, &kl);
        cr_assert_eq(kl, n - 1);
        shale_iter_close(it);
        cr_assert_eq(shale_close(db), SHALE_OK);
        db = open_ok(NULL);
        t = tree_ok(db, NULL);
    }
    cr_assert_eq(shale_remove(t, k, n, &b), SHALE_OK);
    cr_assert_eq(shale_get(t, k, n, &b), SHALE_NOTFOUND);
    shale_buf_free(&b);
    free(k);
    free(k2);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* ---- shale_compact -------------------------------------------------------- */

/* tree_dump -- every key and value of tree `name` as "k=v;" text (malloc'd). */
static char *tree_dump(shale_db *db, const char *name)
{
    shale_tree *t;
    shale_iter *it;
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    cr_assert_eq(shale_open_tree(db, name, &t), SHALE_OK);
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    for (int rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it)) {
        size_t kl, vl;
        const char *k = shale_iter_key(it, &kl), *v = shale_iter_value(it, &vl);
        while (len + kl + vl + 3 > cap)
            out = realloc(out, cap *= 2);
        memcpy(out + len, k, kl);
        len += kl;
        out[len++] = '=';
        memcpy(out + len, v, vl);
        len += vl;
        out[len++] = ';';
    }
    shale_iter_close(it);
    out[len] = 0;
    return out;
}

/* open_ro_stats -- the database at path, read-only, and its stats. */
static shale_db *open_ro_stats(const char *path, shale_stats *st)
{
    shale_options ro;
    shale_db *db;
    shale_options_default(&ro);
    ro.read_only = true;
    cr_assert_eq(shale_open(path, &ro, &db), SHALE_OK);
    cr_assert_eq(shale_stats_get(db, st), SHALE_OK);
    return db;
}

Test(api, compact_copies_every_tree_into_a_file_without_free_space, .timeout = 300)
{
    char src[300], dst[300], fault[200];
    shale_options o;
    shale_db *db;
    shale_tree *t[3];
    const char *names[3] = {"alpha", "beta", "gamma"};
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.page_size = 1024;
    o.level_factor = 3;
    o.compression = SHALE_COMPRESSION_LZ4;
    cr_assert_eq(shale_open(src, &o, &db), SHALE_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shale_open_tree(db, names[i], &t[i]), SHALE_OK);
    char k[32], v[600];
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(k, sizeof k, "k%06d", (i * 7919) % 20000);
        size_t vl = (size_t)snprintf(v, sizeof v, "value %d %s", i, i % 50 ? "" : "........");
        cr_assert_eq(shale_insert(t[i % 3], k, (size_t)n, v, vl, NULL), SHALE_OK);
        if (i % 5 == 0)
            cr_assert_eq(shale_remove(t[(i + 1) % 3], k, (size_t)n, NULL), SHALE_OK);
    }
    cr_assert_eq(shale_drop_tree(db, "beta"), SHALE_OK);
    char *want[3] = {tree_dump(db, "alpha"), NULL, tree_dump(db, "gamma")};
    cr_assert_eq(shale_close(db), SHALE_OK);

    cr_assert_eq(shale_compact(src, dst, NULL, NULL), SHALE_OK);
    cr_assert_eq(tu_verify(dst, fault, sizeof fault), SHALE_OK, "%s", fault);
    cr_assert_eq(tu_verify(src, fault, sizeof fault), SHALE_OK, "%s", fault);
    shale_stats st;
    db = open_ro_stats(dst, &st);
    cr_assert_eq(st.compression, SHALE_COMPRESSION_LZ4);
    cr_assert_eq(st.page_size, 1024);
    cr_assert_eq(st.free_pages, 0, "no free blocks");
    cr_assert_eq(st.segments, 1);
    for (int i = 0; i < 3; i += 2) {
        char *got = tree_dump(db, names[i]);
        cr_assert_str_eq(got, want[i], "tree %s", names[i]);
        free(got);
    }
    cr_assert_eq(shale_open_tree(db, "beta", &t[1]), SHALE_EREADONLY, "dropped stays dropped");
    cr_assert_eq(shale_close(db), SHALE_OK);

    /* a new tree in the copy gets a fresh id: the others are unchanged */
    cr_assert_eq(shale_open(dst, NULL, &db), SHALE_OK);
    shale_tree *nt;
    cr_assert_eq(shale_open_tree(db, "delta", &nt), SHALE_OK);
    cr_assert_eq(shale_insert(nt, "k000001", 7, "new", 3, NULL), SHALE_OK);
    char *again = tree_dump(db, "alpha");
    cr_assert_str_eq(again, want[0]);
    free(again);
    cr_assert_eq(shale_close(db), SHALE_OK);

    /* an existing destination is refused and left alone */
    cr_assert_eq(shale_compact(src, dst, NULL, NULL), SHALE_EEXIST);
    cr_assert_eq(tu_verify(dst, fault, sizeof fault), SHALE_OK, "%s", fault);
    snprintf(dst, sizeof dst, "%s/missing-src", dir);
    cr_assert_eq(shale_compact(dst, src, NULL, NULL), SHALE_ENOENT);
    cr_assert_eq(shale_compact(NULL, src, NULL, NULL), SHALE_EINVAL);
    free(want[0]);
    free(want[2]);
}

static void count_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    *(uint64_t *)ctx = done;
}

Test(api, compacting_an_emptied_database_leaves_a_few_pages)
{
    char src[300], dst[300];
    shale_db *db;
    shale_tree *t;
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);
    shale_options o;
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    cr_assert_eq(shale_open(src, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    char k[32];
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 30000; i++) {
            int n = snprintf(k, sizeof k, "key%07d", i);
            if (pass == 0)
                cr_assert_eq(shale_insert(t, k, (size_t)n, "some value of forty bytes or so......",
                                          38, NULL),
                             SHALE_OK);
            else
                cr_assert_eq(shale_remove(t, k, (size_t)n, NULL), SHALE_OK);
        }
    cr_assert_eq(shale_close(db), SHALE_OK);
    uint64_t done = UINT64_MAX;
    cr_assert_eq(shale_compact(src, dst, count_progress, &done), SHALE_OK);
    cr_assert_lt(done, 10, "only catalog entries were live: %llu", (unsigned long long)done);
    shale_stats st;
    db = open_ro_stats(dst, &st);
    cr_assert_leq(st.file_pages, 8, "%llu pages", (unsigned long long)st.file_pages);
    cr_assert_eq(shale_close(db), SHALE_OK);
}
