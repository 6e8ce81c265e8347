/*
 * test_blocklist.c -- blocklist algebra, canonical form and the encoding,
 * checked by hand-picked cases and against a bitmap model; plus the crc32c
 * check value.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/space/blocklist.h"
#include "../../src/space/common.h"
#include "../../src/space/crc32c.h"

#define MODEL_PAGES 300

/* rng_next -- splitmix64, enough for reproducible random cases. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* expect_blocks -- bl holds exactly the n blocks given as first,last pairs. */
static void expect_blocks(const sp_blocklist *bl, size_t n, const uint64_t *pairs)
{
    cr_assert_eq(bl->n, n, "blocks: got %zu want %zu", bl->n, n);
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(bl->v[i].first, pairs[2 * i], "block %zu first", i);
        cr_expect_eq(bl->v[i].last, pairs[2 * i + 1], "block %zu last", i);
    }
}

/* assert_canonical -- sorted, non-empty blocks that neither overlap nor touch. */
static void assert_canonical(const sp_blocklist *bl)
{
    for (size_t i = 0; i < bl->n; i++) {
        cr_assert_leq(bl->v[i].first, bl->v[i].last);
        if (i > 0)
            cr_assert_lt(bl->v[i - 1].last + 1, bl->v[i].first, "blocks %zu,%zu touch", i - 1, i);
    }
}

/* from_bitmap -- the blocklist of the set bits of bm. */
static void from_bitmap(const bool *bm, sp_blocklist *out)
{
    bl_clear(out);
    for (uint64_t p = 0; p < MODEL_PAGES; p++)
        if (bm[p])
            cr_assert_eq(bl_add(out, p, p), SHALE_OK);
}

/* assert_matches -- bl and the bitmap describe the same set. */
static void assert_matches(const sp_blocklist *bl, const bool *bm)
{
    uint64_t count = 0;

    assert_canonical(bl);
    for (uint64_t p = 0; p < MODEL_PAGES; p++) {
        cr_assert_eq(bl_contains(bl, p), bm[p], "page %lu", (unsigned long)p);
        count += bm[p];
    }
    cr_assert_eq(bl_pages(bl), count);
}

/* random_set -- a random bitmap with runs, and its blocklist. */
static void random_set(uint64_t *seed, bool *bm, sp_blocklist *bl)
{
    memset(bm, 0, MODEL_PAGES);
    for (int k = (int)(rng_next(seed) % 12); k > 0; k--) {
        uint64_t a = rng_next(seed) % MODEL_PAGES, len = rng_next(seed) % 40;
        for (uint64_t p = a; p < MODEL_PAGES && p <= a + len; p++)
            bm[p] = true;
    }
    from_bitmap(bm, bl);
}

Test(crc32c, check_value_matches_the_standard)
{
    cr_assert_eq(crc32c("123456789", 9), 0xe3069283u);
    cr_assert_eq(crc32c_extend(crc32c("1234", 4), "56789", 5), 0xe3069283u);
}

Test(blocklist, add_merges_adjacent_blocks)
{
    sp_blocklist bl = BL_INIT;
    cr_assert_eq(bl_add(&bl, 10, 12), SHALE_OK);
    cr_assert_eq(bl_add(&bl, 13, 15), SHALE_OK);
    cr_assert_eq(bl_add(&bl, 5, 9), SHALE_OK);
    expect_blocks(&bl, 1, (uint64_t[]){5, 15});
    bl_free(&bl);
}

Test(blocklist, add_bridges_and_absorbs_blocks)
{
    sp_blocklist bl = BL_INIT;
    bl_add(&bl, 1, 2);
    bl_add(&bl, 5, 6);
    bl_add(&bl, 9, 10);
    bl_add(&bl, 20, 20);
    expect_blocks(&bl, 4, (uint64_t[]){1, 2, 5, 6, 9, 10, 20, 20});
    cr_assert_eq(bl_add(&bl, 3, 8), SHALE_OK);
    expect_blocks(&bl, 2, (uint64_t[]){1, 10, 20, 20});
    cr_assert_eq(bl_add(&bl, 0, 30), SHALE_OK);
    expect_blocks(&bl, 1, (uint64_t[]){0, 30});
    cr_assert_eq(bl_add(&bl, 4, 3), SHALE_EINVAL);
    bl_free(&bl);
}

