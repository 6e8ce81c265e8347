/*
 * test_cleaf.c -- the codecs, compressed leaf runs, and the node cache:
 * round trips at every kind of level, malformed compressed data and runs of
 * every shape reading as SHALE_ECORRUPT (never a crash), cache hits, misses
 * and its byte budget, images never served for a reused page number, and
 * pw_run_append's loan order.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "../../src/pagewriter/cleaf.h"
#include "../../src/pagewriter/codec.h"
#include "../../src/pagewriter/node.h"
#include "../../src/pagewriter/nodecache.h"
#include "../support/testutil.h"

typedef struct env {
    char dir[64];
    char path[96];
    sp_space *sp;
    uint32_t ps;
} env;

static void env_open(env *e, uint32_t ps)
{
    cr_assert_eq(tu_tmpdir(e->dir, sizeof(e->dir)), 0);
    snprintf(e->path, sizeof(e->path), "%s/data", e->dir);
    sp_config cfg = {.path = e->path, .page_size = ps, .cache_bytes = 1 << 20, .create = true};
    cr_assert_eq(sp_open(&cfg, &e->sp, NULL, NULL, NULL), SHALE_OK);
    e->ps = ps;
}

static void env_close(env *e)
{
    sp_close(e->sp);
    tu_rmrf(e->dir);
}

/* text -- n bytes of compressible text. */
static void text(uint8_t *p, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)("the quick brown fox "[(i + salt) % 20] + (i % 251 == 0));
}

/* ---- codecs ------------------------------------------------------------- */

static void roundtrip(int codec, int level, const uint8_t *src, size_t n)
{
    codec_ctx *c;
    size_t cap = codec_bound(codec, n), out;
    uint8_t *dst = malloc(cap), *back = malloc(n + 1);
    cr_assert_eq(codec_ctx_open(codec, level, &c), SHALE_OK, "codec %d level %d", codec, level);
    cr_assert_eq(codec_compress(c, src, n, dst, cap, &out), SHALE_OK);
    cr_assert_leq(out, cap);
    cr_assert_eq(codec_decompress(codec, dst, out, back, n), SHALE_OK);
    cr_assert(memcmp(back, src, n) == 0, "codec %d level %d", codec, level);
    /* any other expected length is corrupt */
    cr_assert_eq(codec_decompress(codec, dst, out, back, n + 1), SHALE_ECORRUPT);
    cr_assert_eq(codec_decompress(codec, dst, out, back, n - 1), SHALE_ECORRUPT);
    codec_ctx_close(c);
    free(dst);
    free(back);
}

Test(codec, round_trips_at_every_kind_of_level)
{
    size_t n = 16384;
    uint8_t *t = malloc(n), *r = malloc(n);
    tu_rng g;
    tu_rng_seed(&g, tu_seed());
    text(t, n, 3);
    tu_rng_bytes(&g, r, n);
    int lz4[] = {-65537, -10, 0, 1, 9, 12};
    for (size_t i = 0; i < ARRAY_LEN(lz4); i++) {
        roundtrip(CODEC_LZ4, lz4[i], t, n);
        roundtrip(CODEC_LZ4, lz4[i], r, n);
    }
    int zs[] = {ZSTD_minCLevel(), -1, 0, 3, 19};
    for (size_t i = 0; i < ARRAY_LEN(zs); i++) {
        roundtrip(CODEC_ZSTD, zs[i], t, n);
        roundtrip(CODEC_ZSTD, zs[i], r, n);
    }
    free(t);
    free(r);
}

