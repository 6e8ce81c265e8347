/*
 * test_memenv.c -- the in-memory test env keeps its durability model (what a
 * power loss keeps, drops and tears), injects faults exactly where asked, and
 * kills handles on a crash.  Also the testutil helpers.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/space/env.h"
#include "../support/memenv.h"
#include "../support/testutil.h"
#include "shale.h"

static memenv *m;
static sp_env *env;

static void setup(void)
{
    m = memenv_create();
    cr_assert_not_null(m);
    env = memenv_env(m);
    cr_assert_eq(env->mkdir(env, "/db"), SHALE_OK);
}

static void teardown(void)
{
    memenv_destroy(m);
}

TestSuite(memenv, .init = setup, .fini = teardown);

/* put -- open (creating) path and write n bytes at off; optionally sync. */
static void put(const char *path, const void *data, size_t n, uint64_t off, bool sync)
{
    sp_file *f;
    cr_assert_eq(env->open(env, path, SP_O_CREATE, &f), SHALE_OK);
    cr_assert_eq(env->write(f, data, n, off), SHALE_OK);
    if (sync)
        cr_assert_eq(env->sync(f), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_OK);
}

/* fresh -- replace the env by an empty one with /db. */
static void fresh(void)
{
    memenv_destroy(m);
    setup();
}

/* durable_file -- /db/f with n bytes of data, file and name durable. */
static void durable_file(const uint8_t *data, size_t n)
{
    put("/db/f", data, n, 0, true);
    cr_assert_eq(env->sync_dir(env, "/db"), SHALE_OK);
}

/* contents -- the current bytes of path (caller frees). */
static uint8_t *contents(const char *path, size_t *len)
{
    uint8_t *p;
    cr_assert_eq(memenv_file_bytes(m, path, &p, len), SHALE_OK, "no file %s", path);
    return p;
}

Test(memenv, write_read_round_trip)
{
    sp_file *f;
    char buf[32];
    uint64_t size;

    cr_assert_eq(env->open(env, "/db/a", 0, &f), SHALE_ENOENT);
    cr_assert_eq(env->open(env, "/nodir/a", SP_O_CREATE, &f), SHALE_ENOENT);
    cr_assert_eq(env->open(env, "/db/a", SP_O_CREATE, &f), SHALE_OK);
    cr_assert_eq(env->write(f, "hello", 5, 0), SHALE_OK);
    cr_assert_eq(env->write(f, "world", 5, 10), SHALE_OK);
    cr_assert_eq(env->size(f, &size), SHALE_OK);
    cr_assert_eq(size, 15);
    cr_assert_eq(env->read(f, buf, 15, 0), SHALE_OK);
    cr_assert_eq(memcmp(buf, "hello\0\0\0\0\0world", 15), 0);
    cr_assert_eq(env->read(f, buf, 10, 10), SHALE_ECORRUPT); /* past the end */
    cr_assert_eq(memcmp(buf, "world", 5), 0);
    cr_assert_eq(env->truncate(f, 3), SHALE_OK);
    cr_assert_eq(env->size(f, &size), SHALE_OK);
    cr_assert_eq(size, 3);
    cr_assert_eq(env->truncate(f, 8), SHALE_OK); /* extends with zeroes */
    cr_assert_eq(env->read(f, buf, 8, 0), SHALE_OK);
    cr_assert_eq(memcmp(buf, "hel\0\0\0\0\0", 8), 0);
    cr_assert_eq(env->close(f), SHALE_OK);

    cr_assert_eq(env->open(env, "/db/a", SP_O_CREATE | SP_O_EXCL, &f), SHALE_EEXIST);
    cr_assert_eq(env->open(env, "/db/a", SP_O_RDONLY, &f), SHALE_OK);
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_EIO);
    cr_assert_eq(env->read(f, buf, 3, 0), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_OK);

    cr_assert_eq(env->exists(env, "/db/a"), 1);
    cr_assert_eq(env->exists(env, "/db"), 1);
    cr_assert_eq(env->exists(env, "/db/"), 1);
    cr_assert_eq(env->exists(env, "/"), 1);
    cr_assert_eq(env->exists(env, "/db/b"), 0);
    cr_assert_eq(env->mkdir(env, "/db"), SHALE_EEXIST);
    cr_assert_eq(env->mkdir(env, "/db/a"), SHALE_EEXIST);
    cr_assert_eq(env->open(env, "/db", SP_O_CREATE, &f), SHALE_EIO);
    cr_assert_eq(env->remove(env, "/db"), SHALE_EIO); /* not empty */
    cr_assert_eq(env->remove(env, "/db/a"), SHALE_OK);
    cr_assert_eq(env->remove(env, "/db/a"), SHALE_ENOENT);
    cr_assert_eq(env->exists(env, "/db/a"), 0);
}

