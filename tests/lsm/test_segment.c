/*
 * test_segment.c -- segments against a sorted-array model: build, point
 * reads, cursors in both directions and across direction changes, the
 * descriptor round trip, page reclamation, build failures, and corruption.
 *
 * Entries are random but awkward on purpose: tombstones, the empty key,
 * empty values, long shared prefixes, keys over the inline limit (many
 * sharing all their inline bytes, so comparisons read overflow runs), values
 * over the inline limit and a few of several MB.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/lsm/filter.h"
#include "../../src/lsm/segment.h"

/* ---- model ------------------------------------------------------------- */

typedef struct ent {
    uint8_t kind;
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
} ent;

typedef struct model {
    ent *v;
    size_t n;
} model;

/* rnd -- xorshift64*: reproducible and fast. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* gen_key -- a key of one of the awkward shapes; returns its length. */
static size_t gen_key(uint64_t *r, uint32_t ps, uint8_t *out)
{
    uint32_t kimax = node_key_inline_max(ps);
    unsigned c = (unsigned)(rnd(r) % 100);
    size_t len, from = 0;
    unsigned alpha = 26, base = 'a';

    if (c < 40) {
        len = 1 + rnd(r) % 24;
    } else if (c < 70) { /* a long shared prefix, still inline */
        from = kimax - 12;
        memset(out, 'P', from);
        len = from + 1 + rnd(r) % 10;
        alpha = 4;
    } else if (c < 74) { /* over the inline limit, tying on every inline byte */
        from = kimax;
        memset(out, 'O', from);
        len = from + 1 + rnd(r) % (c == 70 ? 5000 : 300);
        alpha = 3;
    } else {
        len = rnd(r) % 17;
        alpha = 256;
        base = 0;
    }
    for (size_t i = from; i < len; i++)
        out[i] = (uint8_t)(base + rnd(r) % alpha);
    return len;
}

/* fill -- len pseudo-random bytes. */
static void fill(uint64_t *r, uint8_t *p, size_t len)
{
    uint64_t x = rnd(r);

    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)(x >> (8 * (i & 7)));
        if ((i & 7) == 7)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
    }
}

/* set_val -- give entry e a fresh value of vlen bytes. */
static void set_val(uint64_t *r, ent *e, uint8_t kind, size_t vlen)
{
    free(e->val);
    e->kind = kind;
    e->vlen = kind == NODE_KIND_TOMBSTONE ? 0 : vlen;
    e->val = malloc(e->vlen ? e->vlen : 1);
    cr_assert_not_null(e->val);
    fill(r, e->val, e->vlen);
}

/* gen_val -- a random kind and value for e. */
static void gen_val(uint64_t *r, uint32_t ps, ent *e)
{
    unsigned c = (unsigned)(rnd(r) % 100);

    if (c < 10)
        set_val(r, e, NODE_KIND_TOMBSTONE, 0);
    else if (c < 15)
        set_val(r, e, NODE_KIND_VALUE, 0);
    else if (c < 18)
        set_val(r, e, NODE_KIND_VALUE, node_val_inline_max(ps) + 1 + rnd(r) % (3 * ps));
    else
        set_val(r, e, NODE_KIND_VALUE, rnd(r) % 100);
}

/* ent_cmp -- qsort order of entries: key_cmp of their keys. */
static int ent_cmp(const void *a, const void *b)
{
    const ent *x = a, *y = b;
    return key_cmp(x->key, x->klen, y->key, y->klen);
}

/* model_free -- release every entry. */
static void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].val);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

/* model_gen -- about n sorted, distinct random entries (exactly n for n <= 1). */
static void model_gen(model *m, size_t n, uint32_t ps, uint64_t seed)
{
    uint64_t r = seed * 0x9e3779b97f4a7c15ull + 1;
    static uint8_t kbuf[SHALE_MAX_KEY_SIZE];
    size_t j = 0;

    m->v = calloc(n ? n : 1, sizeof(ent));
    cr_assert_not_null(m->v);
    for (size_t i = 0; i < n; i++) {
        ent *e = &m->v[i];

        e->klen = (i == 0 && n >= 10) ? 0 : gen_key(&r, ps, kbuf);
        e->key = malloc(e->klen ? e->klen : 1);
        memcpy(e->key, kbuf, e->klen);
        gen_val(&r, ps, e);
    }
    qsort(m->v, n, sizeof(ent), ent_cmp);
    for (size_t i = 0; i < n; i++) {
        if (j > 0 && ent_cmp(&m->v[j - 1], &m->v[i]) == 0) {
            free(m->v[i].key);
            free(m->v[i].val);
            continue;
        }
        m->v[j++] = m->v[i];
    }
    m->n = j;
    if (m->n >= 10) { /* a few MB-sized values */
        set_val(&r, &m->v[m->n / 3], NODE_KIND_VALUE, 3u << 20);
        set_val(&r, &m->v[2 * m->n / 3], NODE_KIND_VALUE, (1u << 20) + 17);
    }
}