Test(codec, levels_out_of_range_are_einval)
{
    codec_ctx *c = NULL;
    cr_assert_eq(codec_check(CODEC_NONE, 0), SHALE_OK);
    cr_assert_eq(codec_check(CODEC_NONE, 1), SHALE_EINVAL);
    cr_assert_eq(codec_check(CODEC_LZ4, 13), SHALE_EINVAL);
    cr_assert_eq(codec_check(CODEC_LZ4, -65538), SHALE_EINVAL);
    cr_assert_eq(codec_check(CODEC_ZSTD, ZSTD_maxCLevel() + 1), SHALE_EINVAL);
    cr_assert_eq(codec_check(CODEC_ZSTD, ZSTD_minCLevel() - 1), SHALE_EINVAL);
    cr_assert_eq(codec_check(3, 0), SHALE_EINVAL);
    cr_assert_eq(codec_check(-1, 0), SHALE_EINVAL);
    cr_assert_eq(codec_ctx_open(CODEC_NONE, 0, &c), SHALE_EINVAL);
    cr_assert_eq(codec_ctx_open(CODEC_LZ4, 13, &c), SHALE_EINVAL);
    cr_assert_null(c);
}

Test(codec, output_that_does_not_fit_is_etoobig)
{
    uint8_t src[4096], dst[64];
    tu_rng g;
    tu_rng_seed(&g, 5);
    tu_rng_bytes(&g, src, sizeof src);
    for (int codec = CODEC_LZ4; codec <= CODEC_ZSTD; codec++) {
        codec_ctx *c;
        size_t out;
        cr_assert_eq(codec_ctx_open(codec, 0, &c), SHALE_OK);
        cr_assert_eq(codec_compress(c, src, sizeof src, dst, sizeof dst, &out), SHALE_ETOOBIG);
        codec_ctx_close(c);
    }
}

Test(codec, damaged_input_is_corrupt_or_decodes_never_crashes)
{
    size_t n = 8192;
    uint8_t *src = malloc(n), *back = malloc(n);
    tu_rng g;
    tu_rng_seed(&g, tu_seed());
    text(src, n, 1);
    for (int codec = CODEC_LZ4; codec <= CODEC_ZSTD; codec++) {
        codec_ctx *c;
        size_t cap = codec_bound(codec, n), out;
        uint8_t *z = malloc(cap), *bad = malloc(cap);
        cr_assert_eq(codec_ctx_open(codec, 0, &c), SHALE_OK);
        cr_assert_eq(codec_compress(c, src, n, z, cap, &out), SHALE_OK);
        for (size_t len = 0; len < out; len++) /* every truncation */
            cr_assert_eq(codec_decompress(codec, z, len, back, n), SHALE_ECORRUPT, "len %zu", len);
        for (int k = 0; k < 3000; k++) { /* flipped bytes: an error or some n bytes */
            memcpy(bad, z, out);
            for (int f = 0; f < 1 + k % 3; f++)
                bad[tu_rng_range(&g, out)] ^= (uint8_t)(1 + tu_rng_range(&g, 255));
            int rc = codec_decompress(codec, bad, out, back, n);
            cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT, "rc %d", rc);
        }
        for (int k = 0; k < 1000; k++) { /* garbage */
            size_t len = 1 + tu_rng_range(&g, out);
            tu_rng_bytes(&g, bad, len);
            int rc = codec_decompress(codec, bad, len, back, n);
            cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT, "rc %d", rc);
        }
        codec_ctx_close(c);
        free(z);
        free(bad);
    }
    cr_assert_eq(codec_decompress(7, src, 10, back, 10), SHALE_ECORRUPT);
    cr_assert_eq(codec_decompress(CODEC_NONE, src, 10, back, 10), SHALE_ECORRUPT);
    free(src);
    free(back);
}

/* ---- compressed leaf runs ------------------------------------------------ */

/* make_image -- a valid leaf image of about `want` bytes (header included) for
 * page size ps and gen: entries "key-%06u" -> text; returns its size. */
static uint32_t make_image(uint8_t *img, uint32_t ps, uint64_t gen, uint32_t want)
{
    uint8_t shift = node_page_shift(ps);
    memset(img, 0, want);
    sp_page_init(img, want, SP_PT_LEAF, 0, gen);
    sp_page_set_flags(img, shift);
    unsigned n = (want - SP_PAGE_HDR) / 65; /* 2-byte slot + 63-byte entry */
    uint8_t *slots = img + SP_PAGE_HDR, *q = slots + 2 * n;
    for (unsigned i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "key-%06u", i);
        put_u16(slots + 2 * i, (uint16_t)(q - img));
        *q++ = NODE_KIND_VALUE;
        *q++ = 10;
        *q++ = 10;
        memcpy(q, key, 10);
        q += 10;
        *q++ = 49;
        text(q, 49, i);
        q += 49;
    }
    sp_page_set_count(img, (uint16_t)n);
    sp_page_set_used(img, (uint32_t)(q - slots));
    return (uint32_t)(q - img);
}