Test(memenv, synced_data_survives_power_loss)
{
    uint8_t data[3000], *got;
    size_t len;
    tu_rng r;

    tu_rng_seed(&r, 1);
    tu_rng_bytes(&r, data, sizeof(data));
    durable_file(data, sizeof(data));
    for (uint64_t seed = 0; seed < 20; seed++) {
        cr_assert_eq(memenv_power_loss(m, seed), SHALE_OK);
        got = contents("/db/f", &len);
        cr_assert_eq(len, sizeof(data));
        cr_assert_eq(memcmp(got, data, len), 0);
        free(got);
    }
    /* A synced overwrite of durable bytes is durable. */
    memset(data + 1000, 0x77, 600);
    put("/db/f", data + 1000, 600, 1000, true);
    cr_assert_eq(memenv_power_loss(m, 3), SHALE_OK);
    got = contents("/db/f", &len);
    cr_assert_eq(len, sizeof(data));
    cr_assert_eq(memcmp(got, data, len), 0);
    free(got);
    /* A synced truncate is durable too. */
    sp_file *f;
    cr_assert_eq(env->open(env, "/db/f", 0, &f), SHALE_OK);
    cr_assert_eq(env->truncate(f, 700), SHALE_OK);
    cr_assert_eq(env->sync(f), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 5), SHALE_OK);
    got = contents("/db/f", &len);
    cr_assert_eq(len, 700);
    cr_assert_eq(memcmp(got, data, len), 0);
    free(got);
}

/* Over many seeds an unsynced write over durable data is dropped, kept and
 * torn, and every 512-byte-aligned piece of it is all old or all new. */
Test(memenv, unsynced_writes_are_dropped_kept_or_torn_by_sector)
{
    enum { SIZE = 4096, OFF = 100, LEN = 3000 };
    uint8_t old[SIZE], upd[LEN], *got;
    int seen[3] = {0, 0, 0}; /* dropped, kept, torn */
    size_t len;
    tu_rng r;

    tu_rng_seed(&r, 2);
    tu_rng_bytes(&r, old, sizeof(old));
    for (size_t i = 0; i < LEN; i++)
        upd[i] = (uint8_t)(old[OFF + i] ^ 0x5a); /* differs at every byte */
    for (uint64_t seed = 0; seed < 300; seed++) {
        fresh();
        durable_file(old, SIZE);
        put("/db/f", upd, LEN, OFF, false);
        cr_assert_eq(memenv_power_loss(m, seed), SHALE_OK);
        got = contents("/db/f", &len);
        cr_assert_eq(len, SIZE);
        cr_assert_eq(memcmp(got, old, OFF), 0);
        cr_assert_eq(memcmp(got + OFF + LEN, old + OFF + LEN, SIZE - OFF - LEN), 0);
        int kept = 0, pieces = 0;
        for (size_t s = OFF; s < OFF + LEN; pieces++) {
            size_t e = (s / 512 + 1) * 512 < OFF + LEN ? (s / 512 + 1) * 512 : OFF + LEN;
            bool is_new = memcmp(got + s, upd + (s - OFF), e - s) == 0;
            cr_assert(is_new || memcmp(got + s, old + s, e - s) == 0,
                      "seed %llu: piece at %zu mixes old and new", (unsigned long long)seed, s);
            kept += is_new;
            s = e;
        }
        seen[kept == 0 ? 0 : kept == pieces ? 1 : 2]++;
        free(got);
    }
    /* About 100 each; a torn write looks dropped or kept with chance 1/128. */
    cr_assert(seen[0] > 60 && seen[1] > 60 && seen[2] > 60, "dropped %d kept %d torn %d", seen[0],
              seen[1], seen[2]);
}