Test(blocklist, add_handles_the_top_of_the_range)
{
    sp_blocklist bl = BL_INIT;
    cr_assert_eq(bl_add(&bl, UINT64_MAX - 1, UINT64_MAX), SHALE_OK);
    cr_assert_eq(bl_add(&bl, 0, 0), SHALE_OK);
    cr_assert_eq(bl_add(&bl, UINT64_MAX - 5, UINT64_MAX - 2), SHALE_OK);
    expect_blocks(&bl, 2, (uint64_t[]){0, 0, UINT64_MAX - 5, UINT64_MAX});
    bl_free(&bl);
}

Test(blocklist, remove_splits_a_block)
{
    sp_blocklist bl = BL_INIT;
    bl_add(&bl, 10, 20);
    cr_assert_eq(bl_remove(&bl, 13, 15), SHALE_OK);
    expect_blocks(&bl, 2, (uint64_t[]){10, 12, 16, 20});
    bl_free(&bl);
}

Test(blocklist, remove_trims_edges_and_drops_covered_blocks)
{
    sp_blocklist bl = BL_INIT;
    bl_add(&bl, 1, 5);
    bl_add(&bl, 8, 9);
    bl_add(&bl, 12, 20);
    cr_assert_eq(bl_remove(&bl, 4, 13), SHALE_OK);
    expect_blocks(&bl, 2, (uint64_t[]){1, 3, 14, 20});
    cr_assert_eq(bl_remove(&bl, 30, 40), SHALE_OK);
    expect_blocks(&bl, 2, (uint64_t[]){1, 3, 14, 20});
    cr_assert_eq(bl_remove(&bl, 0, 100), SHALE_OK);
    cr_assert_eq(bl.n, 0);
    bl_free(&bl);
}

Test(blocklist, subtract_splits_a_block)
{
    sp_blocklist a = BL_INIT, b = BL_INIT;
    bl_add(&a, 0, 100);
    bl_add(&b, 10, 19);
    bl_add(&b, 50, 50);
    bl_add(&b, 100, 200);
    cr_assert_eq(bl_subtract(&a, &b), SHALE_OK);
    expect_blocks(&a, 3, (uint64_t[]){0, 9, 20, 49, 51, 99});
    cr_assert_eq(bl_subtract(&a, &a), SHALE_OK);
    cr_assert_eq(a.n, 0);
    bl_free(&a);
    bl_free(&b);
}

Test(blocklist, intersect_keeps_common_pages)
{
    sp_blocklist a = BL_INIT, b = BL_INIT, out = BL_INIT;
    bl_add(&a, 0, 10);
    bl_add(&a, 20, 30);
    bl_add(&b, 5, 25);
    cr_assert_eq(bl_intersect(&a, &b, &out), SHALE_OK);
    expect_blocks(&out, 2, (uint64_t[]){5, 10, 20, 25});
    cr_assert_eq(bl_intersect(&a, &b, &a), SHALE_OK); /* output aliases an input */
    cr_assert(bl_equal(&a, &out));
    bl_free(&a);
    bl_free(&b);
    bl_free(&out);
}

Test(blocklist, complement_fills_the_gaps_of_a_range)
{
    sp_blocklist a = BL_INIT, out = BL_INIT;
    bl_add(&a, 0, 3);
    bl_add(&a, 6, 7);
    bl_add(&a, 12, 40);
    cr_assert_eq(bl_complement(&a, 2, 20, &out), SHALE_OK);
    expect_blocks(&out, 2, (uint64_t[]){4, 5, 8, 11});
    cr_assert_eq(bl_complement(&a, 41, 45, &out), SHALE_OK);
    expect_blocks(&out, 1, (uint64_t[]){41, 44});
    cr_assert_eq(bl_complement(&a, 5, 5, &out), SHALE_OK);
    cr_assert_eq(out.n, 0);
    bl_free(&a);
    bl_free(&out);
}