/* write_run -- write data as a CLEAF run with a fresh writer; returns its pgno. */
static uint64_t write_run(env *e, uint64_t gen, const void *data, size_t len)
{
    pw_writer *pw;
    uint64_t pgno;
    sp_blocklist used = BL_INIT;
    cr_assert_eq(pw_open(e->sp, gen, 16, &pw), SHALE_OK);
    cr_assert_eq(pw_run_append(pw, SP_PT_CLEAF, data, len, &pgno), SHALE_OK);
    cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
    pw_close(pw);
    bl_free(&used);
    return pgno;
}

/* write_leaf -- cleaf_write an image with codec; returns its pgno. */
static uint64_t write_leaf(env *e, uint64_t gen, int codec, uint8_t *img, uint32_t ilen)
{
    pw_writer *pw;
    codec_ctx *c;
    uint64_t pgno;
    sp_blocklist used = BL_INIT;
    size_t cap = cleaf_scratch_size(codec, ilen);
    uint8_t *scratch = malloc(cap);
    cr_assert_eq(codec_ctx_open(codec, 0, &c), SHALE_OK);
    cr_assert_eq(pw_open(e->sp, gen, 16, &pw), SHALE_OK);
    size_t stored;
    cr_assert_eq(cleaf_write(pw, c, img, ilen, scratch, cap, &pgno, &stored), SHALE_OK);
    cr_assert_leq(stored, ilen + 6);
    cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
    pw_close(pw);
    codec_ctx_close(c);
    bl_free(&used);
    free(scratch);
    return pgno;
}

Test(cleaf, images_load_through_the_cache_and_alone)
{
    env e;
    env_open(&e, 1024);
    uint8_t *img = malloc(NODE_IMAGE_MAX);
    uint32_t ilen = make_image(img, 1024, 9, node_image_size(1024));
    cr_assert_eq(node_leaf_check(img, ilen), SHALE_OK);
    for (int codec = CODEC_LZ4; codec <= CODEC_ZSTD; codec++) {
        uint64_t pgno = write_leaf(&e, 9, codec, img, ilen);
        node_cache *nc;
        node_cache_stats st;
        node_ref r, r2;
        cr_assert_eq(node_cache_open(1u << 20, &nc), SHALE_OK);
        cr_assert_eq(node_pin(e.sp, nc, pgno, &r), SHALE_OK);
        cr_assert_not_null(r.img);
        cr_assert_null(r.pg);
        cr_assert_eq(r.size, ilen);
        cr_assert_lt(r.pages, (ilen + 1023) / 1024 / 2, "%llu pages", (unsigned long long)r.pages);
        cr_assert_eq(sp_page_pgno(r.data), pgno);
        cr_assert(memcmp(r.data + 16, img + 16, ilen - 16) == 0);
        cr_assert_eq(node_leaf_check(r.data, r.size), SHALE_OK);
        cr_assert_eq(node_pin(e.sp, nc, pgno, &r2), SHALE_OK);
        cr_assert_eq(r2.data, r.data, "one image, pinned twice");
        node_cache_stats_get(nc, &st);
        cr_assert_eq(st.misses, 1);
        cr_assert_eq(st.hits, 1);
        cr_assert_eq(st.images, 1);
        cr_assert_eq(st.bytes, ilen);
        node_unpin(e.sp, &r);
        node_unpin(e.sp, &r2);
        node_unpin(e.sp, &r2); /* a zeroed ref is a no-op */
        cr_assert_eq(node_pin(e.sp, NULL, pgno, &r), SHALE_OK); /* a private copy */
        cr_assert_neq(r.data, r2.data);
        cr_assert_eq(node_leaf_check(r.data, r.size), SHALE_OK);
        node_unpin(e.sp, &r);
        /* a page inside the run is not a node */
        cr_assert_eq(node_pin(e.sp, nc, pgno + 1, &r), SHALE_ECORRUPT);
        node_cache_close(nc);
    }
    free(img);
    env_close(&e);
}