/* model_lb -- index of the first entry >= key; *eq when equal. */
static size_t model_lb(const model *m, const void *key, size_t klen, bool *eq)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(m->v[mid].key, m->v[mid].klen, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *eq = lo < m->n && key_cmp(m->v[lo].key, m->v[lo].klen, key, klen) == 0;
    return lo;
}

/* ---- source ------------------------------------------------------------ */

typedef struct src_ctx {
    const model *m;
    size_t i;
    size_t fail_at; /* return fail_rc instead of entry fail_at */
    int fail_rc;
} src_ctx;

/* src_next -- the seg_source over a model, failing on request. */
static int src_next(void *ctx, uint8_t *kind, const void **key, size_t *klen, const void **val,
                    size_t *vlen)
{
    src_ctx *s = ctx;
    const ent *e;

    if (s->i == s->fail_at)
        return s->fail_rc;
    if (s->i >= s->m->n)
        return SHALE_NOTFOUND;
    e = &s->m->v[s->i++];
    *kind = e->kind;
    *key = e->key;
    *klen = e->klen;
    *val = e->val;
    *vlen = e->vlen;
    return SHALE_OK;
}

/* ---- space ------------------------------------------------------------- */

typedef struct tspace {
    char dir[64];
    char path[96];
    sp_space *sp;
    uint32_t ps;
    seg_store st; /* sp, a node cache, and the codec segments are built with */
} tspace;

/* ts_reopen -- open the page file; *meta gets the checkpoint body if asked. */
static void ts_reopen(tspace *t, void **meta, size_t *metalen)
{
    sp_config cfg = {.env = NULL,
                     .path = t->path,
                     .page_size = t->ps,
                     .cache_bytes = 8u << 20,
                     .create = true,
                     .read_only = false};
    bool created;
    void *mt = NULL;
    size_t ml = 0;

    cr_assert_eq(sp_open(&cfg, &t->sp, &mt, &ml, &created), SHALE_OK);
    t->st.sp = t->sp;
    node_cache_close(t->st.cache); /* images of the file as it was */
    cr_assert_eq(node_cache_open(1u << 20, &t->st.cache), SHALE_OK);
    if (meta) {
        *meta = mt;
        *metalen = ml;
    } else {
        free(mt);
    }
}

/* ts_open_codec -- a fresh page file of page size ps in a new temp
 * directory, its segments written with codec through a small node cache. */
static void ts_open_codec(tspace *t, uint32_t ps, int codec)
{
    memset(&t->st, 0, sizeof t->st);
    t->st.codec = codec;
    strcpy(t->dir, "/tmp/shale_seg_XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/data", t->dir);
    t->ps = ps;
    ts_reopen(t, NULL, NULL);
}

/* ts_open -- the same, uncompressed. */
static void ts_open(tspace *t, uint32_t ps)
{
    ts_open_codec(t, ps, CODEC_NONE);
}

/* ts_close -- close and delete the page file and its directory. */
static void ts_close(tspace *t)
{
    sp_close(t->sp);
    node_cache_close(t->st.cache);
    unlink(t->path);
    rmdir(t->dir);
}

/* ts_used -- pages neither free nor pending (header slots excluded). */
static uint64_t ts_used(tspace *t)
{
    sp_freespace *fs = sp_freespace_of(t->sp);
    uint64_t fr, pend;

    fs_counts(fs, &fr, &pend);
    return fs_file_pages(fs) - SP_FIRST_DATA_PAGE - fr - pend;
}

/* build -- a segment of every model entry (must succeed). */
static seg_segment *build(tspace *t, const model *m)
{
    src_ctx s = {.m = m, .fail_at = SIZE_MAX};
    seg_source src = {src_next, &s};
    seg_segment *seg = NULL;

    cr_assert_eq(seg_build(&t->st, 7, 42, 1, &src, &seg), SHALE_OK);
    cr_assert_not_null(seg);
    return seg;
}

/* ---- checks ------------------------------------------------------------ */

