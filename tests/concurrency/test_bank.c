/*
 * test_bank.c -- transactions under contention (built for `make tsan` too):
 * 8 threads move money between 100 accounts spread over 3 trees, each move
 * one transaction (read both balances, refuse an overdraft with the user's
 * own abort code, write both).  Meanwhile readers check, in snapshots and in
 * read-only transactions that scan all three trees, that the total never
 * changes.  At the end every account must hold exactly its starting balance
 * plus the moves that committed: a lost update, a torn commit or a
 * transaction committed on a stale read would break one of these.  Small
 * memtables keep write-outs and merges running underneath.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

#define NTHREADS 8
#define NACCTS 100
#define NTREES 3
#define START 1000u
#define OVERDRAFT 77 /* the user's abort code */

typedef struct bank {
    shale_db *db;
    shale_tree *t[NTREES];
    int moves; /* per thread */
    atomic_int failed;
    atomic_bool stop;
    atomic_ullong committed, refused, conflicts, checks;
    /* per account: the net of the committed moves, kept by the movers */
    atomic_llong net[NACCTS];
} bank;

static void acct_key(int i, char *k) { snprintf(k, 8, "a%03d", i); }

static uint64_t rd(const shale_buf *b)
{
    uint64_t v = 0;
    if (b->len == 8)
        memcpy(&v, b->data, 8);
    return v;
}

typedef struct move {
    bank *b;
    int from, to;
    uint64_t amount;
} move;

static int do_move(shale_txn *x, void *arg)
{
    move *m = arg;
    shale_tree *tf = m->b->t[m->from % NTREES], *tt = m->b->t[m->to % NTREES];
    char kf[8], kt[8];
    shale_buf bf = SHALE_BUF_INIT, bt = SHALE_BUF_INIT;
    acct_key(m->from, kf);
    acct_key(m->to, kt);
    int rc = shale_txn_get(x, tf, kf, 4, &bf);
    if (rc == SHALE_OK)
        rc = shale_txn_get(x, tt, kt, 4, &bt);
    if (rc == SHALE_OK && rd(&bf) < m->amount)
        rc = OVERDRAFT;
    if (rc == SHALE_OK) {
        uint64_t f = rd(&bf) - m->amount, t = rd(&bt) + m->amount;
        rc = shale_txn_insert(x, tf, kf, 4, &f, 8);
        if (rc == SHALE_OK)
            rc = shale_txn_insert(x, tt, kt, 4, &t, 8);
    }
    shale_buf_free(&bf);
    shale_buf_free(&bt);
    return rc;
}

static void *mover(void *arg)
{
    bank *b = arg;
    tu_rng r;
    tu_rng_seed(&r, tu_seed() ^ (uint64_t)(uintptr_t)&r);
    for (int i = 0; i < b->moves; i++) {
        move m = {b, (int)tu_rng_range(&r, NACCTS), 0, tu_rng_range(&r, 300) + 1};
        do
            m.to = (int)tu_rng_range(&r, NACCTS);
        while (m.to == m.from);
        int rc = shale_transaction(b->db, b->t, NTREES, do_move, &m);
        if (rc == SHALE_OK) {
            atomic_fetch_add(&b->committed, 1);
            atomic_fetch_sub(&b->net[m.from], (long long)m.amount);
            atomic_fetch_add(&b->net[m.to], (long long)m.amount);
        } else if (rc == OVERDRAFT) {
            atomic_fetch_add(&b->refused, 1);
        } else if (rc == SHALE_ECONFLICT) {
            atomic_fetch_add(&b->conflicts, 1);
        } else {
            atomic_store(&b->failed, rc);
            break;
        }
    }
    return NULL;
}

static int sum_fn(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl;
    uint64_t x = 0;
    if (vl == 8)
        memcpy(&x, v, 8);
    *(uint64_t *)ctx += x;
    return 0;
}

