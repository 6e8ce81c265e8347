/*
 * test_txn.c -- transactions case by case: reads see the transaction's own
 * writes (inserts, removes, merge operands) in gets and scans both ways; a
 * user's abort code comes back unchanged with nothing written; a write by
 * someone else to a key read, or into a range scanned (a phantom), makes the
 * commit re-run the function, and one outside what was read does not; the
 * retry bound ends in SHALE_ECONFLICT; bad arguments.  Under SIGKILL a
 * transaction writing 40 keys over 3 trees is there whole or not at all,
 * and one made durable (shale_flush) is there.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/testutil.h"
#include "shale.h"

static char dir[256];
static shale_db *db;
static shale_tree *ta, *tb, *tother;

static int add_op(void *ctx, const void *key, size_t klen, const void *old, size_t oldlen,
                  const void *operand, size_t oplen, shale_buf *out)
{
    (void)ctx, (void)key, (void)klen;
    uint64_t a = 0, d;
    if (old && oldlen == 8)
        memcpy(&a, old, 8);
    if (oplen != 8)
        return SHALE_EINVAL;
    memcpy(&d, operand, 8);
    a += d;
    return shale_buf_set(out, &a, 8);
}

static void setup(void)
{
    shale_options o;
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.flush_every_ms = 0;
    o.memtable_size = 1 << 20;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "a", &ta), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "b", &tb), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "other", &tother), SHALE_OK);
    cr_assert_eq(shale_set_merge_operator(ta, add_op, NULL), SHALE_OK);
}

static void teardown(void)
{
    cr_assert_eq(shale_close(db), SHALE_OK);
    tu_rmrf(dir);
}

static bool holds(shale_tree *t, const char *k, const char *want)
{
    shale_buf b = SHALE_BUF_INIT;
    int rc = shale_get(t, k, strlen(k), &b);
    bool ok = want ? rc == SHALE_OK && b.len == strlen(want) && memcmp(b.data, want, b.len) == 0
                   : rc == SHALE_NOTFOUND;
    shale_buf_free(&b);
    return ok;
}

static void put(shale_tree *t, const char *k, const char *v)
{
    cr_assert_eq(shale_insert(t, k, strlen(k), v, strlen(v), NULL), SHALE_OK);
}

/* ---- own writes ----------------------------------------------------------- */

typedef struct collect {
    char seen[512];
} collect;

static int collect_fn(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    collect *c = ctx;
    size_t n = strlen(c->seen);
    snprintf(c->seen + n, sizeof c->seen - n, "%.*s=%.*s ", (int)kl, (const char *)k,
             (int)(vl == 8 ? 1 : vl), vl == 8 ? "#" : (const char *)v);
    return 0;
}

static int own_writes(shale_txn *x, void *arg)
{
    shale_tree **tr = arg;
    shale_buf b = SHALE_BUF_INIT;
    uint64_t two = 2;
    cr_assert_eq(shale_txn_get(x, tr[0], "k1", 2, &b), SHALE_OK);
    cr_assert(b.len == 2 && memcmp(b.data, "v1", 2) == 0);
    cr_assert_eq(shale_txn_insert(x, tr[0], "k1", 2, "new", 3), SHALE_OK);
    cr_assert_eq(shale_txn_get(x, tr[0], "k1", 2, &b), SHALE_OK);
    cr_assert(b.len == 3 && memcmp(b.data, "new", 3) == 0);
    cr_assert_eq(shale_txn_remove(x, tr[0], "k2", 2), SHALE_OK);
    cr_assert_eq(shale_txn_get(x, tr[0], "k2", 2, &b), SHALE_NOTFOUND);
    cr_assert_eq(shale_txn_insert(x, tr[1], "z", 1, "zz", 2), SHALE_OK);
    cr_assert_eq(shale_txn_merge(x, tr[0], "n", 1, &two, 8), SHALE_OK);
    cr_assert_eq(shale_txn_merge(x, tr[0], "n", 1, &two, 8), SHALE_OK);
    cr_assert_eq(shale_txn_get(x, tr[0], "n", 1, &b), SHALE_OK);
    uint64_t n;
    memcpy(&n, b.data, 8);
    cr_assert_eq(n, 10u + 4u); /* 10 before the transaction */
    collect c = {""};
    cr_assert_eq(shale_txn_scan(x, tr[0], NULL, 0, NULL, 0, false, collect_fn, &c), SHALE_OK);
    cr_assert_str_eq(c.seen, "k1=new k3=v3 n=# ");
    c.seen[0] = 0;
    cr_assert_eq(shale_txn_scan(x, tr[0], "k2", 2, "n", 1, true, collect_fn, &c), SHALE_OK);
    cr_assert_str_eq(c.seen, "k3=v3 ");
    /* a tree not given to the transaction */
    cr_assert_eq(shale_txn_insert(x, tother, "x", 1, "y", 1), SHALE_EINVAL);
    cr_assert_eq(shale_txn_get(x, tother, "x", 1, &b), SHALE_EINVAL);
    shale_buf_free(&b);
    return 0;
}