/* An unsynced append leaves the durable size extended only by kept pieces;
 * a dropped piece before a kept one reads as zeroes. */
Test(memenv, unsynced_extension_follows_kept_sectors)
{
    enum { BASE = 1000, LEN = 3000 };
    uint8_t old[BASE], upd[LEN], *got;
    bool sizes[BASE + LEN + 1] = {false};
    size_t len, distinct = 0;

    memset(old, 0x11, sizeof(old));
    memset(upd, 0x22, sizeof(upd));
    for (uint64_t seed = 0; seed < 200; seed++) {
        fresh();
        durable_file(old, BASE);
        put("/db/f", upd, LEN, BASE, false);
        cr_assert_eq(memenv_power_loss(m, seed), SHALE_OK);
        got = contents("/db/f", &len);
        cr_assert(len >= BASE && len <= BASE + LEN);
        cr_assert(len == BASE || len == BASE + LEN || len % 512 == 0, "size %zu", len);
        cr_assert_eq(memcmp(got, old, BASE), 0);
        for (size_t s = BASE; s < len;) {
            size_t e = (s / 512 + 1) * 512 < len ? (s / 512 + 1) * 512 : len;
            uint8_t v = got[s];
            cr_assert(v == 0x22 || v == 0);
            for (size_t i = s; i < e; i++)
                cr_assert_eq(got[i], v, "piece at %zu is not uniform", s);
            if (e == len)
                cr_assert_eq(v, 0x22, "the last piece must be a kept one");
            s = e;
        }
        distinct += !sizes[len];
        sizes[len] = true;
        free(got);
    }
    cr_assert(distinct >= 3, "only %zu different sizes", distinct);
}

Test(memenv, unsynced_truncate_is_rolled_back)
{
    uint8_t data[4096], *got;
    size_t len;
    sp_file *f;

    memset(data, 0x33, sizeof(data));
    durable_file(data, sizeof(data));
    cr_assert_eq(env->open(env, "/db/f", 0, &f), SHALE_OK);
    cr_assert_eq(env->truncate(f, 100), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 1), SHALE_OK);
    got = contents("/db/f", &len);
    cr_assert_eq(len, sizeof(data));
    cr_assert_eq(memcmp(got, data, len), 0);
    free(got);

    /* Shrink, grow back with a write, sync: the hole is durable zeroes. */
    cr_assert_eq(env->open(env, "/db/f", 0, &f), SHALE_OK);
    cr_assert_eq(env->truncate(f, 100), SHALE_OK);
    cr_assert_eq(env->write(f, "z", 1, 2000), SHALE_OK);
    cr_assert_eq(env->sync(f), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 2), SHALE_OK);
    got = contents("/db/f", &len);
    cr_assert_eq(len, 2001);
    cr_assert_eq(memcmp(got, data, 100), 0);
    for (size_t i = 100; i < 2000; i++)
        cr_assert_eq(got[i], 0);
    cr_assert_eq(got[2000], 'z');
    free(got);
}