static int sum_all(shale_txn *x, void *arg)
{
    bank *b = ((void **)arg)[0];
    uint64_t *sum = ((void **)arg)[1];
    *sum = 0;
    for (int t = 0; t < NTREES; t++) {
        int rc = shale_txn_scan(x, b->t[t], NULL, 0, NULL, 0, t == 1, sum_fn, sum);
        if (rc != SHALE_OK)
            return rc;
    }
    return 0;
}

static void *auditor(void *arg)
{
    bank *b = arg;
    shale_buf v = SHALE_BUF_INIT;
    char k[8];
    for (int round = 0; !atomic_load(&b->stop); round++) {
        uint64_t sum = 0;
        if (round % 2 == 0) {
            shale_snapshot *s;
            int rc = shale_snapshot_open(b->db, &s);
            for (int i = 0; rc == SHALE_OK && i < NACCTS; i++) {
                acct_key(i, k);
                rc = shale_snapshot_get(s, b->t[i % NTREES], k, 4, &v);
                sum += rd(&v);
            }
            shale_snapshot_close(s);
            if (rc != SHALE_OK) {
                atomic_store(&b->failed, rc);
                break;
            }
        } else {
            void *args[2] = {b, &sum};
            int rc = shale_transaction(b->db, b->t, NTREES, sum_all, args);
            if (rc != SHALE_OK) {
                atomic_store(&b->failed, rc);
                break;
            }
        }
        if (sum != (uint64_t)NACCTS * START) {
            atomic_store(&b->failed, -1000);
            fprintf(stderr, "bank: total %llu in round %d\n", (unsigned long long)sum, round);
            break;
        }
        atomic_fetch_add(&b->checks, 1);
    }
    shale_buf_free(&v);
    return NULL;
}

Test(concurrency, bank_transfers_keep_the_total_and_every_balance, .timeout = 600)
{
    char dir[256], k[8];
    shale_options o;
    bank *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    b->moves = (int)tu_scaled(1500);
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.page_size = 1024;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &b->db), SHALE_OK);
    for (int t = 0; t < NTREES; t++) {
        char name[32];
        snprintf(name, sizeof name, "accounts%d", t);
        cr_assert_eq(shale_open_tree(b->db, name, &b->t[t]), SHALE_OK);
    }
    for (int i = 0; i < NACCTS; i++) {
        uint64_t v = START;
        acct_key(i, k);
        cr_assert_eq(shale_insert(b->t[i % NTREES], k, 4, &v, 8, NULL), SHALE_OK);
    }
    pthread_t th[NTHREADS], au[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&au[i], NULL, auditor, b), 0);
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, mover, b), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&b->stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(au[i], NULL);
    cr_assert_eq(atomic_load(&b->failed), 0, "failed: %d", atomic_load(&b->failed));
    shale_buf v = SHALE_BUF_INIT;
    for (int i = 0; i < NACCTS; i++) {
        acct_key(i, k);
        cr_assert_eq(shale_get(b->t[i % NTREES], k, 4, &v), SHALE_OK);
        long long want = (long long)START + atomic_load(&b->net[i]);
        cr_assert_eq((long long)rd(&v), want, "account %d", i);
    }
    shale_buf_free(&v);
    fprintf(stderr,
            "bank: %d threads x %d moves: %llu committed, %llu refused (overdraft), %llu gave "
            "up on conflicts; %llu audits\n",
            NTHREADS, b->moves, (unsigned long long)b->committed,
            (unsigned long long)b->refused, (unsigned long long)b->conflicts,
            (unsigned long long)b->checks);
    shale_stats st;
    cr_assert_eq(shale_stats_get(b->db, &st), SHALE_OK);
    fprintf(stderr, "bank: %llu commits, %llu runs found a conflict\n",
            (unsigned long long)st.txn_commits, (unsigned long long)st.txn_reruns);
    cr_assert_eq(st.txn_commits, atomic_load(&b->committed));
    cr_assert_gt(atomic_load(&b->committed), 0);
    cr_assert_gt(atomic_load(&b->checks), 0);
    cr_assert_eq(shale_close(b->db), SHALE_OK);
    tu_rmrf(dir);
    free(b);
}
