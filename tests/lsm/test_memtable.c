/*
 * test_memtable.c -- the memtable against a model (a sorted array of every
 * version), big values, reference counting, and one writer racing readers.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/lsm/memtable.h"
#include "../../src/space/common.h"

/* --- a tiny deterministic generator ---------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* --- the model ------------------------------------------------------------- */

typedef struct mver {
    uint8_t key[16];
    size_t klen;
    uint64_t seq;
    uint8_t kind;
    uint8_t *val;
    size_t vlen;
} mver;

typedef struct model {
    mver *v;
    size_t n, cap;
} model;

/* model_cmp -- the memtable's order: key ascending, seq descending. */
static int model_cmp(const void *a, const void *b)
{
    const mver *x = a, *y = b;
    int c = key_cmp(x->key, x->klen, y->key, y->klen);
    if (c)
        return c;
    return (x->seq < y->seq) - (x->seq > y->seq);
}

static void model_add(model *m, const mver *e)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        m->v = realloc(m->v, m->cap * sizeof(mver));
        cr_assert_not_null(m->v);
    }
    m->v[m->n++] = *e;
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i].val);
    free(m->v);
}

/* visible -- the newest version of each key at snap, in key order. */
static size_t visible(const model *m, uint64_t snap, const mver **out)
{
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        const mver *e = &m->v[i];
        if (e->seq > snap)
            continue;
        if (k > 0 && key_cmp(out[k - 1]->key, out[k - 1]->klen, e->key, e->klen) == 0)
            continue;
        out[k++] = e;
    }
    return k;
}

static void expect_at(const mt_iter *it, const mver *e)
{
    cr_assert(mt_iter_valid(it));
    size_t klen, vlen;
    const void *k = mt_iter_key(it, &klen);
    const void *v = mt_iter_value(it, &vlen);
    cr_assert_eq(key_cmp(k, klen, e->key, e->klen), 0);
    cr_assert_eq(mt_iter_seq(it), e->seq);
    cr_assert_eq(mt_iter_kind(it), e->kind);
    cr_assert_eq(vlen, e->vlen);
    cr_assert(vlen == 0 || memcmp(v, e->val, vlen) == 0);
}

/* random_key -- a short key over a small alphabet, so keys repeat and some are
 * prefixes of others (including the empty key). */
static size_t random_key(uint64_t *s, uint8_t *k)
{
    size_t len = rng_next(s) % 5;
    for (size_t i = 0; i < len; i++)
        k[i] = (uint8_t)('a' + rng_next(s) % 3);
    return len;
}

/* fill -- n random versions into both the table and the model (seq 1..n). */
static void fill(mt_table *mt, model *m, uint64_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mver e = {0};
        e.klen = random_key(s, e.key);
        e.seq = m->n + 1;
        e.kind = (uint8_t)(rng_next(s) % 3);
        e.vlen = rng_next(s) % 40;
        e.val = malloc(e.vlen + 1);
        for (size_t j = 0; j < e.vlen; j++)
            e.val[j] = (uint8_t)rng_next(s);
        cr_assert_eq(mt_add(mt, e.seq, e.kind, e.key, e.klen, e.val, e.vlen), SHALE_OK);
        model_add(m, &e);
    }
    qsort(m->v, m->n, sizeof(mver), model_cmp);
}

/* --- model tests ----------------------------------------------------------- */

Test(memtable, get_sees_only_visible_versions)
{
    mt_table *mt;
    model m = {0};
    uint64_t s = 42;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    fill(mt, &m, &s, 2000);
    cr_assert_eq(mt_count(mt), 2000);
    for (int t = 0; t < 20000; t++) {
        uint8_t key[16];
        size_t klen = random_key(&s, key);
        uint64_t snap = rng_next(&s) % 2100;
        const mver *want = NULL;
        for (size_t i = 0; i < m.n && !want; i++)
            if (key_cmp(m.v[i].key, m.v[i].klen, key, klen) == 0 && m.v[i].seq <= snap)
                want = &m.v[i];
        uint8_t kind;
        const void *val;
        size_t vlen;
        int rc = mt_get(mt, key, klen, snap, &kind, &val, &vlen, NULL);
        if (want == NULL) {
            cr_assert_eq(rc, SHALE_NOTFOUND);
            continue;
        }
        cr_assert_eq(rc, SHALE_OK);
        cr_assert_eq(kind, want->kind);
        cr_assert_eq(vlen, want->vlen);
        cr_assert(vlen == 0 || memcmp(val, want->val, vlen) == 0);
    }
    mt_unref(mt);
    model_free(&m);
}