Test(blocklist, contains_and_overlaps_answer_by_block)
{
    sp_blocklist a = BL_INIT, b = BL_INIT;
    bl_add(&a, 10, 20);
    bl_add(&a, 30, 30);
    cr_assert(bl_contains(&a, 10) && bl_contains(&a, 20) && bl_contains(&a, 30));
    cr_assert(!bl_contains(&a, 9) && !bl_contains(&a, 21) && !bl_contains(&a, 31));
    cr_assert(bl_overlaps(&a, 0, 10) && bl_overlaps(&a, 25, 35));
    cr_assert(!bl_overlaps(&a, 21, 29) && !bl_overlaps(&a, 31, 100));
    bl_add(&b, 21, 29);
    cr_assert(!bl_overlaps_list(&a, &b));
    bl_add(&b, 30, 30);
    cr_assert(bl_overlaps_list(&a, &b));
    bl_free(&a);
    bl_free(&b);
}

Test(blocklist, add_list_is_a_union)
{
    sp_blocklist a = BL_INIT, b = BL_INIT;
    bl_add(&a, 0, 4);
    bl_add(&a, 10, 14);
    bl_add(&b, 5, 6);
    bl_add(&b, 12, 20);
    bl_add(&b, 30, 31);
    cr_assert_eq(bl_add_list(&a, &b), SHALE_OK);
    expect_blocks(&a, 3, (uint64_t[]){0, 6, 10, 20, 30, 31});
    cr_assert_eq(bl_pages(&a), 20);
    bl_free(&a);
    bl_free(&b);
}

Test(blocklist, copy_equal_and_clear)
{
    sp_blocklist a = BL_INIT, b = BL_INIT;
    bl_add(&a, 3, 9);
    cr_assert_eq(bl_copy(&b, &a), SHALE_OK);
    cr_assert(bl_equal(&a, &b));
    bl_add(&b, 11, 11);
    cr_assert(!bl_equal(&a, &b));
    bl_clear(&b);
    cr_assert_eq(b.n, 0);
    cr_assert(bl_equal(&b, &(sp_blocklist)BL_INIT));
    bl_free(&a);
    bl_free(&b);
}

Test(blocklist, encode_decode_round_trip)
{
    sp_blocklist a = BL_INIT, b = BL_INIT;
    uint8_t buf[256];
    size_t len, used;

    bl_add(&a, 2, 2);
    bl_add(&a, 100, 5000);
    bl_add(&a, 1ull << 40, (1ull << 40) + 7);
    bl_add(&a, UINT64_MAX, UINT64_MAX);
    len = bl_encode(&a, buf);
    cr_assert_eq(len, bl_encoded_len(&a));
    buf[len] = 0x55; /* trailing bytes are the caller's */
    cr_assert_eq(bl_decode(&b, buf, len + 1, &used), SHALE_OK);
    cr_assert_eq(used, len);
    cr_assert(bl_equal(&a, &b));
    bl_free(&a);
    len = bl_encode(&a, buf);
    cr_assert_eq(len, 1);
    cr_assert_eq(bl_decode(&b, buf, len, &used), SHALE_OK);
    cr_assert_eq(b.n, 0);
    bl_free(&b);
}