/* check_gets -- every key reads back; absent keys are not found. */
static void check_gets(seg_segment *seg, const model *m, uint64_t seed)
{
    shale_buf b = SHALE_BUF_INIT;
    uint64_t r = seed;
    static uint8_t kbuf[SHALE_MAX_KEY_SIZE + 1];
    uint8_t kind;
    bool eq;

    for (size_t i = 0; i < m->n; i++) {
        const ent *e = &m->v[i];

        cr_assert(seg_may_contain(seg, e->key, e->klen));
        cr_assert_eq(seg_get(seg, e->key, e->klen, &kind, &b), SHALE_OK, "entry %zu", i);
        cr_assert_eq(kind, e->kind, "entry %zu", i);
        if (kind == NODE_KIND_VALUE) {
            cr_assert_eq(b.len, e->vlen, "entry %zu", i);
            cr_assert(b.len == 0 || memcmp(b.data, e->val, b.len) == 0, "entry %zu", i);
        }
    }
    if (m->n && m->v[0].klen == 0) { /* the empty key, passed as NULL */
        cr_assert_eq(seg_get(seg, NULL, 0, &kind, &b), SHALE_OK);
        cr_assert_eq(kind, m->v[0].kind);
    }
    for (size_t i = 0; i < 2000 + m->n / 10; i++) {
        size_t klen;

        if (i % 2 && m->n) { /* just after a present key */
            const ent *e = &m->v[rnd(&r) % m->n];
            memcpy(kbuf, e->key, e->klen);
            kbuf[e->klen] = 0;
            klen = e->klen + 1;
        } else {
            klen = gen_key(&r, sp_page_size(seg->sp), kbuf);
        }
        model_lb(m, kbuf, klen, &eq);
        if (!eq)
            cr_assert_eq(seg_get(seg, kbuf, klen, &kind, &b), SHALE_NOTFOUND);
    }
    free(b.data);
}

/* expect_at -- the cursor is on model entry i.  Values of several MB are
 * read back only every few visits: seeks revisit them thousands of times. */
static void expect_at(seg_cursor *c, const model *m, size_t i)
{
    static unsigned big_visits;
    const ent *e = &m->v[i];
    const void *k, *v;
    size_t kl, vl;

    cr_assert(seg_cursor_valid(c));
    k = seg_cursor_key(c, &kl);
    cr_assert_eq(kl, e->klen, "entry %zu", i);
    cr_assert(kl == 0 || memcmp(k, e->key, kl) == 0, "entry %zu", i);
    cr_assert_eq(seg_cursor_kind(c), e->kind, "entry %zu", i);
    if (e->vlen > (256u << 10) && big_visits++ % 32 != 0)
        return;
    cr_assert_eq(seg_cursor_value(c, &v, &vl), SHALE_OK);
    cr_assert_eq(vl, e->vlen, "entry %zu", i);
    cr_assert(vl == 0 || memcmp(v, e->val, vl) == 0, "entry %zu", i);
}

/* check_scan -- forward and backward over everything equals the model. */
static void check_scan(seg_segment *seg, const model *m)
{
    seg_cursor *c;
    size_t kl;

    cr_assert_eq(seg_cursor_open(seg, &c), SHALE_OK);
    cr_assert(!seg_cursor_valid(c));
    cr_assert_eq(seg_cursor_next(c), SHALE_EINVAL);
    cr_assert_eq(seg_cursor_first(c), SHALE_OK);
    for (size_t i = 0; i < m->n; i++) {
        expect_at(c, m, i);
        cr_assert_eq(seg_cursor_next(c), i + 1 < m->n ? SHALE_OK : SHALE_NOTFOUND);
    }
    cr_assert(!seg_cursor_valid(c));
    cr_assert_null(seg_cursor_key(c, &kl));
    cr_assert_eq(seg_cursor_prev(c), SHALE_EINVAL);
    cr_assert_eq(seg_cursor_last(c), SHALE_OK);
    for (size_t i = m->n; i-- > 0;) {
        expect_at(c, m, i);
        cr_assert_eq(seg_cursor_prev(c), i > 0 ? SHALE_OK : SHALE_NOTFOUND);
    }
    cr_assert(!seg_cursor_valid(c));
    seg_cursor_close(c);
}

/* check_seeks -- seek_ge/seek_le at present and absent keys, then a few
 * next/prev with direction changes, against the model. */