Test(memtable, iterates_newest_visible_version_of_each_key)
{
    mt_table *mt;
    model m = {0};
    uint64_t s = 7;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    fill(mt, &m, &s, 3000);
    const mver **vis = malloc(m.n * sizeof(*vis));
    for (int t = 0; t < 200; t++) {
        uint64_t snap = t == 0 ? UINT64_MAX : t == 1 ? 0 : rng_next(&s) % 3100;
        size_t nv = visible(&m, snap, vis);
        mt_iter it;
        mt_iter_init(&it, mt, snap);
        mt_iter_first(&it);
        for (size_t i = 0; i < nv; i++, mt_iter_next(&it))
            expect_at(&it, vis[i]);
        cr_assert(!mt_iter_valid(&it));
        mt_iter_last(&it);
        for (size_t i = nv; i-- > 0; mt_iter_prev(&it))
            expect_at(&it, vis[i]);
        cr_assert(!mt_iter_valid(&it));
    }
    free(vis);
    mt_unref(mt);
    model_free(&m);
}

Test(memtable, seeks_and_direction_changes_match_model)
{
    mt_table *mt;
    model m = {0};
    uint64_t s = 99;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    fill(mt, &m, &s, 1500);
    const mver **vis = malloc(m.n * sizeof(*vis));
    for (int t = 0; t < 3000; t++) {
        uint64_t snap = rng_next(&s) % 1600;
        size_t nv = visible(&m, snap, vis);
        uint8_t key[16];
        size_t klen = random_key(&s, key);
        bool le = rng_next(&s) & 1;
        /* pos = model index the seek lands on; nv means none */
        size_t pos = nv;
        if (le) {
            for (size_t i = nv; i-- > 0;)
                if (key_cmp(vis[i]->key, vis[i]->klen, key, klen) <= 0) {
                    pos = i;
                    break;
                }
        } else {
            for (size_t i = 0; i < nv && pos == nv; i++)
                if (key_cmp(vis[i]->key, vis[i]->klen, key, klen) >= 0)
                    pos = i;
        }
        mt_iter it;
        mt_iter_init(&it, mt, snap);
        if (le)
            mt_iter_seek_le(&it, key, klen);
        else
            mt_iter_seek_ge(&it, key, klen);
        if (pos == nv) {
            cr_assert(!mt_iter_valid(&it));
            continue;
        }
        expect_at(&it, vis[pos]);
        for (int step = 0; step < 6; step++) {
            if (rng_next(&s) & 1) {
                mt_iter_next(&it);
                if (++pos == nv)
                    break;
            } else {
                mt_iter_prev(&it);
                if (pos-- == 0)
                    break;
            }
            expect_at(&it, vis[pos]);
        }
        if (pos == nv || pos == SIZE_MAX)
            cr_assert(!mt_iter_valid(&it));
    }
    free(vis);
    mt_unref(mt);
    model_free(&m);
}