Test(blocklist, decode_rejects_malformed_input)
{
    sp_blocklist b = BL_INIT;
    size_t used;
    /* two blocks, the second touching the first (gap 0) */
    static const uint8_t touching[] = {2, 5, 1, 0, 1};
    /* one block whose span overflows u64 */
    static const uint8_t overflow[] = {1,    2,    0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    /* a block after one that ended at UINT64_MAX */
    static const uint8_t after_max[] = {2,    0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0x01, 0,    1,    0};
    static const uint8_t truncated[] = {3, 1, 1, 1};
    static const uint8_t huge_count[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1};

    bl_add(&b, 1, 1);
    cr_assert_eq(bl_decode(&b, touching, sizeof(touching), &used), SHALE_ECORRUPT);
    cr_assert_eq(b.n, 0);
    cr_assert_eq(bl_decode(&b, overflow, sizeof(overflow), &used), SHALE_ECORRUPT);
    cr_assert_eq(bl_decode(&b, after_max, sizeof(after_max), &used), SHALE_ECORRUPT);
    cr_assert_eq(bl_decode(&b, truncated, sizeof(truncated), &used), SHALE_ECORRUPT);
    cr_assert_eq(bl_decode(&b, huge_count, sizeof(huge_count), &used), SHALE_ECORRUPT);
    cr_assert_eq(bl_decode(&b, touching, 0, &used), SHALE_ECORRUPT);
    bl_free(&b);
}

Test(blocklist, decode_of_random_garbage_never_crashes)
{
    uint64_t seed = 42;
    uint8_t buf[64];
    sp_blocklist b = BL_INIT;

    for (int iter = 0; iter < 200000; iter++) {
        size_t len = rng_next(&seed) % sizeof(buf), used;
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next(&seed);
        if (len && iter % 3 == 0)
            buf[0] %= 6; /* small counts reach the block parser */
        if (bl_decode(&b, buf, len, &used) == SHALE_OK) {
            cr_assert_leq(used, len);
            assert_canonical(&b);
        } else
            cr_assert_eq(b.n, 0);
    }
    bl_free(&b);
}

/* model_step -- apply one random operation to bl and the bitmap bm. */
static void model_step(uint64_t *seed, sp_blocklist *bl, bool *bm)
{
    bool other_bm[MODEL_PAGES];
    sp_blocklist other = BL_INIT, tmp = BL_INIT;
    uint64_t a = rng_next(seed) % MODEL_PAGES, b = a + rng_next(seed) % 30;
    uint8_t buf[4096];
    size_t used;

    if (b >= MODEL_PAGES)
        b = MODEL_PAGES - 1;
    random_set(seed, other_bm, &other);
    switch (rng_next(seed) % 7) {
    case 0:
        cr_assert_eq(bl_add(bl, a, b), SHALE_OK);
        for (uint64_t p = a; p <= b; p++)
            bm[p] = true;
        break;
    case 1:
        cr_assert_eq(bl_remove(bl, a, b), SHALE_OK);
        for (uint64_t p = a; p <= b; p++)
            bm[p] = false;
        break;
    case 2:
        cr_assert_eq(bl_add_list(bl, &other), SHALE_OK);
        for (int p = 0; p < MODEL_PAGES; p++)
            bm[p] = bm[p] || other_bm[p];
        break;
    case 3:
        cr_assert_eq(bl_subtract(bl, &other), SHALE_OK);
        for (int p = 0; p < MODEL_PAGES; p++)
            bm[p] = bm[p] && !other_bm[p];
        break;
    case 4:
        cr_assert_eq(bl_intersect(bl, &other, bl), SHALE_OK);
        for (int p = 0; p < MODEL_PAGES; p++)
            bm[p] = bm[p] && other_bm[p];
        break;
    case 5:
        cr_assert_eq(bl_complement(bl, a, b + 1, bl), SHALE_OK);
        for (uint64_t p = 0; p < MODEL_PAGES; p++)
            bm[p] = p >= a && p <= b && !bm[p];
        break;
    case 6:
        cr_assert_leq(bl_encoded_len(bl), sizeof(buf));
        cr_assert_eq(bl_decode(&tmp, buf, bl_encode(bl, buf), &used), SHALE_OK);
        cr_assert(bl_equal(bl, &tmp));
        cr_assert_eq(bl_overlaps_list(bl, &other), bl_intersect(bl, &other, &tmp) == 0 && tmp.n);
        break;
    }
    bl_free(&other);
    bl_free(&tmp);
}

Test(blocklist, random_operations_match_a_bitmap_model)
{
    uint64_t seed = 7;
    bool bm[MODEL_PAGES];
    sp_blocklist bl = BL_INIT;

    for (int round = 0; round < 40; round++) {
        random_set(&seed, bm, &bl);
        for (int step = 0; step < 200; step++) {
            model_step(&seed, &bl, bm);
            assert_matches(&bl, bm);
        }
    }
    bl_free(&bl);
}
