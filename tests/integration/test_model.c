/*
 * test_model.c -- random operations against a plain in-memory ordered map.
 *
 * Two trees; a mix of blind and read-modify-write inserts and removes, gets,
 * batches across both trees, scans in both directions with random bounds,
 * seek / seek_prev followed by next/prev with direction changes, iterators
 * held open across writes, write-outs and merges (their snapshot must not
 * move), removing ranges of keys (alone and in batches) and clearing a tree,
 * compare-and-swap and update (both modes), merge operands (a u64-add
 * operator, alone and in batches), transactions over both trees (gets,
 * scans, writes; committed or aborted), snapshots of both trees,
 * dropping and re-creating a tree, flushes and close + reopen.  Every result is compared
 * with the model, a sorted array per tree.  Keys include the empty key, keys that share long
 * prefixes (and are prefixes of each other), keys over 512 bytes and a few within a few bytes of
 * SHALE_MAX_KEY_SIZE; values include empty ones and some over 2 KiB. The memtable is small and
 * merges are frequent, so most reads go through segments written out and merged underneath.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

#define NTREES 2
#define POOL 3000 /* distinct key indexes */

/* ---- the model --------------------------------------------------------- */

typedef struct ment {
    uint8_t *k;
    size_t kl;
    uint8_t *v;
    size_t vl;
} ment;

typedef struct mtree {
    ment *e;
    size_t n, cap;
} mtree;

static int kcmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* lower -- index of the first entry >= key. */
static size_t lower(const mtree *t, const void *k, size_t kl)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (kcmp(t->e[mid].k, t->e[mid].kl, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* upper -- index of the first entry > key. */
static size_t upper(const mtree *t, const void *k, size_t kl)
{
    size_t i = lower(t, k, kl);
    return (i < t->n && kcmp(t->e[i].k, t->e[i].kl, k, kl) == 0) ? i + 1 : i;
}

static uint8_t *dup(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    cr_assert_not_null(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

static ment *m_find(mtree *t, const void *k, size_t kl)
{
    size_t i = lower(t, k, kl);
    return (i < t->n && kcmp(t->e[i].k, t->e[i].kl, k, kl) == 0) ? &t->e[i] : NULL;
}

static void m_put(mtree *t, const void *k, size_t kl, const void *v, size_t vl)
{
    size_t i = lower(t, k, kl);
    if (i < t->n && kcmp(t->e[i].k, t->e[i].kl, k, kl) == 0) {
        free(t->e[i].v);
        t->e[i].v = dup(v, vl);
        t->e[i].vl = vl;
        return;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->e = realloc(t->e, t->cap * sizeof *t->e);
        cr_assert_not_null(t->e);
    }
    memmove(&t->e[i + 1], &t->e[i], (t->n - i) * sizeof *t->e);
    t->e[i] = (ment){dup(k, kl), kl, dup(v, vl), vl};
    t->n++;
}

static void m_del(mtree *t, const void *k, size_t kl)
{
    size_t i = lower(t, k, kl);
    if (i < t->n && kcmp(t->e[i].k, t->e[i].kl, k, kl) == 0) {
        free(t->e[i].k);
        free(t->e[i].v);
        memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof *t->e);
        t->n--;
    }
}

/* m_del_range -- remove the entries in [lo, hi) (hi NULL: to the end). */
static void m_del_range(mtree *t, const void *lo, size_t lol, const void *hi, size_t hil)
{
    size_t a = lower(t, lo, lol), z = hi ? lower(t, hi, hil) : t->n;
    if (z <= a)
        return;
    for (size_t i = a; i < z; i++) {
        free(t->e[i].k);
        free(t->e[i].v);
    }
    memmove(&t->e[a], &t->e[z], (t->n - z) * sizeof *t->e);
    t->n -= z - a;
}

static void m_free(mtree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].k);
        free(t->e[i].v);
    }
    free(t->e);
    memset(t, 0, sizeof *t);
}

/* m_copy_range -- a deep copy of entries [a, b) (a snapshot). */
static void m_copy_range(const mtree *t, size_t a, size_t b, mtree *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = a; i < b; i++)
        m_put(out, t->e[i].k, t->e[i].kl, t->e[i].v, t->e[i].vl);
}

/* ---- keys and values ----------------------------------------------------- */

typedef struct ctx {
    tu_rng rng;
    uint64_t seed;
    char dir[256];
    shale_options opts;
    shale_db *db;
    shale_tree *t[NTREES];
    mtree m[NTREES];
    shale_buf buf, old;
    uint8_t *kbuf, *kbuf2, *vbuf;
    uint64_t op;
    uint64_t stats[20]; /* operations done, by kind */
} ctx;

static uint8_t prefix_bytes[1200];

/* pool_key -- key number i of the pool. */
static size_t pool_key(uint64_t i, uint8_t *out)
{
    uint64_t h = i * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    if (i == 0)
        return 0;
    if (i % 400 == 7) {
        /* Within a few bytes of the limit. */
        size_t n = SHALE_MAX_KEY_SIZE - (size_t)(h % 8);
        memset(out, 'M', n);
        memcpy(out + n - 8, &i, 8);
        return n;
    }
    switch (i % 4) {
    case 0:
    case 1: {
        /* Short binary keys (zero and 0xff bytes included). */
        size_t n = 1 + (size_t)(h % 12);
        for (size_t j = 0; j < n; j++)
            out[j] = (uint8_t)(h >> (j * 5));
        out[0] = (uint8_t)(i >> 4);
        return n;
    }
    case 2: {
        /* A shared prefix of 8..1000 bytes plus a short suffix: some keys
         * are prefixes of others, some are over 512 bytes. */
        static const size_t plens[] = {8, 100, 300, 511, 512, 513, 1000};
        size_t p = plens[h % 7], s = (size_t)((h >> 8) % 4);
        memcpy(out, prefix_bytes, p);
        for (size_t j = 0; j < s; j++)
            out[p + j] = (uint8_t)(h >> (16 + 8 * j));
        return p + s;
    }
    default:
        return (size_t)sprintf((char *)out, "key/%08llu", (unsigned long long)(h % 100000));
    }
}

