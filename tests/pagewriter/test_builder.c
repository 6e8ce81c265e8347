/*
 * test_builder.c -- trees built by node_builder on a real page file, walked
 * and searched through the decoders; page accounting on success, abort and
 * injected write failures; corrupted pages re-sealed and read back.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/pagewriter/codec.h"
#include "../../src/pagewriter/node.h"
#include "../../src/pagewriter/nodecache.h"
#include "../support/memenv.h"
#include "../support/testutil.h"

/* ---- a page file ---------------------------------------------------------- */

typedef struct env {
    char dir[64];
    char path[96];
    sp_space *sp;
    memenv *mem;
    uint32_t ps;
    int codec;      /* leaves built with this codec (build) */
    node_cache *nc; /* compressed leaves are read through it */
} env;

static void env_open(env *e, uint32_t ps, bool in_memory)
{
    memset(e, 0, sizeof(*e));
    sp_config cfg = {.page_size = ps, .cache_bytes = 4 << 20, .create = true};
    if (in_memory) {
        e->mem = memenv_create();
        cfg.env = memenv_env(e->mem);
        snprintf(e->path, sizeof(e->path), "data");
    } else {
        cr_assert_eq(tu_tmpdir(e->dir, sizeof(e->dir)), 0);
        snprintf(e->path, sizeof(e->path), "%s/data", e->dir);
    }
    cfg.path = e->path;
    cr_assert_eq(sp_open(&cfg, &e->sp, NULL, NULL, NULL), SHALE_OK);
    cr_assert_eq(node_cache_open(256u << 10, &e->nc), SHALE_OK);
    e->ps = ps;
}

static void env_close(env *e)
{
    sp_close(e->sp);
    node_cache_close(e->nc);
    if (e->mem)
        memenv_destroy(e->mem);
    else
        tu_rmrf(e->dir);
}

static uint64_t in_use(env *e)
{
    uint64_t fr, pend;
    sp_freespace *fs = sp_freespace_of(e->sp);
    fs_counts(fs, &fr, &pend);
    return fs_file_pages(fs) - SP_FIRST_DATA_PAGE - fr - pend;
}

/* ---- the model: sorted unique keys, values derived from the index -------- */

typedef struct mkey {
    uint32_t off, len;
} mkey;

static uint8_t *kbuf;
static mkey *keys;
static size_t nkeys;
static uint64_t vseed;
static bool text_values; /* compressible values instead of random bytes */

static int mkey_cmp(const void *a, const void *b)
{
    const mkey *x = a, *y = b;
    return key_cmp(kbuf + x->off, x->len, kbuf + y->off, y->len);
}

/* gen_keys -- n keys of mixed shapes (prefix-sharing, binary, long with
 * inline ties, long distinct), sorted and unique; the empty key included. */
static void gen_keys(tu_rng *r, size_t n)
{
    size_t cap = n * 64 + 4096, used = 0;
    kbuf = malloc(cap);
    keys = malloc(n * sizeof(mkey));
    for (size_t i = 0; i < n; i++) {
        unsigned shape = (unsigned)tu_rng_range(r, 100);
        size_t len;
        uint8_t tmp[2100];
        if (i == 0) {
            len = 0;
        } else if (shape < 70 || text_values) {
            len = (size_t)snprintf((char *)tmp, sizeof(tmp), "shale-tree-%04u/user/%0*llu",
                                   (unsigned)tu_rng_range(r, 3), 4 + (int)tu_rng_range(r, 8),
                                   (unsigned long long)tu_rng_range(r, 100000000));
        } else if (shape < 90) {
            len = tu_rng_range(r, 17);
            tu_rng_bytes(r, tmp, len);
        } else if (shape < 95) { /* overflowed, inline bytes tie with each other */
            len = 600 + tu_rng_range(r, 21);
            memset(tmp, 'L', 600);
            tu_rng_bytes(r, tmp + 600, len - 600);
        } else {
            len = 100 + tu_rng_range(r, 2000);
            tu_rng_bytes(r, tmp, len);
        }
        if (used + len > cap) {
            cap = 2 * cap + len;
            kbuf = realloc(kbuf, cap);
        }
        memcpy(kbuf + used, tmp, len);
        keys[i].off = (uint32_t)used;
        keys[i].len = (uint32_t)len;
        used += len;
    }
    qsort(keys, n, sizeof(mkey), mkey_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || mkey_cmp(&keys[m - 1], &keys[i]) != 0)
            keys[m++] = keys[i];
    nkeys = m;
}

static void free_keys(void)
{
    free(kbuf);
    free(keys);
    kbuf = NULL;
    keys = NULL;
}

