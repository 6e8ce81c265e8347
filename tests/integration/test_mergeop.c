/*
 * test_mergeop.c -- merge operators: operands folded at read time in
 * memtables, young segments and levels, collapsed by write-outs and merges,
 * kept (never lost, never misread) while a tree has no operator, deleting
 * when the operator says so, inside batches, through compaction and restarts;
 * then random merges, inserts, removes and range removes against a map, with
 * small memtables so most folds cross segments being merged underneath.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

static char dir[256];
static shale_db *db;
static shale_tree *t;
static int op_calls;

/* u64 add, little endian; a sum of 0 deletes the key; a bad old value or
 * operand is the operator's error */
static int add_op(void *ctx, const void *key, size_t klen, const void *old, size_t oldlen,
                  const void *operand, size_t oplen, shale_buf *out)
{
    (void)ctx;
    (void)key;
    (void)klen;
    __atomic_add_fetch(&op_calls, 1, __ATOMIC_RELAXED);
    uint64_t a = 0, d;
    if ((old && oldlen != 8) || oplen != 8)
        return -1000;
    if (old)
        memcpy(&a, old, 8);
    memcpy(&d, operand, 8);
    a += d;
    if (a == 0)
        return SHALE_NOTFOUND;
    return shale_buf_set(out, &a, 8);
}

static void open_db(bool with_op)
{
    shale_options o;
    shale_options_default(&o);
    o.memtable_size = 64 << 10;
    o.page_size = 1024;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "counters", &t), SHALE_OK);
    if (with_op)
        cr_assert_eq(shale_set_merge_operator(t, add_op, NULL), SHALE_OK);
}

static void setup(void)
{
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    open_db(true);
}

static void teardown(void)
{
    if (db)
        cr_assert_eq(shale_close(db), SHALE_OK);
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "check: %s", fault);
    tu_rmrf(dir);
}

static void reopen(bool with_op)
{
    cr_assert_eq(shale_close(db), SHALE_OK);
    open_db(with_op);
}

static void merge_u64(const char *k, uint64_t d)
{
    cr_assert_eq(shale_merge(t, k, strlen(k), &d, 8), SHALE_OK);
}

/* get_u64 -- the key's value (0 when absent); rc through *rc */
static uint64_t get_u64(const char *k, int *rcp)
{
    shale_buf b = SHALE_BUF_INIT;
    uint64_t v = 0;
    int rc = shale_get(t, k, strlen(k), &b);
    if (rc == SHALE_OK) {
        cr_assert_eq(b.len, 8);
        memcpy(&v, b.data, 8);
    }
    shale_buf_free(&b);
    if (rcp)
        *rcp = rc;
    return v;
}

Test(mergeop, folds_in_memtable_segments_and_levels, .init = setup, .fini = teardown)
{
    char k[32];
    /* 40 counters, 300 rounds: the operands of one counter end up spread
     * over the memtable, young segments and several levels */
    for (int r = 0; r < 300; r++)
        for (int i = 0; i < 40; i++) {
            snprintf(k, sizeof k, "counter-%03d", i);
            merge_u64(k, (uint64_t)(i + 1));
        }
    for (int i = 0; i < 40; i++) {
        int rc;
        snprintf(k, sizeof k, "counter-%03d", i);
        cr_assert_eq(get_u64(k, &rc), 300u * (uint64_t)(i + 1), "%s", k);
        cr_assert_eq(rc, SHALE_OK);
    }
    /* an iterator folds the same */
    shale_iter *it;
    int n = 0;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    for (int rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it), n++) {
        size_t vl;
        uint64_t v;
        memcpy(&v, shale_iter_value(it, &vl), 8);
        cr_assert_eq(vl, 8);
        cr_assert_eq(v, 300u * (uint64_t)(n + 1));
    }
    cr_assert_eq(n, 40);
    shale_iter_close(it);
    /* and so does every later session, with the operator registered again */
    reopen(true);
    snprintf(k, sizeof k, "counter-%03d", 7);
    cr_assert_eq(get_u64(k, NULL), 300u * 8);
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
}

