/*
 * test_zombie.c -- zombie pages against real allocator state: the scenario
 * of seeds/004 (a page recycled from segment A into B, then dropped with B,
 * while a reader still pins the version listing A), versions ending in any
 * order, and a randomized run checking that no page any live version lists
 * is ever retired.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "shale.h"
#include "../../src/lsm/zombie.h"
#include "../support/testutil.h"

#define FILE_PAGES 4096u

typedef struct world {
    sp_freespace *fs;
    zb_set *z;
} world;

static void world_open(world *w)
{
    sp_blocklist none = BL_INIT;
    cr_assert_eq(fs_create(&none, FILE_PAGES, &w->fs), SHALE_OK);
    cr_assert_eq(zb_open(w->fs, &w->z), SHALE_OK);
}

static void world_close(world *w)
{
    zb_close(w->z);
    fs_destroy(w->fs);
}

/* pending -- pages retired to space and not yet freed by a checkpoint. */
static uint64_t pending(world *w)
{
    uint64_t pend;
    fs_counts(w->fs, NULL, &pend);
    return pend;
}

/* blocks -- a blocklist of [first, last] pairs. */
static sp_blocklist blocks(size_t n, const uint64_t *v)
{
    sp_blocklist bl = BL_INIT;
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(bl_add(&bl, v[2 * i], v[2 * i + 1]), SHALE_OK);
    return bl;
}

Test(zombie, a_page_recycled_then_dropped_waits_for_the_oldest_reader)
{
    world w;
    world_open(&w);
    /* Segment A = pages 10..19 with P = 15; B recycles P and adds 30..39;
     * C replaces B and keeps nothing of it. */
    zb_node v1, v2, v3;
    zb_version_begin(w.z, &v1); /* lists A */
    zb_version_begin(w.z, &v2); /* lists B */
    /* v2 replaced v1: A's pages but P are zombies tagged v1 */
    sp_blocklist a_only = blocks(2, (uint64_t[]){10, 14, 16, 19});
    cr_assert_eq(zb_add(w.z, v1.id, &a_only), SHALE_OK);
    cr_assert_eq(a_only.n, 0, "taken over");
    zb_node reader = v1; /* a reader pins v1: it stays live */
    (void)reader;
    zb_version_begin(w.z, &v3); /* lists C */
    /* v3 replaced v2: B's pages, P among them, are zombies tagged v2 */
    sp_blocklist b_all = blocks(2, (uint64_t[]){15, 15, 30, 39});
    cr_assert_eq(zb_add(w.z, v2.id, &b_all), SHALE_OK);
    zb_version_end(w.z, &v2); /* nobody reads B any more */
    cr_assert_eq(pending(&w), 0, "v1 is live: neither A's pages nor P may go");
    zb_stats st;
    zb_stats_get(w.z, &st);
    cr_assert_eq(st.pages, 9 + 11);
    cr_assert_eq(st.versions, 2);
    cr_assert_eq(st.oldest, v1.id);
    zb_version_end(w.z, &v1); /* the reader is gone */
    cr_assert_eq(pending(&w), 20, "every zombie goes: C is all that is live");
    zb_stats_get(w.z, &st);
    cr_assert_eq(st.pages, 0);
    cr_assert_eq(st.retired, 20);
    zb_version_end(w.z, &v3);
    world_close(&w);
}

Test(zombie, zombies_wait_for_every_older_version_not_only_their_own)
{
    world w;
    world_open(&w);
    zb_node v[4];
    for (int i = 0; i < 4; i++)
        zb_version_begin(w.z, &v[i]);
    sp_blocklist x = blocks(1, (uint64_t[]){100, 109});
    cr_assert_eq(zb_add(w.z, v[2].id, &x), SHALE_OK);
    zb_version_end(w.z, &v[2]);
    zb_version_end(w.z, &v[1]);
    cr_assert_eq(pending(&w), 0, "v0 is older than the tag and still live");
    zb_version_end(w.z, &v[0]);
    cr_assert_eq(pending(&w), 10);
    sp_blocklist y = blocks(1, (uint64_t[]){200, 201});
    cr_assert_eq(zb_add(w.z, v[2].id, &y), SHALE_OK); /* tagged below every live version */
    cr_assert_eq(pending(&w), 12, "retired at once");
    zb_version_end(w.z, &v[3]);
    world_close(&w);
}