static void check_seeks(seg_segment *seg, const model *m, size_t rounds, uint64_t seed)
{
    static uint8_t kbuf[SHALE_MAX_KEY_SIZE + 1];
    uint64_t r = seed;
    seg_cursor *c;
    bool eq;

    cr_assert_eq(seg_cursor_open(seg, &c), SHALE_OK);
    cr_assert_eq(seg_cursor_seek_ge(c, NULL, 0), SHALE_OK);
    expect_at(c, m, 0);
    if (m->v[0].klen == 0) {
        cr_assert_eq(seg_cursor_seek_le(c, NULL, 0), SHALE_OK);
        expect_at(c, m, 0);
    } else {
        cr_assert_eq(seg_cursor_seek_le(c, NULL, 0), SHALE_NOTFOUND);
        cr_assert(!seg_cursor_valid(c));
    }
    for (size_t round = 0; round < rounds; round++) {
        size_t klen, lb;
        unsigned how = (unsigned)(rnd(&r) % 4);
        bool ge = rnd(&r) & 1;
        ptrdiff_t pos;
        int rc;

        if (how == 0 && m->n) {
            const ent *e = &m->v[rnd(&r) % m->n];
            memcpy(kbuf, e->key, e->klen);
            klen = e->klen;
        } else if (how == 1 && m->n) { /* just after, or just before, a present key */
            const ent *e = &m->v[rnd(&r) % m->n];
            memcpy(kbuf, e->key, e->klen);
            klen = e->klen;
            if (klen && (rnd(&r) & 1))
                klen--;
            else
                kbuf[klen++] = 0;
        } else {
            klen = gen_key(&r, sp_page_size(seg->sp), kbuf);
        }
        lb = model_lb(m, kbuf, klen, &eq);
        if (ge) {
            pos = (ptrdiff_t)lb;
            rc = seg_cursor_seek_ge(c, kbuf, klen);
        } else {
            pos = eq ? (ptrdiff_t)lb : (ptrdiff_t)lb - 1;
            rc = seg_cursor_seek_le(c, kbuf, klen);
        }
        for (int step = 0;; step++) {
            if (pos < 0 || pos >= (ptrdiff_t)m->n) {
                cr_assert_eq(rc, SHALE_NOTFOUND, "round %zu step %d", round, step);
                cr_assert(!seg_cursor_valid(c));
                break;
            }
            cr_assert_eq(rc, SHALE_OK, "round %zu step %d", round, step);
            expect_at(c, m, (size_t)pos);
            if (step == 4)
                break;
            if (rnd(&r) & 1) {
                pos++;
                rc = seg_cursor_next(c);
            } else {
                pos--;
                rc = seg_cursor_prev(c);
            }
        }
    }
    seg_cursor_close(c);
}

/* roundtrip -- encode, decode, compare, and encode again to the same bytes. */
static seg_segment *roundtrip(tspace *t, const seg_segment *seg)
{
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, cap = 0, len2 = 0, cap2 = 0, used = 0, first;
    seg_segment *d = NULL, *d2 = NULL;

    cr_assert_eq(seg_encode(seg, &buf, &len, &cap), SHALE_OK);
    first = len;
    cr_assert_eq(seg_encode(seg, &buf, &len, &cap), SHALE_OK); /* appends */
    cr_assert_eq(len, 2 * first);
    cr_assert_eq(memcmp(buf, buf + first, first), 0);
    cr_assert_eq(seg_decode(&t->st, buf, len, &used, &d), SHALE_OK);
    cr_assert_eq(used, first);
    cr_assert_eq(seg_decode(&t->st, buf + used, len - used, &used, &d2), SHALE_OK);
    cr_assert_eq(used, first);
    seg_unref(d2);
    cr_assert_eq(d->id, seg->id);
    cr_assert_eq(d->gen, seg->gen);
    cr_assert_eq(d->level, seg->level);
    cr_assert_eq(memcmp(&d->tree, &seg->tree, sizeof d->tree), 0);
    cr_assert_eq(d->filter_pgno, seg->filter_pgno);
    cr_assert_eq(d->filter_bytes, seg->filter_bytes);
    cr_assert_eq(memcmp(d->filter, seg->filter, seg->filter_bytes), 0);
    cr_assert_eq(d->min_len, seg->min_len);
    cr_assert_eq(d->max_len, seg->max_len);
    cr_assert(d->min_len == 0 || memcmp(d->min_key, seg->min_key, d->min_len) == 0);
    cr_assert(d->max_len == 0 || memcmp(d->max_key, seg->max_key, d->max_len) == 0);
    cr_assert(bl_equal(&d->pages, &seg->pages));
    cr_assert_eq(seg_encode(d, &buf2, &len2, &cap2), SHALE_OK);
    cr_assert_eq(len2, first);
    cr_assert_eq(memcmp(buf2, buf, first), 0);
    free(buf);
    free(buf2);
    return d;
}

/* full_check_codec -- build from about n entries with leaves written by
 * codec and check every read path, on the built segment and on its decoded
 * copy. */