Test(txn, reads_see_own_writes_and_commit_whole, .init = setup, .fini = teardown)
{
    uint64_t ten = 10;
    put(ta, "k1", "v1");
    put(ta, "k2", "v2");
    put(ta, "k3", "v3");
    cr_assert_eq(shale_insert(ta, "n", 1, &ten, 8, NULL), SHALE_OK);
    shale_tree *tr[2] = {ta, tb};
    cr_assert_eq(shale_transaction(db, tr, 2, own_writes, tr), SHALE_OK);
    cr_assert(holds(ta, "k1", "new"));
    cr_assert(holds(ta, "k2", NULL));
    cr_assert(holds(tb, "z", "zz"));
    shale_buf b = SHALE_BUF_INIT;
    cr_assert_eq(shale_get(ta, "n", 1, &b), SHALE_OK);
    uint64_t n;
    memcpy(&n, b.data, 8);
    cr_assert_eq(n, 14u);
    shale_buf_free(&b);
}

/* ---- aborts ---------------------------------------------------------------- */

#define MY_ERROR 4242

static int writes_then_aborts(shale_txn *x, void *arg)
{
    shale_tree **tr = arg;
    cr_assert_eq(shale_txn_insert(x, tr[0], "k1", 2, "changed", 7), SHALE_OK);
    cr_assert_eq(shale_txn_insert(x, tr[1], "new", 3, "x", 1), SHALE_OK);
    return MY_ERROR;
}

Test(txn, a_user_abort_comes_back_unchanged_with_nothing_written, .init = setup,
     .fini = teardown)
{
    put(ta, "k1", "v1");
    shale_tree *tr[2] = {ta, tb};
    cr_assert_eq(shale_transaction(db, tr, 2, writes_then_aborts, tr), MY_ERROR);
    cr_assert(holds(ta, "k1", "v1"));
    cr_assert(holds(tb, "new", NULL));
    /* negative codes of the user's too */
    cr_assert_eq(shale_transaction(db, tr, 2, writes_then_aborts, tr), MY_ERROR);
    cr_assert_eq(shale_transaction(NULL, tr, 2, writes_then_aborts, tr), SHALE_EINVAL);
    cr_assert_eq(shale_transaction(db, tr, 2, NULL, tr), SHALE_EINVAL);
    shale_tree *bad[2] = {ta, NULL};
    cr_assert_eq(shale_transaction(db, bad, 2, writes_then_aborts, tr), SHALE_EINVAL);
}

/* ---- conflicts ----------------------------------------------------------- */

typedef struct race {
    shale_tree *t;
    int runs;
    int interfere_runs; /* the first n runs write behind the transaction's back */
    int mode;           /* 0: the key read; 1: into the scanned range; 2: past where the scan stopped */
} race;

static int stop_at_first(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)ctx, (void)k, (void)kl, (void)v, (void)vl;
    return 1;
}

static int racer(shale_txn *x, void *arg)
{
    race *r = arg;
    shale_buf b = SHALE_BUF_INIT;
    r->runs++;
    if (r->mode == 0) {
        int rc = shale_txn_get(x, r->t, "acct", 4, &b);
        cr_assert(rc == SHALE_OK || rc == SHALE_NOTFOUND);
    } else if (r->mode == 1) {
        int rc = shale_txn_scan(x, r->t, "r0", 2, "r9", 2, false, stop_at_first, NULL);
        /* empty on the first run; the second finds the phantom "r5" */
        cr_assert_eq(rc, r->runs == 1 ? SHALE_OK : 1);
    } else {
        int rc = shale_txn_scan(x, r->t, "s", 1, NULL, 0, false, stop_at_first, NULL);
        cr_assert_eq(rc, 1); /* stopped at "s1" */
    }
    if (r->runs <= r->interfere_runs) {
        char k[16];
        snprintf(k, sizeof k, "%s", r->mode == 0 ? "acct" : r->mode == 1 ? "r5" : "s5");
        cr_assert_eq(shale_insert(r->t, k, strlen(k), "other", 5, NULL), SHALE_OK);
    }
    cr_assert_eq(shale_txn_insert(x, r->t, "out", 3, "mine", 4), SHALE_OK);
    shale_buf_free(&b);
    return 0;
}