Test(zombie, close_retires_what_is_left)
{
    world w;
    world_open(&w);
    zb_node v;
    zb_version_begin(w.z, &v);
    sp_blocklist x = blocks(1, (uint64_t[]){50, 59});
    cr_assert_eq(zb_add(w.z, v.id, &x), SHALE_OK);
    cr_assert_eq(pending(&w), 0);
    zb_version_end(w.z, &v);
    cr_assert_eq(pending(&w), 10);
    zb_close(w.z);
    w.z = NULL;
    fs_destroy(w.fs);
}

/*
 * Randomized: a chain of versions, each listing a set of pages; a new version
 * keeps some pages of the current one (recycling), drops others (zombies
 * tagged with the current version) and adds fresh ones; readers pin random
 * older versions and let go in random order.  After every step, no page a
 * live version lists may be pending.
 */
typedef struct tver {
    zb_node node;
    bool live;
    uint8_t *has; /* has[p]: the version lists page p */
} tver;

Test(zombie, randomized_no_listed_page_is_ever_retired, .timeout = 120)
{
    world w;
    world_open(&w);
    tu_rng r;
    uint64_t seed = tu_seed();
    tu_rng_seed(&r, seed);
    enum { NV = 400, NP = 2000 };
    tver *v = calloc(NV, sizeof *v);
    uint8_t *used = calloc(NP, 1); /* handed out: fresh pages are never reused here */
    size_t nv = 0, cur = 0;
    v[0].has = calloc(NP, 1);
    v[0].live = true;
    zb_version_begin(w.z, &v[0].node);
    for (size_t p = 10; p < 60; p++)
        v[0].has[p] = used[p] = 1;
    nv = 1;
    size_t next_fresh = 60;
    for (int step = 0; step < 4000 && nv < NV; step++) {
        if (tu_rng_range(&r, 3) == 0) { /* a new version replaces the current one */
            tver *n = &v[nv];
            n->has = calloc(NP, 1);
            sp_blocklist dead = BL_INIT;
            for (size_t p = 0; p < NP; p++) {
                if (!v[cur].has[p])
                    continue;
                if (tu_rng_range(&r, 4))
                    n->has[p] = 1; /* recycled */
                else
                    cr_assert_eq(bl_add(&dead, p, p), SHALE_OK);
            }
            for (int k = 0; k < 5 && next_fresh < NP; k++, next_fresh++)
                n->has[next_fresh] = used[next_fresh] = 1;
            zb_version_begin(w.z, &n->node);
            n->live = true;
            cr_assert_eq(zb_add(w.z, v[cur].node.id, &dead), SHALE_OK);
            bl_free(&dead);
            /* the db drops its reference to the old current version unless a
             * reader keeps it */
            if (tu_rng_range(&r, 2)) {
                v[cur].live = false;
                zb_version_end(w.z, &v[cur].node);
            }
            cur = nv++;
        } else { /* a reader lets an old version go */
            size_t i = (size_t)tu_rng_range(&r, nv);
            if (v[i].live && i != cur) {
                v[i].live = false;
                zb_version_end(w.z, &v[i].node);
            }
        }
        /* audit: make everything retired free (a checkpoint), then no page
         * a live version lists may be free */
        fs_ckpt_begin(w.fs);
        fs_ckpt_end(w.fs, true);
        sp_blocklist fr = BL_INIT;
        cr_assert_eq(fs_free_list(w.fs, &fr), SHALE_OK);
        for (size_t i = 0; i < nv; i++) {
            if (!v[i].live)
                continue;
            for (size_t p = 0; p < NP; p++)
                cr_assert(!(v[i].has[p] && bl_contains(&fr, p)),
                          "step %d: page %zu of live version %zu is free (seed %llu)", step, p,
                          i, (unsigned long long)seed);
        }
        bl_free(&fr);
    }
    zb_stats st;
    zb_stats_get(w.z, &st);
    cr_assert_eq(st.lost, 0, "no page was retired twice");
    cr_assert_gt(st.retired, 0);
    for (size_t i = 0; i < nv; i++) {
        if (v[i].live)
            zb_version_end(w.z, &v[i].node);
        free(v[i].has);
    }
    free(v);
    free(used);
    world_close(&w);
}