static void full_check_codec(uint32_t ps, size_t n, uint64_t seed, size_t seeks, int codec)
{
    tspace t;
    model m;
    seg_segment *seg, *d;
    src_ctx s = {.fail_at = SIZE_MAX};
    seg_source src = {src_next, &s};
    uint64_t used;

    ts_open_codec(&t, ps, codec);
    model_gen(&m, n, ps, seed);
    s.m = &m;
    if (m.n == 0) {
        cr_assert_eq(seg_build(&t.st, 1, 1, 0, &src, &seg), SHALE_NOTFOUND);
        cr_assert_null(seg);
        cr_assert_eq(ts_used(&t), 0);
        model_free(&m);
        ts_close(&t);
        return;
    }
    seg = build(&t, &m);
    cr_assert_eq(seg->tree.entries, m.n);
    cr_assert_eq(ts_used(&t), bl_pages(&seg->pages));
    check_gets(seg, &m, seed);
    check_scan(seg, &m);
    check_seeks(seg, &m, seeks, seed + 1);
    d = roundtrip(&t, seg);
    check_gets(d, &m, seed + 2);
    check_scan(d, &m);
    check_seeks(d, &m, seeks / 4, seed + 3);
    used = ts_used(&t);
    seg_unref(d);
    seg_unref(seg);
    cr_assert_eq(ts_used(&t), used); /* not retired: the pages stay the caller's */
    model_free(&m);
    ts_close(&t);
}

static void full_check(uint32_t ps, size_t n, uint64_t seed, size_t seeks)
{
    full_check_codec(ps, n, seed, seeks, CODEC_NONE);
}

/* Each test runs at page sizes 1024 and 4096 unless its name says which. */
Test(segment, empty_source_is_notfound_and_allocates_nothing)
{
    full_check(1024, 0, 1, 0);
    full_check(4096, 0, 1, 0);
}
Test(segment, one_entry_reads_back)
{
    full_check(1024, 1, 2, 200);
    full_check(4096, 1, 3, 200);
}
Test(segment, ten_entries_read_back)
{
    full_check(1024, 10, 4, 2000);
    full_check(4096, 10, 5, 2000);
}
Test(segment, hundred_k_entries_read_back_1k, .timeout = 600)
{
    full_check(1024, 100000, 6, 20000);
}
Test(segment, hundred_k_entries_read_back_4k, .timeout = 600)
{
    full_check(4096, 100000, 7, 20000);
}

Test(segment, many_seeds_of_small_segments)
{
    for (uint64_t seed = 100; seed < 130; seed++)
        full_check(seed & 1 ? 1024 : 4096, 1 + seed % 37 * 13, seed, 300);
}

/* Compressed leaves through the node cache: the same checks. */
Test(segment, compressed_segments_read_back, .timeout = 600)
{
    full_check_codec(1024, 40000, 8, 10000, CODEC_LZ4);
    full_check_codec(4096, 40000, 9, 10000, CODEC_ZSTD);
    for (uint64_t seed = 200; seed < 224; seed++)
        full_check_codec(seed & 1 ? 1024 : 4096, 1 + seed % 37 * 29, seed, 300,
                         seed % 3 ? CODEC_LZ4 : CODEC_ZSTD);
}

/* ---- lifetime ---------------------------------------------------------- */

/* discard_check -- a discarded segment's pages go pending at once, free
 * after a checkpoint; unrefs only free memory. */
static void discard_check(uint32_t ps)
{
    tspace t;
    model m;
    seg_segment *seg;
    sp_freespace *fs;
    uint64_t fr0, pend0, fr, pend, pages;

    ts_open(&t, ps);
    fs = sp_freespace_of(t.sp);
    model_gen(&m, 3000, ps, 11);
    seg = build(&t, &m);
    pages = bl_pages(&seg->pages);
    cr_assert_eq(ts_used(&t), pages);
    fs_counts(fs, &fr0, &pend0);
    cr_assert_eq(pend0, 0);
    cr_assert_eq(seg_discard(seg), SHALE_OK);
    fs_counts(fs, &fr, &pend);
    cr_assert_eq(pend, pages);
    cr_assert_eq(fr, fr0);
    cr_assert_eq(seg_discard(seg), SHALE_EINVAL, "pages already pending");
    seg_unref(seg);
    fs_ckpt_begin(fs);
    fs_ckpt_end(fs, 1);
    fs_counts(fs, &fr, &pend);
    cr_assert_eq(pend, 0);
    cr_assert_eq(fr, fr0 + pages);
    cr_assert_eq(ts_used(&t), 0);
    model_free(&m);
    ts_close(&t);
}

Test(segment, discard_returns_pages_after_checkpoint)
{
    discard_check(1024);
    discard_check(4096);
}

Test(segment, a_cursor_keeps_the_segment_and_unrefs_free_no_pages)
{
    tspace t;
    model m;
    seg_segment *seg;
    seg_cursor *c;
    uint64_t pend, used;

    ts_open(&t, 4096);
    model_gen(&m, 500, 4096, 12);
    seg = build(&t, &m);
    used = ts_used(&t);
    cr_assert_eq(seg_cursor_open(seg, &c), SHALE_OK);
    seg_unref(seg);
    cr_assert_eq(seg_cursor_last(c), SHALE_OK);
    expect_at(c, &m, m.n - 1);
    seg_cursor_close(c);
    fs_counts(sp_freespace_of(t.sp), NULL, &pend);
    cr_assert_eq(pend, 0);
    cr_assert_eq(ts_used(&t), used, "the pages are the versions' business");
    model_free(&m);
    ts_close(&t);
}