Test(cleaf, incompressible_images_are_stored_raw)
{
    env e;
    env_open(&e, 1024);
    uint8_t *img = malloc(NODE_IMAGE_MAX);
    uint32_t ilen = make_image(img, 1024, 4, 8000);
    tu_rng g;
    tu_rng_seed(&g, 1);
    /* scramble keys and values: random bytes do not compress (the keys are
     * then out of order, which loading does not look at) */
    for (unsigned i = 0; i < sp_page_count(img); i++) {
        node_entry en;
        cr_assert_eq(node_leaf_entry(img, ilen, i, &en), SHALE_OK);
        tu_rng_bytes(&g, (uint8_t *)en.val, en.vlen);
        tu_rng_bytes(&g, (uint8_t *)en.key.suffix, en.key.slen);
    }
    uint64_t pgno = write_leaf(&e, 4, CODEC_LZ4, img, ilen);
    sp_page *pg;
    cr_assert_eq(sp_page_get(e.sp, pgno, &pg), SHALE_OK);
    cr_assert_eq(sp_page_data(pg)[SP_PAGE_HDR + 8], CODEC_NONE, "the codec byte says raw");
    sp_page_put(e.sp, pg);
    node_ref r;
    cr_assert_eq(node_pin(e.sp, NULL, pgno, &r), SHALE_OK);
    cr_assert_eq(r.size, ilen);
    cr_assert(memcmp(r.data + 16, img + 16, ilen - 16) == 0);
    node_unpin(e.sp, &r);
    free(img);
    env_close(&e);
}

/* expect_corrupt -- a CLEAF run holding data fails to pin. */
static void expect_corrupt(env *e, uint64_t gen, const uint8_t *data, size_t len, const char *what)
{
    uint64_t pgno = write_run(e, gen, data, len);
    node_ref r;
    int rc = node_pin(e->sp, NULL, pgno, &r);
    cr_assert_eq(rc, SHALE_ECORRUPT, "%s: %d", what, rc);
}

/* run_of -- codec byte, varint U, then the image compressed by codec (or raw). */
static size_t run_of(uint8_t *out, int codec, uint64_t u, const uint8_t *img, uint32_t ilen)
{
    size_t pre = 1 + varint_put(out + 1, u);
    out[0] = (uint8_t)codec;
    if (codec == CODEC_NONE) {
        memcpy(out + pre, img, ilen);
        return pre + ilen;
    }
    codec_ctx *c;
    size_t n;
    int real = codec > CODEC_ZSTD ? CODEC_LZ4 : codec; /* an unknown codec: LZ4 bytes */
    cr_assert_eq(codec_ctx_open(real, 0, &c), SHALE_OK);
    cr_assert_eq(codec_compress(c, img, ilen, out + pre, codec_bound(real, ilen), &n), SHALE_OK);
    codec_ctx_close(c);
    return pre + n;
}

