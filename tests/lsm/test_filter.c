/*
 * test_filter.c -- the blocked Bloom filter: no false negatives, the false
 * positive rate it promises, and rejection of malformed encodings.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lsm/filter.h"
#include "../../src/space/common.h"

/* fl_build -- a filter over keys "k<i>" for i in [0, n). */
static void fl_build(size_t n, unsigned bpk, uint8_t **f, size_t *len)
{
    filter_builder fb = FILTER_BUILDER_INIT;
    char key[32];

    for (size_t i = 0; i < n; i++) {
        int l = snprintf(key, sizeof key, "k%zu", i);
        cr_assert_eq(filter_builder_add(&fb, filter_hash(key, (size_t)l)), SHALE_OK);
    }
    cr_assert_eq(filter_builder_finish(&fb, bpk, f, len), SHALE_OK);
    filter_builder_free(&fb);
    cr_assert_eq(filter_check(*f, *len), SHALE_OK);
}

/* fl_fp_rate -- the share of absent keys "a<i>" the filter lets through. */
static double fl_fp_rate(const uint8_t *f, size_t len, size_t queries)
{
    size_t fp = 0;
    char key[32];

    for (size_t i = 0; i < queries; i++) {
        int l = snprintf(key, sizeof key, "a%zu", i);
        fp += filter_may_contain(f, len, filter_hash(key, (size_t)l));
    }
    return (double)fp / (double)queries;
}

Test(filter, has_no_false_negatives)
{
    size_t sizes[] = {1, 7, 100, 10000, 100000};
    char key[32];

    for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
        uint8_t *f;
        size_t len;

        fl_build(sizes[s], FILTER_BITS_PER_KEY, &f, &len);
        for (size_t i = 0; i < sizes[s]; i++) {
            int l = snprintf(key, sizeof key, "k%zu", i);
            cr_assert(filter_may_contain(f, len, filter_hash(key, (size_t)l)), "key %zu of %zu", i,
                      sizes[s]);
        }
        free(f);
    }
}

Test(filter, false_positive_rate_under_3_percent_at_10_bits_per_key)
{
    uint8_t *f;
    size_t len;
    double rate;

    fl_build(100000, 10, &f, &len);
    cr_assert_leq(len, 8 + 100000 * 10 / 8 + 64);
    rate = fl_fp_rate(f, len, 400000);
    cr_assert_lt(rate, 0.03, "false positives %.4f", rate);
    cr_assert_lt(rate, 0.015, "false positives %.4f (expected about 1%%)", rate);
    free(f);
}

Test(filter, more_bits_per_key_give_fewer_false_positives)
{
    uint8_t *f5, *f20;
    size_t l5, l20;
    double r5, r20;

    fl_build(50000, 5, &f5, &l5);
    fl_build(50000, 20, &f20, &l20);
    r5 = fl_fp_rate(f5, l5, 200000);
    r20 = fl_fp_rate(f20, l20, 200000);
    cr_assert_lt(r20, r5);
    cr_assert_lt(r20, 0.002, "false positives %.5f", r20);
    free(f5);
    free(f20);
}

Test(filter, empty_filter_rejects_everything_it_can)
{
    filter_builder fb = FILTER_BUILDER_INIT;
    uint8_t *f;
    size_t len;

    cr_assert_eq(filter_builder_finish(&fb, 10, &f, &len), SHALE_OK);
    cr_assert_eq(filter_check(f, len), SHALE_OK);
    cr_assert_eq(fl_fp_rate(f, len, 1000), 0.0);
    free(f);
}

Test(filter, empty_key_hashes_and_is_found)
{
    filter_builder fb = FILTER_BUILDER_INIT;
    uint8_t *f;
    size_t len;

    cr_assert_eq(filter_hash(NULL, 0), filter_hash("", 0));
    cr_assert_eq(filter_builder_add(&fb, filter_hash(NULL, 0)), SHALE_OK);
    cr_assert_eq(filter_builder_finish(&fb, 10, &f, &len), SHALE_OK);
    cr_assert(filter_may_contain(f, len, filter_hash("", 0)));
    filter_builder_free(&fb);
    free(f);
}

Test(filter, bad_bits_per_key_is_einval)
{
    filter_builder fb = FILTER_BUILDER_INIT;
    uint8_t *f = NULL;
    size_t len = 0;

    cr_assert_eq(filter_builder_finish(&fb, 0, &f, &len), SHALE_EINVAL);
    cr_assert_eq(filter_builder_finish(&fb, 65, &f, &len), SHALE_EINVAL);
}

Test(filter, malformed_encodings_are_corrupt_and_answer_maybe)
{
    uint8_t *f, *g;
    size_t len;

    fl_build(1000, 10, &f, &len);
    g = malloc(len);
    cr_assert_eq(filter_check(f, 0), SHALE_ECORRUPT);
    cr_assert_eq(filter_check(f, 7), SHALE_ECORRUPT);
    cr_assert_eq(filter_check(f, len - 1), SHALE_ECORRUPT);
    cr_assert_eq(filter_check(f, len - 64), SHALE_ECORRUPT);
    cr_assert_eq(filter_check(NULL, len), SHALE_ECORRUPT);
    for (unsigned byte = 0; byte < 8; byte++) {
        memcpy(g, f, len);
        g[byte] ^= 0x5a;
        cr_assert_eq(filter_check(g, len), SHALE_ECORRUPT, "byte %u", byte);
    }
    /* A filter claiming more blocks than its length never reads past it. */
    memcpy(g, f, len);
    put_u32(g + 4, get_u32(f + 4) + 1000);
    for (unsigned i = 0; i < 1000; i++)
        cr_assert(filter_may_contain(g, len, (uint64_t)i * 0x9e3779b97f4a7c15ull));
    cr_assert(filter_may_contain(g, 3, 42));
    free(g);
    free(f);
}

Test(filter, arbitrary_bytes_never_crash)
{
    uint8_t buf[8 + 64 * 4];
    unsigned seed = 7;

    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)rand_r(&seed) % sizeof buf;

        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand_r(&seed);
        if (round % 4 == 0 && len >= 8) {
            buf[0] = 1;
            buf[2] = 9;
            buf[3] = 0;
        }
        if (filter_check(buf, len) == SHALE_OK)
            cr_assert_eq(len, 8 + 64 * (size_t)get_u32(buf + 4));
        (void)filter_may_contain(buf, len, (uint64_t)rand_r(&seed) << 32 | (unsigned)round);
    }
}