/* ---- build failures ---------------------------------------------------- */

/* fail_check -- a source failing at entry `at` with rc leaves nothing behind. */
static void fail_check(uint32_t ps, size_t n, size_t at, int rc, int want)
{
    tspace t;
    model m;
    src_ctx s = {.fail_at = at, .fail_rc = rc};
    seg_source src = {src_next, &s};
    seg_segment *seg = (seg_segment *)&s;
    uint64_t fr;

    ts_open(&t, ps);
    model_gen(&m, n, ps, 13 + at);
    s.m = &m;
    cr_assert_eq(seg_build(&t.st, 1, 1, 0, &src, &seg), want);
    cr_assert_null(seg);
    cr_assert_eq(ts_used(&t), 0, "pages leaked: %llu", (unsigned long long)ts_used(&t));
    fs_counts(sp_freespace_of(t.sp), &fr, NULL);
    cr_assert_eq(fr + SP_FIRST_DATA_PAGE, fs_file_pages(sp_freespace_of(t.sp)));
    model_free(&m);
    ts_close(&t);
}

Test(segment, source_error_midway_leaks_nothing)
{
    fail_check(1024, 20000, 15000, SHALE_EIO, SHALE_EIO);
    fail_check(4096, 20000, 12345, SHALE_ENOMEM, SHALE_ENOMEM);
    fail_check(4096, 100, 0, SHALE_EIO, SHALE_EIO);           /* at once */
    fail_check(1024, 30, 25, SHALE_ECORRUPT, SHALE_ECORRUPT); /* after a 3 MB value (n / 3) */
}
Test(segment, source_bad_return_code_is_einval)
{
    fail_check(4096, 100, 50, 7, SHALE_EINVAL);
}

Test(segment, unsorted_source_is_einval_and_leaks_nothing)
{
    tspace t;
    model m;
    src_ctx s = {.fail_at = SIZE_MAX};
    seg_source src = {src_next, &s};
    seg_segment *seg;
    ent tmp;

    ts_open(&t, 1024);
    model_gen(&m, 5000, 1024, 14);
    tmp = m.v[4000];
    m.v[4000] = m.v[4001];
    m.v[4001] = tmp;
    s.m = &m;
    cr_assert_eq(seg_build(&t.st, 1, 1, 0, &src, &seg), SHALE_EINVAL);
    cr_assert_null(seg);
    cr_assert_eq(ts_used(&t), 0);
    model_free(&m);
    ts_close(&t);
}

/* ---- corruption -------------------------------------------------------- */

Test(segment, truncated_descriptor_is_corrupt)
{
    tspace t;
    model m;
    seg_segment *seg, *d;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, used;

    ts_open(&t, 1024);
    model_gen(&m, 2000, 1024, 15);
    seg = build(&t, &m);
    cr_assert_eq(seg_encode(seg, &buf, &len, &cap), SHALE_OK);
    for (size_t l = 0; l < len; l++) {
        d = (seg_segment *)buf;
        cr_assert_lt(seg_decode(&t.st, buf, l, &used, &d), 0, "length %zu", l);
        cr_assert_null(d);
    }
    free(buf);
    seg_unref(seg);
    model_free(&m);
    ts_close(&t);
}

/* poke -- read through a segment that may be damaged; results do not matter,
 * only that nothing crashes, hangs or leaks. */
static void poke(seg_segment *d, const model *m)
{
    shale_buf b = SHALE_BUF_INIT;
    seg_cursor *c;
    uint8_t kind;
    int n = 0;

    for (size_t i = 0; i < m->n; i += 97)
        (void)seg_get(d, m->v[i].key, m->v[i].klen, &kind, &b);
    if (seg_cursor_open(d, &c) == SHALE_OK) {
        for (int rc = seg_cursor_first(c); rc == SHALE_OK && n < 5000;
             rc = seg_cursor_next(c), n++) {
            const void *v;
            size_t vl;
            (void)seg_cursor_value(c, &v, &vl);
        }
        (void)seg_cursor_seek_le(c, m->v[m->n / 2].key, m->v[m->n / 2].klen);
        seg_cursor_close(c);
    }
    free(b.data);
}

