/*
 * test_cursor.c -- the merging cursor: newest source wins, tombstones hide,
 * bounds, and direction changes, over memtables and segments built by hand,
 * checked against a model computed from the same sources.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../src/lsm/cursor.h"
#include "../../src/pagewriter/node.h"
#include "../support/testutil.h"

#define NKEYS 400
#define NSRC 4 /* active memtable, one immutable, two segments */

/* Per source and key: 0 absent, 1 value, 2 tombstone. */
static int src_state[NSRC][NKEYS];
static char dir[256];
static sp_space *sp;
static zb_set *zb;

static void key_of(int i, char *buf) { snprintf(buf, 16, "key%05d", i); }

/* value_of -- the value source s holds for key i. */
static void value_of(int s, int i, char *buf) { snprintf(buf, 32, "v%d-%d", s, i); }

/* Source over a sorted array of (state) for one segment. */
typedef struct arr_src {
    int s, i;
    char k[16], v[32];
} arr_src;

static int arr_next(void *ctx, uint8_t *kind, const void **key, size_t *klen, const void **val,
                    size_t *vlen)
{
    arr_src *a = ctx;
    while (a->i < NKEYS && src_state[a->s][a->i] == 0)
        a->i++;
    if (a->i >= NKEYS)
        return SHALE_NOTFOUND;
    key_of(a->i, a->k);
    value_of(a->s, a->i, a->v);
    *kind = src_state[a->s][a->i] == 1 ? NODE_KIND_VALUE : NODE_KIND_TOMBSTONE;
    *key = a->k;
    *klen = strlen(a->k);
    *val = a->v;
    *vlen = strlen(a->v);
    a->i++;
    return SHALE_OK;
}

/* model_at -- the visible value of key i: the newest source that has it. */
static int model_at(int i, bool hide)
{
    for (int s = 0; s < NSRC; s++)
        if (src_state[s][i])
            return (src_state[s][i] == 2 && hide) ? -1 : s;
    return -1;
}

static ver_version *build_version(uint64_t seed)
{
    tu_rng r;
    tu_rng_seed(&r, seed);
    for (int s = 0; s < NSRC; s++)
        for (int i = 0; i < NKEYS; i++) {
            uint64_t x = tu_rng_range(&r, 10);
            src_state[s][i] = x < 5 ? 0 : x < 8 ? 1 : 2;
        }
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/data", dir);
    sp_config cfg = {.path = path, .page_size = 1024, .cache_bytes = 1 << 20, .create = true};
    void *meta;
    size_t metalen;
    bool created;
    cr_assert_eq(sp_open(&cfg, &sp, &meta, &metalen, &created), SHALE_OK);
    free(meta);

    ver_mem mem[2];
    for (int s = 0; s < 2; s++) {
        cr_assert_eq(mt_create(&mem[s].mt), SHALE_OK);
        mem[s].log_no = (uint64_t)s + 1;
        for (int i = 0; i < NKEYS; i++) {
            char k[16], v[32];
            if (!src_state[s][i])
                continue;
            key_of(i, k);
            value_of(s, i, v);
            /* an older version underneath, which must never show */
            cr_assert_eq(mt_add(mem[s].mt, 1, NODE_KIND_VALUE, k, strlen(k), "old", 3), 0);
            cr_assert_eq(mt_add(mem[s].mt, 2,
                                src_state[s][i] == 1 ? NODE_KIND_VALUE : NODE_KIND_TOMBSTONE, k,
                                strlen(k), v, strlen(v)),
                         0);
        }
    }
    seg_segment *segs[2];
    for (int s = 2; s < 4; s++) {
        arr_src a = {.s = s};
        seg_source src = {arr_next, &a};
        int rc = seg_build(&(seg_store){.sp = sp}, (uint64_t)s, (uint64_t)s, 0, &src, &segs[s - 2]);
        cr_assert_eq(rc, SHALE_OK, "seg_build: %d", rc);
    }
    ver_version *v;
    cr_assert_eq(zb_open(sp_freespace_of(sp), &zb), SHALE_OK);
    cr_assert_eq(ver_new(zb, &mem[0], &mem[1], 1, segs, 2, NULL, &v), SHALE_OK);
    for (int s = 0; s < 2; s++) {
        mt_unref(mem[s].mt);
        seg_unref(segs[s]);
    }
    return v;
}

static void teardown(ver_version *v)
{
    ver_unref(v);
    zb_close(zb);
    sp_close(sp);
    tu_rmrf(dir);
}