/* model_value -- kind and value of entry i (into buf, at least 8 KiB). */
static uint8_t model_value(size_t i, uint32_t ps, uint8_t *buf, size_t *vlen)
{
    tu_rng r;
    tu_rng_seed(&r, vseed ^ (i * 0x9e3779b97f4a7c15ull));
    unsigned pick = (unsigned)tu_rng_range(&r, 100);
    if (pick < 5) {
        *vlen = 0;
        return NODE_KIND_TOMBSTONE;
    }
    if (pick < 15)
        *vlen = 0;
    else if (pick < 17)
        *vlen = node_val_inline_max(ps) + 1 + tu_rng_range(&r, node_val_inline_max(ps) * 2);
    else if (pick < 18)
        *vlen = node_val_inline_max(ps); /* the largest inline value */
    else
        *vlen = tu_rng_range(&r, 60);
    if (text_values)
        for (size_t j = 0; j < *vlen; j++)
            buf[j] = (uint8_t)("value-of-entry "[(j + i) % 15] + (j % 97 == 0));
    else
        tu_rng_bytes(&r, buf, *vlen);
    return pick < 20 ? NODE_KIND_MERGE : NODE_KIND_VALUE;
}

/* build -- every model entry into a new tree; fills info and the pages used. */
static void build(env *e, uint64_t gen, node_tree_info *info, sp_blocklist *used)
{
    pw_writer *pw;
    node_builder *b;
    uint8_t *val = malloc(1u << 16);
    cr_assert_eq(pw_open(e->sp, gen, 64, &pw), SHALE_OK);
    cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
    cr_assert_eq(node_builder_set_codec(b, e->codec, 0), SHALE_OK);
    for (size_t i = 0; i < nkeys; i++) {
        size_t vlen;
        uint8_t kind = model_value(i, e->ps, val, &vlen);
        cr_assert_eq(node_builder_add(b, kind, kbuf + keys[i].off, keys[i].len, val, vlen),
                     SHALE_OK, "entry %zu", i);
    }
    cr_assert_eq(node_builder_finish(b, info), SHALE_OK);
    cr_assert_eq(pw_finish(pw, used), SHALE_OK);
    pw_close(pw);
    free(val);
}

/* ---- walking a tree --------------------------------------------------------- */

typedef struct walk {
    env *e;
    uint64_t gen, gen2; /* pages carry gen (or gen2, when nonzero: recycled) */
    size_t next;        /* the model index the walk expects next */
    uint64_t last_kovf; /* key run of the last entry walked */
    uint64_t tombs, leaves, parents, ovf_pages;
    uint64_t leaf_pages, compressed;
    uint32_t leaf_depth;
    const sp_blocklist *used;
    uint8_t *kb, *vb;
    size_t kcap;
} walk;

/* expect_key -- the stored key equals model key i. */
static void expect_key(walk *w, const node_key *k, size_t i)
{
    size_t len;
    cr_assert_eq(node_key_copy(w->e->sp, k, &w->kb, &w->kcap, &len), SHALE_OK);
    cr_assert_eq(len, keys[i].len, "key %zu", i);
    cr_assert(len == 0 || memcmp(w->kb, kbuf + keys[i].off, len) == 0, "key %zu", i);
}

static void walk_page(walk *w, uint64_t pgno, uint32_t depth);

/* walk_leaf -- every entry of leaf d (size bytes) equals the model from w->next on. */
static void walk_leaf(walk *w, const uint8_t *d, uint32_t size, uint32_t depth)
{
    uint32_t ps = w->e->ps;
    cr_assert_eq(node_leaf_check(d, size), SHALE_OK);
    cr_assert_eq(depth, w->leaf_depth, "every leaf at one depth");
    w->leaves++;
    for (unsigned i = 0; i < sp_page_count(d); i++) {
        node_entry en;
        size_t vlen;
        cr_assert_eq(node_leaf_entry(d, size, i, &en), SHALE_OK);
        cr_assert_lt(w->next, nkeys);
        expect_key(w, &en.key, w->next);
        uint8_t kind = model_value(w->next, ps, w->vb, &vlen);
        cr_assert_eq(en.kind, kind);
        cr_assert_eq(en.vlen, vlen);
        w->tombs += kind == NODE_KIND_TOMBSTONE;
        if (en.val_ovf_pgno) {
            uint8_t *got = malloc(vlen);
            cr_assert_gt(vlen, node_val_inline_max(w->e->codec ? node_image_size(ps) : ps));
            cr_assert_eq(pw_run_read_into(w->e->sp, en.val_ovf_pgno, SP_PT_OVERFLOW, got, vlen),
                         SHALE_OK);
            cr_assert(memcmp(got, w->vb, vlen) == 0);
            w->ovf_pages += pw_run_pages(ps, vlen);
            cr_assert(bl_contains(w->used, en.val_ovf_pgno));
            free(got);
        } else {
            cr_assert_leq(vlen, node_val_inline_max(w->e->codec ? node_image_size(ps) : ps));
            cr_assert(vlen == 0 || memcmp(en.val, w->vb, vlen) == 0);
        }
        if (en.key.ovf_pgno) {
            w->ovf_pages += pw_run_pages(ps, en.key.klen);
            cr_assert(bl_contains(w->used, en.key.ovf_pgno));
        }
        w->last_kovf = en.key.ovf_pgno;
        w->next++;
    }
}