Test(segment, damaged_descriptors_never_crash)
{
    tspace t;
    model m;
    seg_segment *seg, *d;
    uint8_t *buf = NULL, *g;
    size_t len = 0, cap = 0, used;
    uint64_t r = 99;

    ts_open(&t, 1024);
    model_gen(&m, 2000, 1024, 16);
    seg = build(&t, &m);
    cr_assert_eq(seg_encode(seg, &buf, &len, &cap), SHALE_OK);
    g = malloc(len);
    for (int round = 0; round < 3000; round++) {
        memcpy(g, buf, len);
        for (int k = 0; k <= round % 3; k++)
            g[rnd(&r) % len] ^= (uint8_t)(1u << (rnd(&r) % 8));
        if (seg_decode(&t.st, g, len, &used, &d) == SHALE_OK) {
            if (round % 10 == 0)
                poke(d, &m);
            seg_unref(d);
        }
    }
    for (int round = 0; round < 3000; round++) { /* arbitrary bytes */
        size_t l = 1 + rnd(&r) % len;
        fill(&r, g, l);
        if (seg_decode(&t.st, g, l, &used, &d) == SHALE_OK)
            seg_unref(d);
    }
    free(g);
    free(buf);
    seg_unref(seg);
    model_free(&m);
    ts_close(&t);
}

/* expect_corrupt -- point reads and cursor moves all report corruption. */
static void expect_corrupt(seg_segment *seg, const model *m)
{
    shale_buf b = SHALE_BUF_INIT;
    seg_cursor *c;
    uint8_t kind;

    cr_assert_eq(seg_get(seg, m->v[1].key, m->v[1].klen, &kind, &b), SHALE_ECORRUPT);
    cr_assert_eq(seg_cursor_open(seg, &c), SHALE_OK);
    cr_assert_eq(seg_cursor_first(c), SHALE_ECORRUPT);
    cr_assert(!seg_cursor_valid(c));
    cr_assert_eq(seg_cursor_last(c), SHALE_ECORRUPT);
    cr_assert_eq(seg_cursor_seek_ge(c, m->v[1].key, m->v[1].klen), SHALE_ECORRUPT);
    cr_assert_eq(seg_cursor_seek_le(c, m->v[1].key, m->v[1].klen), SHALE_ECORRUPT);
    cr_assert(!seg_cursor_valid(c));
    seg_cursor_close(c);
    free(b.data);
}

/* second_page_of_first_leaf -- inside the first leaf's compressed run. */
static uint64_t second_page_of_first_leaf(const seg_segment *seg)
{
    node_ref r;
    node_child c;
    uint64_t pgno = seg->tree.root;
    cr_assert_gt(seg->tree.height, 1);
    for (;;) {
        cr_assert_eq(seg_node_pin(seg, pgno, &r), SHALE_OK);
        if (sp_page_type(r.data) == SP_PT_LEAF)
            break;
        cr_assert_eq(node_parent_child(r.data, r.size, 0, &c), SHALE_OK);
        node_unpin(seg->sp, &r);
        pgno = c.pgno;
    }
    cr_assert_gt(r.pages, 1, "the first leaf is a compressed run");
    node_unpin(seg->sp, &r);
    return pgno + 1;
}

/* restored_reads_back -- with its tree restored the segment reads in full;
 * then free everything. */
static void restored_reads_back(tspace *t, seg_segment *seg, node_tree_info keep, model *m)
{
    seg->tree = keep;
    check_scan(seg, m);
    seg_unref(seg);
    model_free(m);
    ts_close(t);
}

Test(segment, tree_pointers_into_garbage_are_corrupt)
{
    tspace t;
    model m;
    seg_segment *seg;
    node_tree_info keep;

    ts_open(&t, 1024);
    model_gen(&m, 5000, 1024, 17);
    seg = build(&t, &m);
    keep = seg->tree;
    cr_assert_geq(keep.height, 2);
    seg->tree.root = seg->filter_pgno; /* a page of the segment, but a filter */
    expect_corrupt(seg, &m);
    seg->tree.root = 1; /* a header slot */
    expect_corrupt(seg, &m);
    seg->tree.root = seg->pages.v[seg->pages.n - 1].last + 1; /* outside the segment */
    expect_corrupt(seg, &m);
    seg->tree = keep;
    seg->tree.height = keep.height - 1; /* the leaves lie deeper than the height says */
    expect_corrupt(seg, &m);
    restored_reads_back(&t, seg, keep, &m);

    /* compressed: a root pointing inside a leaf's run */
    ts_open_codec(&t, 1024, CODEC_ZSTD);
    model_gen(&m, 5000, 1024, 17);
    seg = build(&t, &m);
    keep = seg->tree;
    seg->tree.root = second_page_of_first_leaf(seg);
    expect_corrupt(seg, &m);
    restored_reads_back(&t, seg, keep, &m);
}

/* flip_byte -- flip one byte of the file at off. */
static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t x;

    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, &x, 1, (off_t)off), 1);
    x ^= 0x40;
    cr_assert_eq(pwrite(fd, &x, 1, (off_t)off), 1);
    close(fd);
}

/* damaged_reopen -- checkpoint a segment, flip a byte of page pgno, reopen
 * and decode it; returns the decode's result. */