Test(memenv, create_without_sync_dir_is_lost)
{
    put("/db/a", "abc", 3, 0, true); /* the file is synced, its name is not */
    cr_assert_eq(env->exists(env, "/db/a"), 1);
    cr_assert_eq(memenv_power_loss(m, 1), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/a"), 0);

    put("/db/a", "abc", 3, 0, true);
    cr_assert_eq(env->sync_dir(env, "/db"), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 1), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/a"), 1);

    /* sync_dir covers only the directory's own entries. */
    cr_assert_eq(env->mkdir(env, "/db/sub"), SHALE_OK);
    put("/db/sub/x", "x", 1, 0, true);
    cr_assert_eq(env->sync_dir(env, "/db"), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 1), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/sub"), 1); /* mkdir is durable at once */
    cr_assert_eq(env->exists(env, "/db/sub/x"), 0);
}

Test(memenv, remove_without_sync_dir_is_undone)
{
    uint8_t *got;
    size_t len;

    durable_file((const uint8_t *)"durable", 7);
    put("/db/f", "XX", 2, 0, false); /* unsynced, then removed */
    cr_assert_eq(env->remove(env, "/db/f"), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/f"), 0);
    put("/db/f", "new file", 8, 0, true); /* a new file under the old name */
    cr_assert_eq(memenv_power_loss(m, 0), SHALE_OK);
    got = contents("/db/f", &len);
    cr_assert_eq(len, 7);
    cr_assert(memcmp(got, "durable", 7) == 0 || memcmp(got, "XXrable", 7) == 0);
    free(got);

    cr_assert_eq(env->remove(env, "/db/f"), SHALE_OK);
    cr_assert_eq(env->sync_dir(env, "/db"), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 0), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/f"), 0);
}

Test(memenv, fail_after_fails_exactly_the_nth_call)
{
    sp_file *f;
    char buf[1];

    cr_assert_eq(env->open(env, "/db/a", SP_O_CREATE, &f), SHALE_OK);
    uint64_t before = memenv_op_count(m, MEM_OP_WRITE);
    memenv_fail_after(m, 3, MEM_OP_WRITE);
    for (int i = 1; i <= 5; i++) {
        cr_assert_eq(env->read(f, buf, 0, 0), SHALE_OK); /* reads are not counted */
        cr_assert_eq(env->write(f, "x", 1, (uint64_t)i), i == 3 ? SHALE_EIO : SHALE_OK, "call %d",
                     i);
    }
    cr_assert_eq(memenv_op_count(m, MEM_OP_WRITE) - before, 5);
    cr_assert_eq(memenv_faults_injected(m), 1);

    memenv_fault fault = {
        .n = 2, .kinds = MEM_OP_WRITE | MEM_OP_SYNC, .code = SHALE_ENOSPC, .sticky = true};
    memenv_set_fault(m, &fault);
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_OK);
    cr_assert_eq(env->sync(f), SHALE_ENOSPC);
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_ENOSPC); /* a dead disk */
    cr_assert_eq(env->read(f, buf, 1, 0), SHALE_OK);      /* other kinds work */
    memenv_set_fault(m, NULL);
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_OK);
}

/* workload -- a small sequence of env calls; returns the 1-based index of
 * the first call that failed, 0 if none did. */
static int workload(void)
{
    sp_file *f = NULL;
    sp_lock *l = NULL;
    int k = 0, rc;

#define STEP(x)                                                                                    \
    do {                                                                                           \
        k++;                                                                                       \
        if ((rc = (x)) < 0)                                                                        \
            goto out;                                                                              \
    } while (0)
    STEP(env->lock(env, "/db/LOCK", &l));
    STEP(env->open(env, "/db/log", SP_O_CREATE, &f));
    STEP(env->write(f, "record", 6, 0));
    STEP(env->sync(f));
    STEP(env->sync_dir(env, "/db"));
    STEP(env->truncate(f, 3));
    STEP(env->exists(env, "/db/log"));
    STEP(env->remove(env, "/db/LOCK"));
    rc = env->close(f);
    f = NULL;
    STEP(rc);
    k = 0;
#undef STEP
out:
    if (f != NULL)
        env->close(f);
    env->unlock(l);
    return k;
}

Test(memenv, counting_then_failing_each_call_in_turn)
{
    uint64_t before = memenv_op_count(m, MEM_OP_ALL);
    cr_assert_eq(workload(), 0);
    uint64_t total = memenv_op_count(m, MEM_OP_ALL) - before;
    cr_assert_eq(total, 9);
    for (uint64_t i = 1; i <= total; i++) {
        fresh();
        memenv_fail_after(m, i, MEM_OP_ALL);
        cr_assert_eq(workload(), (int)i);
        cr_assert_eq(memenv_faults_injected(m), 1);
    }
}