/* walk_parent -- each child's counts and last key match its subtree. */
static void walk_parent(walk *w, const uint8_t *d, uint32_t depth)
{
    uint32_t ps = w->e->ps;
    cr_assert_eq(node_parent_check(d, ps), SHALE_OK);
    w->parents++;
    for (unsigned i = 0; i < sp_page_count(d); i++) {
        node_child c;
        cr_assert_eq(node_parent_child(d, ps, i, &c), SHALE_OK);
        size_t start = w->next;
        uint64_t tombs = w->tombs;
        walk_page(w, c.pgno, depth + 1);
        cr_assert_eq(c.entries, w->next - start);
        cr_assert_eq(c.tombstones, w->tombs - tombs);
        expect_key(w, &c.last, w->next - 1);
        cr_assert_eq(c.last.ovf_pgno, w->last_kovf, "the parent shares the leaf's key run");
    }
}

/* walk_page -- check node pgno (a copy: the caches may be small) and recurse. */
static void walk_page(walk *w, uint64_t pgno, uint32_t depth)
{
    node_ref r;
    cr_assert_eq(node_pin(w->e->sp, w->e->nc, pgno, &r), SHALE_OK);
    uint32_t size = r.size;
    uint8_t *d = malloc(size);
    memcpy(d, r.data, size);
    for (uint64_t k = 0; k < r.pages; k++)
        cr_assert(bl_contains(w->used, pgno + k));
    if (r.img) {
        cr_assert_gt(size, w->e->ps, "an image larger than a page");
        cr_assert_leq(size, node_image_size(w->e->ps));
        w->compressed++;
    } else {
        cr_assert_eq(r.pages, 1);
        cr_assert_eq(size, w->e->ps);
    }
    if (sp_page_type(d) == SP_PT_LEAF)
        w->leaf_pages += r.pages;
    node_unpin(w->e->sp, &r);
    cr_assert(sp_page_gen(d) == w->gen || (w->gen2 && sp_page_gen(d) == w->gen2));
    if (sp_page_type(d) == SP_PT_LEAF)
        walk_leaf(w, d, size, depth);
    else
        walk_parent(w, d, depth);
    free(d);
}

/* find -- descend from the root to the leaf that holds the first key >= key;
 * *leaf gets a copy of it (node_image_size(ps) bytes, malloc'd) and *size its
 * size, *idx the position. */
static bool find(env *e, const node_tree_info *t, const uint8_t *key, size_t klen, uint8_t *leaf,
                 uint32_t *size, unsigned *idx, bool *exact)
{
    uint64_t pgno = t->root;
    for (;;) {
        node_ref r;
        cr_assert_eq(node_pin(e->sp, e->nc, pgno, &r), SHALE_OK);
        const uint8_t *d = r.data;
        if (sp_page_type(d) == SP_PT_LEAF) {
            cr_assert_eq(node_leaf_search(e->sp, d, r.size, key, klen, idx, exact), SHALE_OK);
            memcpy(leaf, d, r.size);
            *size = r.size;
            node_unpin(e->sp, &r);
            return true;
        }
        unsigned ci;
        node_child c;
        cr_assert_eq(node_parent_search(e->sp, d, r.size, key, klen, &ci), SHALE_OK);
        if (ci == sp_page_count(d)) {
            node_unpin(e->sp, &r);
            return false;
        }
        cr_assert_eq(node_parent_child(d, r.size, ci, &c), SHALE_OK);
        node_unpin(e->sp, &r);
        pgno = c.pgno;
    }
}

