/*
 * test_merge_operands.c -- merge operands under concurrency (built for
 * `make tsan` too): 4 threads add to 50 counters with shale_merge while
 * memtables are written out and merged, readers read them, and another
 * thread keeps replacing the operator (with an equal one, and with none).
 * Reads must give either SHALE_ENOMERGEOP or a value no smaller than the
 * reader saw before for that counter; at the end, with the operator back,
 * every counter holds exactly the number of increments made.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

#define NADDERS 4
#define NCOUNTERS 50

typedef struct mo_ctx {
    shale_db *db;
    shale_tree *t;
    int k; /* increments per adder */
    atomic_int failed;
    atomic_bool stop;
    atomic_ullong reads, refused;
} mo_ctx;

static int add_op(void *ctx, const void *key, size_t klen, const void *old, size_t oldlen,
                  const void *operand, size_t oplen, shale_buf *out)
{
    (void)ctx, (void)key, (void)klen;
    uint64_t a = 0, d = 0;
    if (old && oldlen == 8)
        memcpy(&a, old, 8);
    if (oplen == 8)
        memcpy(&d, operand, 8);
    a += d;
    return shale_buf_set(out, &a, 8);
}

static void counter_key(int i, char *k) { snprintf(k, 16, "ctr%03d", i); }

static void *adder(void *arg)
{
    mo_ctx *c = arg;
    char k[16], fill[64];
    uint64_t one = 1;
    memset(fill, 'f', sizeof fill);
    for (int i = 0; i < c->k; i++) {
        counter_key(i % NCOUNTERS, k);
        int rc = shale_merge(c->t, k, strlen(k), &one, 8);
        if (rc == SHALE_OK && i % 4 == 0) { /* filler: memtables fill, merges run */
            snprintf(k, sizeof k, "f%08d", i);
            rc = shale_insert(c->t, k, strlen(k), fill, sizeof fill, NULL);
        }
        if (rc != SHALE_OK) {
            atomic_store(&c->failed, rc);
            break;
        }
    }
    return NULL;
}

static void *reader(void *arg)
{
    mo_ctx *c = arg;
    uint64_t seen[NCOUNTERS] = {0};
    shale_buf b = SHALE_BUF_INIT;
    char k[16];
    for (int i = 0; !atomic_load(&c->stop); i++) {
        int n = i % NCOUNTERS;
        counter_key(n, k);
        int rc = shale_get(c->t, k, strlen(k), &b);
        if (rc == SHALE_ENOMERGEOP) {
            atomic_fetch_add(&c->refused, 1);
            continue;
        }
        uint64_t v = 0;
        if (rc == SHALE_OK && b.len == 8)
            memcpy(&v, b.data, 8);
        if (rc < 0 || (rc == SHALE_OK && b.len != 8) || v < seen[n]) {
            atomic_store(&c->failed, rc < 0 ? rc : -1000);
            break;
        }
        seen[n] = v;
        atomic_fetch_add(&c->reads, 1);
    }
    shale_buf_free(&b);
    return NULL;
}

static void *switcher(void *arg)
{
    mo_ctx *c = arg;
    /* every operator set is kept until close: a bounded number of them */
    for (int i = 0; i < 20000 && !atomic_load(&c->stop); i++) {
        sched_yield();
        int rc = shale_set_merge_operator(c->t, i % 3 == 2 ? NULL : add_op, NULL);
        if (rc != SHALE_OK) {
            atomic_store(&c->failed, rc);
            break;
        }
    }
    return NULL;
}

Test(concurrency, merge_operands_while_the_operator_changes, .timeout = 600)
{
    char dir[256], k[16];
    shale_options o;
    mo_ctx c = {.k = (int)tu_scaled(6000)};
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.page_size = 1024;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &c.db), SHALE_OK);
    cr_assert_eq(shale_open_tree(c.db, "ctr", &c.t), SHALE_OK);
    cr_assert_eq(shale_set_merge_operator(c.t, add_op, NULL), SHALE_OK);
    pthread_t ad[NADDERS], rd[2], sw;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&rd[i], NULL, reader, &c), 0);
    cr_assert_eq(pthread_create(&sw, NULL, switcher, &c), 0);
    for (int i = 0; i < NADDERS; i++)
        cr_assert_eq(pthread_create(&ad[i], NULL, adder, &c), 0);
    for (int i = 0; i < NADDERS; i++)
        pthread_join(ad[i], NULL);
    atomic_store(&c.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(rd[i], NULL);
    pthread_join(sw, NULL);
    cr_assert_eq(atomic_load(&c.failed), 0, "failed: %d", atomic_load(&c.failed));
    cr_assert_eq(shale_set_merge_operator(c.t, add_op, NULL), SHALE_OK);
    shale_stats st;
    cr_assert_eq(shale_stats_get(c.db, &st), SHALE_OK);
    /* every increment is there, now and after a restart */
    for (int round = 0; round < 2; round++) {
        shale_buf b = SHALE_BUF_INIT;
        for (int i = 0; i < NCOUNTERS; i++) {
            uint64_t v = 0, want = 0;
            for (int a = 0; a < NADDERS; a++)
                want += (uint64_t)(c.k / NCOUNTERS + (i < c.k % NCOUNTERS));
            counter_key(i, k);
            cr_assert_eq(shale_get(c.t, k, strlen(k), &b), SHALE_OK);
            memcpy(&v, b.data, 8);
            cr_assert_eq(v, want, "counter %d: %llu, want %llu", i, (unsigned long long)v,
                         (unsigned long long)want);
        }
        shale_buf_free(&b);
        if (round == 0) {
            cr_assert_eq(shale_close(c.db), SHALE_OK);
            cr_assert_eq(shale_open(dir, &o, &c.db), SHALE_OK);
            cr_assert_eq(shale_open_tree(c.db, "ctr", &c.t), SHALE_OK);
            cr_assert_eq(shale_set_merge_operator(c.t, add_op, NULL), SHALE_OK);
        }
    }
    fprintf(stderr, "merge operands: %d adders x %d, %llu reads (%llu refused without an "
                    "operator), %llu write-outs, %llu merges\n",
            NADDERS, c.k, (unsigned long long)c.reads, (unsigned long long)c.refused,
            (unsigned long long)st.flushes, (unsigned long long)st.merges);
    cr_assert_eq(shale_close(c.db), SHALE_OK);
    tu_rmrf(dir);
}
