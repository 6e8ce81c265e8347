/*
 * test_pinning.c -- readers pinning old versions while write-outs and
 * recycling merges run underneath: each pinned version must keep reading
 * exactly the state it was pinned at, and a page audit asserts that no page
 * a pinned version can reach is ever on the free list (so never reallocated).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../src/lsm/cursor.h"
#include "../../src/lsm/db.h"
#include "../support/testutil.h"

#define NKEYS 12000
#define NPIN 8

typedef struct pin {
    ver_version *v;
    uint64_t snap;
    uint32_t *model; /* version of each key at pin time (0: absent) */
} pin;

static void value_of(int k, uint32_t ver, char *buf, size_t *len)
{
    *len = (size_t)snprintf(buf, 200, "v%u-key%06d-%s", ver, k,
                            k % 13 ? "" : "and a longer tail for some of the keys..........");
}

/* check_pin -- a full scan of the pinned version equals its model. */
static void check_pin(const pin *p)
{
    cur_cursor *c;
    cr_assert_eq(cur_open(p->v, p->snap, true, 0, p->v->nsegs, CUR_HIDE, &c), SHALE_OK);
    int k = 0, rc;
    for (rc = cur_first(c); rc == SHALE_OK; rc = cur_next(c)) {
        size_t kl, vl, wl;
        const uint8_t *key = cur_key(c, &kl);
        if (kl < IKEY_PREFIX || get_be32(key) != TREE_ID_DEFAULT)
            continue;
        char digits[8] = {0};
        cr_assert_eq(kl, IKEY_PREFIX + 9);
        memcpy(digits, key + IKEY_PREFIX + 3, 6); /* "key%06d" */
        int got = atoi(digits);
        while (k < got) /* keys skipped must be absent */
            cr_assert_eq(p->model[k++], 0, "key %d vanished from a pinned version", k - 1);
        cr_assert_eq(got, k);
        cr_assert_neq(p->model[k], 0, "key %d appeared in a pinned version", k);
        const void *val;
        char want[200];
        cr_assert_eq(cur_value(c, &val, &vl), SHALE_OK);
        value_of(k, p->model[k], want, &wl);
        cr_assert(vl == wl && memcmp(val, want, vl) == 0, "key %d: wrong value in a pinned version",
                  k);
        k++;
    }
    cr_assert_eq(rc, SHALE_NOTFOUND);
    while (k < NKEYS)
        cr_assert_eq(p->model[k++], 0, "key %d vanished from a pinned version", k - 1);
    cur_close(c);
}

/* audit -- no page of a pinned version is free. */
static void audit(shale_db *db, const pin *pins, int n)
{
    sp_blocklist fr = BL_INIT;
    cr_assert_eq(fs_free_list(sp_freespace_of(db->sp), &fr), SHALE_OK);
    for (int i = 0; i < n; i++)
        for (size_t s = 0; s < pins[i].v->nsegs; s++)
            cr_assert(!bl_overlaps_list(&pins[i].v->segs[s]->pages, &fr),
                      "a page of a pinned version is free");
    bl_free(&fr);
}

/* run -- one round with codec; returns the window merges it saw. */
static uint64_t run(int codec)
{
    char dir[256];
    shale_options o;
    shale_db *db;
    shale_tree *t;
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.page_size = 1024;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    o.compression = codec;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    tu_rng r;
    tu_rng_seed(&r, tu_seed() + (uint64_t)codec);
    uint32_t *model = calloc(NKEYS, sizeof *model);
    pin pins[NPIN];
    int npin = 0;
    uint32_t ver = 0;
    uint64_t pinned = 0, checked = 0;
    for (int step = 0; step < (int)tu_scaled(80); step++) {
        int center = (int)tu_rng_range(&r, NKEYS - 400); /* clustered: merges recycle */
        for (int j = 0; j < 2500; j++) {
            int k = j % 1000 ? center + (int)tu_rng_range(&r, 400) : (int)tu_rng_range(&r, NKEYS);
            char key[16], val[200];
            size_t vl;
            int kl = snprintf(key, sizeof key, "key%06d", k);
            if (tu_rng_range(&r, 6) == 0) {
                cr_assert_eq(shale_remove(t, key, (size_t)kl, NULL), SHALE_OK);
                model[k] = 0;
            } else {
                model[k] = ++ver;
                value_of(k, model[k], val, &vl);
                cr_assert_eq(shale_insert(t, key, (size_t)kl, val, vl, NULL), SHALE_OK);
            }
        }
        if (npin < NPIN && tu_rng_range(&r, 2) == 0) {
            pin *p = &pins[npin++];
            p->v = db_pin(db, &p->snap);
            p->model = malloc(NKEYS * sizeof *model);
            memcpy(p->model, model, NKEYS * sizeof *model);
            pinned++;
        }
        audit(db, pins, npin);
        if (npin > 0 && tu_rng_range(&r, 3) == 0) {
            int i = (int)tu_rng_range(&r, (uint64_t)npin);
            check_pin(&pins[i]);
            checked++;
            ver_unref(pins[i].v);
            free(pins[i].model);
            pins[i] = pins[--npin];
        }
    }
    for (int i = 0; i < npin; i++) {
        check_pin(&pins[i]);
        ver_unref(pins[i].v);
        free(pins[i].model);
    }
    shale_stats st;
    cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
    cr_log_info("codec %d: %llu versions pinned, %llu checked; %llu merges (%llu partial), "
                "%llu leaves recycled",
                codec, (unsigned long long)pinned, (unsigned long long)checked,
                (unsigned long long)st.merges, (unsigned long long)st.merge_windows,
                (unsigned long long)st.merge_leaves_recycled);
    cr_assert_gt(st.merges, 5);
    cr_assert_gt(st.merge_leaves_recycled, 0);
    cr_assert_eq(shale_close(db), SHALE_OK);
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "%s", fault);
    free(model);
    tu_rmrf(dir);
    return st.merge_windows;
}

Test(pinning, pinned_versions_read_their_state_and_keep_their_pages, .timeout = 600)
{
    uint64_t windows = run(SHALE_COMPRESSION_NONE);
    windows += run(SHALE_COMPRESSION_LZ4);
    cr_assert_gt(windows, 0, "levels over their caps promote windows while versions are pinned");
}