/* model_lower_bound -- the first model index with key >= (key, klen). */
static size_t model_lower_bound(const uint8_t *key, size_t klen)
{
    size_t lo = 0, hi = nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(kbuf + keys[mid].off, keys[mid].len, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* check_search -- descend for key and compare with the model's lower bound. */
static void check_search(env *e, walk *w, const node_tree_info *t, const uint8_t *key, size_t klen,
                         uint8_t *leaf)
{
    unsigned idx;
    uint32_t size;
    bool exact = false;
    size_t lb = model_lower_bound(key, klen);
    if (!find(e, t, key, klen, leaf, &size, &idx, &exact)) {
        cr_assert_eq(lb, nkeys);
        return;
    }
    cr_assert_lt(lb, nkeys, "past the last key, the root search says so");
    cr_assert_lt(idx, sp_page_count(leaf));
    node_entry en;
    cr_assert_eq(node_leaf_entry(leaf, size, idx, &en), SHALE_OK);
    expect_key(w, &en.key, lb);
    cr_assert_eq(exact, key_cmp(kbuf + keys[lb].off, keys[lb].len, key, klen) == 0);
}

/* build_and_verify -- n random entries at page size ps with leaves written
 * by codec: walk, search, count; returns the pages the tree took. */
static uint64_t build_and_verify_codec(uint32_t ps, size_t n, uint64_t seed, int codec)
{
    env e;
    tu_rng r;
    node_tree_info t;
    sp_blocklist used = BL_INIT;

    env_open(&e, ps, false);
    e.codec = codec;
    tu_rng_seed(&r, seed);
    vseed = seed * 31 + 7;
    gen_keys(&r, n);
    uint64_t before = in_use(&e);
    build(&e, 11, &t, &used);
    cr_assert_eq(in_use(&e) - before, bl_pages(&used), "pw_finish gave the rest back");
    cr_assert_eq(t.entries, nkeys);
    if (codec == CODEC_NONE)
        cr_assert_geq(t.height, ps == 1024 ? 3 : 2, "height %u", t.height);

    walk w = {.e = &e, .gen = 11, .used = &used, .leaf_depth = t.height - 1};
    w.vb = malloc(1u << 16);
    walk_page(&w, t.root, 0);
    cr_assert_eq(w.next, nkeys);
    cr_assert_eq(w.tombs, t.tombstones);
    cr_assert_eq(w.leaves, t.leaves);
    cr_assert_eq(w.parents, t.parents);
    cr_assert_eq(w.ovf_pages, t.overflow_pages);
    cr_assert_eq(w.compressed, t.compressed_leaves);
    cr_assert_eq(bl_pages(&used), w.leaf_pages + t.parents + t.overflow_pages);
    if (codec == CODEC_NONE || ps == SP_MAX_PAGE_SIZE)
        cr_assert_eq(t.compressed_leaves, 0);
    else if (text_values) /* compressible: leaves are compressed runs */
        cr_assert_gt(t.compressed_leaves, t.leaves / 2, "%llu of %llu leaves compressed",
                     (unsigned long long)t.compressed_leaves, (unsigned long long)t.leaves);
    else /* random values: plain pages but for the probes */
        cr_assert_gt(t.compressed_leaves, 0);

    uint8_t *leaf = malloc(node_image_size(ps)), probe[2200];
    for (size_t i = 0; i < nkeys; i++)
        check_search(&e, &w, &t, kbuf + keys[i].off, keys[i].len, leaf);
    for (size_t q = 0; q < nkeys / 2; q++) { /* absent keys near present ones */
        const mkey *k = &keys[tu_rng_range(&r, nkeys)];
        size_t len = k->len;
        memcpy(probe, kbuf + k->off, len);
        switch (tu_rng_range(&r, 3)) {
        case 0:
            if (len)
                len--;
            break;
        case 1:
            probe[len++] = (uint8_t)tu_rng_next(&r);
            break;
        default:
            if (len)
                probe[tu_rng_range(&r, len)] ^= (uint8_t)(1 + tu_rng_range(&r, 255));
        }
        check_search(&e, &w, &t, probe, len, leaf);
    }
    uint8_t top[3] = {0xff, 0xff, 0xff};
    check_search(&e, &w, &t, top, 3, leaf);
    free(leaf);
    free(w.kb);
    free(w.vb);
    uint64_t pages = bl_pages(&used);
    bl_free(&used);
    free_keys();
    env_close(&e);
    return pages;
}

static void build_and_verify(uint32_t ps, size_t n, uint64_t seed)
{
    build_and_verify_codec(ps, n, seed, CODEC_NONE);
}

Test(builder, tree_of_100k_entries_walks_in_order_1k_pages, .timeout = 1200)
{
    build_and_verify(1024, 100000, tu_seed());
}

Test(builder, tree_of_100k_entries_walks_in_order_4k_pages, .timeout = 1200)
{
    build_and_verify(4096, 100000, tu_seed() + 1);
}

Test(builder, tree_with_64k_pages, .timeout = 1200)
{
    build_and_verify(65536, 20000, tu_seed() + 2);
}

/* Compressed leaves: the same walks and searches, with random
 * (incompressible) values, so most leaves are plain pages and the probes
 * runs stored raw. */
Test(builder, compressed_trees_walk_in_order, .timeout = 1200)
{
    text_values = false;
    build_and_verify_codec(1024, 30000, tu_seed() + 3, CODEC_LZ4);
    build_and_verify_codec(4096, 30000, tu_seed() + 4, CODEC_ZSTD);
    build_and_verify_codec(65536, 5000, tu_seed() + 5, CODEC_ZSTD);
}

/* With text keys and values the same trees take far fewer pages compressed. */
Test(builder, compression_shrinks_compressible_trees, .timeout = 1200)
{
    uint64_t seed = tu_seed() + 6;
    text_values = true;
    for (uint32_t ps = 1024; ps <= 4096; ps *= 4) {
        uint64_t plain = build_and_verify_codec(ps, 30000, seed, CODEC_NONE);
        uint64_t lz4 = build_and_verify_codec(ps, 30000, seed, CODEC_LZ4);
        uint64_t zstd = build_and_verify_codec(ps, 30000, seed, CODEC_ZSTD);
        fprintf(stderr, "page size %u: %llu pages plain, %llu lz4, %llu zstd\n", ps,
                    (unsigned long long)plain, (unsigned long long)lz4, (unsigned long long)zstd);
        cr_assert_lt(lz4 * 2, plain, "lz4 %llu vs %llu pages", (unsigned long long)lz4,
                     (unsigned long long)plain);
        cr_assert_lt(zstd * 2, plain, "zstd %llu vs %llu pages", (unsigned long long)zstd,
                     (unsigned long long)plain);
    }
    text_values = false;
}

/* compose -- add the subtree at pgno (of height h) to b: by reference, or
 * (at random) descending and re-adding its leaves entry by entry, values in
 * runs moved by reference. */
static void compose(env *e, node_builder *b, tu_rng *r, uint64_t pgno, uint32_t h,
                    uint64_t *recycled)
{
    node_ref n;
    cr_assert_eq(node_pin(e->sp, e->nc, pgno, &n), SHALE_OK);
    uint8_t *d = malloc(n.size);
    uint32_t size = n.size;
    memcpy(d, n.data, size);
    node_unpin(e->sp, &n);
    uint8_t *kb = NULL;
    size_t kcap = 0, klen;
    for (unsigned i = 0; i < sp_page_count(d); i++) {
        if (h == 1) { /* a leaf re-added entry by entry */
            node_entry en;
            cr_assert_eq(node_leaf_entry(d, size, i, &en), SHALE_OK);
            cr_assert_eq(node_key_copy(e->sp, &en.key, &kb, &kcap, &klen), SHALE_OK);
            if (en.val_ovf_pgno)
                cr_assert_eq(node_builder_add_ovf(b, en.kind, kb, klen, en.val_ovf_pgno, en.vlen),
                             SHALE_OK);
            else
                cr_assert_eq(node_builder_add(b, en.kind, kb, klen, en.val, en.vlen), SHALE_OK);
            continue;
        }
        node_child c;
        cr_assert_eq(node_parent_child(d, size, i, &c), SHALE_OK);
        if (tu_rng_range(r, 3) == 0) {
            compose(e, b, r, c.pgno, h - 1, recycled);
        } else {
            cr_assert_eq(node_key_copy(e->sp, &c.last, &kb, &kcap, &klen), SHALE_OK);
            cr_assert_eq(node_builder_add_child(b, &c, h - 1, kb, klen), SHALE_OK);
            (*recycled)++;
        }
    }
    free(kb);
    free(d);
}

/* A tree rebuilt from another's subtrees (by reference) and re-added leaves
 * holds the same entries, stays balanced, and every count matches. */
static void recycle_check(uint32_t ps, int codec, size_t n, uint64_t seed)
{
    env e;
    tu_rng r;
    node_tree_info ta, tb;
    sp_blocklist used_a = BL_INIT, used_b = BL_INIT;

    env_open(&e, ps, false);
    e.codec = codec;
    tu_rng_seed(&r, seed);
    vseed = seed * 17 + 3;
    gen_keys(&r, n);
    build(&e, 11, &ta, &used_a);
    cr_assert_geq(ta.height, 3, "subtrees of several heights");

    pw_writer *pw;
    node_builder *b;
    uint64_t recycled = 0;
    cr_assert_eq(pw_open(e.sp, 12, 64, &pw), SHALE_OK);
    cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
    cr_assert_eq(node_builder_set_codec(b, codec, 0), SHALE_OK);
    compose(&e, b, &r, ta.root, ta.height, &recycled);
    cr_assert_eq(node_builder_finish(b, &tb), SHALE_OK);
    cr_assert_eq(pw_finish(pw, &used_b), SHALE_OK);
    pw_close(pw);
    cr_assert_gt(recycled, 0);
    cr_assert_eq(tb.recycled, recycled);
    cr_assert_eq(tb.entries, ta.entries);
    cr_assert_eq(tb.tombstones, ta.tombstones);
    cr_assert_eq(tb.height, ta.height, "recycling keeps the tree balanced");
    cr_assert_lt(bl_pages(&used_b), bl_pages(&used_a), "recycled pages are not rewritten");

    sp_blocklist both = BL_INIT;
    cr_assert_eq(bl_add_list(&both, &used_a), SHALE_OK);
    cr_assert_eq(bl_add_list(&both, &used_b), SHALE_OK);
    walk w = {.e = &e, .gen = 12, .gen2 = 11, .used = &both, .leaf_depth = tb.height - 1};
    w.vb = malloc(1u << 16);
    walk_page(&w, tb.root, 0);
    cr_assert_eq(w.next, nkeys);
    cr_assert_eq(w.tombs, tb.tombstones);
    uint8_t *leaf = malloc(node_image_size(ps));
    for (size_t i = 0; i < nkeys; i += 7)
        check_search(&e, &w, &tb, kbuf + keys[i].off, keys[i].len, leaf);
    free(leaf);
    free(w.kb);
    free(w.vb);
    bl_free(&both);
    bl_free(&used_a);
    bl_free(&used_b);
    free_keys();
    env_close(&e);
}

Test(builder, trees_rebuilt_around_recycled_subtrees_read_back, .timeout = 600)
{
    uint64_t seed = tu_seed();
    recycle_check(1024, CODEC_NONE, 30000, seed);
    recycle_check(4096, CODEC_NONE, 60000, seed + 1);
    recycle_check(1024, CODEC_LZ4, 60000, seed + 2);
}

Test(builder, small_trees_have_the_right_shape)
{
    env e;
    env_open(&e, 4096, true);
    for (size_t n = 0; n < 4; n++) {
        pw_writer *pw;
        node_builder *b;
        node_tree_info t;
        sp_blocklist used = BL_INIT;
        uint64_t before = in_use(&e);
        cr_assert_eq(pw_open(e.sp, 1, 8, &pw), SHALE_OK);
        cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
        for (size_t i = 0; i < n; i++) {
            char k[24];
            snprintf(k, sizeof(k), "k%zu", i);
            cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, k, strlen(k), "v", 1), SHALE_OK);
        }
        cr_assert_eq(node_builder_finish(b, &t), SHALE_OK);
        cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
        cr_assert_eq(t.entries, n);
        cr_assert_eq(t.height, n ? 1 : 0, "one leaf: height 1");
        cr_assert_eq(t.leaves, n ? 1 : 0);
        cr_assert_eq(t.parents, 0);
        cr_assert_eq(bl_pages(&used), n ? 1 : 0);
        cr_assert_eq(in_use(&e) - before, bl_pages(&used));
        if (n) {
            cr_assert(bl_contains(&used, t.root));
            sp_page *pg;
            cr_assert_eq(sp_page_get(e.sp, t.root, &pg), SHALE_OK);
            cr_assert_eq(sp_page_type(sp_page_data(pg)), SP_PT_LEAF);
            cr_assert_eq(sp_page_count(sp_page_data(pg)), n);
            cr_assert_eq(sp_page_aux(sp_page_data(pg)), n == 1 ? 2 : 1, "prefix");
            sp_page_put(e.sp, pg);
        } else {
            cr_assert_eq(t.root, 0);
        }
        pw_close(pw);
        cr_assert_eq(fs_retire(sp_freespace_of(e.sp), &used), SHALE_OK);
        bl_free(&used);
    }
    env_close(&e);
}