Test(mergeop, merges_collapse_operands_into_values, .init = setup, .fini = teardown)
{
    /* a value then 2000 operands on one key, then enough other writes that
     * every segment holding them has been merged: reading the key then
     * folds nothing (the merges wrote the sum as a plain value) */
    char k[32], fill[200];
    uint64_t one = 1;
    memset(fill, 'x', sizeof fill);
    cr_assert_eq(shale_insert(t, "hot", 3, &one, 8, NULL), SHALE_OK);
    for (int i = 0; i < 2000; i++) {
        merge_u64("hot", 1);
        snprintf(k, sizeof k, "filler-%06d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), fill, 20, NULL), SHALE_OK);
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "more-%06d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), fill, sizeof fill, NULL), SHALE_OK);
    }
    reopen(true);
    op_calls = 0;
    cr_assert_eq(get_u64("hot", NULL), 2001u);
    cr_assert_eq(op_calls, 0, "a read folded %d operands", op_calls);
}

Test(mergeop, operator_may_delete_and_batches_keep_order, .init = setup, .fini = teardown)
{
    int rc;
    merge_u64("k", 5);
    merge_u64("k", (uint64_t)-5); /* sum 0: the operator deletes */
    get_u64("k", &rc);
    cr_assert_eq(rc, SHALE_NOTFOUND);
    merge_u64("k", 2); /* starts again from absent */
    cr_assert_eq(get_u64("k", NULL), 2u);

    shale_batch *b;
    uint64_t ten = 10, d = 3;
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    cr_assert_eq(shale_batch_merge(b, t, "k", 1, &d, 8), SHALE_OK);     /* 5 */
    cr_assert_eq(shale_batch_insert(b, t, "k", 1, &ten, 8), SHALE_OK);  /* 10 */
    cr_assert_eq(shale_batch_merge(b, t, "k", 1, &d, 8), SHALE_OK);     /* 13 */
    cr_assert_eq(shale_batch_remove(b, t, "j", 1), SHALE_OK);
    cr_assert_eq(shale_batch_merge(b, t, "j", 1, &d, 8), SHALE_OK);     /* 3 */
    cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
    shale_batch_free(b);
    cr_assert_eq(get_u64("k", NULL), 13u);
    cr_assert_eq(get_u64("j", NULL), 3u);
    reopen(true);
    cr_assert_eq(get_u64("k", NULL), 13u);
    cr_assert_eq(get_u64("j", NULL), 3u);
    /* a range remove under operands: they start from nothing again */
    cr_assert_eq(shale_remove_range(t, "a", 1, "z", 1), SHALE_OK);
    merge_u64("k", 1);
    cr_assert_eq(get_u64("k", NULL), 1u);
    /* the operator's own error reaches the reader */
    cr_assert_eq(shale_merge(t, "bad", 3, "x", 1), SHALE_OK);
    get_u64("bad", &rc);
    cr_assert_eq(rc, -1000);
    /* bad arguments */
    cr_assert_eq(shale_merge(NULL, "k", 1, &d, 8), SHALE_EINVAL);
    cr_assert_eq(shale_merge(t, "k", 1, NULL, 8), SHALE_EINVAL);
    cr_assert_eq(shale_set_merge_operator(NULL, add_op, NULL), SHALE_EINVAL);
}

Test(mergeop, without_an_operator_operands_are_kept_and_reads_fail_clearly, .init = setup,
     .fini = teardown)
{
    char k[32];
    int rc;
    uint64_t v = 100;
    cr_assert_eq(shale_insert(t, "plain", 5, &v, 8, NULL), SHALE_OK);
    reopen(false);
    for (int r = 0; r < 200; r++)
        for (int i = 0; i < 20; i++) {
            snprintf(k, sizeof k, "c%02d", i);
            merge_u64(k, 1);
        }
    merge_u64("plain", 1);
    /* no operator: a clear error, never a wrong value */
    get_u64("c05", &rc);
    cr_assert_eq(rc, SHALE_ENOMERGEOP);
    get_u64("plain", &rc);
    cr_assert_eq(rc, SHALE_ENOMERGEOP);
    shale_iter *it;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    cr_assert_eq(shale_iter_first(it), SHALE_ENOMERGEOP);
    shale_iter_close(it);
    shale_buf actual = SHALE_BUF_INIT;
    cr_assert_eq(shale_cas(t, "c05", 3, NULL, 0, "x", 1, &actual), SHALE_ENOMERGEOP);
    shale_buf_free(&actual);
    /* the operands went through write-outs and merges and a restart
     * without an operator; nothing was lost */
    reopen(false);
    get_u64("c07", &rc);
    cr_assert_eq(rc, SHALE_ENOMERGEOP);
    cr_assert_eq(shale_set_merge_operator(t, add_op, NULL), SHALE_OK);
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "c%02d", i);
        cr_assert_eq(get_u64(k, &rc), 200u, "%s", k);
        cr_assert_eq(rc, SHALE_OK);
    }
    cr_assert_eq(get_u64("plain", NULL), 101u);
    /* without the operator again, a new operand cannot be read (merges
     * may meanwhile have folded the old ones into plain values) */
    cr_assert_eq(shale_set_merge_operator(t, NULL, NULL), SHALE_OK);
    merge_u64("c00", 1);
    get_u64("c00", &rc);
    cr_assert_eq(rc, SHALE_ENOMERGEOP);
}

