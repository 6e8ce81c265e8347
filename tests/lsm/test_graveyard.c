/*
 * test_graveyard.c -- sets of range tombstones: which keys a range deletes
 * for which sequence numbers, span tests, retiring, and the encoding
 * (round trip and every malformed shape).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "shale.h"
#include "../../src/lsm/graveyard.h"
#include "../support/testutil.h"

static gy_range R(uint64_t seq, const char *lo, const char *hi)
{
    return (gy_range){seq, (const uint8_t *)lo, (const uint8_t *)hi, strlen(lo), strlen(hi)};
}

static bool cov(const gy_set *g, const char *k, uint64_t after)
{
    return gy_covered(g, k, strlen(k), after);
}

Test(graveyard, a_range_deletes_older_versions_of_its_keys_only)
{
    gy_range r[] = {R(10, "b", "d")};
    gy_set *g;
    cr_assert_eq(gy_build(r, 1, &g), SHALE_OK);
    cr_assert(cov(g, "b", 5));
    cr_assert(cov(g, "c", 5));
    cr_assert(cov(g, "czzz", 5));
    cr_assert_not(cov(g, "d", 5), "hi is exclusive");
    cr_assert_not(cov(g, "a", 5));
    cr_assert_not(cov(g, "", 5));
    cr_assert_not(cov(g, "c", 10), "a version as new as the range survives");
    cr_assert_not(cov(g, "c", 11));
    cr_assert(cov(g, "c", 9));
    cr_assert_not(cov(NULL, "c", 0));
    gy_unref(g);
}

/* Overlapping and nested ranges with different sequence numbers, against a
 * brute-force answer over every (key, after), read at a snapshot that sees
 * them all (as every reader of a version's set does). */
Test(graveyard, overlapping_ranges_match_brute_force)
{
    tu_rng rng;
    tu_rng_seed(&rng, tu_seed());
    for (int round = 0; round < 50; round++) {
        size_t n = 1 + (size_t)tu_rng_range(&rng, 12);
        char keys[12][2][4];
        gy_range r[12];
        for (size_t i = 0; i < n; i++) {
            char a = (char)('a' + tu_rng_range(&rng, 20)), b = (char)('a' + tu_rng_range(&rng, 20));
            if (a == b)
                b++;
            keys[i][0][0] = a < b ? a : b;
            keys[i][1][0] = a < b ? b : a;
            keys[i][0][1] = keys[i][1][1] = 0;
            r[i] = R(1 + tu_rng_range(&rng, 30), keys[i][0], keys[i][1]);
        }
        gy_set *g;
        cr_assert_eq(gy_build(r, n, &g), SHALE_OK);
        for (char k = 'a'; k <= 'v'; k++) {
            char key[2] = {k, 0};
            for (uint64_t after = 0; after < 32; after++) {
                bool want = false;
                for (size_t i = 0; i < n; i++)
                    want |= r[i].seq > after && k >= keys[i][0][0] && k < keys[i][1][0];
                cr_assert_eq(cov(g, key, after), want, "round %d key %c after %llu", round, k,
                             (unsigned long long)after);
            }
            /* spans (k, k+2]: met when a range newer than after holds a key of it */
            char hi[2] = {(char)(k + 2), 0};
            for (uint64_t after = 0; after < 32; after += 4) {
                bool want = false;
                for (size_t i = 0; i < n; i++)
                    want |= r[i].seq > after && keys[i][0][0] <= k + 2 && keys[i][1][0] > k + 1;
                bool got = gy_meets(g, key, 1, hi, 1, after);
                if (want)
                    cr_assert(got, "round %d span (%c, %c] after %llu", round, k, k + 2,
                              (unsigned long long)after);
            }
        }
        gy_unref(g);
    }
}

Test(graveyard, overlapping_ranges_become_fragments_of_the_newest)
{
    gy_range r[] = {R(5, "b", "d"), R(9, "b", "d"), R(7, "b", "d"), R(3, "b", "e"),
                    R(3, "e", "g"), R(8, "x", "z")};
    gy_set *g;
    cr_assert_eq(gy_build(r, 6, &g), SHALE_OK);
    cr_assert_eq(g->n, 3, "[b, d) at 9, [d, g) at 3 (two ranges joined), [x, z) at 8");
    cr_assert_eq(g->max_seq, 9);
    cr_assert_eq(g->v[0].seq, 9);
    cr_assert_eq(g->v[1].seq, 3);
    cr_assert(g->v[1].lolen == 1 && g->v[1].lo[0] == 'd' && g->v[1].hi[0] == 'g');
    cr_assert(cov(g, "c", 8));
    cr_assert_not(cov(g, "c", 9));
    cr_assert(cov(g, "d", 2) && !cov(g, "d", 3));
    cr_assert(cov(g, "f", 2) && !cov(g, "g", 0) && !cov(g, "w", 0) && cov(g, "y", 7));
    gy_unref(g);
}