/* check_at -- the cursor sits on key i with the model's value. */
static void check_at(cur_cursor *c, int i, bool hide)
{
    char k[16], v[32];
    size_t kl, vl;
    const void *val;
    int s = model_at(i, hide);
    cr_assert(s >= 0);
    key_of(i, k);
    const void *ck = cur_key(c, &kl);
    cr_assert_eq(kl, strlen(k));
    cr_assert_eq(memcmp(ck, k, kl), 0, "at %.*s expected %s", (int)kl, (const char *)ck, k);
    if (src_state[s][i] == 2) {
        cr_assert_eq(cur_kind(c), NODE_KIND_TOMBSTONE);
        return;
    }
    value_of(s, i, v);
    cr_assert_eq(cur_value(c, &val, &vl), SHALE_OK);
    cr_assert_eq(vl, strlen(v));
    cr_assert_eq(memcmp(val, v, vl), 0);
}

Test(cursor, forward_and_backward_scans_match_the_model)
{
    for (uint64_t seed = 1; seed <= 3; seed++) {
        ver_version *v = build_version(seed);
        for (int hide = 0; hide <= 1; hide++) {
            cur_cursor *c;
            cr_assert_eq(cur_open(v, UINT64_MAX, true, 0, v->nsegs, hide ? CUR_HIDE : 0, &c), SHALE_OK);
            int rc = cur_first(c);
            for (int i = 0; i < NKEYS; i++) {
                if (model_at(i, hide) < 0)
                    continue;
                cr_assert_eq(rc, SHALE_OK);
                check_at(c, i, hide);
                rc = cur_next(c);
            }
            cr_assert_eq(rc, SHALE_NOTFOUND);
            rc = cur_last(c);
            for (int i = NKEYS - 1; i >= 0; i--) {
                if (model_at(i, hide) < 0)
                    continue;
                cr_assert_eq(rc, SHALE_OK);
                check_at(c, i, hide);
                rc = cur_prev(c);
            }
            cr_assert_eq(rc, SHALE_NOTFOUND);
            cur_close(c);
        }
        teardown(v);
    }
}

/* next_visible -- the model's next visible key index from i in direction d. */
static int next_visible(int i, int d)
{
    for (; i >= 0 && i < NKEYS; i += d)
        if (model_at(i, true) >= 0)
            return i;
    return -1;
}

Test(cursor, seeks_and_direction_changes_within_bounds)
{
    ver_version *v = build_version(7);
    tu_rng r;
    tu_rng_seed(&r, 99);
    cur_cursor *c;
    cr_assert_eq(cur_open(v, UINT64_MAX, true, 0, v->nsegs, CUR_HIDE, &c), SHALE_OK);
    for (int round = 0; round < 300; round++) {
        int lo = (int)tu_rng_range(&r, NKEYS / 2), hi = lo + (int)tu_rng_range(&r, NKEYS / 2);
        char lk[16], hk[16];
        key_of(lo, lk);
        key_of(hi, hk);
        cr_assert_eq(cur_set_bounds(c, lk, strlen(lk), hk, strlen(hk)), SHALE_OK);
        int at = (int)tu_rng_range(&r, NKEYS);
        char sk[16];
        key_of(at, sk);
        int d = tu_rng_range(&r, 2) ? 1 : -1;
        int rc = d > 0 ? cur_seek_ge(c, sk, strlen(sk)) : cur_seek_le(c, sk, strlen(sk));
        int want = next_visible(d > 0 ? MAX(at, lo) : MIN(at, hi - 1), d);
        for (int step = 0; step < 12; step++) {
            if (want < lo || want >= hi)
                want = -1;
            if (want < 0) {
                cr_assert_eq(rc, SHALE_NOTFOUND, "round %d step %d", round, step);
                break;
            }
            cr_assert_eq(rc, SHALE_OK, "round %d step %d want %d", round, step, want);
            check_at(c, want, true);
            d = tu_rng_range(&r, 3) ? d : -d;
            rc = d > 0 ? cur_next(c) : cur_prev(c);
            want = next_visible(want + d, d);
        }
    }
    cur_close(c);
    teardown(v);
}

Test(cursor, snapshot_hides_later_versions)
{
    ver_version *v = build_version(11);
    /* At snapshot 1 the memtables show only "old" versions. */
    cur_cursor *c;
    cr_assert_eq(cur_open(v, 1, true, 0, 0, CUR_HIDE, &c), SHALE_OK);
    int n = 0;
    for (int rc = cur_first(c); rc == SHALE_OK; rc = cur_next(c)) {
        const void *val;
        size_t vl;
        cr_assert_eq(cur_value(c, &val, &vl), SHALE_OK);
        cr_assert_eq(vl, 3);
        cr_assert_eq(memcmp(val, "old", 3), 0);
        n++;
    }
    int expect = 0;
    for (int i = 0; i < NKEYS; i++)
        expect += (src_state[0][i] || src_state[1][i]);
    cr_assert_eq(n, expect);
    cur_close(c);
    teardown(v);
}