Test(mergeop, compaction_keeps_operands, .init = setup, .fini = teardown)
{
    char k[32], to[300];
    reopen(false); /* no operator anywhere before the compaction */
    for (int r = 0; r < 100; r++)
        for (int i = 0; i < 30; i++) {
            snprintf(k, sizeof k, "c%02d", i);
            merge_u64(k, 2);
        }
    reopen(false); /* written out and merged without an operator */
    for (int i = 0; i < 5; i++)
        merge_u64("c00", 1);
    cr_assert_eq(shale_close(db), SHALE_OK);
    db = NULL;
    snprintf(to, sizeof to, "%s/compacted", dir);
    cr_assert_eq(shale_compact(dir, to, NULL, NULL), SHALE_OK);
    shale_options o;
    shale_options_default(&o);
    cr_assert_eq(shale_open(to, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "counters", &t), SHALE_OK);
    int rc;
    get_u64("c03", &rc);
    cr_assert_eq(rc, SHALE_ENOMERGEOP);
    cr_assert_eq(shale_set_merge_operator(t, add_op, NULL), SHALE_OK);
    cr_assert_eq(get_u64("c00", NULL), 205u);
    cr_assert_eq(get_u64("c29", NULL), 200u);
    cr_assert_eq(shale_close(db), SHALE_OK);
    db = NULL;
    char fault[200];
    cr_assert_eq(tu_verify(to, fault, sizeof fault), SHALE_OK, "check: %s", fault);
    open_db(true);
}

/* ---- random operations against a map -------------------------------------- */

#define NKEYS 300

typedef struct model {
    bool present[NKEYS];
    uint64_t v[NKEYS];
} model;

static void key_of(int i, char *k) { snprintf(k, 16, "key-%04d", i); }

static void check_all(const model *m)
{
    char k[16];
    for (int i = 0; i < NKEYS; i++) {
        int rc;
        key_of(i, k);
        uint64_t v = get_u64(k, &rc);
        cr_assert_eq(rc, m->present[i] ? SHALE_OK : SHALE_NOTFOUND, "%s rc %d", k, rc);
        cr_assert_eq(v, m->present[i] ? m->v[i] : 0, "%s", k);
    }
    shale_iter *it;
    int i = 0;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    int rc;
    for (rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it)) {
        size_t kl, vl;
        const char *ik = shale_iter_key(it, &kl);
        while (i < NKEYS && !m->present[i])
            i++;
        cr_assert_lt(i, NKEYS);
        key_of(i, k);
        cr_assert(kl == strlen(k) && memcmp(ik, k, kl) == 0, "iterator at %.*s, want %s", (int)kl,
                  ik, k);
        uint64_t v;
        memcpy(&v, shale_iter_value(it, &vl), 8);
        cr_assert_eq(v, m->v[i]);
        i++;
    }
    cr_assert_eq(rc, SHALE_NOTFOUND);
    while (i < NKEYS && !m->present[i])
        i++;
    cr_assert_eq(i, NKEYS, "iterator ended early");
    shale_iter_close(it);
}

