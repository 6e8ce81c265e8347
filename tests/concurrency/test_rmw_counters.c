/*
 * test_rmw_counters.c -- compare-and-swap and update under contention (built
 * for `make tsan` too): N threads each add 1 to one counter K times by a
 * CAS loop, and to another by shale_update; both must end at exactly N * K,
 * while a filler thread keeps memtables and merges busy underneath.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

#define NTHREADS 4

typedef struct rc_ctx {
    shale_tree *t;
    int k;
    atomic_int failed;
    atomic_bool stop;
    atomic_ullong cas_retries;
} rc_ctx;

static uint64_t rd(const void *p, size_t n)
{
    uint64_t v = 0;
    if (n == sizeof v)
        memcpy(&v, p, n);
    return v;
}

static int incr(void *ctx, const void *old, size_t oldlen, const void **nv, size_t *nl)
{
    uint64_t *buf = ctx;
    *buf = (old ? rd(old, oldlen) : 0) + 1;
    *nv = buf;
    *nl = sizeof *buf;
    return 0;
}

static void *adder(void *arg)
{
    rc_ctx *c = arg;
    shale_buf cur = SHALE_BUF_INIT;
    uint64_t mine;
    for (int i = 0; i < c->k; i++) {
        /* CAS loop on "cas" */
        int rc = shale_get(c->t, "cas", 3, &cur);
        bool have = rc == SHALE_OK;
        for (;;) {
            uint64_t v = have ? rd(cur.data, cur.len) : 0, nv = v + 1;
            uint64_t old = v;
            rc = shale_cas(c->t, "cas", 3, have ? &old : NULL, have ? sizeof old : 0, &nv,
                           sizeof nv, &cur);
            if (rc == SHALE_OK)
                break;
            if (rc != SHALE_EMISMATCH) {
                atomic_store(&c->failed, rc);
                goto out;
            }
            atomic_fetch_add(&c->cas_retries, 1);
            have = cur.data != NULL;
        }
        /* update on "upd" */
        rc = shale_update(c->t, "upd", 3, incr, &mine, SHALE_UPDATE_RETURN_NEW, NULL);
        if (rc != SHALE_OK) {
            atomic_store(&c->failed, rc);
            goto out;
        }
    }
out:
    shale_buf_free(&cur);
    return NULL;
}

static void *filler(void *arg)
{
    rc_ctx *c = arg;
    char k[32], v[200];
    memset(v, 'f', sizeof v);
    for (unsigned i = 0; !atomic_load(&c->stop); i++) {
        int kl = snprintf(k, sizeof k, "fill%06u", i % 20000);
        if (shale_insert(c->t, k, (size_t)kl, v, sizeof v, NULL) != SHALE_OK) {
            atomic_store(&c->failed, -100);
            break;
        }
    }
    return NULL;
}

Test(concurrency, cas_and_update_counters_lose_no_increment, .timeout = 600)
{
    char dir[256];
    shale_options o;
    shale_db *db;
    rc_ctx c = {.k = (int)tu_scaled(2000)};
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.page_size = 1024;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "counters", &c.t), SHALE_OK);
    pthread_t th[NTHREADS], f;
    cr_assert_eq(pthread_create(&f, NULL, filler, &c), 0);
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, adder, &c), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&c.stop, true);
    pthread_join(f, NULL);
    cr_assert_eq(atomic_load(&c.failed), 0, "a thread failed: %d", atomic_load(&c.failed));
    shale_buf b = SHALE_BUF_INIT;
    uint64_t want = (uint64_t)NTHREADS * (uint64_t)c.k;
    cr_assert_eq(shale_get(c.t, "cas", 3, &b), SHALE_OK);
    cr_assert_eq(rd(b.data, b.len), want, "CAS counter");
    cr_assert_eq(shale_get(c.t, "upd", 3, &b), SHALE_OK);
    cr_assert_eq(rd(b.data, b.len), want, "update counter");
    shale_buf_free(&b);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    fprintf(stderr, "counters: %d threads x %d, %llu CAS retries, %llu merges\n", NTHREADS, c.k,
            (unsigned long long)atomic_load(&c.cas_retries), (unsigned long long)st.merges);
    cr_assert_eq(shale_close(db), SHALE_OK);
    tu_rmrf(dir);
}