Test(memenv, failed_write_may_be_torn)
{
    uint8_t old[2048], upd[2048], *got;
    size_t len;
    int mixed = 0;

    memset(old, 0x44, sizeof(old));
    memset(upd, 0x55, sizeof(upd));
    for (uint64_t seed = 0; seed < 40; seed++) {
        fresh();
        durable_file(old, sizeof(old));
        memenv_fault fault = {.n = 1, .kinds = MEM_OP_WRITE, .torn = true, .seed = seed};
        memenv_set_fault(m, &fault);
        sp_file *f;
        cr_assert_eq(env->open(env, "/db/f", 0, &f), SHALE_OK);
        cr_assert_eq(env->write(f, upd, sizeof(upd), 0), SHALE_EIO);
        cr_assert_eq(env->close(f), SHALE_OK);
        got = contents("/db/f", &len);
        cr_assert_eq(len, sizeof(old));
        int n_new = 0;
        for (size_t s = 0; s < len; s += 512) {
            for (size_t i = s; i < s + 512; i++)
                cr_assert_eq(got[i], got[s]);
            n_new += got[s] == 0x55;
        }
        mixed += n_new > 0 && n_new < 4;
        free(got);
    }
    cr_assert(mixed > 0);
}

Test(memenv, dead_handles_after_power_loss)
{
    sp_file *f;
    sp_lock *l, *l2;
    uint64_t size;
    char buf[4];

    durable_file((const uint8_t *)"data", 4);
    cr_assert_eq(env->open(env, "/db/f", 0, &f), SHALE_OK);
    cr_assert_eq(env->lock(env, "/db/LOCK", &l), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 3), SHALE_OK);
    cr_assert_eq(env->read(f, buf, 4, 0), SHALE_EIO);
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_EIO);
    cr_assert_eq(env->sync(f), SHALE_EIO);
    cr_assert_eq(env->truncate(f, 0), SHALE_EIO);
    cr_assert_eq(env->size(f, &size), SHALE_EIO);
    cr_assert_eq(env->close(f), SHALE_EIO);                  /* and freed: ASan checks */
    cr_assert_eq(env->lock(env, "/db/LOCK", &l2), SHALE_OK); /* released */
    env->unlock(l);
    env->unlock(l2);
    /* New handles work. */
    cr_assert_eq(env->open(env, "/db/f", 0, &f), SHALE_OK);
    cr_assert_eq(env->read(f, buf, 4, 0), SHALE_OK);
    cr_assert_eq(memcmp(buf, "data", 4), 0);
    cr_assert_eq(env->close(f), SHALE_OK);
}

static int crash_at_3(void *ctx, uint64_t point, const char *path)
{
    (void)ctx;
    (void)path;
    return point == 3;
}

Test(memenv, sync_hook_cuts_the_power_at_a_sync_point)
{
    sp_file *f, *g;
    uint8_t *got;
    size_t len;

    memenv_set_sync_hook(m, crash_at_3, NULL);
    cr_assert_eq(env->open(env, "/db/f", SP_O_CREATE, &f), SHALE_OK);
    cr_assert_eq(env->write(f, "one.", 4, 0), SHALE_OK);
    cr_assert_eq(env->sync(f), SHALE_OK);              /* point 1 */
    cr_assert_eq(env->sync_dir(env, "/db"), SHALE_OK); /* point 2 */
    cr_assert_eq(env->write(f, "two.", 4, 4), SHALE_OK);
    cr_assert_eq(env->sync(f), SHALE_EIO); /* point 3: the power goes */
    cr_assert(memenv_crashed(m));
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_EIO);
    cr_assert_eq(env->open(env, "/db/f", 0, &g), SHALE_EIO);
    cr_assert_eq(env->exists(env, "/db"), SHALE_EIO);
    cr_assert_eq(env->sync_dir(env, "/db"), SHALE_EIO);
    cr_assert_eq(memenv_sync_points(m), 3);
    cr_assert_eq(env->close(f), SHALE_EIO);

    cr_assert_eq(memenv_revive(m, 9), SHALE_OK);
    cr_assert(!memenv_crashed(m));
    got = contents("/db/f", &len);
    cr_assert(len == 4 || len == 8);
    cr_assert_eq(memcmp(got, "one.", 4), 0);
    cr_assert(len == 4 || memcmp(got + 4, "two.", 4) == 0);
    free(got);
}