Test(builder, bad_arguments_leave_the_builder_usable)
{
    env e;
    env_open(&e, 1024, true);
    pw_writer *pw;
    node_builder *b;
    node_tree_info t;
    uint8_t *big = calloc(1, NODE_MAX_KEY + 1);
    cr_assert_eq(pw_open(e.sp, 1, 8, &pw), SHALE_OK);
    cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, "b", 1, "1", 1), SHALE_OK);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, "b", 1, "1", 1), SHALE_EINVAL);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, "a", 1, "1", 1), SHALE_EINVAL);
    cr_assert_eq(node_builder_add(b, 7, "c", 1, "1", 1), SHALE_EINVAL);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, big, NODE_MAX_KEY + 1, "", 0),
                 SHALE_ETOOBIG);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, "c", 1, big, SHALE_MAX_VALUE_SIZE + 1),
                 SHALE_ETOOBIG);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, "c", 1, NULL, 3), SHALE_EINVAL);
    cr_assert_eq(node_builder_add_ovf(b, NODE_KIND_TOMBSTONE, "c", 1, 5, 3), SHALE_EINVAL);
    cr_assert_eq(node_builder_add_ovf(b, NODE_KIND_VALUE, "c", 1, 0, 3), SHALE_EINVAL);
    /* the largest key and an inline value at the limit still fit a 1 KiB page */
    memset(big, 'z', SHALE_MAX_KEY_SIZE);
    cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, big, SHALE_MAX_KEY_SIZE, big,
                                  node_val_inline_max(1024)),
                 SHALE_OK);
    cr_assert_eq(node_builder_add(b, NODE_KIND_TOMBSTONE, "{", 1, NULL, 99), SHALE_OK);
    cr_assert_eq(node_builder_finish(b, &t), SHALE_OK);
    cr_assert_eq(t.entries, 3);
    cr_assert_eq(t.tombstones, 1);
    cr_assert_eq(t.overflow_pages, pw_run_pages(1024, SHALE_MAX_KEY_SIZE));
    sp_page *pg;
    node_entry en;
    unsigned idx;
    bool exact;
    cr_assert_eq(pw_flush(pw), SHALE_OK);
    cr_assert_eq(sp_page_get(e.sp, t.root, &pg), SHALE_OK);
    const uint8_t *d = sp_page_data(pg);
    cr_assert_eq(node_leaf_search(e.sp, d, 1024, big, SHALE_MAX_KEY_SIZE, &idx, &exact), SHALE_OK);
    cr_assert(idx == 1 && exact);
    cr_assert_eq(node_leaf_entry(d, 1024, 2, &en), SHALE_OK);
    cr_assert_eq(en.kind, NODE_KIND_TOMBSTONE);
    cr_assert_eq(en.vlen, 0);
    sp_page_put(e.sp, pg);
    pw_abort(pw);
    free(big);
    env_close(&e);
}