Test(memtable, keys_newer_than_snapshot_are_skipped_both_ways)
{
    mt_table *mt;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    /* b exists only after the snapshot; a and c have visible versions */
    cr_assert_eq(mt_add(mt, 1, 0, "a", 1, "a1", 2), SHALE_OK);
    cr_assert_eq(mt_add(mt, 2, 0, "c", 1, "c2", 2), SHALE_OK);
    cr_assert_eq(mt_add(mt, 5, 0, "b", 1, "b5", 2), SHALE_OK);
    cr_assert_eq(mt_add(mt, 6, 0, "b", 1, "b6", 2), SHALE_OK);
    cr_assert_eq(mt_add(mt, 7, 0, "d", 1, "d7", 2), SHALE_OK);
    cr_assert_eq(mt_add(mt, 8, 1, "c", 1, "", 0), SHALE_OK);
    mt_iter it;
    size_t kl;
    mt_iter_init(&it, mt, 4);
    mt_iter_last(&it);
    cr_assert_eq(memcmp(mt_iter_key(&it, &kl), "c", 1), 0);
    cr_assert_eq(mt_iter_seq(&it), 2);
    mt_iter_prev(&it);
    cr_assert_eq(memcmp(mt_iter_key(&it, &kl), "a", 1), 0);
    mt_iter_next(&it);
    cr_assert_eq(memcmp(mt_iter_key(&it, &kl), "c", 1), 0);
    mt_iter_seek_le(&it, "bz", 2);
    cr_assert_eq(memcmp(mt_iter_key(&it, &kl), "a", 1), 0);
    mt_iter_seek_ge(&it, "b", 1);
    cr_assert_eq(memcmp(mt_iter_key(&it, &kl), "c", 1), 0);
    mt_iter_init(&it, mt, 0);
    mt_iter_first(&it);
    cr_assert(!mt_iter_valid(&it));
    mt_iter_last(&it);
    cr_assert(!mt_iter_valid(&it));
    mt_iter_init(&it, mt, UINT64_MAX);
    mt_iter_seek_ge(&it, "c", 1);
    cr_assert_eq(mt_iter_kind(&it), 1);
    cr_assert_eq(mt_iter_seq(&it), 8);
    mt_unref(mt);
}

Test(memtable, many_versions_of_one_key_iterate_once)
{
    mt_table *mt;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    cr_assert_eq(mt_add(mt, 1, 0, "a", 1, "", 0), SHALE_OK);
    for (uint64_t q = 2; q < 1000; q++)
        cr_assert_eq(mt_add(mt, q, 0, "k", 1, &q, sizeof(q)), SHALE_OK);
    cr_assert_eq(mt_add(mt, 1000, 0, "z", 1, "", 0), SHALE_OK);
    mt_iter it;
    size_t kl, vl;
    mt_iter_init(&it, mt, 500);
    mt_iter_first(&it);
    mt_iter_next(&it);
    cr_assert_eq(mt_iter_seq(&it), 500);
    uint64_t q;
    memcpy(&q, mt_iter_value(&it, &vl), sizeof(q));
    cr_assert_eq(q, 500);
    mt_iter_next(&it);
    cr_assert(!mt_iter_valid(&it)); /* z (seq 1000) is not visible */
    mt_iter_init(&it, mt, 2000);
    mt_iter_seek_ge(&it, "k", 1);
    mt_iter_next(&it);
    cr_assert_eq(memcmp(mt_iter_key(&it, &kl), "z", 1), 0);
    mt_iter_prev(&it);
    cr_assert_eq(mt_iter_seq(&it), 999);
    mt_unref(mt);
}

Test(memtable, empty_table_has_nothing)
{
    mt_table *mt;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    uint8_t kind;
    const void *v;
    size_t vl;
    cr_assert_eq(mt_get(mt, "", 0, UINT64_MAX, &kind, &v, &vl, NULL), SHALE_NOTFOUND);
    mt_iter it;
    mt_iter_init(&it, mt, UINT64_MAX);
    mt_iter_first(&it);
    cr_assert(!mt_iter_valid(&it));
    mt_iter_last(&it);
    cr_assert(!mt_iter_valid(&it));
    mt_iter_seek_le(&it, "x", 1);
    cr_assert(!mt_iter_valid(&it));
    mt_iter_seek_ge(&it, "", 0);
    cr_assert(!mt_iter_valid(&it));
    cr_assert_eq(mt_count(mt), 0);
    mt_unref(mt);
}

