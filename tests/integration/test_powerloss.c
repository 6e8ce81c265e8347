/*
 * test_powerloss.c -- power loss at a random sync point, through memenv.
 *
 * Each round opens the database on a memenv whose sync hook cuts the power at
 * a random sync point (during open and recovery too), applies the generation
 * batches of workload.h with shale_flush now and then, then shuts the dead
 * engine down (shale_close fails but must free everything), revives the env
 * with a random seed (each unsynced write dropped, kept or torn at 512-byte
 * granularity), reopens and checks the recovered state is batches 1..G with
 * G at least the last batch whose flush returned SHALE_OK and at most the
 * last batch attempted.  When the power survives a round, the round ends
 * with a clean close half of the time: if that returns SHALE_OK, nothing may
 * be lost.  The database carries over between rounds; every 40 rounds a new
 * env starts (alternating page sizes).
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lsm/db.h"
#include "../support/memenv.h"
#include "../support/testutil.h"
#include "workload.h"

#define DBPATH "db"

typedef struct cut_ctx {
    _Atomic uint64_t target; /* the sync point that cuts the power; 0 = none */
    _Atomic uint64_t fired;
} cut_ctx;

static int cut_hook(void *ctx, uint64_t point, const char *path)
{
    cut_ctx *c = ctx;
    (void)path;
    if (point != atomic_load(&c->target))
        return 0;
    atomic_store(&c->fired, point);
    return 1;
}

typedef struct pl_state {
    memenv *m;
    wl_model model;
    uint64_t G;   /* the state the last round recovered */
    uint64_t est; /* sync points in a round that was not cut */
    shale_options opts;
    tu_rng rng;
    cut_ctx cut;
    /* figures for the summary */
    uint64_t cuts, clean_closes, cut_in_open, lost_unflushed;
} pl_state;

typedef struct round_result {
    uint64_t flushed;   /* last batch made durable by a successful flush */
    uint64_t attempted; /* last batch handed to shale_batch_apply */
    uint64_t acked;     /* last batch whose apply returned SHALE_OK */
} round_result;

/* workload -- open, apply batches until the power goes or the round ends. */
static void workload(pl_state *s, int round, round_result *res)
{
    shale_db *db = NULL;
    shale_tree *trees[WL_TREES];
    shale_batch *b = NULL;
    int rc;

    res->flushed = res->attempted = res->acked = s->G;
    rc = db_open_env(DBPATH, &s->opts, memenv_env(s->m), &db);
    if (rc != SHALE_OK) {
        cr_assert(memenv_crashed(s->m), "round %d: open failed without a power cut: %s", round,
                  shale_strerror(rc));
        s->cut_in_open++;
        return;
    }
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    rc = wl_open_trees(db, trees);
    uint64_t nb = 20 + tu_rng_range(&s->rng, 280);
    uint64_t flush_every = 1 + tu_rng_range(&s->rng, 15);
    for (uint64_t i = 1; rc == SHALE_OK && i <= nb; i++) {
        uint64_t g = s->G + i;
        cr_assert_eq(wl_fill(b, trees, s->model.seed, g), SHALE_OK);
        res->attempted = g;
        rc = shale_batch_apply(db, b);
        if (rc != SHALE_OK)
            break;
        res->acked = g;
        if (s->opts.sync_writes) {
            res->flushed = g;
        } else if (tu_rng_range(&s->rng, flush_every) == 0) {
            rc = shale_flush(db);
            if (rc == SHALE_OK)
                res->flushed = g;
        }
    }
    if (rc != SHALE_OK)
        cr_assert(memenv_crashed(s->m), "round %d: a call failed without a power cut: %s", round,
                  shale_strerror(rc));
    shale_batch_free(b);
    if (!memenv_crashed(s->m) && tu_rng_range(&s->rng, 2) == 0) {
        /* A clean shutdown: if close reports success, everything acked is durable. */
        rc = shale_close(db);
        if (rc == SHALE_OK) {
            res->flushed = res->acked;
            s->clean_closes++;
        } else {
            cr_assert(memenv_crashed(s->m), "round %d: close failed without a power cut: %s", round,
                      shale_strerror(rc));
        }
        return;
    }
    if (!memenv_crashed(s->m))
        memenv_crash(s->m);
    /* The engine is dead: close must fail cleanly and free everything. */
    rc = shale_close(db);
    (void)rc;
}