Test(builder, values_move_by_reference)
{
    env e;
    env_open(&e, 1024, true);
    pw_writer *pw;
    node_builder *b;
    node_tree_info t;
    uint64_t run;
    uint8_t data[3000];
    memset(data, 'q', sizeof(data));
    cr_assert_eq(pw_open(e.sp, 1, 8, &pw), SHALE_OK);
    cr_assert_eq(pw_run_write(pw, SP_PT_OVERFLOW, data, sizeof(data), &run), SHALE_OK);
    cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
    cr_assert_eq(node_builder_add_ovf(b, NODE_KIND_VALUE, "k", 1, run, sizeof(data)), SHALE_OK);
    cr_assert_eq(node_builder_finish(b, &t), SHALE_OK);
    cr_assert_eq(t.overflow_pages, 0, "nothing copied");
    cr_assert_eq(pw_flush(pw), SHALE_OK);
    sp_page *pg;
    node_entry en;
    cr_assert_eq(sp_page_get(e.sp, t.root, &pg), SHALE_OK);
    cr_assert_eq(node_leaf_entry(sp_page_data(pg), 1024, 0, &en), SHALE_OK);
    cr_assert_eq(en.val_ovf_pgno, run);
    cr_assert_eq(en.vlen, sizeof(data));
    sp_page_put(e.sp, pg);
    pw_abort(pw);
    env_close(&e);
}