Test(memtable, big_values_round_trip_and_count_in_bytes)
{
    mt_table *mt;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    size_t sizes[] = {300 << 10, 1 << 20, 3 << 20, 5, 200 << 10};
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        uint8_t *v = malloc(sizes[i]);
        memset(v, (int)i + 1, sizes[i]);
        size_t before = mt_bytes(mt);
        cr_assert_eq(mt_add(mt, i + 1, 0, &i, sizeof(i), v, sizes[i]), SHALE_OK);
        cr_assert_geq(mt_bytes(mt), before + sizes[i]);
        free(v);
    }
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        uint8_t kind;
        const uint8_t *v;
        size_t vl;
        cr_assert_eq(mt_get(mt, &i, sizeof(i), UINT64_MAX, &kind, (const void **)&v, &vl, NULL),
                     SHALE_OK);
        cr_assert_eq(vl, sizes[i]);
        cr_assert(v[0] == i + 1 && v[vl - 1] == i + 1);
    }
    cr_assert_lt(mt_bytes(mt), 16u << 20);
    mt_unref(mt);
}

Test(memtable, bytes_grow_with_entries_not_with_chunks)
{
    mt_table *mt;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    size_t b0 = mt_bytes(mt);
    cr_assert_lt(b0, 4096);
    cr_assert_eq(mt_add(mt, 1, 0, "key", 3, "value", 5), SHALE_OK);
    cr_assert_gt(mt_bytes(mt), b0);
    cr_assert_lt(mt_bytes(mt), 4096);
    mt_unref(mt);
}

Test(memtable, last_unref_frees)
{
    mt_table *mt;
    cr_assert_eq(mt_create(&mt), SHALE_OK);
    mt_ref(mt);
    cr_assert_eq(mt_add(mt, 1, 0, "k", 1, "v", 1), SHALE_OK);
    mt_unref(mt);
    uint8_t kind;
    const void *v;
    size_t vl;
    cr_assert_eq(mt_get(mt, "k", 1, 1, &kind, &v, &vl, NULL), SHALE_OK);
    mt_unref(mt); /* ASan reports a leak or a double free if this is wrong */
    mt_unref(NULL);
}

/* --- one writer, three readers --------------------------------------------- */

/* Criterion's asserts must not run off the main thread, so the threads record
 * the first failure here and the test asserts on it after joining. */

#define CONC_KEYS 20000u

typedef struct conc {
    mt_table *mt;
    _Atomic uint64_t published; /* every seq <= this is in the table */
    _Atomic bool stop;
    _Atomic uint64_t checks;
    _Atomic(const char *) fail;
} conc;

/* conc_fail -- record the first failure and stop everyone. */
static bool conc_fail(conc *c, const char *what)
{
    const char *none = NULL;
    atomic_compare_exchange_strong(&c->fail, &none, what);
    atomic_store(&c->stop, true);
    return false;
}

#define CHECK(c, cond)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return conc_fail((c), #cond);                                                          \
    } while (0)

/* conc_key -- the key written at seq q (a function of q, so readers know it). */
static size_t conc_key(uint64_t q, uint8_t *k)
{
    uint64_t id = mix64(q) % CONC_KEYS;
    size_t len = 4 + id % 9;
    for (size_t i = 0; i < len; i++)
        k[i] = (uint8_t)(mix64(id + i) >> 56);
    k[0] = (uint8_t)(id >> 8); /* keep distinct ids distinct */
    k[1] = (uint8_t)id;
    return len;
}

/* conc_val -- the value written at seq q: its seq, then bytes derived from it. */
static size_t conc_val(uint64_t q, uint8_t *v)
{
    size_t len = 8 + mix64(q ^ 0x55) % 120;
    put_u64(v, q);
    for (size_t i = 8; i < len; i++)
        v[i] = (uint8_t)(q * 31 + i);
    return len;
}