Test(mergeop, random_against_a_map, .init = setup, .fini = teardown, .timeout = 300)
{
    tu_rng r;
    model m = {0};
    char k[16], k2[16];
    tu_rng_seed(&r, tu_seed());
    uint64_t nops = tu_scaled(60000);
    for (uint64_t n = 1; n <= nops; n++) {
        int i = (int)tu_rng_range(&r, NKEYS), p = (int)tu_rng_range(&r, 100);
        key_of(i, k);
        if (p < 55) {
            uint64_t d = tu_rng_range(&r, 7) - 3;
            merge_u64(k, d);
            m.v[i] = (m.present[i] ? m.v[i] : 0) + d;
            m.present[i] = m.v[i] != 0;
        } else if (p < 80) {
            uint64_t v = tu_rng_range(&r, 1000) + 1;
            cr_assert_eq(shale_insert(t, k, strlen(k), &v, 8, NULL), SHALE_OK);
            m.present[i] = true;
            m.v[i] = v;
        } else if (p < 95) {
            cr_assert_eq(shale_remove(t, k, strlen(k), NULL), SHALE_OK);
            m.present[i] = false;
        } else if (p < 97) {
            int j = i + 1 + (int)tu_rng_range(&r, 10);
            key_of(j, k2);
            cr_assert_eq(shale_remove_range(t, k, strlen(k), k2, strlen(k2)), SHALE_OK);
            for (int x = i; x < j && x < NKEYS; x++)
                m.present[x] = false;
        } else {
            /* a batch of merges and a remove over a few keys */
            shale_batch *b;
            cr_assert_eq(shale_batch_new(&b), SHALE_OK);
            for (int x = 0; x < 4; x++) {
                int y = (int)tu_rng_range(&r, NKEYS);
                key_of(y, k2);
                if (x == 2) {
                    cr_assert_eq(shale_batch_remove(b, t, k2, strlen(k2)), SHALE_OK);
                    m.present[y] = false;
                } else {
                    uint64_t d = tu_rng_range(&r, 5) + 1;
                    cr_assert_eq(shale_batch_merge(b, t, k2, strlen(k2), &d, 8), SHALE_OK);
                    m.v[y] = (m.present[y] ? m.v[y] : 0) + d;
                    m.present[y] = m.v[y] != 0;
                }
            }
            cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
            shale_batch_free(b);
        }
        if (!m.present[i])
            m.v[i] = 0;
        if (n % 10000 == 0)
            check_all(&m);
        if (n % 25000 == 0)
            reopen(tu_rng_range(&r, 2) == 0); /* write-outs with or without */
        if (n % 25000 == 0)
            cr_assert_eq(shale_set_merge_operator(t, add_op, NULL), SHALE_OK);
    }
    check_all(&m);
    reopen(true);
    check_all(&m);
}

/* ---- order: an operator that appends ---------------------------------------- */

#define AP_MAX 4000 /* the operator keeps the last AP_MAX bytes */
#define AP_KEYS 120

/* append the operand; "D" deletes.  Order matters, and results past a
 * quarter of a page live in overflow runs. */
static int append_op(void *ctx, const void *key, size_t klen, const void *old, size_t oldlen,
                     const void *operand, size_t oplen, shale_buf *out)
{
    (void)ctx, (void)key, (void)klen;
    if (oplen == 1 && *(const char *)operand == 'D')
        return SHALE_NOTFOUND;
    size_t n = (old ? oldlen : 0) + oplen, skip = n > AP_MAX ? n - AP_MAX : 0;
    uint8_t *tmp = malloc(n + 1);
    if (!tmp)
        return SHALE_ENOMEM;
    if (old && oldlen)
        memcpy(tmp, old, oldlen);
    memcpy(tmp + (old ? oldlen : 0), operand, oplen);
    int rc = shale_buf_set(out, tmp + skip, n - skip);
    free(tmp);
    return rc;
}

typedef struct apv {
    bool present;
    size_t n;
    uint8_t v[AP_MAX + 8];
} apv;

static void ap_apply(apv *m, const uint8_t *op, size_t n)
{
    if (n == 1 && op[0] == 'D') {
        m->present = false;
        return;
    }
    uint8_t tmp[2 * AP_MAX + 8];
    size_t have = m->present ? m->n : 0;
    memcpy(tmp, m->v, have);
    memcpy(tmp + have, op, n);
    size_t all = have + n, skip = all > AP_MAX ? all - AP_MAX : 0;
    memcpy(m->v, tmp + skip, all - skip);
    m->n = all - skip;
    m->present = true;
}