/* pick_key -- mostly pool keys (rarely the huge ones), sometimes random bytes. */
static size_t pick_key(ctx *c, uint8_t *out)
{
    if (tu_rng_range(&c->rng, 20) == 0) {
        size_t n = (size_t)tu_rng_range(&c->rng, 20);
        tu_rng_bytes(&c->rng, out, n);
        return n;
    }
    uint64_t i;
    do
        i = tu_rng_range(&c->rng, POOL);
    while (i % 400 == 7 && tu_rng_range(&c->rng, 8) != 0);
    return pool_key(i, out);
}

/* pick_value -- empty, short, medium, or over 2 KiB (overflow pages). */
static size_t pick_value(ctx *c, uint8_t *out)
{
    uint64_t r = tu_rng_range(&c->rng, 1000);
    size_t n;
    if (r < 50)
        n = 0;
    else if (r < 750)
        n = 1 + (size_t)tu_rng_range(&c->rng, 100);
    else if (r < 950)
        n = 100 + (size_t)tu_rng_range(&c->rng, 1400);
    else if (r < 998)
        n = 2049 + (size_t)tu_rng_range(&c->rng, 10000);
    else
        n = 100000 + (size_t)tu_rng_range(&c->rng, 50000);
    tu_rng_bytes(&c->rng, out, n);
    return n;
}

/* ---- helpers ----------------------------------------------------------------- */

#define CHECK(cond, ...)                                                                           \
    cr_assert(cond, "op %llu (seed %llu): %s", (unsigned long long)c->op,                          \
              (unsigned long long)c->seed, msg(__VA_ARGS__))

