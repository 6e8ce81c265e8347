/*
 * shale-bench-sled -- figures for the sled-style API: transaction throughput
 * (1 and 2 threads on disjoint trees, 2 threads on one hot tree, with the
 * share of runs that found a conflict), merge operands against the same
 * increments done as read-modify-write (shale_update), and the latency of
 * watch events (a write until its subscriber holds the event).
 *
 *   shale-bench-sled DIR [SCALE]
 *
 * DIR must not exist (it is created and removed).  SCALE (default 1)
 * multiplies the operation counts.  Prints one line per figure.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shale.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "shale-bench-sled: %s: %s\n", what, shale_strerror(rc));
    exit(1);
}

static void check(const char *what, int rc)
{
    if (rc < 0)
        die(what, rc);
}

static shale_db *open_db(const char *dir)
{
    shale_options o;
    shale_db *db;
    shale_options_default(&o);
    check("open", shale_open(dir, &o, &db));
    return db;
}

static void remove_dir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "shale-bench-sled: could not remove %s\n", dir);
}

/* ---- transactions ----------------------------------------------------------- */

#define ACCOUNTS 100

typedef struct tx_arg {
    shale_db *db;
    shale_tree *t;
    long n;
    unsigned seed;
} tx_arg;

typedef struct move {
    shale_tree *t;
    int from, to;
} move;

static int transfer(shale_txn *x, void *ctx)
{
    move *m = ctx;
    char kf[16], kt[16];
    uint64_t a = 0, b = 0;
    shale_buf bf = SHALE_BUF_INIT, bt = SHALE_BUF_INIT;
    snprintf(kf, sizeof kf, "acct%03d", m->from);
    snprintf(kt, sizeof kt, "acct%03d", m->to);
    int rc = shale_txn_get(x, m->t, kf, strlen(kf), &bf);
    if (rc >= 0)
        rc = shale_txn_get(x, m->t, kt, strlen(kt), &bt);
    if (rc >= 0) {
        if (bf.len == 8)
            memcpy(&a, bf.data, 8);
        if (bt.len == 8)
            memcpy(&b, bt.data, 8);
        a -= 1;
        b += 1;
        rc = shale_txn_insert(x, m->t, kf, strlen(kf), &a, 8);
        if (rc >= 0)
            rc = shale_txn_insert(x, m->t, kt, strlen(kt), &b, 8);
    }
    shale_buf_free(&bf);
    shale_buf_free(&bt);
    return rc < 0 ? rc : 0;
}

static void *tx_worker(void *p)
{
    tx_arg *a = p;
    for (long i = 0; i < a->n; i++) {
        move m = {a->t, (int)(rand_r(&a->seed) % ACCOUNTS), 0};
        do
            m.to = (int)(rand_r(&a->seed) % ACCOUNTS);
        while (m.to == m.from);
        check("transaction", shale_transaction(a->db, &a->t, 1, transfer, &m));
    }
    return NULL;
}

/* tx_run -- nthreads transferring, each in trees[i] (the same tree twice:
 * a hot tree); prints transactions per second and the conflict share. */