Test(graveyard, spans_that_miss_every_range_say_so)
{
    gy_range r[] = {R(10, "f", "h"), R(20, "m", "p")};
    gy_set *g;
    cr_assert_eq(gy_build(r, 2, &g), SHALE_OK);
    cr_assert_not(gy_meets(g, "a", 1, "e", 1, 0), "wholly below");
    cr_assert_not(gy_meets(g, "h", 1, "l", 1, 0), "between two ranges");
    cr_assert_not(gy_meets(g, "p", 1, "z", 1, 0), "wholly above");
    cr_assert(gy_meets(g, "a", 1, "f", 1, 0), "reaching its first key");
    cr_assert(gy_meets(g, NULL, 0, "g", 1, 0), "from the start");
    cr_assert(gy_meets(g, "g", 1, "z", 1, 0), "inside and past");
    cr_assert_not(gy_meets(g, "a", 1, "z", 1, 20), "no range newer than after");
    cr_assert(gy_meets(g, "a", 1, "z", 1, 19));
    gy_unref(g);
}

static bool keep_even(void *ctx, const gy_range *r)
{
    (void)ctx;
    return r->seq % 2 == 0;
}

static bool keep_all(void *ctx, const gy_range *r)
{
    (void)ctx;
    (void)r;
    return true;
}

Test(graveyard, retiring_keeps_what_is_wanted)
{
    gy_range r[] = {R(1, "a", "b"), R(2, "c", "d"), R(3, "e", "f"), R(4, "g", "h")};
    gy_set *g, *h, *all;
    cr_assert_eq(gy_build(r, 4, &g), SHALE_OK);
    cr_assert_eq(gy_retire(g, keep_even, NULL, &h), SHALE_OK);
    cr_assert_eq(h->n, 2);
    cr_assert(cov(h, "c", 0) && cov(h, "g", 0));
    cr_assert_not(cov(h, "a", 0) || cov(h, "e", 0));
    cr_assert_eq(gy_retire(g, keep_all, NULL, &all), SHALE_OK);
    cr_assert_eq(all, g, "nothing retired: the same set");
    gy_unref(all);
    gy_set *none;
    gy_range odd[] = {R(1, "a", "b")};
    gy_set *o;
    cr_assert_eq(gy_build(odd, 1, &o), SHALE_OK);
    cr_assert_eq(gy_retire(o, keep_even, NULL, &none), SHALE_OK);
    cr_assert_null(none, "everything retired: the empty set");
    gy_set *w;
    cr_assert_eq(gy_with(h, odd, 1, &w), SHALE_OK);
    cr_assert_eq(w->n, 3);
    cr_assert(cov(w, "a", 0));
    gy_unref(w);
    gy_unref(o);
    gy_unref(h);
    gy_unref(g);
}

Test(graveyard, encoding_round_trips_and_rejects_every_malformed_shape)
{
    gy_range r[] = {{7, (const uint8_t *)"\0\0\0\2", (const uint8_t *)"\0\0\0\3", 4, 4},
                    R(9, "abc", "abd"), R(3, "", "z")};
    gy_set *g, *d;
    cr_assert_eq(gy_build(r, 3, &g), SHALE_OK);
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, used;
    cr_assert_eq(gy_encode(g, &buf, &len, &cap), SHALE_OK);
    cr_assert_eq(gy_decode(buf, len, &used, &d), SHALE_OK);
    cr_assert_eq(used, len);
    cr_assert_eq(g->n, 5, "[\"\", 2) 3, [2, 3) 7, [3, abc) 3, [abc, abd) 9, [abd, z) 3");
    cr_assert_eq(d->n, g->n);
    cr_assert_eq(d->max_seq, 9);
    for (size_t i = 0; i < d->n; i++) {
        cr_assert_eq(d->v[i].seq, g->v[i].seq);
        cr_assert(d->v[i].lolen == g->v[i].lolen &&
                  memcmp(d->v[i].lo, g->v[i].lo, d->v[i].lolen) == 0);
        cr_assert(d->v[i].hilen == g->v[i].hilen &&
                  memcmp(d->v[i].hi, g->v[i].hi, d->v[i].hilen) == 0);
    }
    gy_unref(d);
    /* every truncation fails cleanly */
    for (size_t l = 0; l < len; l++)
        cr_assert_lt(gy_decode(buf, l, &used, &d), 0, "length %zu of %zu", l, len);
    /* the empty set */
    size_t elen = 0, ecap = 0;
    uint8_t *ebuf = NULL;
    cr_assert_eq(gy_encode(NULL, &ebuf, &elen, &ecap), SHALE_OK);
    cr_assert_eq(gy_decode(ebuf, elen, &used, &d), SHALE_OK);
    cr_assert_null(d);
    free(ebuf);
    /* a range with lo >= hi, and one with sequence 0 */
    static const uint8_t backwards[] = {1, 5, 1, 'b', 1, 'a'};
    static const uint8_t empty[] = {1, 5, 1, 'a', 1, 'a'};
    static const uint8_t seq0[] = {1, 0, 1, 'a', 1, 'b'};
    static const uint8_t huge_n[] = {0xff, 0xff, 0x03};
    cr_assert_eq(gy_decode(backwards, sizeof backwards, &used, &d), SHALE_ECORRUPT);
    cr_assert_eq(gy_decode(empty, sizeof empty, &used, &d), SHALE_ECORRUPT);
    cr_assert_eq(gy_decode(seq0, sizeof seq0, &used, &d), SHALE_ECORRUPT);
    cr_assert_eq(gy_decode(huge_n, sizeof huge_n, &used, &d), SHALE_ECORRUPT);
    free(buf);
    gy_unref(g);
}
