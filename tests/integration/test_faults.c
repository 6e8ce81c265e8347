/*
 * test_faults.c -- fail each env call of a short workload in turn.
 *
 * A base database (batches 1..BASE of workload.h, the last ones only in a
 * flushed log left by a power cut) is reopened -- recovering that log -- and
 * given a short workload: open, batches, flush, enough batches for a
 * memtable write-out (and its checkpoint), flush, close.  A healthy run
 * counts the env calls it makes; then, for each call index i, a fresh copy
 * runs the workload with the i-th call failing -- once, or from then on (a
 * dead disk), or (a third variant) the i-th write failing torn with
 * SHALE_ENOSPC.  Every API call must return success or a negative error
 * (never crash, hang or abort); the workload stops applying batches at the
 * first error, flushes and closes.  Then the env is made healthy (and, every
 * other run, loses its unsynced writes), the database must reopen and hold
 * batches 1..G with G at least the last batch a successful flush (or close)
 * covered and at most the last batch attempted.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lsm/db.h"
#include "../support/memenv.h"
#include "../support/testutil.h"
#include "workload.h"

#define DBPATH "db"
#define BASE 30    /* batches in the base database */
#define PHASE1 20  /* batches before the first flush */
#define PHASE2 200 /* then ~350 KB: writers must wait for write-outs and merges */

typedef struct fault_res {
    uint64_t flushed, acked, attempted;
    int first_error;
} fault_res;

static void fault_opts(shale_options *o)
{
    shale_options_default(o);
    o->memtable_size = 64u << 10;
    o->page_size = 1024;
    o->cache_size = 256u << 10;
    o->max_young_segments = 2;
    o->flush_every_ms = 0;
}

/* build_base -- a fresh env holding batches 1..BASE: the first half closed
 * cleanly, the second half only in a flushed log (the power was cut after
 * the flush), so the faulted open has a log to recover. */
static memenv *build_base(uint64_t seed)
{
    memenv *m = memenv_create();
    shale_options o;
    shale_db *db;
    shale_tree *trees[WL_TREES];
    shale_batch *b;

    cr_assert_not_null(m);
    fault_opts(&o);
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    for (int half = 0; half < 2; half++) {
        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        cr_assert_eq(wl_open_trees(db, trees), SHALE_OK);
        for (uint64_t g = 1 + half * (BASE / 2); g <= (half + 1u) * (BASE / 2); g++) {
            cr_assert_eq(wl_fill(b, trees, seed, g), SHALE_OK);
            cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
        }
        if (half == 0) {
            cr_assert_eq(shale_close(db), SHALE_OK);
        } else {
            cr_assert_eq(shale_flush(db), SHALE_OK);
            memenv_crash(m);
            shale_close(db);
            cr_assert_eq(memenv_revive(m, seed), SHALE_OK);
        }
    }
    shale_batch_free(b);
    return m;
}

/* The base database's files, copied out once and into a fresh env per run. */
#define MAXFILES 16
typedef struct base_image {
    char name[MAXFILES][64];
    uint8_t *data[MAXFILES];
    size_t len[MAXFILES];
    size_t n;
} base_image;

static int collect_name(void *ctx, const char *name)
{
    base_image *im = ctx;
    cr_assert_lt(im->n, MAXFILES);
    if (strcmp(name, "LOCK") != 0)
        snprintf(im->name[im->n++], sizeof im->name[0], "%s", name);
    return 0;
}

static void image_take(memenv *m, base_image *im)
{
    sp_env *env = memenv_env(m);
    char path[128];
    im->n = 0;
    cr_assert_eq(env->list(env, DBPATH, collect_name, im), SHALE_OK);
    for (size_t i = 0; i < im->n; i++) {
        snprintf(path, sizeof path, DBPATH "/%s", im->name[i]);
        cr_assert_eq(memenv_file_bytes(m, path, &im->data[i], &im->len[i]), SHALE_OK);
    }
}