Test(txn, a_write_to_what_was_read_reruns_and_one_elsewhere_does_not, .init = setup,
     .fini = teardown)
{
    put(ta, "s1", "x");
    for (int mode = 0; mode < 3; mode++) {
        race r = {ta, 0, 1, mode};
        cr_assert_eq(shale_transaction(db, &ta, 1, racer, &r), SHALE_OK);
        /* modes 0 and 1 read what was written (mode 1: a phantom in the
         * range); mode 2's scan stopped before "s5" */
        cr_assert_eq(r.runs, mode == 2 ? 1 : 2, "mode %d ran %d times", mode, r.runs);
        cr_assert(holds(ta, "out", "mine"));
    }
}

Test(txn, endless_conflicts_end_in_econflict_with_nothing_written, .init = setup,
     .fini = teardown)
{
    race r = {ta, 0, 1000000, 0};
    cr_assert_eq(shale_transaction(db, &ta, 1, racer, &r), SHALE_ECONFLICT);
    cr_assert_eq(r.runs, SHALE_TXN_RETRIES);
    cr_assert(holds(ta, "out", NULL));
}

/* a transaction spanning memtable write-outs still commits (it is checked
 * against the memtables, or re-run when its writes left them) */
static int slow_reader(shale_txn *x, void *arg)
{
    race *r = arg;
    shale_buf b = SHALE_BUF_INIT;
    r->runs++;
    int rc = shale_txn_get(x, r->t, "acct", 4, &b);
    cr_assert(rc == SHALE_OK || rc == SHALE_NOTFOUND);
    shale_buf_free(&b);
    if (r->runs == 1) { /* fill several memtables behind its back */
        char k[32], v[1000];
        memset(v, 'v', sizeof v);
        for (int i = 0; i < 20000; i++) {
            snprintf(k, sizeof k, "fill%06d", i);
            cr_assert_eq(shale_insert(tother, k, strlen(k), v, sizeof v, NULL), SHALE_OK);
        }
    }
    return shale_txn_insert(x, r->t, "acct", 4, "set", 3);
}

Test(txn, survives_memtable_write_outs, .init = setup, .fini = teardown)
{
    race r = {ta, 0, 0, 0};
    cr_assert_eq(shale_transaction(db, &ta, 1, slow_reader, &r), SHALE_OK);
    cr_assert_eq(r.runs, 2);
    cr_assert(holds(ta, "acct", "set"));
}

/* ---- SIGKILL ---------------------------------------------------------------- */

#define KT_TREES 3
#define KT_KEYS 40 /* keys per transaction, spread over the trees */

typedef struct gen_txn {
    shale_tree **t;
    uint64_t gen;
} gen_txn;

/* every key of every tree gets the same generation, read first (so the
 * transaction both reads and writes all of them) */
static int write_gen(shale_txn *x, void *arg)
{
    gen_txn *g = arg;
    shale_buf b = SHALE_BUF_INIT;
    char k[16];
    int rc = SHALE_OK;
    for (int i = 0; rc >= 0 && i < KT_KEYS; i++) {
        snprintf(k, sizeof k, "g%03d", i);
        rc = shale_txn_get(x, g->t[i % KT_TREES], k, strlen(k), &b);
        if (rc >= 0)
            rc = shale_txn_insert(x, g->t[i % KT_TREES], k, strlen(k), &g->gen, 8);
    }
    shale_buf_free(&b);
    return rc < 0 ? rc : 0;
}