Test(cleaf, malformed_runs_are_corrupt)
{
    env e;
    env_open(&e, 1024);
    uint32_t ps = 1024, max = node_image_size(ps);
    uint8_t *img = malloc(NODE_IMAGE_MAX), *run = malloc(2 * NODE_IMAGE_MAX);
    uint32_t ilen = make_image(img, ps, 7, 6000);
    size_t n;

    n = run_of(run, CODEC_LZ4, ilen, img, ilen);
    uint64_t ok = write_run(&e, 7, run, n);
    node_ref r;
    cr_assert_eq(node_pin(e.sp, NULL, ok, &r), SHALE_OK, "the well-formed one loads");
    node_unpin(e.sp, &r);

    n = run_of(run, CODEC_LZ4, ilen, img, ilen);
    expect_corrupt(&e, 8, run, n, "gen of the run differs from the image's");
    n = run_of(run, CODEC_LZ4, ilen + 1, img, ilen);
    expect_corrupt(&e, 7, run, n, "U longer than the output");
    n = run_of(run, CODEC_ZSTD, ilen - 1, img, ilen);
    expect_corrupt(&e, 7, run, n, "U shorter than the output");
    n = run_of(run, 9, ilen, img, ilen);
    expect_corrupt(&e, 7, run, n, "unknown codec");
    n = run_of(run, CODEC_NONE, ilen, img, ilen);
    expect_corrupt(&e, 7, run, n - 1, "raw image one byte short");
    expect_corrupt(&e, 7, run, 1, "no U at all");
    n = run_of(run, CODEC_NONE, ps, img, ps);
    expect_corrupt(&e, 7, run, n, "an image no larger than a page");
    uint8_t *big = malloc(max + 64);
    make_image(big, ps, 7, max);
    memset(big + max, 0, 64);
    sp_page_set_used(big, max + 64 - SP_PAGE_HDR);
    n = run_of(run, CODEC_NONE, max + 64, big, max + 64);
    expect_corrupt(&e, 7, run, n, "an image over the largest size");
    free(big);

    /* well-compressed images whose headers lie */
    struct {
        const char *what;
        unsigned off;
        uint8_t val;
    } lies[] = {
        {"type", 4, SP_PT_PARENT},  {"flags 0", 5, 0}, {"flags of another page size", 5, 12},
        {"count 0", 6, 0},
        {"pgno set", 8, 1},         {"crc set", 0, 1},  {"used off by one", 24, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(lies); i++) {
        uint8_t *bad = malloc(ilen);
        memcpy(bad, img, ilen);
        if (lies[i].off == 6) {
            bad[6] = bad[7] = 0;
        } else if (lies[i].off == 24) {
            put_u32(bad + 24, sp_page_used(bad) - 1);
        } else {
            bad[lies[i].off] = lies[i].val;
        }
        n = run_of(run, CODEC_ZSTD, ilen, bad, ilen);
        expect_corrupt(&e, 7, run, n, lies[i].what);
        free(bad);
    }
    free(img);
    free(run);
    env_close(&e);
}

Test(cleaf, leaf_flags_choose_only_the_inline_limit)
{
    uint8_t *img = malloc(NODE_IMAGE_MAX);
    uint32_t ilen = make_image(img, 1024, 1, 5000);
    cr_assert_eq(node_leaf_check(img, ilen), SHALE_OK);
    img[5] = 17; /* log2 page size beyond 64 KiB */
    cr_assert_eq(node_leaf_check(img, ilen), SHALE_ECORRUPT);
    img[5] = 9;
    cr_assert_eq(node_leaf_check(img, ilen), SHALE_ECORRUPT);
    img[5] = 13; /* a page size of 8 KiB is not smaller than the 5000-byte image */
    cr_assert_eq(node_leaf_check(img, ilen), SHALE_ECORRUPT);
    img[5] = 12; /* 4 KiB: the entries' 10-byte keys are inline either way */
    cr_assert_eq(node_leaf_check(img, ilen), SHALE_OK);
    free(img);
}

/* ---- the cache ------------------------------------------------------------ */

Test(nodecache, unpinned_images_stay_within_the_budget)
{
    env e;
    env_open(&e, 1024);
    uint8_t *img = malloc(NODE_IMAGE_MAX);
    uint32_t ilen = make_image(img, 1024, 3, 16000);
    enum { N = 64 };
    uint64_t pg[N];
    for (int i = 0; i < N; i++)
        pg[i] = write_leaf(&e, 3, CODEC_LZ4, img, ilen);
    node_cache *nc;
    node_cache_stats st;
    size_t budget = 16 * 16 * 16000; /* about 16 images a shard's worth, 16 shards */
    cr_assert_eq(node_cache_open(budget / 4, &nc), SHALE_OK);
    node_ref held[N];
    for (int i = 0; i < N; i++) /* pinned images are never evicted */
        cr_assert_eq(node_pin(e.sp, nc, pg[i], &held[i]), SHALE_OK);
    node_cache_stats_get(nc, &st);
    cr_assert_eq(st.images, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(node_leaf_check(held[i].data, held[i].size), SHALE_OK);
        node_unpin(e.sp, &held[i]);
    }
    node_cache_stats_get(nc, &st);
    cr_assert_leq(st.bytes, budget / 4, "%llu bytes kept", (unsigned long long)st.bytes);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < N; i++) {
            node_ref r;
            cr_assert_eq(node_pin(e.sp, nc, pg[i], &r), SHALE_OK);
            node_unpin(e.sp, &r);
        }
    node_cache_stats_get(nc, &st);
    cr_assert_leq(st.bytes, budget / 4);
    cr_assert_eq(st.hits + st.misses, 4 * N);
    node_cache_close(nc);
    free(img);
    env_close(&e);
}