static void image_free(base_image *im)
{
    for (size_t i = 0; i < im->n; i++)
        free(im->data[i]);
    im->n = 0;
}

/* image_clone -- a fresh env holding the image, all of it durable. */
static memenv *image_clone(const base_image *im)
{
    memenv *m = memenv_create();
    sp_env *env = memenv_env(m);
    char path[128];
    cr_assert_not_null(m);
    cr_assert_eq(env->mkdir(env, DBPATH), SHALE_OK);
    for (size_t i = 0; i < im->n; i++) {
        sp_file *f;
        snprintf(path, sizeof path, DBPATH "/%s", im->name[i]);
        cr_assert_eq(env->open(env, path, SP_O_CREATE, &f), SHALE_OK);
        if (im->len[i])
            cr_assert_eq(env->write(f, im->data[i], im->len[i], 0), SHALE_OK);
        cr_assert_eq(env->close(f), SHALE_OK);
    }
    cr_assert_eq(memenv_sync_all(m), SHALE_OK);
    return m;
}

/* check_rc -- an API result must be success or a negative error. */
static int check_rc(int rc, const char *what, uint64_t i, fault_res *r)
{
    cr_assert(rc == SHALE_OK || rc < 0, "fault at call %" PRIu64 ": %s returned %d", i, what, rc);
    if (rc < 0 && r->first_error == 0)
        r->first_error = rc;
    return rc;
}

/* workload -- the faulted run; i is only for messages. */
static void workload(memenv *m, uint64_t seed, uint64_t i, fault_res *r)
{
    shale_options o;
    shale_db *db = NULL;
    shale_tree *trees[WL_TREES];
    shale_batch *b;
    int rc;

    fault_opts(&o);
    r->flushed = r->acked = r->attempted = BASE;
    r->first_error = 0;
    rc = check_rc(db_open_env(DBPATH, &o, memenv_env(m), &db), "open", i, r);
    if (rc < 0) {
        cr_assert_null(db, "a failed open must not hand out a db");
        return;
    }
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    rc = check_rc(wl_open_trees(db, trees), "open_tree", i, r);
    for (uint64_t g = BASE + 1; rc == SHALE_OK && g <= BASE + PHASE1 + PHASE2; g++) {
        cr_assert_eq(wl_fill(b, trees, seed, g), SHALE_OK);
        r->attempted = g;
        rc = check_rc(shale_batch_apply(db, b), "batch_apply", i, r);
        if (rc == SHALE_OK)
            r->acked = g;
        if (rc == SHALE_OK && (g == BASE + PHASE1 || g == BASE + PHASE1 + PHASE2)) {
            rc = check_rc(shale_flush(db), "flush", i, r);
            if (rc == SHALE_OK)
                r->flushed = g;
        }
    }
    shale_batch_free(b);
    if (rc < 0) {
        /* After an error: a flush that succeeds covers every acked batch. */
        if (check_rc(shale_flush(db), "flush after error", i, r) == SHALE_OK)
            r->flushed = r->acked;
    }
    if (i == 0) {
        shale_stats st;
        cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
        fprintf(stderr,
                "faults: the healthy workload wrote out %" PRIu64 " memtables, %" PRIu64
                " merges, %" PRIu64 " checkpoints before close\n",
                st.flushes, st.merges, st.checkpoints);
    }
    if (check_rc(shale_close(db), "close", i, r) == SHALE_OK)
        r->flushed = r->acked;
}