Test(builder, leaves_share_their_prefix)
{
    env e;
    env_open(&e, 4096, true);
    pw_writer *pw;
    node_builder *b;
    node_tree_info t;
    cr_assert_eq(pw_open(e.sp, 1, 8, &pw), SHALE_OK);
    cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
    char k[64];
    for (unsigned i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof(k), "a-rather-long-common-prefix/%06u", i);
        cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, k, (size_t)n, "", 0), SHALE_OK);
    }
    cr_assert_eq(node_builder_finish(b, &t), SHALE_OK);
    cr_assert_eq(pw_flush(pw), SHALE_OK);
    sp_page *pg;
    cr_assert_eq(sp_page_get(e.sp, t.root, &pg), SHALE_OK);
    node_child c;
    cr_assert_eq(node_parent_child(sp_page_data(pg), 4096, 0, &c), SHALE_OK);
    sp_page_put(e.sp, pg);
    cr_assert_eq(sp_page_get(e.sp, c.pgno, &pg), SHALE_OK);
    const uint8_t *d = sp_page_data(pg);
    cr_assert_geq(sp_page_aux(d), 28 + 2, "the common prefix and the shared digits");
    cr_assert_gt(sp_page_count(d), 4000 / 10, "suffixes are short: many entries a page");
    /* a full leaf: one more entry would not have fit */
    cr_assert_gt(sp_page_used(d), 4096 - SP_PAGE_HDR - 16);
    sp_page_put(e.sp, pg);
    pw_abort(pw);
    env_close(&e);
}

/* add_some -- n entries with big values and long keys; stops at the first error. */
static int add_some(node_builder *b, size_t n, uint8_t *val)
{
    char k[400];
    for (size_t i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof(k), "%06zu", i);
        if (i % 7 == 0) {
            memset(k + kl, 'x', 300);
            kl += 300;
        }
        int rc = node_builder_add(b, NODE_KIND_VALUE, k, (size_t)kl, val, i % 5 ? 20 : 5000);
        if (rc < 0)
            return rc;
    }
    return SHALE_OK;
}

Test(builder, abort_midway_returns_every_page)
{
    env e;
    env_open(&e, 1024, true);
    uint8_t *val = calloc(1, 5000);
    uint64_t before = in_use(&e);
    pw_writer *pw;
    node_builder *b;
    cr_assert_eq(pw_open(e.sp, 1, 32, &pw), SHALE_OK);
    cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
    cr_assert_eq(add_some(b, 3000, val), SHALE_OK);
    cr_assert_gt(in_use(&e), before);
    node_builder_abort(b);
    pw_abort(pw);
    cr_assert_eq(in_use(&e), before);
    free(val);
    env_close(&e);
}