Test(memenv, crash_freezes_until_revive)
{
    sp_file *f;

    cr_assert_eq(env->open(env, "/db/f", SP_O_CREATE, &f), SHALE_OK);
    memenv_crash(m);
    cr_assert_eq(env->write(f, "x", 1, 0), SHALE_EIO);
    cr_assert_eq(env->mkdir(env, "/x"), SHALE_EIO);
    cr_assert_eq(env->close(f), SHALE_EIO);
    cr_assert_eq(memenv_revive(m, 1), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/f"), 0); /* never dir-synced */
    cr_assert_eq(env->exists(env, "/db"), 1);
}

Test(memenv, lock_conflicts)
{
    sp_lock *a, *b, *c;

    cr_assert_eq(env->lock(env, "/db/LOCK", &a), SHALE_OK);
    cr_assert_eq(env->exists(env, "/db/LOCK"), 1); /* created, like POSIX */
    cr_assert_eq(env->lock(env, "/db/LOCK", &b), SHALE_EBUSY);
    cr_assert_null(b);
    cr_assert_eq(env->lock(env, "/db/OTHER", &c), SHALE_OK);
    env->unlock(a);
    cr_assert_eq(env->lock(env, "/db/LOCK", &b), SHALE_OK);
    env->unlock(b);
    env->unlock(c);
    env->unlock(NULL);
}

struct names {
    char buf[256];
    int calls;
    int stop_at;
};

static int collect(void *ctx, const char *name)
{
    struct names *n = ctx;

    n->calls++;
    strcat(n->buf, name);
    strcat(n->buf, ",");
    /* The callback may call the env (no mutex held). */
    cr_assert_geq(env->exists(env, "/db"), 1);
    return n->calls == n->stop_at ? 42 : 0;
}

Test(memenv, list_names_the_entries_of_one_directory)
{
    struct names n = {.buf = ""};

    put("/db/b", "1", 1, 0, false);
    put("/db/a", "1", 1, 0, false);
    put("/db/gone", "1", 1, 0, false);
    cr_assert_eq(env->remove(env, "/db/gone"), SHALE_OK);
    cr_assert_eq(env->mkdir(env, "/db/sub"), SHALE_OK);
    put("/db/sub/c", "1", 1, 0, false);
    put("/top", "1", 1, 0, false);
    cr_assert_eq(env->list(env, "/db", collect, &n), SHALE_OK);
    cr_assert_str_eq(n.buf, "a,b,sub,");
    memset(&n, 0, sizeof(n));
    cr_assert_eq(env->list(env, "/", collect, &n), SHALE_OK);
    cr_assert_str_eq(n.buf, "db,top,");
    memset(&n, 0, sizeof(n));
    n.stop_at = 2;
    cr_assert_eq(env->list(env, "/db/", collect, &n), 42);
    cr_assert_str_eq(n.buf, "a,b,");
    cr_assert_eq(env->list(env, "/nodir", collect, &n), SHALE_ENOENT);
}

Test(memenv, corruption_helpers_change_the_data_at_rest)
{
    uint8_t *got;
    size_t len;
    uint64_t dsize;

    durable_file((const uint8_t *)"abcdef", 6);
    cr_assert_eq(memenv_corrupt(m, "/db/f", 1, 0x20), SHALE_OK);
    cr_assert_eq(memenv_corrupt(m, "/db/f", 6, 0x20), SHALE_EINVAL);
    cr_assert_eq(memenv_corrupt(m, "/db/nope", 0, 1), SHALE_ENOENT);
    cr_assert_eq(memenv_set_bytes(m, "/db/f", 4, "XYZ", 3), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 4), SHALE_OK); /* the changes are durable */
    got = contents("/db/f", &len);
    cr_assert_eq(len, 7);
    cr_assert_eq(memcmp(got, "aBcdXYZ", 7), 0);
    free(got);
    cr_assert_eq(memenv_set_size(m, "/db/f", 2), SHALE_OK);
    cr_assert_eq(memenv_durable_size(m, "/db/f", &dsize), SHALE_OK);
    cr_assert_eq(dsize, 2);
    cr_assert_eq(memenv_power_loss(m, 4), SHALE_OK);
    got = contents("/db/f", &len);
    cr_assert_eq(len, 2);
    free(got);
}