static const char *msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *msg(const char *fmt, ...)
{
    static char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

/* add_u64 -- the merge operator and its model: the first 8 bytes of the
 * old value (zero-padded; absent: 0) plus the 8-byte operand; 0 deletes. */
static bool add_u64(const void *old, size_t oldlen, const void *operand, uint8_t out[8])
{
    uint64_t a = 0, d;
    if (old)
        memcpy(&a, old, oldlen < 8 ? oldlen : 8);
    memcpy(&d, operand, 8);
    a += d;
    memcpy(out, &a, 8);
    return a != 0;
}

static int add_op(void *arg, const void *key, size_t klen, const void *old, size_t oldlen,
                  const void *operand, size_t oplen, shale_buf *out)
{
    uint8_t v[8];
    (void)arg, (void)key, (void)klen;
    if (oplen != 8)
        return SHALE_EINVAL;
    if (!add_u64(old, oldlen, operand, v))
        return SHALE_NOTFOUND;
    return shale_buf_set(out, v, 8);
}

/* m_merge -- the model's side of a merge of operand d into k. */
static void m_merge(mtree *m, const void *k, size_t kl, const uint8_t d[8])
{
    ment *e = m_find(m, k, kl);
    uint8_t v[8];
    if (add_u64(e ? e->v : NULL, e ? e->vl : 0, d, v))
        m_put(m, k, kl, v, 8);
    else
        m_del(m, k, kl);
}

/* pick_operand -- an operand for key k: small, or (now and then) the one
 * that brings the value to 0 and so deletes the key. */
static void pick_operand(ctx *c, const mtree *m, const void *k, size_t kl, uint8_t d[8])
{
    uint64_t v = tu_rng_range(&c->rng, 1000) + 1, cur = 0;
    ment *e = m_find((mtree *)m, k, kl);
    if (e && tu_rng_range(&c->rng, 5) == 0) {
        memcpy(&cur, e->v, e->vl < 8 ? e->vl : 8);
        v = 0 - cur;
    }
    memcpy(d, &v, 8);
}

static void open_db(ctx *c)
{
    int rc = shale_open(c->dir, &c->opts, &c->db);
    CHECK(rc == SHALE_OK, "open: %s", shale_strerror(rc));
    for (int i = 0; i < NTREES; i++) {
        rc = shale_open_tree(c->db, i ? "second" : NULL, &c->t[i]);
        CHECK(rc == SHALE_OK, "open_tree: %s", shale_strerror(rc));
        rc = shale_set_merge_operator(c->t[i], add_op, NULL);
        CHECK(rc == SHALE_OK, "set_merge_operator: %s", shale_strerror(rc));
    }
}

static void check_value(ctx *c, const char *what, const ment *e, int rc, const shale_buf *b)
{
    if (!e) {
        CHECK(rc == SHALE_NOTFOUND, "%s: expected NOTFOUND, got %d (%s)", what, rc,
              shale_strerror(rc));
        return;
    }
    CHECK(rc == SHALE_OK, "%s: expected a %zu-byte value, got %d (%s)", what, e->vl, rc,
          shale_strerror(rc));
    CHECK(b->len == e->vl && (e->vl == 0 || memcmp(b->data, e->v, e->vl) == 0),
          "%s: value differs (got %zu bytes, expected %zu)", what, b->len, e->vl);
}

/* check_entry -- the iterator is at model entry e. */
static void check_entry(ctx *c, const char *what, shale_iter *it, const ment *e)
{
    size_t kl, vl;
    const void *k = shale_iter_key(it, &kl);
    const void *v = shale_iter_value(it, &vl);
    CHECK(k != NULL && kl == e->kl && (kl == 0 || memcmp(k, e->k, kl) == 0),
          "%s: key differs (got %zu bytes, expected %zu)", what, kl, e->kl);
    CHECK(v != NULL && vl == e->vl && (vl == 0 || memcmp(v, e->v, vl) == 0),
          "%s: value differs (got %zu bytes, expected %zu)", what, vl, e->vl);
}

/* ---- operations ---------------------------------------------------------- */

static void op_insert(ctx *c, int t, bool with_old)
{
    size_t kl = pick_key(c, c->kbuf), vl = pick_value(c, c->vbuf);
    ment *e = m_find(&c->m[t], c->kbuf, kl);
    int rc = shale_insert(c->t[t], c->kbuf, kl, c->vbuf, vl, with_old ? &c->old : NULL);
    if (with_old)
        check_value(c, "insert old value", e, rc, &c->old);
    else
        CHECK(rc == SHALE_OK, "insert: %s", shale_strerror(rc));
    m_put(&c->m[t], c->kbuf, kl, c->vbuf, vl);
}

static void op_remove(ctx *c, int t, bool with_old)
{
    size_t kl;
    /* Mostly remove keys that exist. */
    if (c->m[t].n && tu_rng_range(&c->rng, 4)) {
        ment *e = &c->m[t].e[tu_rng_range(&c->rng, c->m[t].n)];
        kl = e->kl;
        memcpy(c->kbuf, e->k, kl);
    } else {
        kl = pick_key(c, c->kbuf);
    }
    ment *e = m_find(&c->m[t], c->kbuf, kl);
    int rc = shale_remove(c->t[t], c->kbuf, kl, with_old ? &c->old : NULL);
    if (with_old)
        check_value(c, "remove old value", e, rc, &c->old);
    else
        CHECK(rc == SHALE_OK, "remove: %s", shale_strerror(rc));
    m_del(&c->m[t], c->kbuf, kl);
}

/* pick_key_or_entry -- into c->kbuf: half the time a key tree t holds. */
static size_t pick_key_or_entry(ctx *c, int t)
{
    if (c->m[t].n && tu_rng_range(&c->rng, 2)) {
        ment *e = &c->m[t].e[tu_rng_range(&c->rng, c->m[t].n)];
        memcpy(c->kbuf, e->k, e->kl);
        return e->kl;
    }
    return pick_key(c, c->kbuf);
}

static void op_merge(ctx *c, int t)
{
    size_t kl = pick_key_or_entry(c, t);
    uint8_t d[8];
    pick_operand(c, &c->m[t], c->kbuf, kl, d);
    int rc = shale_merge(c->t[t], c->kbuf, kl, d, 8);
    CHECK(rc == SHALE_OK, "merge: %s", shale_strerror(rc));
    m_merge(&c->m[t], c->kbuf, kl, d);
}

static void op_get(ctx *c, int t)
{
    size_t kl = pick_key_or_entry(c, t);
    int rc = shale_get(c->t[t], c->kbuf, kl, &c->buf);
    check_value(c, "get", m_find(&c->m[t], c->kbuf, kl), rc, &c->buf);
}

static void op_batch(ctx *c)
{
    shale_batch *b;
    int n = 1 + (int)tu_rng_range(&c->rng, 12);
    typedef struct bop {
        int t;
        bool rm, range; /* range: remove [k, v) (v NULL: to the end) */
        bool merge;     /* v is an operand */
        uint8_t *k, *v;
        size_t kl, vl;
    } bop;
    bop ops[12];
    CHECK(shale_batch_new(&b) == SHALE_OK, "batch_new");
    for (int i = 0; i < n; i++) {
        bop *o = &ops[i];
        o->t = (int)tu_rng_range(&c->rng, NTREES);
        o->rm = tu_rng_range(&c->rng, 4) == 0;
        if (i > 0 && tu_rng_range(&c->rng, 5) == 0) {
            /* The same key again: the later write wins. */
            o->kl = ops[i - 1].kl;
            o->k = dup(ops[i - 1].k, o->kl);
        } else {
            o->kl = pick_key(c, c->kbuf);
            o->k = dup(c->kbuf, o->kl);
        }
        o->range = o->rm && tu_rng_range(&c->rng, 6) == 0;
        o->merge = !o->rm && tu_rng_range(&c->rng, 4) == 0;
        int rc;
        if (o->range) { /* [k, a key some entries above it) */
            const mtree *m = &c->m[o->t];
            size_t at = lower(m, o->k, o->kl) + 1 + (size_t)tu_rng_range(&c->rng, 8);
            o->v = at < m->n ? dup(m->e[at].k, m->e[at].kl) : NULL;
            o->vl = at < m->n ? m->e[at].kl : 0;
            rc = shale_batch_remove_range(b, c->t[o->t], o->k, o->kl, o->v, o->vl);
        } else if (o->merge) { /* the operand is chosen against the model as it is now */
            o->vl = 8;
            o->v = malloc(8);
            pick_operand(c, &c->m[o->t], o->k, o->kl, o->v);
            rc = shale_batch_merge(b, c->t[o->t], o->k, o->kl, o->v, 8);
        } else {
            o->vl = o->rm ? 0 : pick_value(c, c->vbuf);
            o->v = dup(c->vbuf, o->vl);
            rc = o->rm ? shale_batch_remove(b, c->t[o->t], o->k, o->kl)
                       : shale_batch_insert(b, c->t[o->t], o->k, o->kl, o->v, o->vl);
        }
        CHECK(rc == SHALE_OK, "batch add: %s", shale_strerror(rc));
    }
    CHECK(shale_batch_count(b) == (size_t)n, "batch_count %zu != %d", shale_batch_count(b), n);
    int rc = shale_batch_apply(c->db, b);
    CHECK(rc == SHALE_OK, "batch_apply: %s", shale_strerror(rc));
    for (int i = 0; i < n; i++) {
        if (ops[i].range)
            m_del_range(&c->m[ops[i].t], ops[i].k, ops[i].kl, ops[i].v, ops[i].vl);
        else if (ops[i].rm)
            m_del(&c->m[ops[i].t], ops[i].k, ops[i].kl);
        else if (ops[i].merge)
            m_merge(&c->m[ops[i].t], ops[i].k, ops[i].kl, ops[i].v);
        else
            m_put(&c->m[ops[i].t], ops[i].k, ops[i].kl, ops[i].v, ops[i].vl);
        free(ops[i].k);
        free(ops[i].v);
    }
    shale_batch_free(b);
}

/* A bound: NULL (open), or a key (pool, random, or an existing key). */
typedef struct bound {
    bool set;
    uint8_t *k;
    size_t kl;
} bound;

static void pick_bound(ctx *c, int t, bound *b, uint8_t *buf)
{
    b->k = buf;
    b->set = tu_rng_range(&c->rng, 3) != 0;
    if (!b->set) {
        b->kl = 0;
        return;
    }
    if (c->m[t].n && tu_rng_range(&c->rng, 2)) {
        ment *e = &c->m[t].e[tu_rng_range(&c->rng, c->m[t].n)];
        b->kl = e->kl;
        memcpy(buf, e->k, e->kl);
    } else {
        b->kl = pick_key(c, buf);
    }
}

/* set_bounds -- random bounds on it; the model's visible range is [*a, *z). */
static void set_bounds(ctx *c, int t, shale_iter *it, size_t *a, size_t *z)
{
    bound lo, hi;
    pick_bound(c, t, &lo, c->kbuf);
    pick_bound(c, t, &hi, c->kbuf2);
    if (lo.set && hi.set && kcmp(lo.k, lo.kl, hi.k, hi.kl) > 0 && tu_rng_range(&c->rng, 10)) {
        bound x = lo;
        lo = hi;
        hi = x;
    }
    int rc = shale_iter_set_bounds(it, lo.set ? lo.k : NULL, lo.kl, hi.set ? hi.k : NULL, hi.kl);
    CHECK(rc == SHALE_OK, "set_bounds: %s", shale_strerror(rc));
    *a = lo.set ? lower(&c->m[t], lo.k, lo.kl) : 0;
    *z = hi.set ? lower(&c->m[t], hi.k, hi.kl) : c->m[t].n;
    if (*z < *a)
        *z = *a;
}

/* scan_model -- walk it over model m's range [a, z) in one direction. */
static void scan_against(ctx *c, shale_iter *it, const mtree *m, size_t a, size_t z, bool backward,
                         size_t limit)
{
    int rc = backward ? shale_iter_last(it) : shale_iter_first(it);
    size_t steps = 0;
    if (backward) {
        for (size_t i = z; i > a && steps < limit; i--, steps++) {
            CHECK(rc == SHALE_OK, "scan backward: step %zu of %zu: got %d (%s)", steps, z - a, rc,
                  shale_strerror(rc));
            check_entry(c, "scan backward", it, &m->e[i - 1]);
            rc = shale_iter_prev(it);
        }
    } else {
        for (size_t i = a; i < z && steps < limit; i++, steps++) {
            CHECK(rc == SHALE_OK, "scan forward: step %zu of %zu: got %d (%s)", steps, z - a, rc,
                  shale_strerror(rc));
            check_entry(c, "scan forward", it, &m->e[i]);
            rc = shale_iter_next(it);
        }
    }
    if (steps == z - a)
        CHECK(rc == SHALE_NOTFOUND, "scan %s: %zu entries expected, then the end; got %d",
              backward ? "backward" : "forward", z - a, rc);
}

static void op_scan(ctx *c, int t)
{
    shale_iter *it;
    size_t a = 0, z = c->m[t].n;
    int rc = shale_iter_open(c->t[t], &it);
    CHECK(rc == SHALE_OK, "iter_open: %s", shale_strerror(rc));
    if (tu_rng_range(&c->rng, 4))
        set_bounds(c, t, it, &a, &z);
    size_t limit = tu_rng_range(&c->rng, 4) ? 64 : SIZE_MAX;
    scan_against(c, it, &c->m[t], a, z, tu_rng_range(&c->rng, 2), limit);
    shale_iter_close(it);
}

/* op_seek -- seek or seek_prev (or first/last), then a few random moves. */
static void op_seek(ctx *c, int t)
{
    shale_iter *it;
    size_t a = 0, z = c->m[t].n, pos = 0;
    const mtree *m = &c->m[t];
    bool on;
    int rc = shale_iter_open(c->t[t], &it);
    CHECK(rc == SHALE_OK, "iter_open: %s", shale_strerror(rc));
    if (tu_rng_range(&c->rng, 2))
        set_bounds(c, t, it, &a, &z);
    /* Before any positioning call, next/prev find nothing. */
    if (tu_rng_range(&c->rng, 8) == 0) {
        rc = shale_iter_next(it);
        CHECK(rc == SHALE_NOTFOUND, "next on an unpositioned iterator: %d", rc);
    }
    uint8_t *k = tu_rng_range(&c->rng, 2) ? c->kbuf : c->kbuf2;
    size_t kl;
    if (m->n && tu_rng_range(&c->rng, 2)) {
        const ment *e = &m->e[tu_rng_range(&c->rng, m->n)];
        kl = e->kl;
        memcpy(k, e->k, kl);
        /* Sometimes just before or after an existing key. */
        if (tu_rng_range(&c->rng, 3) == 0 && kl > 0)
            kl--;
        else if (tu_rng_range(&c->rng, 3) == 0 && kl < SHALE_MAX_KEY_SIZE)
            k[kl++] = 0;
    } else {
        kl = pick_key(c, k);
    }
    const char *what;
    switch (tu_rng_range(&c->rng, 6)) {
    case 0:
        what = "first";
        rc = shale_iter_first(it);
        on = a < z;
        pos = a;
        break;
    case 1:
        what = "last";
        rc = shale_iter_last(it);
        on = a < z;
        pos = z - 1;
        break;
    case 2:
    case 3: {
        what = "seek";
        rc = shale_iter_seek(it, k, kl);
        size_t p = lower(m, k, kl);
        if (p < a)
            p = a;
        on = p < z;
        pos = p;
        break;
    }
    default: {
        what = "seek_prev";
        rc = shale_iter_seek_prev(it, k, kl);
        size_t p = upper(m, k, kl); /* entries before p are <= k */
        if (p > z)
            p = z;
        on = p > a;
        pos = p - 1;
        break;
    }
    }
    if (!on) {
        CHECK(rc == SHALE_NOTFOUND, "%s: expected NOTFOUND, got %d (%s)", what, rc,
              shale_strerror(rc));
        shale_iter_close(it);
        return;
    }
    CHECK(rc == SHALE_OK, "%s: expected an entry, got %d (%s)", what, rc, shale_strerror(rc));
    check_entry(c, what, it, &m->e[pos]);
    int moves = (int)tu_rng_range(&c->rng, 10);
    for (int i = 0; i < moves; i++) {
        bool fwd = tu_rng_range(&c->rng, 2);
        rc = fwd ? shale_iter_next(it) : shale_iter_prev(it);
        bool ok = fwd ? pos + 1 < z : pos > a;
        if (!ok) {
            CHECK(rc == SHALE_NOTFOUND, "%s after %s: expected the end, got %d",
                  fwd ? "next" : "prev", what, rc);
            break;
        }
        pos = fwd ? pos + 1 : pos - 1;
        CHECK(rc == SHALE_OK, "%s after %s: expected an entry, got %d (%s)", fwd ? "next" : "prev",
              what, rc, shale_strerror(rc));
        check_entry(c, fwd ? "next" : "prev", it, &m->e[pos]);
    }
    shale_iter_close(it);
}

/* op_snapshot -- an iterator opened before some writes still sees the old state. */
static void op_snapshot(ctx *c)
{
    int t = (int)tu_rng_range(&c->rng, NTREES);
    shale_iter *it;
    mtree snap;
    int rc = shale_iter_open(c->t[t], &it);
    CHECK(rc == SHALE_OK, "iter_open: %s", shale_strerror(rc));
    m_copy_range(&c->m[t], 0, c->m[t].n, &snap);
    /* Sometimes enough writes for memtable write-outs and merges while the
     * iterator pins the old version (its pages must stay readable). */
    int writes = tu_rng_range(&c->rng, 10) ? 1 + (int)tu_rng_range(&c->rng, 30)
                                           : 300 + (int)tu_rng_range(&c->rng, 3000);
    for (int i = 0; i < writes; i++) {
        if (tu_rng_range(&c->rng, 3))
            op_insert(c, t, false);
        else
            op_remove(c, t, false);
    }
    if (tu_rng_range(&c->rng, 4) == 0) {
        rc = shale_flush(c->db);
        CHECK(rc == SHALE_OK, "flush: %s", shale_strerror(rc));
    }
    size_t a = 0, z = snap.n;
    mtree live = c->m[t];
    c->m[t] = snap; /* set_bounds computes the range over the snapshot */
    if (tu_rng_range(&c->rng, 2))
        set_bounds(c, t, it, &a, &z);
    c->m[t] = live;
    scan_against(c, it, &snap, a, z, tu_rng_range(&c->rng, 2), SIZE_MAX);
    m_free(&snap);
    shale_iter_close(it);
}

/* op_remove_range -- remove a run of keys with one range tombstone: from a
 * key at or near an entry to a few entries further (or to the end), rarely
 * a wide random range, the whole tree (clear), or bounds out of order. */
static void op_remove_range(ctx *c, int t)
{
    mtree *m = &c->m[t];
    uint8_t *lo = c->kbuf, *hi = c->kbuf2;
    size_t lol, hil;
    bool to_end = false;
    uint64_t r = tu_rng_range(&c->rng, 100);
    if (r < 2) {
        int rc = shale_clear_tree(c->t[t]);
        CHECK(rc == SHALE_OK, "clear_tree: %s", shale_strerror(rc));
        m_free(m);
        return;
    }
    if (r < 10 || m->n < 2) { /* random bounds: wide ranges */
        lol = pick_key(c, lo);
        hil = pick_key(c, hi);
    } else {
        size_t i = (size_t)tu_rng_range(&c->rng, m->n);
        size_t j = i + 1 + (size_t)tu_rng_range(&c->rng, 40);
        lol = m->e[i].kl;
        memcpy(lo, m->e[i].k, lol);
        if (lol && tu_rng_range(&c->rng, 3) == 0)
            lol--; /* just before the entry */
        to_end = j >= m->n;
        hil = to_end ? 0 : m->e[j].kl;
        if (!to_end)
            memcpy(hi, m->e[j].k, hil);
    }
    int cmp = kcmp(lo, lol, hi, hil);
    if (!to_end && cmp >= 0) {
        int rc = shale_remove_range(c->t[t], lo, lol, hi, hil);
        CHECK(rc == SHALE_EINVAL, "remove_range with hi <= lo: %s", shale_strerror(rc));
        return;
    }
    int rc = shale_remove_range(c->t[t], lo, lol, to_end ? NULL : hi, hil);
    CHECK(rc == SHALE_OK, "remove_range: %s", shale_strerror(rc));
    m_del_range(m, lo, lol, to_end ? NULL : hi, hil);
}

/* op_cas -- compare-and-swap against the model: the right expectation (the
 * value, or absence) succeeds, a wrong one reports the current value. */
static void op_cas(ctx *c, int t)
{
    size_t kl = pick_key_or_entry(c, t);
    ment *e = m_find(&c->m[t], c->kbuf, kl);
    bool right = tu_rng_range(&c->rng, 3) != 0, del = tu_rng_range(&c->rng, 6) == 0;
    size_t dl = del ? 0 : pick_value(c, c->vbuf);
    const uint8_t *exp = e ? e->v : NULL;
    size_t el = e ? e->vl : 0;
    uint8_t wrong[8] = "wrong!!";
    if (!right) { /* absent when present, or a value that differs */
        exp = e && tu_rng_range(&c->rng, 2) ? NULL : wrong;
        el = exp ? (e && e->vl == 7 && memcmp(e->v, wrong, 7) == 0 ? 6 : 7) : 0;
    }
    int rc = shale_cas(c->t[t], c->kbuf, kl, exp ? (const void *)exp : NULL, el,
                       del ? NULL : c->vbuf, dl, &c->old);
    if (right) {
        CHECK(rc == SHALE_OK, "cas: %s", shale_strerror(rc));
        if (del)
            m_del(&c->m[t], c->kbuf, kl);
        else
            m_put(&c->m[t], c->kbuf, kl, c->vbuf, dl);
        return;
    }
    CHECK(rc == SHALE_EMISMATCH, "cas with a wrong expectation: %d", rc);
    if (!e)
        CHECK(c->old.data == NULL, "cas: absence reported as a value");
    else
        check_value(c, "cas actual", e, SHALE_OK, &c->old);
}

/* op_update -- shale_update appending a byte (or deleting), both modes. */
typedef struct upd_ctx {
    uint8_t *buf;
    bool del;
} upd_ctx;

static int upd_fn(void *arg, const void *old, size_t oldlen, const void **nv, size_t *nl)
{
    upd_ctx *u = arg;
    if (u->del) {
        *nv = NULL;
        return 0;
    }
    size_t n = old ? oldlen : 0;
    if (n > 150000)
        n = 150000;
    if (n)
        memmove(u->buf, old, n);
    u->buf[n] = (uint8_t)(n * 31 + 7);
    *nv = u->buf;
    *nl = n + 1;
    return 0;
}

static void op_update(ctx *c, int t)
{
    size_t kl = pick_key_or_entry(c, t);
    ment *e = m_find(&c->m[t], c->kbuf, kl);
    upd_ctx u = {c->vbuf, tu_rng_range(&c->rng, 8) == 0};
    int mode = (int)tu_rng_range(&c->rng, 2);
    ment before = {0};
    bool had = e != NULL;
    if (had)
        before = (ment){NULL, 0, dup(e->v, e->vl), e->vl};
    int rc = shale_update(c->t[t], c->kbuf, kl, upd_fn, &u, mode, &c->old);
    CHECK(rc >= 0, "update: %s", shale_strerror(rc));
    if (u.del) {
        m_del(&c->m[t], c->kbuf, kl);
    } else {
        size_t n = had ? (before.vl > 150000 ? 150000 : before.vl) : 0;
        uint8_t *nv = malloc(n + 1);
        if (n)
            memcpy(nv, before.v, n);
        nv[n] = (uint8_t)(n * 31 + 7);
        m_put(&c->m[t], c->kbuf, kl, nv, n + 1);
        free(nv);
    }
    if (mode == SHALE_UPDATE_RETURN_OLD)
        check_value(c, "update old", had ? &before : NULL, rc, &c->old);
    else
        check_value(c, "update new", m_find(&c->m[t], c->kbuf, kl), rc, &c->old);
    free(before.v);
}

/* op_snapshot_all -- a snapshot of both trees keeps seeing their state
 * while both are written (and written out), through gets and iterators. */
static void op_snapshot_all(ctx *c)
{
    shale_snapshot *s;
    mtree snap[NTREES];
    int rc = shale_snapshot_open(c->db, &s);
    CHECK(rc == SHALE_OK, "snapshot_open: %s", shale_strerror(rc));
    for (int t = 0; t < NTREES; t++)
        m_copy_range(&c->m[t], 0, c->m[t].n, &snap[t]);
    int writes = 1 + (int)tu_rng_range(&c->rng, tu_rng_range(&c->rng, 8) ? 40 : 2000);
    for (int i = 0; i < writes; i++) {
        int t = (int)tu_rng_range(&c->rng, NTREES);
        if (tu_rng_range(&c->rng, 3))
            op_insert(c, t, false);
        else
            op_remove(c, t, false);
    }
    for (int t = 0; t < NTREES; t++) {
        for (int i = 0; i < 20; i++) {
            size_t kl;
            if (snap[t].n && tu_rng_range(&c->rng, 2)) {
                ment *e = &snap[t].e[tu_rng_range(&c->rng, snap[t].n)];
                kl = e->kl;
                memcpy(c->kbuf, e->k, kl);
            } else {
                kl = pick_key(c, c->kbuf);
            }
            rc = shale_snapshot_get(s, c->t[t], c->kbuf, kl, &c->buf);
            check_value(c, "snapshot get", m_find(&snap[t], c->kbuf, kl), rc, &c->buf);
        }
        shale_iter *it;
        rc = shale_iter_open_at(c->t[t], s, &it);
        CHECK(rc == SHALE_OK, "iter_open_at: %s", shale_strerror(rc));
        scan_against(c, it, &snap[t], 0, snap[t].n, tu_rng_range(&c->rng, 2), SIZE_MAX);
        shale_iter_close(it);
        m_free(&snap[t]);
    }
    shale_snapshot_close(s);
}

/* op_txn -- a transaction over both trees: gets, inserts, removes, merges
 * and scans (both ways, random bounds), every read checked against a copy
 * of the model carrying the transaction's own writes; it commits whole (the
 * copy becomes the model) or aborts with the caller's code (nothing). */
enum { TX_GET, TX_INS, TX_RM, TX_MERGE, TX_SCAN };
typedef struct tx_op {
    int type, t;
    uint8_t *k, *v, *hi; /* v: value or operand; hi: scan bound (NULL: open) */
    size_t kl, vl, hil;
    bool reverse;
} tx_op;

typedef struct tx_ctx {
    ctx *c;
    tx_op ops[12];
    int n;
    bool abort;
    mtree m[NTREES];
    int runs;
} tx_ctx;

typedef struct tx_scan {
    ctx *c;
    const mtree *m;
    size_t a, z, seen; /* expected entries [a, z) */
    bool reverse;
} tx_scan;

static int tx_scan_fn(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    tx_scan *s = arg;
    ctx *c = s->c;
    CHECK(s->a + s->seen < s->z, "txn scan: more entries than the model's %zu", s->z - s->a);
    const ment *e = &s->m->e[s->reverse ? s->z - 1 - s->seen : s->a + s->seen];
    CHECK(kl == e->kl && (kl == 0 || memcmp(k, e->k, kl) == 0), "txn scan: key differs");
    CHECK(vl == e->vl && (vl == 0 || memcmp(v, e->v, vl) == 0), "txn scan: value differs");
    s->seen++;
    return 0;
}

static int tx_run(shale_txn *x, void *arg)
{
    tx_ctx *tc = arg;
    ctx *c = tc->c;
    tc->runs++;
    for (int t = 0; t < NTREES; t++) {
        m_free(&tc->m[t]);
        m_copy_range(&c->m[t], 0, c->m[t].n, &tc->m[t]);
    }
    for (int i = 0; i < tc->n; i++) {
        tx_op *o = &tc->ops[i];
        mtree *m = &tc->m[o->t];
        shale_tree *t = c->t[o->t];
        int rc;
        switch (o->type) {
        case TX_GET:
            rc = shale_txn_get(x, t, o->k, o->kl, &c->buf);
            check_value(c, "txn get", m_find(m, o->k, o->kl), rc, &c->buf);
            break;
        case TX_INS:
            rc = shale_txn_insert(x, t, o->k, o->kl, o->v, o->vl);
            CHECK(rc == SHALE_OK, "txn insert: %s", shale_strerror(rc));
            m_put(m, o->k, o->kl, o->v, o->vl);
            break;
        case TX_RM:
            rc = shale_txn_remove(x, t, o->k, o->kl);
            CHECK(rc == SHALE_OK, "txn remove: %s", shale_strerror(rc));
            m_del(m, o->k, o->kl);
            break;
        case TX_MERGE:
            rc = shale_txn_merge(x, t, o->k, o->kl, o->v, 8);
            CHECK(rc == SHALE_OK, "txn merge: %s", shale_strerror(rc));
            m_merge(m, o->k, o->kl, o->v);
            break;
        default: {
            tx_scan s = {c, m, lower(m, o->k, o->kl), o->hi ? lower(m, o->hi, o->hil) : m->n, 0,
                         o->reverse};
            if (s.z < s.a)
                s.z = s.a;
            rc = shale_txn_scan(x, t, o->k, o->kl, o->hi, o->hil, o->reverse, tx_scan_fn, &s);
            CHECK(rc == SHALE_OK, "txn scan: %s", shale_strerror(rc));
            CHECK(s.seen == s.z - s.a, "txn scan: %zu entries, model %zu", s.seen, s.z - s.a);
        }
        }
    }
    return tc->abort ? 4711 : 0;
}

static void op_txn(ctx *c)
{
    tx_ctx *tc = calloc(1, sizeof *tc);
    cr_assert_not_null(tc);
    tc->c = c;
    tc->n = 1 + (int)tu_rng_range(&c->rng, 12);
    tc->abort = tu_rng_range(&c->rng, 5) == 0;
    for (int i = 0; i < tc->n; i++) {
        tx_op *o = &tc->ops[i];
        o->t = (int)tu_rng_range(&c->rng, NTREES);
        o->type = (int)tu_rng_range(&c->rng, 5);
        o->kl = pick_key_or_entry(c, o->t);
        o->k = dup(c->kbuf, o->kl);
        if (o->type == TX_INS) {
            o->vl = pick_value(c, c->vbuf);
            o->v = dup(c->vbuf, o->vl);
        } else if (o->type == TX_MERGE) {
            o->vl = 8;
            o->v = malloc(8);
            pick_operand(c, &c->m[o->t], o->k, o->kl, o->v);
        } else if (o->type == TX_SCAN) {
            o->reverse = tu_rng_range(&c->rng, 2);
            if (tu_rng_range(&c->rng, 3)) {
                const mtree *m = &c->m[o->t];
                size_t at = lower(m, o->k, o->kl) + 1 + (size_t)tu_rng_range(&c->rng, 30);
                if (at < m->n) {
                    o->hil = m->e[at].kl;
                    o->hi = dup(m->e[at].k, o->hil);
                }
            }
        }
    }
    int rc = shale_transaction(c->db, c->t, NTREES, tx_run, tc);
    if (tc->abort) {
        CHECK(rc == 4711, "txn abort: got %d", rc);
    } else {
        CHECK(rc == SHALE_OK, "txn commit: %s", shale_strerror(rc));
        for (int t = 0; t < NTREES; t++) {
            m_free(&c->m[t]);
            c->m[t] = tc->m[t];
            memset(&tc->m[t], 0, sizeof tc->m[t]);
        }
    }
    for (int t = 0; t < NTREES; t++)
        m_free(&tc->m[t]);
    for (int i = 0; i < tc->n; i++) {
        free(tc->ops[i].k);
        free(tc->ops[i].v);
        free(tc->ops[i].hi);
    }
    free(tc);
}

/* op_drop -- drop the second tree; re-created empty, its old keys never return. */
static void op_drop(ctx *c)
{
    int rc = shale_drop_tree(c->db, "second");
    CHECK(rc == SHALE_OK, "drop_tree: %s", shale_strerror(rc));
    m_free(&c->m[1]);
    rc = shale_open_tree(c->db, "second", &c->t[1]);
    CHECK(rc == SHALE_OK, "open_tree after drop: %s", shale_strerror(rc));
    rc = shale_set_merge_operator(c->t[1], add_op, NULL);
    CHECK(rc == SHALE_OK, "set_merge_operator: %s", shale_strerror(rc));
}

static void op_reopen(ctx *c)
{
    int rc = shale_close(c->db);
    CHECK(rc == SHALE_OK, "close: %s", shale_strerror(rc));
    c->db = NULL;
    c->opts.memtable_size = (size_t)(128 + 64 * tu_rng_range(&c->rng, 3)) << 10;
    c->opts.max_young_segments = 2 + (uint32_t)tu_rng_range(&c->rng, 2);
    /* whatever the option says, the database keeps the codec it was made with */
    int kept = c->opts.compression;
    c->opts.compression = (int)tu_rng_range(&c->rng, 3);
    open_db(c);
    c->opts.compression = kept;
    /* Everything must have survived: a full compare of one tree. */
    shale_iter *it;
    int t = (int)tu_rng_range(&c->rng, NTREES);
    rc = shale_iter_open(c->t[t], &it);
    CHECK(rc == SHALE_OK, "iter_open: %s", shale_strerror(rc));
    scan_against(c, it, &c->m[t], 0, c->m[t].n, false, SIZE_MAX);
    shale_iter_close(it);
}

/* run_model -- about base_ops random operations (scaled) on a database
 * created with `compression`, compared with the model throughout. */
static void run_model(int compression, uint64_t base_ops, uint64_t salt)
{
    ctx *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->seed = tu_seed() + salt;
    tu_rng_seed(&c->rng, c->seed ^ 0x30de1);
    for (size_t i = 0; i < sizeof prefix_bytes; i++)
        prefix_bytes[i] = (uint8_t)("shared-prefix/"[i % 14] + i / 14 % 3);
    c->kbuf = malloc(SHALE_MAX_KEY_SIZE + 1);
    c->kbuf2 = malloc(SHALE_MAX_KEY_SIZE + 1);
    c->vbuf = malloc(200000);
    cr_assert(c->kbuf && c->kbuf2 && c->vbuf);
    cr_assert_eq(tu_tmpdir(c->dir, sizeof c->dir), 0);
    shale_options_default(&c->opts);
    c->opts.memtable_size = 256u << 10;
    c->opts.page_size = tu_rng_range(&c->rng, 2) ? 1024 : 4096;
    c->opts.max_young_segments = 2;
    c->opts.cache_size = 8u << 20;
    c->opts.flush_every_ms = 0;
    c->opts.compression = compression;
    c->opts.level_factor = salt % 2 ? 2 : 10; /* many levels, or the default */
    open_db(c);

    uint64_t nops = tu_scaled(base_ops);
    fprintf(stderr, "model: seed %llu, %llu operations, page size %u, compression %d\n",
            (unsigned long long)c->seed, (unsigned long long)nops, c->opts.page_size,
            compression);
    for (c->op = 0; c->op < nops; c->op++) {
        int t = (int)tu_rng_range(&c->rng, NTREES);
        uint64_t r = tu_rng_range(&c->rng, 10000);
        int kind;
        if (r < 2000)
            kind = 0, op_insert(c, t, false);
        else if (r < 2500)
            kind = 17, op_merge(c, t);
        else if (r < 3200)
            kind = 1, op_insert(c, t, true);
        else if (r < 4000)
            kind = 2, op_remove(c, t, false);
        else if (r < 4500)
            kind = 3, op_remove(c, t, true);
        else if (r < 7400)
            kind = 4, op_get(c, t);
        else if (r < 7900)
            kind = 5, op_batch(c);
        else if (r < 8500)
            kind = 6, op_scan(c, t);
        else if (r < 9700)
            kind = 7, op_seek(c, t);
        else if (r < 9760)
            kind = 14, op_cas(c, t);
        else if (r < 9820)
            kind = 15, op_update(c, t);
        else if (r < 9850)
            kind = 16, op_snapshot_all(c);
        else if (r < 9870)
            kind = 18, op_txn(c);
        else if (r < 9910)
            kind = 13, op_remove_range(c, t);
        else if (r < 9965)
            kind = 8, op_snapshot(c);
        else if (r < 9975) {
            kind = 9;
            int rc = shale_flush(c->db);
            CHECK(rc == SHALE_OK, "flush: %s", shale_strerror(rc));
        } else if (r < 9993) {
            kind = 10;
            shale_stats st;
            CHECK(shale_stats_get(c->db, &st) == SHALE_OK, "stats");
        } else if (r < 9994) {
            kind = 12, op_drop(c);
        } else {
            kind = 11, op_reopen(c);
        }
        c->stats[kind]++;
    }
    /* A final close and reopen, then a full compare of both trees. */
    op_reopen(c);
    for (int t = 0; t < NTREES; t++) {
        shale_iter *it;
        cr_assert_eq(shale_iter_open(c->t[t], &it), SHALE_OK);
        scan_against(c, it, &c->m[t], 0, c->m[t].n, true, SIZE_MAX);
        shale_iter_close(it);
    }
    shale_stats st;
    cr_assert_eq(shale_stats_get(c->db, &st), SHALE_OK);
    fprintf(
        stderr,
        "model: done; keys %zu + %zu; ops: ins %llu ins_old %llu rm %llu rm_old %llu get %llu "
        "batch %llu scan %llu seek %llu snap %llu flush %llu reopen %llu drop %llu ranges %llu "
        "cas %llu update %llu snapshots %llu merges %llu txns %llu; segments %llu, "
        "flushes %llu, merges %llu, leaves %llu (%llu compressed)\n",
        c->m[0].n, c->m[1].n, (unsigned long long)c->stats[0], (unsigned long long)c->stats[1],
        (unsigned long long)c->stats[2], (unsigned long long)c->stats[3],
        (unsigned long long)c->stats[4], (unsigned long long)c->stats[5],
        (unsigned long long)c->stats[6], (unsigned long long)c->stats[7],
        (unsigned long long)c->stats[8], (unsigned long long)c->stats[9],
        (unsigned long long)c->stats[11], (unsigned long long)c->stats[12],
        (unsigned long long)c->stats[13], (unsigned long long)c->stats[14],
        (unsigned long long)c->stats[15], (unsigned long long)c->stats[16],
        (unsigned long long)c->stats[17], (unsigned long long)c->stats[18],
        (unsigned long long)st.segments, (unsigned long long)st.flushes,
        (unsigned long long)st.merges, (unsigned long long)st.leaves,
        (unsigned long long)st.compressed_leaves);
    if (compression != SHALE_COMPRESSION_NONE && st.leaves > 0)
        cr_assert_gt(st.compressed_leaves, 0);
    cr_assert_eq(shale_close(c->db), SHALE_OK);
    for (int t = 0; t < NTREES; t++)
        m_free(&c->m[t]);
    shale_buf_free(&c->buf);
    shale_buf_free(&c->old);
    free(c->kbuf);
    free(c->kbuf2);
    free(c->vbuf);
    char fault[200];
    cr_assert_eq(tu_verify(c->dir, fault, sizeof fault), SHALE_OK, "check: %s (seed %llu)", fault,
                 (unsigned long long)c->seed);
    tu_rmrf(c->dir);
    free(c);
}

Test(model, random_operations_match_an_ordered_map, .timeout = 1200)
{
    run_model(SHALE_COMPRESSION_NONE, 200000, 0);
}

Test(model, the_same_with_lz4_leaves, .timeout = 1200)
{
    run_model(SHALE_COMPRESSION_LZ4, 60000, 1);
}

Test(model, the_same_with_zstd_leaves, .timeout = 1200)
{
    run_model(SHALE_COMPRESSION_ZSTD, 60000, 2);
}