Test(builder, write_failures_lose_no_pages)
{
    env e;
    env_open(&e, 1024, true);
    uint8_t *val = calloc(1, 5000);
    uint64_t before = in_use(&e), failures = 0;
    for (uint64_t nth = 1; nth < 400; nth += 1 + nth / 8) {
        pw_writer *pw;
        node_builder *b;
        node_tree_info t;
        sp_blocklist used = BL_INIT;
        cr_assert_eq(pw_open(e.sp, 1, 32, &pw), SHALE_OK);
        cr_assert_eq(node_builder_open(pw, &b), SHALE_OK);
        memenv_fail_after(e.mem, nth, MEM_OP_WRITE);
        int rc = add_some(b, 1500, val);
        if (rc < 0) {
            cr_assert_eq(rc, SHALE_EIO);
            cr_assert_eq(node_builder_add(b, NODE_KIND_VALUE, "zzz", 3, "", 0), SHALE_EIO,
                         "the error is sticky");
            node_builder_abort(b);
        } else {
            rc = node_builder_finish(b, &t);
            if (rc == SHALE_OK)
                rc = pw_finish(pw, &used);
        }
        memenv_fail_after(e.mem, 0, 0);
        if (rc < 0) {
            failures++;
            pw_abort(pw);
            cr_assert_eq(in_use(&e), before, "failure at write %llu", (unsigned long long)nth);
        } else {
            pw_close(pw);
            cr_assert_eq(in_use(&e) - before, bl_pages(&used));
            for (size_t i = 0; i < used.n; i++) /* never published: free at once */
                cr_assert_eq(fs_release(sp_freespace_of(e.sp), used.v[i].first, used.v[i].last),
                             SHALE_OK);
            cr_assert_eq(in_use(&e), before);
        }
        bl_free(&used);
    }
    cr_assert_gt(failures, 10);
    free(val);
    env_close(&e);
}

/* fuzz_one -- decode a damaged leaf every way; only OK or corrupt come back. */
static void fuzz_one(env *e, uint64_t pgno, tu_rng *r)
{
    sp_page *pg;
    int rc = sp_page_get(e->sp, pgno, &pg);
    cr_assert_eq(rc, SHALE_OK, "the page was re-sealed");
    const uint8_t *d = sp_page_data(pg);
    int ck = node_leaf_check(d, e->ps);
    cr_assert(ck == SHALE_OK || ck == SHALE_ECORRUPT);
    for (unsigned i = 0; i < sp_page_count(d); i++) {
        node_entry en;
        rc = node_leaf_entry(d, e->ps, i, &en);
        cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT);
        if (ck == SHALE_OK)
            cr_assert_eq(rc, SHALE_OK);
    }
    for (int q = 0; q < 4; q++) {
        const mkey *k = &keys[tu_rng_range(r, nkeys)];
        unsigned idx;
        bool exact;
        rc = node_leaf_search(e->sp, d, e->ps, kbuf + k->off, k->len, &idx, &exact);
        cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT, "rc %d", rc);
    }
    sp_page_put(e->sp, pg);
}

Test(builder, corrupted_leaves_read_as_corrupt_not_crash, .timeout = 1200)
{
    env e;
    tu_rng r;
    node_tree_info t;
    sp_blocklist used = BL_INIT;
    env_open(&e, 1024, true);
    tu_rng_seed(&r, tu_seed() + 9);
    vseed = 5;
    gen_keys(&r, 3000);
    build(&e, 3, &t, &used);
    /* leaves: every used page of leaf type */
    uint64_t leaves[4096];
    size_t nl = 0;
    for (size_t bi = 0; bi < used.n && nl < 4096; bi++)
        for (uint64_t p = used.v[bi].first; p <= used.v[bi].last && nl < 4096; p++) {
            sp_page *pg;
            cr_assert_eq(sp_page_get(e.sp, p, &pg), SHALE_OK);
            if (sp_page_type(sp_page_data(pg)) == SP_PT_LEAF)
                leaves[nl++] = p;
            sp_page_put(e.sp, pg);
        }
    cr_assert_gt(nl, 10);
    uint8_t *orig = malloc(e.ps), *page = malloc(e.ps);
    uint64_t rounds = tu_scaled(4000);
    for (uint64_t k = 0; k < rounds; k++) {
        uint64_t p = leaves[tu_rng_range(&r, nl)];
        cr_assert_eq(sp_read_run(e.sp, p, 1, orig), SHALE_OK);
        memcpy(page, orig, e.ps);
        uint32_t span = SP_PAGE_HDR + sp_page_used(orig);
        for (unsigned f = 0, nf = 1 + (unsigned)tu_rng_range(&r, 3); f < nf; f++) {
            size_t at = 4 + tu_rng_range(&r, span - 4);
            if (at >= 8 && at < 24)
                at = 24 + tu_rng_range(&r, 8); /* keep pgno and gen: space would reject */
            page[at] ^= (uint8_t)(1u << tu_rng_range(&r, 8));
        }
        page[4] = SP_PT_LEAF;
        sp_page_seal(page, e.ps);
        if (sp_page_verify(page, e.ps, p) == SHALE_OK) {
            cr_assert_eq(sp_write_pages(e.sp, p, page, 1), SHALE_OK);
            fuzz_one(&e, p, &r);
        }
        sp_page_seal(orig, e.ps);
        cr_assert_eq(sp_write_pages(e.sp, p, orig, 1), SHALE_OK);
    }
    free(orig);
    free(page);
    bl_free(&used);
    free_keys();
    env_close(&e);
}