Test(txn, all_or_nothing_under_sigkill, .timeout = 300)
{
    shale_options o;
    shale_db *kdb;
    shale_tree *t[KT_TREES];
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64 << 10;
    o.page_size = 1024;
    o.flush_every_ms = 0;
    uint64_t durable = 0; /* the last generation the child reported flushed */
    for (int round = 0; round < 20; round++) {
        int fd[2];
        cr_assert_eq(pipe(fd), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(fd[0]);
            if (shale_open(dir, &o, &kdb))
                _exit(2);
            for (int i = 0; i < KT_TREES; i++) {
                char name[16];
                snprintf(name, sizeof name, "t%d", i);
                if (shale_open_tree(kdb, name, &t[i]))
                    _exit(3);
            }
            gen_txn g = {t, durable};
            for (;;) {
                g.gen++;
                if (shale_transaction(kdb, t, KT_TREES, write_gen, &g))
                    _exit(4);
                if (g.gen % 16 == 0) { /* made durable: must survive the kill */
                    if (shale_flush(kdb))
                        _exit(5);
                    if (write(fd[1], &g.gen, 8) != 8)
                        _exit(6);
                }
            }
        }
        close(fd[1]);
        uint64_t got;
        int reports = 1 + round * 7 % 23;
        for (int n = 0; n < reports && read(fd[0], &got, 8) == 8; n++)
            durable = got;
        kill(pid, SIGKILL);
        while (read(fd[0], &got, 8) == 8)
            durable = got;
        close(fd[0]);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status), "round %d: the child stopped by itself (%d)", round,
                  status);
        /* every key holds one and the same generation, at least the durable one */
        cr_assert_eq(shale_open(dir, &o, &kdb), SHALE_OK);
        uint64_t gen = 0;
        shale_buf b = SHALE_BUF_INIT;
        for (int i = 0; i < KT_KEYS; i++) {
            char k[16], name[16];
            shale_tree *tt;
            snprintf(name, sizeof name, "t%d", i % KT_TREES);
            snprintf(k, sizeof k, "g%03d", i);
            cr_assert_eq(shale_open_tree(kdb, name, &tt), SHALE_OK);
            cr_assert_eq(shale_get(tt, k, strlen(k), &b), SHALE_OK);
            uint64_t v;
            memcpy(&v, b.data, 8);
            if (i == 0)
                gen = v;
            cr_assert_eq(v, gen, "round %d: key %d holds generation %llu, key 0 %llu", round, i,
                         (unsigned long long)v, (unsigned long long)gen);
        }
        shale_buf_free(&b);
        cr_assert_geq(gen, durable, "round %d: flushed generation %llu lost (have %llu)", round,
                      (unsigned long long)durable, (unsigned long long)gen);
        durable = gen; /* the next child continues from what is there */
        cr_assert_eq(shale_close(kdb), SHALE_OK);
    }
    tu_rmrf(dir);
}

/* ---- writes made while a scan runs ------------------------------------------ */

typedef struct rewrite {
    shale_txn *x;
    shale_tree *t;
    char seen[256];
} rewrite;

static int rewrite_fn(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    rewrite *r = ctx;
    size_t n = strlen(r->seen);
    snprintf(r->seen + n, sizeof r->seen - n, "%.*s=%.*s ", (int)kl, (const char *)k, (int)vl,
             (const char *)v);
    if (kl == 1 && *(const char *)k == 'a') { /* ahead of the scan: change b, add c */
        cr_assert_eq(shale_txn_insert(r->x, r->t, "b", 1, "NEW", 3), SHALE_OK);
        cr_assert_eq(shale_txn_insert(r->x, r->t, "c", 1, "added", 5), SHALE_OK);
        cr_assert_eq(shale_txn_remove(r->x, r->t, "d", 1), SHALE_OK);
    }
    return 0;
}

static int scan_and_rewrite(shale_txn *x, void *arg)
{
    rewrite *r = arg;
    r->x = x;
    r->seen[0] = 0;
    cr_assert_eq(shale_txn_insert(x, r->t, "b", 1, "OLD", 3), SHALE_OK);
    cr_assert_eq(shale_txn_scan(x, r->t, NULL, 0, NULL, 0, false, rewrite_fn, r), SHALE_OK);
    return 0;
}

Test(txn, a_scan_shows_writes_its_callback_makes_ahead_of_it, .init = setup, .fini = teardown)
{
    put(ta, "a", "1");
    put(ta, "d", "4");
    put(ta, "e", "5");
    rewrite r = {.t = ta};
    cr_assert_eq(shale_transaction(db, &ta, 1, scan_and_rewrite, &r), SHALE_OK);
    cr_assert_str_eq(r.seen, "a=1 b=NEW c=added e=5 ");
    cr_assert(holds(ta, "b", "NEW"));
    cr_assert(holds(ta, "d", NULL));
}