/* one_round -- a workload with a power cut, then recovery and the check. */
static void one_round(pl_state *s, int round)
{
    round_result res;
    char err[512];
    uint64_t base = memenv_sync_points(s->m);
    uint64_t span = s->est + s->est / 4 + 1;

    atomic_store(&s->cut.fired, 0);
    atomic_store(&s->cut.target, base + 1 + tu_rng_range(&s->rng, span));
    memenv_set_sync_hook(s->m, cut_hook, &s->cut);
    workload(s, round, &res);
    memenv_set_sync_hook(s->m, NULL, NULL);
    uint64_t used = memenv_sync_points(s->m) - base;
    if (atomic_load(&s->cut.fired))
        s->cuts++;
    else
        s->est = (s->est + used + 1) / 2;
    cr_assert_eq(memenv_revive(s->m, tu_rng_next(&s->rng)), SHALE_OK);

    shale_db *db = NULL;
    int rc = db_open_env(DBPATH, &s->opts, memenv_env(s->m), &db);
    cr_assert_eq(rc, SHALE_OK, "round %d: reopen after power loss: %s", round, shale_strerror(rc));
    int64_t G = wl_check(db, &s->model, res.flushed, res.attempted, err, sizeof err);
    if (G < 0)
        memenv_list_all(s->m, stderr);
    cr_assert(G >= 0,
              "round %d (cut at sync point %" PRIu64 " of the round): %s [flushed %" PRIu64
              ", acked %" PRIu64 ", attempted %" PRIu64 "]",
              round, atomic_load(&s->cut.fired) ? atomic_load(&s->cut.fired) - base : 0, err,
              res.flushed, res.acked, res.attempted);
    if ((uint64_t)G < res.acked)
        s->lost_unflushed++;
    rc = shale_close(db);
    cr_assert_eq(rc, SHALE_OK, "round %d: close after recovery: %s", round, shale_strerror(rc));
    s->G = (uint64_t)G;
}

Test(powerloss, recovered_state_is_a_prefix_with_every_flushed_batch, .timeout = 900)
{
    uint64_t seed = tu_seed();
    int rounds = (int)tu_scaled(WL_SANITIZED ? 200 : 400);
    pl_state s;

    memset(&s, 0, sizeof s);
    tu_rng_seed(&s.rng, seed ^ 0x9071);
    fprintf(stderr, "powerloss: seed %" PRIu64 ", %d rounds\n", seed, rounds);
    for (int r = 0; r < rounds; r++) {
        if (r % 40 == 0) {
            if (s.m)
                memenv_destroy(s.m);
            s.m = memenv_create();
            cr_assert_not_null(s.m);
            wl_model_init(&s.model, seed + (uint64_t)r);
            s.G = 0;
            s.est = 64;
            shale_options_default(&s.opts);
            s.opts.page_size = (r / 40) % 2 ? 1024 : 4096;
            s.opts.compression = (r / 20) % 3; /* none, lz4, zstd in turn */
            s.opts.level_factor = (r / 80) % 2 ? 10 : 2;
            s.opts.cache_size = 256u << 10;
        }
        s.opts.memtable_size = (size_t)(64 + 64 * tu_rng_range(&s.rng, 2)) << 10;
        s.opts.max_young_segments = 2 + (uint32_t)tu_rng_range(&s.rng, 2);
        s.opts.sync_writes = tu_rng_range(&s.rng, 10) == 0;
        s.opts.flush_every_ms =
            tu_rng_range(&s.rng, 4) ? 0 : 1 + (uint32_t)tu_rng_range(&s.rng, 10);
        one_round(&s, r);
    }
    fprintf(stderr,
            "powerloss: %d rounds, %" PRIu64 " power cuts (%" PRIu64 " during open), %" PRIu64
            " clean closes, %" PRIu64 " rounds lost unflushed batches, last generation %" PRIu64
            "\n",
            rounds, s.cuts, s.cut_in_open, s.clean_closes, s.lost_unflushed, s.G);
    memenv_destroy(s.m);
}

/* A power loss right after a clean close loses nothing, even with every
 * unsynced write dropped or torn. */
Test(powerloss, clean_close_makes_everything_durable, .timeout = 300)
{
    uint64_t seed = tu_seed();
    tu_rng rng;
    tu_rng_seed(&rng, seed ^ 0xc105e);
    int rounds = (int)tu_scaled(20);
    for (int r = 0; r < rounds; r++) {
        memenv *m = memenv_create();
        shale_options o;
        shale_db *db;
        shale_tree *trees[WL_TREES];
        shale_batch *b;
        wl_model model;
        char err[512];
        uint64_t n = 1 + tu_rng_range(&rng, 300);

        cr_assert_not_null(m);
        wl_model_init(&model, seed + 77 + (uint64_t)r);
        shale_options_default(&o);
        o.memtable_size = 64u << 10;
        o.page_size = 1024;
        o.max_young_segments = 2;
        o.flush_every_ms = 0;
        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        cr_assert_eq(wl_open_trees(db, trees), SHALE_OK);
        cr_assert_eq(shale_batch_new(&b), SHALE_OK);
        for (uint64_t g = 1; g <= n; g++) {
            cr_assert_eq(wl_fill(b, trees, model.seed, g), SHALE_OK);
            cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
        }
        shale_batch_free(b);
        cr_assert_eq(shale_close(db), SHALE_OK);
        cr_assert_eq(memenv_power_loss(m, tu_rng_next(&rng)), SHALE_OK);
        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        int64_t G = wl_check(db, &model, n, n, err, sizeof err);
        cr_assert(G >= 0, "round %d (%" PRIu64 " batches): %s", r, n, err);
        cr_assert_eq(shale_close(db), SHALE_OK);
        memenv_destroy(m);
    }
}