/* verify -- healthy env (after an optional power loss): reopen and check. */
static void verify(memenv *m, uint64_t seed, const fault_res *r, bool power_loss, uint64_t i,
                   const char *variant)
{
    shale_options o;
    shale_db *db = NULL;
    wl_model model;
    char err[512];

    memenv_set_fault(m, NULL);
    if (power_loss)
        cr_assert_eq(memenv_power_loss(m, seed ^ i), SHALE_OK);
    fault_opts(&o);
    int rc = db_open_env(DBPATH, &o, memenv_env(m), &db);
    cr_assert_eq(rc, SHALE_OK, "%s fault at call %" PRIu64 ": healthy reopen%s failed: %s", variant,
                 i, power_loss ? " after power loss" : "", shale_strerror(rc));
    wl_model_init(&model, seed);
    int64_t G = wl_check(db, &model, r->flushed, r->attempted, err, sizeof err);
    cr_assert(G >= 0,
              "%s fault at call %" PRIu64 "%s (first error %s): %s [flushed %" PRIu64
              ", acked %" PRIu64 ", attempted %" PRIu64 "]",
              variant, i, power_loss ? ", then power loss" : "",
              r->first_error ? shale_strerror(r->first_error) : "none", err, r->flushed, r->acked,
              r->attempted);
    rc = shale_close(db);
    cr_assert_eq(rc, SHALE_OK, "%s fault at call %" PRIu64 ": close after recovery: %s", variant, i,
                 shale_strerror(rc));
}

/* count_calls -- env calls (of kinds) made by a healthy workload. */
static uint64_t count_calls(const base_image *im, uint64_t seed, unsigned kinds)
{
    fault_res r;
    memenv *m = image_clone(im);
    memenv_reset_counts(m);
    workload(m, seed, 0, &r);
    uint64_t n = memenv_op_count(m, kinds);
    cr_assert_eq(r.first_error, 0, "the healthy workload failed: %s",
                 shale_strerror(r.first_error));
    cr_assert_eq(r.flushed, BASE + PHASE1 + PHASE2);
    verify(m, seed, &r, true, 0, "no");
    memenv_destroy(m);
    return n;
}

static void run_variant(const char *variant, unsigned kinds, bool sticky, bool torn, int code)
{
    uint64_t seed = tu_seed();
    base_image im;
    memenv *base = build_base(seed);
    image_take(base, &im);
    memenv_destroy(base);
    uint64_t n = count_calls(&im, seed, kinds);
    uint64_t cap = tu_scaled(WL_SANITIZED ? 200 : 800), step = n > cap ? (n + cap - 1) / cap : 1;
    uint64_t runs = 0, failed_runs = 0, injected = 0;

    fprintf(stderr, "faults/%s: seed %" PRIu64 ", %" PRIu64 " env calls, every %" PRIu64 "\n",
            variant, seed, n, step);
    /* A few past the count too: background work varies from run to run. */
    for (uint64_t i = 1 + (seed % step); i <= n + 8; i += step) {
        memenv *m = image_clone(&im);
        fault_res r;
        memenv_fault f = {
            .n = i, .kinds = kinds, .code = code, .sticky = sticky, .torn = torn, .seed = seed + i};
        memenv_reset_counts(m);
        memenv_set_fault(m, &f);
        workload(m, seed, i, &r);
        injected += memenv_faults_injected(m) > 0;
        failed_runs += r.first_error != 0;
        verify(m, seed, &r, (i & 1) == 0, i, variant);
        memenv_destroy(m);
        runs++;
    }
    fprintf(stderr,
            "faults/%s: %" PRIu64 " runs, %" PRIu64 " with a fault injected, %" PRIu64
            " saw an API error\n",
            variant, runs, injected, failed_runs);
    cr_assert(injected > 0, "no fault was ever injected");
    image_free(&im);
}

Test(faults, each_failed_call_once_leaves_a_consistent_prefix, .timeout = 900)
{
    run_variant("once", MEM_OP_ALL, false, false, SHALE_EIO);
}

Test(faults, dead_disk_from_each_call_leaves_a_consistent_prefix, .timeout = 900)
{
    run_variant("sticky", MEM_OP_ALL, true, false, SHALE_EIO);
}

Test(faults, torn_enospc_write_leaves_a_consistent_prefix, .timeout = 900)
{
    run_variant("enospc-torn-write", MEM_OP_WRITE, false, true, SHALE_ENOSPC);
}