static int damaged_reopen(uint32_t ps, int codec, uint64_t (*which)(const seg_segment *),
                          model *m, seg_segment **out, tspace *t)
{
    seg_segment *seg;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, used, metalen;
    void *meta;
    uint64_t pgno;
    int rc;

    ts_open_codec(t, ps, codec);
    model_gen(m, 3000, ps, 18);
    seg = build(t, m);
    cr_assert_eq(seg_encode(seg, &buf, &len, &cap), SHALE_OK);
    cr_assert_eq(sp_checkpoint(t->sp, &seg->pages, buf, len), SHALE_OK);
    pgno = which(seg);
    seg_unref(seg);
    sp_close(t->sp);
    flip_byte(t->path, pgno * ps + ps / 2);
    ts_reopen(t, &meta, &metalen);
    cr_assert_eq(metalen, len);
    cr_assert_eq(memcmp(meta, buf, len), 0);
    rc = seg_decode(&t->st, meta, metalen, &used, out);
    free(meta);
    free(buf);
    return rc;
}

/* root_page, filter_page -- which page damaged_reopen damages. */
static uint64_t root_page(const seg_segment *seg)
{
    return seg->tree.root;
}
static uint64_t filter_page(const seg_segment *seg)
{
    return seg->filter_pgno;
}

Test(segment, damaged_tree_page_reads_as_corrupt)
{
    tspace t;
    model m;
    seg_segment *d;

    cr_assert_eq(damaged_reopen(1024, CODEC_NONE, root_page, &m, &d, &t), SHALE_OK);
    expect_corrupt(d, &m);
    seg_unref(d);
    model_free(&m);
    ts_close(&t);
}

Test(segment, damaged_compressed_leaf_reads_as_corrupt)
{
    tspace t;
    model m;
    seg_segment *d;

    cr_assert_eq(damaged_reopen(1024, CODEC_LZ4, second_page_of_first_leaf, &m, &d, &t),
                 SHALE_OK);
    /* reads that need the first leaf fail; the rest of the segment reads */
    shale_buf b = SHALE_BUF_INIT;
    seg_cursor *c;
    uint8_t kind;
    int grc = seg_get(d, m.v[1].key, m.v[1].klen, &kind, &b);
    cr_assert_eq(grc, SHALE_ECORRUPT, "get: %d", grc);
    cr_assert_eq(seg_get(d, m.v[m.n - 1].key, m.v[m.n - 1].klen, &kind, &b), SHALE_OK);
    cr_assert_eq(seg_cursor_open(d, &c), SHALE_OK);
    cr_assert_eq(seg_cursor_first(c), SHALE_ECORRUPT);
    cr_assert(!seg_cursor_valid(c));
    cr_assert_eq(seg_cursor_seek_ge(c, m.v[1].key, m.v[1].klen), SHALE_ECORRUPT);
    cr_assert_eq(seg_cursor_last(c), SHALE_OK);
    seg_cursor_close(c);
    free(b.data);
    seg_unref(d);
    model_free(&m);
    ts_close(&t);
}

Test(segment, damaged_filter_fails_decode)
{
    tspace t;
    model m;
    seg_segment *d;

    cr_assert_eq(damaged_reopen(4096, CODEC_NONE, filter_page, &m, &d, &t), SHALE_ECORRUPT);
    cr_assert_null(d);
    model_free(&m);
    ts_close(&t);
}

/* ---- filter ------------------------------------------------------------ */

Test(segment, filter_has_no_false_negatives_and_few_false_positives)
{
    tspace t;
    model m;
    seg_segment *seg;
    uint64_t r = 5;
    size_t fp = 0, tries = 0;
    static uint8_t kbuf[SHALE_MAX_KEY_SIZE];
    bool eq;

    ts_open(&t, 4096);
    model_gen(&m, 50000, 4096, 19);
    seg = build(&t, &m);
    cr_assert_leq(seg->filter_bytes, 8 + m.n * 10 / 8 + 64);
    for (size_t i = 0; i < m.n; i++)
        cr_assert(seg_may_contain(seg, m.v[i].key, m.v[i].klen));
    while (tries < 100000) {
        size_t kl = 1 + rnd(&r) % 24;
        fill(&r, kbuf, kl);
        kbuf[0] = 'a' + kbuf[0] % 26; /* inside the key range */
        model_lb(&m, kbuf, kl, &eq);
        if (eq)
            continue;
        tries++;
        fp += filter_may_contain(seg->filter, seg->filter_bytes, filter_hash(kbuf, kl));
    }
    cr_assert_lt((double)fp / (double)tries, 0.03, "false positives %zu of %zu", fp, tries);
    seg_unref(seg);
    model_free(&m);
    ts_close(&t);
}