static void ap_check(const apv *m, bool backward)
{
    char k[16];
    shale_buf b = SHALE_BUF_INIT;
    for (int i = 0; i < AP_KEYS; i++) {
        snprintf(k, sizeof k, "ap%04d", i);
        int rc = shale_get(t, k, strlen(k), &b);
        cr_assert_eq(rc, m[i].present ? SHALE_OK : SHALE_NOTFOUND, "%s: rc %d", k, rc);
        if (m[i].present)
            cr_assert(b.len == m[i].n && memcmp(b.data, m[i].v, b.len) == 0, "%s differs", k);
    }
    shale_buf_free(&b);
    shale_iter *it;
    cr_assert_eq(shale_iter_open(t, &it), SHALE_OK);
    int i = backward ? AP_KEYS - 1 : 0, rc;
    for (rc = backward ? shale_iter_last(it) : shale_iter_first(it); rc == SHALE_OK;
         rc = backward ? shale_iter_prev(it) : shale_iter_next(it)) {
        while (i >= 0 && i < AP_KEYS && !m[i].present)
            i += backward ? -1 : 1;
        cr_assert(i >= 0 && i < AP_KEYS, "iterator past the model");
        size_t kl, vl;
        const void *key = shale_iter_key(it, &kl), *v = shale_iter_value(it, &vl);
        snprintf(k, sizeof k, "ap%04d", i);
        cr_assert(kl == strlen(k) && memcmp(key, k, kl) == 0, "iterator at the wrong key");
        cr_assert(vl == m[i].n && memcmp(v, m[i].v, vl) == 0, "iterator value of %s differs", k);
        i += backward ? -1 : 1;
    }
    cr_assert_eq(rc, SHALE_NOTFOUND);
    while (i >= 0 && i < AP_KEYS && !m[i].present)
        i += backward ? -1 : 1;
    cr_assert(i < 0 || i >= AP_KEYS, "iterator ended early");
    shale_iter_close(it);
}

Test(mergeop, order_matters_with_an_appending_operator, .init = setup, .fini = teardown,
     .timeout = 300)
{
    tu_rng r;
    apv *m = calloc(AP_KEYS, sizeof *m);
    uint8_t op[1600];
    char k[16];
    cr_assert_not_null(m);
    tu_rng_seed(&r, tu_seed() ^ 0xa99e);
    cr_assert_eq(shale_set_merge_operator(t, append_op, NULL), SHALE_OK);
    uint64_t nops = tu_scaled(30000);
    for (uint64_t n = 1; n <= nops; n++) {
        int i = (int)tu_rng_range(&r, AP_KEYS), p = (int)tu_rng_range(&r, 100);
        snprintf(k, sizeof k, "ap%04d", i);
        if (p < 70) { /* an operand: short, long (an overflow run), or "D" */
            size_t len = p < 3 ? 1 : tu_rng_range(&r, 8) ? 1 + tu_rng_range(&r, 40)
                                                          : 600 + tu_rng_range(&r, 1000);
            for (size_t j = 0; j < len; j++)
                op[j] = (uint8_t)('a' + (n + j) % 26);
            if (p < 3)
                op[0] = 'D';
            cr_assert_eq(shale_merge(t, k, strlen(k), op, len), SHALE_OK);
            ap_apply(&m[i], op, len);
        } else if (p < 85) {
            size_t len = tu_rng_range(&r, 2) ? 5 : 1200;
            memset(op, 'V', len);
            cr_assert_eq(shale_insert(t, k, strlen(k), op, len, NULL), SHALE_OK);
            memcpy(m[i].v, op, len);
            m[i].n = len;
            m[i].present = true;
        } else if (p < 97) {
            cr_assert_eq(shale_remove(t, k, strlen(k), NULL), SHALE_OK);
            m[i].present = false;
        } else {
            char k2[16];
            int j = i + 1 + (int)tu_rng_range(&r, 6);
            snprintf(k2, sizeof k2, "ap%04d", j);
            cr_assert_eq(shale_remove_range(t, k, strlen(k), k2, strlen(k2)), SHALE_OK);
            for (int x = i; x < j && x < AP_KEYS; x++)
                m[x].present = false;
        }
        if (n % 7500 == 0) {
            ap_check(m, n % 15000 == 0);
            /* a session without the operator: write-outs and merges keep
             * the operands in order */
            reopen(false);
            for (int x = 0; x < 2000; x++) {
                snprintf(k, sizeof k, "zz%05d", x);
                cr_assert_eq(shale_insert(t, k, strlen(k), op, 100, NULL), SHALE_OK);
            }
            reopen(false);
            cr_assert_eq(shale_set_merge_operator(t, append_op, NULL), SHALE_OK);
            cr_assert_eq(shale_remove_range(t, "zz", 2, NULL, 0), SHALE_OK);
        }
    }
    ap_check(m, false);
    reopen(true);
    cr_assert_eq(shale_set_merge_operator(t, append_op, NULL), SHALE_OK);
    ap_check(m, true);
    free(m);
}