Test(memenv, sync_all_makes_everything_durable)
{
    sp_file *f;

    cr_assert_eq(env->open(env, "/db/f", SP_O_CREATE, &f), SHALE_OK);
    cr_assert_eq(env->write(f, "abc", 3, 0), SHALE_OK);
    cr_assert_eq(memenv_sync_all(m), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 0), SHALE_OK);
    cr_assert_eq(env->close(f), SHALE_EIO);
    uint64_t size;
    cr_assert_eq(memenv_durable_size(m, "/db/f", &size), SHALE_OK);
    cr_assert_eq(size, 3);
    FILE *out = fopen("/dev/null", "w");
    cr_assert_not_null(out);
    memenv_list_all(m, out);
    fclose(out);
}

static void *thread_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    char path[32], buf[64], back[64];
    sp_file *f;
    tu_rng r;

    snprintf(path, sizeof(path), "/db/t%d", id);
    tu_rng_seed(&r, (uint64_t)id);
    if (env->open(env, path, SP_O_CREATE, &f) != SHALE_OK)
        return (void *)1;
    for (int i = 0; i < 500; i++) {
        uint64_t off = tu_rng_range(&r, 4096);
        tu_rng_bytes(&r, buf, sizeof(buf));
        if (env->write(f, buf, sizeof(buf), off) != SHALE_OK ||
            env->read(f, back, sizeof(back), off) != SHALE_OK || memcmp(buf, back, 64) != 0)
            return (void *)1;
        if (i % 50 == 0 && (env->sync(f) != SHALE_OK || env->sync_dir(env, "/db") != SHALE_OK))
            return (void *)1;
        if (env->exists(env, path) != 1)
            return (void *)1;
    }
    return env->close(f) == SHALE_OK ? NULL : (void *)1;
}

Test(memenv, threads_share_one_env)
{
    pthread_t t[4];
    void *res;

    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pthread_join(t[i], &res), 0);
        cr_assert_null(res);
    }
    cr_assert_eq(memenv_power_loss(m, 1), SHALE_OK);
    for (int i = 0; i < 4; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/db/t%d", i);
        cr_assert_eq(env->exists(env, path), 1);
    }
}

Test(testutil, rng_is_deterministic_and_in_range)
{
    tu_rng a, b;
    uint8_t x[37], y[37];

    tu_rng_seed(&a, 123);
    tu_rng_seed(&b, 123);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(tu_rng_next(&a), tu_rng_next(&b));
    tu_rng_bytes(&a, x, sizeof(x));
    tu_rng_bytes(&b, y, sizeof(y));
    cr_assert_eq(memcmp(x, y, sizeof(x)), 0);
    for (int i = 0; i < 1000; i++)
        cr_assert_lt(tu_rng_range(&a, 7), 7);
    cr_assert_eq(tu_rng_range(&a, 0), 0);
    tu_rng_seed(&b, 124);
    cr_assert_neq(tu_rng_next(&a), tu_rng_next(&b));
    cr_assert_geq(tu_scale(), 0.0);
    cr_assert_geq(tu_scaled(0), 1);
    (void)tu_seed();
}

Test(testutil, tmpdir_and_rmrf)
{
    char dir[64], path[128];
    struct stat st;

    cr_assert_eq(tu_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/sub", dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/sub/file", dir);
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    fputs("x", fp);
    fclose(fp);
    cr_assert_eq(tu_rmrf(dir), 0);
    cr_assert_neq(stat(dir, &st), 0);
    cr_assert_eq(tu_rmrf(dir), 0); /* absent is fine */
}