/* A scan whose callback writes: random trials against a model.  Writes
 * ahead of the scan (in its direction) show with their new values, writes
 * behind it do not show, the current key is never visited twice; inserts,
 * removes and merge operands, before the scan or not (then the
 * transaction's own write set is created during the scan), both ways. */
#define SW_KEYS 16

static int append_op(void *ctx, const void *key, size_t klen, const void *old, size_t oldlen,
                     const void *operand, size_t oplen, shale_buf *out)
{
    char tmp[512];
    size_t n = old ? oldlen : 0;
    (void)ctx, (void)key, (void)klen;
    if (n + oplen > sizeof tmp)
        return SHALE_EINVAL;
    if (n)
        memcpy(tmp, old, n);
    memcpy(tmp + n, operand, oplen);
    return shale_buf_set(out, tmp, n + oplen);
}

typedef struct sw_trial {
    tu_rng *rng;
    shale_txn *x;
    int no, lo, hi, last, steps;
    bool reverse;
    bool present[SW_KEYS];
    char val[SW_KEYS][200];
    char err[256];
} sw_trial;

static void sw_key(char *b, int no, int i) { snprintf(b, 24, "T%05d/k%02d", no, i); }

static void sw_write(sw_trial *s, int i, int kind, const char *v)
{
    char k[24];
    sw_key(k, s->no, i);
    if (kind == 0) {
        cr_assert_eq(shale_txn_insert(s->x, tb, k, strlen(k), v, strlen(v)), SHALE_OK);
        s->present[i] = true;
        snprintf(s->val[i], sizeof s->val[i], "%s", v);
    } else if (kind == 1) {
        cr_assert_eq(shale_txn_remove(s->x, tb, k, strlen(k)), SHALE_OK);
        s->present[i] = false;
    } else {
        cr_assert_eq(shale_txn_merge(s->x, tb, k, strlen(k), v, strlen(v)), SHALE_OK);
        size_t n = s->present[i] ? strlen(s->val[i]) : 0;
        snprintf(s->val[i] + n, sizeof s->val[i] - n, "%s", v);
        s->present[i] = true;
    }
}

/* sw_next -- the model's next key after s->last in the scan's direction (-1: none) */
static int sw_next(const sw_trial *s)
{
    for (int i = s->last + (s->reverse ? -1 : 1); i >= s->lo && i < s->hi; i += s->reverse ? -1 : 1)
        if (s->present[i])
            return i;
    return -1;
}

static int sw_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    sw_trial *s = ctx;
    int e = sw_next(s);
    char ek[24];
    if (e < 0) {
        snprintf(s->err, sizeof s->err, "extra key %.*s", (int)kl, (const char *)k);
        return 99;
    }
    sw_key(ek, s->no, e);
    if (kl != strlen(ek) || memcmp(k, ek, kl) || vl != strlen(s->val[e]) ||
        memcmp(v, s->val[e], vl)) {
        snprintf(s->err, sizeof s->err, "got %.*s=%.*s, want %s=%s", (int)kl, (const char *)k,
                 (int)vl, (const char *)v, ek, s->val[e]);
        return 99;
    }
    s->last = e;
    s->steps++;
    for (int j = (int)tu_rng_range(s->rng, 3); j > 0; j--) {
        char v2[8];
        snprintf(v2, sizeof v2, "n%d", s->steps % 1000);
        int i = tu_rng_range(s->rng, 4) ? (int)tu_rng_range(s->rng, SW_KEYS) : e; /* or the current key */
        sw_write(s, i, (int)tu_rng_range(s->rng, 3), v2);
    }
    return 0;
}

static int sw_run(shale_txn *x, void *arg)
{
    sw_trial *s = arg;
    char lk[24], hk[24];
    s->x = x;
    for (int j = (int)tu_rng_range(s->rng, 4); j > 0; j--)
        sw_write(s, (int)tu_rng_range(s->rng, SW_KEYS), (int)tu_rng_range(s->rng, 3), "p");
    sw_key(lk, s->no, s->lo);
    sw_key(hk, s->no, s->hi);
    s->last = s->reverse ? s->hi : s->lo - 1;
    int rc = shale_txn_scan(x, tb, lk, strlen(lk), s->hi == SW_KEYS ? NULL : hk,
                            s->hi == SW_KEYS ? 0 : strlen(hk), s->reverse, sw_cb, s);
    if (rc == SHALE_OK && sw_next(s) >= 0) {
        snprintf(s->err, sizeof s->err, "key %d missed", sw_next(s));
        rc = 98;
    }
    return rc ? rc : 77; /* abort: the trial leaves nothing behind */
}