static void tx_run(const char *dir, const char *label, int nthreads, bool hot, long n)
{
    shale_db *db = open_db(dir);
    shale_tree *t[2];
    check("tree", shale_open_tree(db, "t0", &t[0]));
    check("tree", shale_open_tree(db, "t1", &t[1]));
    if (hot)
        t[1] = t[0];
    shale_stats before, after;
    check("stats", shale_stats_get(db, &before));
    pthread_t th[2];
    tx_arg args[2];
    double t0 = now();
    for (int i = 0; i < nthreads; i++) {
        args[i] = (tx_arg){db, t[i], n, (unsigned)(17 + i)};
        pthread_create(&th[i], NULL, tx_worker, &args[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    double dt = now() - t0;
    check("stats", shale_stats_get(db, &after));
    uint64_t commits = after.txn_commits - before.txn_commits;
    uint64_t reruns = after.txn_reruns - before.txn_reruns;
    printf("txn %-28s %9.0f txn/s  (%llu committed, %llu runs found a conflict: %.2f%%)\n", label,
           (double)commits / dt, (unsigned long long)commits, (unsigned long long)reruns,
           100.0 * (double)reruns / (double)(commits + reruns));
    check("close", shale_close(db));
    remove_dir(dir);
}

/* ---- merge operands vs read-modify-write ------------------------------------ */

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

static int incr(void *ctx, const void *old, size_t oldlen, const void **nv, size_t *nl)
{
    uint64_t *buf = ctx;
    *buf = 1;
    if (old && oldlen == 8) {
        memcpy(buf, old, 8);
        *buf += 1;
    }
    *nv = buf;
    *nl = 8;
    return 0;
}

static void counters(const char *dir, long n, int ncounters)
{
    for (int mode = 0; mode < 2; mode++) {
        shale_db *db = open_db(dir);
        shale_tree *t;
        check("tree", shale_open_tree(db, "c", &t));
        check("operator", shale_set_merge_operator(t, add_op, NULL));
        uint64_t one = 1, tmp;
        char k[32];
        double t0 = now();
        for (long i = 0; i < n; i++) {
            int kl = snprintf(k, sizeof k, "counter%06ld", (i * 7919) % ncounters);
            if (mode == 0)
                check("merge", shale_merge(t, k, (size_t)kl, &one, 8));
            else
                check("update", shale_update(t, k, (size_t)kl, incr, &tmp,
                                             SHALE_UPDATE_RETURN_NEW, NULL));
        }
        double dt = now() - t0;
        /* every increment is there */
        shale_buf b = SHALE_BUF_INIT;
        uint64_t sum = 0, v;
        double r0 = now();
        for (int c = 0; c < ncounters; c++) {
            int kl = snprintf(k, sizeof k, "counter%06d", c);
            if (shale_get(t, k, (size_t)kl, &b) == SHALE_OK && b.len == 8) {
                memcpy(&v, b.data, 8);
                sum += v;
            }
        }
        double rdt = now() - r0;
        shale_buf_free(&b);
        if (sum != (uint64_t)n) {
            fprintf(stderr, "shale-bench-sled: counters sum %llu, want %ld\n",
                    (unsigned long long)sum, n);
            exit(1);
        }
        printf("increments %-21s %9.0f ops/s  (%ld over %d counters; reading all back %.1f ms)\n",
               mode == 0 ? "by shale_merge" : "by shale_update", (double)n / dt, n, ncounters,
               rdt * 1e3);
        check("close", shale_close(db));
        remove_dir(dir);
    }
}

/* ---- watch latency ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct wl {
    shale_watcher *w;
    long n;
    double *lat;
    atomic_long got;
} wl;

static void *watch_reader(void *p)
{
    wl *a = p;
    shale_event e;
    for (long i = 0; i < a->n; i++) {
        int rc = shale_watch_next(a->w, &e, -1);
        if (rc != SHALE_OK)
            die("watch_next", rc);
        double sent;
        memcpy(&sent, e.val, sizeof sent);
        a->lat[i] = now() - sent;
        atomic_store(&a->got, i + 1);
    }
    return NULL;
}

static void watch_latency(const char *dir, long n, bool paced)
{
    shale_db *db = open_db(dir);
    shale_tree *t;
    check("tree", shale_open_tree(db, "w", &t));
    wl a = {NULL, n, calloc((size_t)n, sizeof(double)), 0};
    check("watch", shale_watch_prefix(t, "k", 1, (size_t)n, &a.w));
    pthread_t th;
    pthread_create(&th, NULL, watch_reader, &a);
    char k[32];
    double t0 = now();
    for (long i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "k%08ld", i);
        double ts = now();
        check("insert", shale_insert(t, k, (size_t)kl, &ts, sizeof ts, NULL));
        if (paced) /* one event in flight at a time */
            while (atomic_load(&a.got) <= i)
                ;
    }
    pthread_join(th, NULL);
    double dt = now() - t0;
    qsort(a.lat, (size_t)n, sizeof(double), cmp_double);
    printf("watch latency %-18s median %.1f us, p99 %.1f us, max %.1f us (%ld events, %.0f/s)\n",
           paced ? "(one at a time)" : "(writer flat out)", a.lat[n / 2] * 1e6,
           a.lat[n * 99 / 100] * 1e6, a.lat[n - 1] * 1e6, n, (double)n / dt);
    shale_watch_close(a.w);
    free(a.lat);
    check("close", shale_close(db));
    remove_dir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: shale-bench-sled DIR [SCALE]\n");
        return 2;
    }
    const char *dir = argv[1];
    double scale = argc == 3 ? atof(argv[2]) : 1.0;
    if (scale <= 0) {
        fprintf(stderr, "shale-bench-sled: bad scale %s\n", argv[2]);
        return 2;
    }
    long n = (long)(100000 * scale);
    tx_run(dir, "1 thread", 1, false, n);
    tx_run(dir, "2 threads, disjoint trees", 2, false, n);
    tx_run(dir, "2 threads, one hot tree", 2, true, n);
    counters(dir, 10 * n, 1000);
    watch_latency(dir, n, true);
    watch_latency(dir, n, false);
    return 0;
}