Test(nodecache, a_reused_page_number_never_serves_the_old_image)
{
    env e;
    env_open(&e, 1024);
    uint8_t *a = malloc(NODE_IMAGE_MAX), *b = malloc(NODE_IMAGE_MAX);
    uint32_t la = make_image(a, 1024, 20, 9000), lb = make_image(b, 1024, 21, 9000);
    text(b + 200, 100, 77); /* different bytes, same structure */
    node_cache *nc;
    node_ref r;
    cr_assert_eq(node_cache_open(1u << 20, &nc), SHALE_OK);
    uint64_t pa = write_leaf(&e, 20, CODEC_ZSTD, a, la);
    cr_assert_eq(node_pin(e.sp, nc, pa, &r), SHALE_OK);
    cr_assert(memcmp(r.data + 200, a + 200, 100) == 0);
    node_unpin(e.sp, &r);
    /* free the run (it was never published), then write b: earliest fit
     * puts it at the same page */
    sp_page *pg;
    cr_assert_eq(sp_page_get(e.sp, pa, &pg), SHALE_OK);
    uint64_t len = get_u64(sp_page_data(pg) + SP_PAGE_HDR);
    sp_page_put(e.sp, pg);
    cr_assert_eq(fs_release(sp_freespace_of(e.sp), pa, pa + pw_run_pages(1024, len) - 1),
                 SHALE_OK);
    uint64_t pb = write_leaf(&e, 21, CODEC_ZSTD, b, lb);
    cr_assert_eq(pb, pa);
    cr_assert_eq(node_pin(e.sp, nc, pb, &r), SHALE_OK);
    cr_assert(memcmp(r.data + 200, b + 200, 100) == 0, "the new image, not the cached one");
    node_unpin(e.sp, &r);
    node_cache_close(nc);
    free(a);
    free(b);
    env_close(&e);
}

/* ---- pw_run_append -------------------------------------------------------- */

Test(cleaf, appended_runs_follow_the_loan_and_read_back)
{
    env e;
    env_open(&e, 1024);
    pw_writer *pw;
    sp_blocklist used = BL_INIT;
    uint8_t data[2000];
    text(data, sizeof data, 5);
    cr_assert_eq(pw_open(e.sp, 2, 8, &pw), SHALE_OK);
    uint64_t p[6];
    for (int i = 0; i < 6; i++) /* 2000 bytes: 3 pages a run, 8 a loan */
        cr_assert_eq(pw_run_append(pw, SP_PT_CLEAF, data, sizeof data, &p[i]), SHALE_OK);
    cr_assert_eq(p[1], p[0] + 3, "the second run follows the first in the loan");
    cr_assert_neq(p[2], p[1] + 3, "the third does not fit the loan's last 2 pages");
    cr_assert_eq(pw_run_append(pw, SP_PT_OVERFLOW + 100, data, 10, &p[0]), SHALE_EINVAL);
    cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
    cr_assert_eq(bl_pages(&used), 18, "the unused pages went back");
    pw_close(pw);
    for (int i = 0; i < 6; i++) {
        void *back;
        size_t len;
        cr_assert_eq(pw_run_read(e.sp, p[i], SP_PT_CLEAF, &back, &len), SHALE_OK);
        cr_assert_eq(len, sizeof data);
        cr_assert(memcmp(back, data, len) == 0);
        free(back);
    }
    bl_free(&used);
    env_close(&e);
}