Test(txn, scans_whose_callback_writes_match_a_model, .init = setup, .fini = teardown,
     .timeout = 300)
{
    tu_rng rng;
    tu_rng_seed(&rng, tu_seed() ^ 0x5ca9);
    cr_assert_eq(shale_set_merge_operator(tb, append_op, NULL), SHALE_OK);
    int trials = (int)tu_scaled(3000);
    for (int no = 0; no < trials; no++) {
        sw_trial *s = calloc(1, sizeof *s);
        cr_assert_not_null(s);
        s->rng = &rng;
        s->no = no;
        for (int i = 0; i < SW_KEYS; i++)
            if (tu_rng_range(&rng, 2)) {
                char k[24];
                sw_key(k, no, i);
                cr_assert_eq(shale_insert(tb, k, strlen(k), "s", 1, NULL), SHALE_OK);
                s->present[i] = true;
                strcpy(s->val[i], "s");
            }
        s->lo = (int)tu_rng_range(&rng, SW_KEYS);
        s->hi = s->lo + 1 + (int)tu_rng_range(&rng, (uint64_t)(SW_KEYS - s->lo));
        s->reverse = tu_rng_range(&rng, 2);
        int rc = shale_transaction(db, &tb, 1, sw_run, s);
        cr_assert_eq(rc, 77, "trial %d (%s, [%d, %d)): rc %d, %s", no,
                     s->reverse ? "reverse" : "forward", s->lo, s->hi, rc, s->err);
        free(s);
    }
}

/* rewriting the key a scan is on does not make the scan visit it again */
typedef struct revisit {
    shale_txn *x;
    char seen[64];
} revisit;

static int revisit_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    revisit *r = ctx;
    size_t n = strlen(r->seen);
    (void)v, (void)vl;
    snprintf(r->seen + n, sizeof r->seen - n, "%.*s ", (int)kl, (const char *)k);
    if (n > 20)
        return 1; /* looping */
    if (kl == 1 && *(const char *)k == 'a')
        cr_assert_eq(shale_txn_insert(r->x, tb, "a", 1, "2", 1), SHALE_OK);
    return 0;
}

static int revisit_run(shale_txn *x, void *arg)
{
    revisit *r = arg;
    r->x = x;
    r->seen[0] = 0;
    cr_assert_eq(shale_txn_insert(x, tb, "a", 1, "1", 1), SHALE_OK);
    return shale_txn_scan(x, tb, NULL, 0, NULL, 0, false, revisit_cb, r);
}

Test(txn, rewriting_the_current_key_does_not_revisit_it, .init = setup, .fini = teardown)
{
    cr_assert_eq(shale_insert(tb, "b", 1, "x", 1, NULL), SHALE_OK);
    revisit r;
    cr_assert_eq(shale_transaction(db, &tb, 1, revisit_run, &r), SHALE_OK);
    cr_assert_str_eq(r.seen, "a b ");
}

static int read_one(shale_txn *x, void *arg)
{
    shale_buf b = SHALE_BUF_INIT;
    int rc = shale_txn_get(x, ta, "k", 1, &b);
    shale_buf_free(&b);
    if (rc == SHALE_OK && arg)
        rc = shale_txn_insert(x, ta, "k", 1, "w", 1);
    return rc;
}

Test(txn, on_a_read_only_database_reads_work_and_writes_fail_at_commit, .init = setup,
     .fini = teardown)
{
    put(ta, "k", "v");
    cr_assert_eq(shale_close(db), SHALE_OK);
    shale_options o;
    shale_options_default(&o);
    o.read_only = true;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "a", &ta), SHALE_OK);
    cr_assert_eq(shale_transaction(db, &ta, 1, read_one, NULL), SHALE_OK);
    cr_assert_eq(shale_transaction(db, &ta, 1, read_one, ta), SHALE_EREADONLY);
    cr_assert(holds(ta, "k", "v"));
}