/* conc_check_entry -- a (key, value) pair is exactly what was written at its seq. */
static bool conc_check_entry(conc *c, const void *k, size_t kl, const uint8_t *v, size_t vl,
                             uint64_t snap, uint64_t *seq)
{
    uint8_t want[128];
    CHECK(c, vl >= 8);
    uint64_t q = get_u64(v);
    CHECK(c, q >= 1 && q <= snap);
    CHECK(c, conc_val(q, want) == vl && memcmp(v, want, vl) == 0);
    if (k != NULL) {
        CHECK(c, conc_key(q, want) == kl && memcmp(k, want, kl) == 0);
    }
    *seq = q;
    return true;
}

static void *conc_writer(void *arg)
{
    conc *c = arg;
    uint8_t k[16], v[128];
    for (uint64_t q = 1; !atomic_load(&c->stop); q++) {
        size_t kl = conc_key(q, k);
        size_t vl = conc_val(q, v);
        if (mt_add(c->mt, q, 0, k, kl, v, vl) != SHALE_OK) {
            conc_fail(c, "mt_add failed");
            break;
        }
        atomic_store_explicit(&c->published, q, memory_order_release);
        (void)mt_bytes(c->mt);
    }
    return NULL;
}

/* conc_round -- one seek, up to 200 steps, and one get, all checked. */
static bool conc_round(conc *c, uint64_t *s)
{
    uint64_t snap = atomic_load_explicit(&c->published, memory_order_acquire);
    mt_iter it;
    mt_iter_init(&it, c->mt, snap);
    bool fwd = rng_next(s) & 1;
    uint8_t k[16];
    uint64_t q0 = snap ? 1 + rng_next(s) % snap : 0;
    size_t kl = conc_key(q0, k);
    if (fwd)
        mt_iter_seek_ge(&it, k, kl);
    else
        mt_iter_seek_le(&it, k, kl);
    const void *pk = NULL;
    size_t pkl = 0;
    for (int i = 0; i < 200 && mt_iter_valid(&it); i++) {
        size_t ckl, vl;
        const void *ck = mt_iter_key(&it, &ckl);
        const void *v = mt_iter_value(&it, &vl);
        uint64_t q;
        if (!conc_check_entry(c, ck, ckl, v, vl, snap, &q))
            return false;
        CHECK(c, mt_iter_seq(&it) == q);
        if (pk != NULL) {
            int cmp = key_cmp(pk, pkl, ck, ckl);
            CHECK(c, fwd ? cmp < 0 : cmp > 0);
        }
        pk = ck;
        pkl = ckl;
        if (fwd)
            mt_iter_next(&it);
        else
            mt_iter_prev(&it);
    }
    /* the key written at q0 <= snap must be visible, at a version >= q0 */
    if (q0) {
        uint8_t kind;
        const void *v;
        size_t vl;
        uint64_t q;
        CHECK(c, mt_get(c->mt, k, kl, snap, &kind, &v, &vl, NULL) == SHALE_OK);
        if (!conc_check_entry(c, k, kl, v, vl, snap, &q))
            return false;
        CHECK(c, q >= q0);
    }
    return true;
}

static void *conc_reader(void *arg)
{
    conc *c = arg;
    uint64_t s = 0x1234567 + (uint64_t)(uintptr_t)arg;
    while (!atomic_load(&c->stop) && conc_round(c, &s))
        atomic_fetch_add(&c->checks, 1);
    return NULL;
}

Test(memtable, one_writer_and_readers_race_cleanly, .timeout = 60)
{
    conc c;
    cr_assert_eq(mt_create(&c.mt), SHALE_OK);
    atomic_init(&c.published, 0);
    atomic_init(&c.stop, false);
    atomic_init(&c.checks, 0);
    atomic_init(&c.fail, NULL);
    pthread_t w, r[3];
    cr_assert_eq(pthread_create(&w, NULL, conc_writer, &c), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&r[i], NULL, conc_reader, &c), 0);
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    atomic_store(&c.stop, true);
    pthread_join(w, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(r[i], NULL);
    const char *fail = atomic_load(&c.fail);
    cr_assert_null(fail, "%s", fail);
    cr_assert_gt(atomic_load(&c.checks), 0);
    cr_assert_eq(mt_count(c.mt), atomic_load(&c.published));
    mt_unref(c.mt);
}
