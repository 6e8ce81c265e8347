/*
 * test_verify.c -- shale_verify (and so `shale check`): a database built
 * through levels, recycling merges and compression passes; a page listed by
 * two segments, a page in no set, a damaged page and a writable open are
 * each refused, naming the page.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../src/lsm/db.h"
#include "../support/testutil.h"

static char dir[256];
static void setup(void) { cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0); }
static void teardown(void) { tu_rmrf(dir); }
TestSuite(verify, .init = setup, .fini = teardown, .timeout = 300);

/* fill -- a database with several levels: random writes, removes, a few
 * large values, small memtables; closed at the end. */
static void fill(int codec, int n)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
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
    tu_rng_seed(&r, 99);
    char k[32], v[3000];
    for (size_t i = 0; i < sizeof v; i++)
        v[i] = (char)('a' + i % 23);
    for (int i = 0; i < n; i++) {
        int key = (int)tu_rng_range(&r, (uint64_t)n / 2);
        int kl = snprintf(k, sizeof k, "key-%07d", key);
        if (i % 9 == 0)
            cr_assert_eq(shale_remove(t, k, (size_t)kl, NULL), SHALE_OK);
        else
            cr_assert_eq(shale_insert(t, k, (size_t)kl, v, i % 97 == 0 ? 2500 : 40, NULL),
                         SHALE_OK);
    }
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* open_ro -- the database read-only, through the internal entry point. */
static shale_db *open_ro(void)
{
    shale_options o;
    shale_db *db;
    shale_options_default(&o);
    o.read_only = true;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    return db;
}

Test(verify, databases_built_by_merges_pass)
{
    for (int codec = SHALE_COMPRESSION_NONE; codec <= SHALE_COMPRESSION_ZSTD; codec++) {
        tu_rmrf(dir);
        fill(codec, 40000);
        shale_db *db = open_ro();
        shale_verify_report r;
        int rc = shale_verify(db, &r);
        cr_assert_eq(rc, SHALE_OK, "codec %d: %s", codec, r.fault);
        cr_assert_eq(r.fault[0], 0);
        cr_assert_eq(r.file_pages, r.header_pages + r.live_pages + r.free_pages);
        shale_stats st;
        cr_assert_eq(shale_stats_get(db, &st), SHALE_OK);
        cr_assert_eq(r.live_pages, st.live_pages);
        cr_assert_eq(r.entries, st.entries);
        cr_assert_geq(st.levels, 1);
        cr_assert_eq(shale_close(db), SHALE_OK);
    }
}

Test(verify, a_writable_open_is_einval)
{
    fill(SHALE_COMPRESSION_NONE, 2000);
    shale_db *db;
    shale_verify_report r;
    cr_assert_eq(shale_open(dir, NULL, &db), SHALE_OK);
    cr_assert_eq(shale_verify(db, &r), SHALE_EINVAL);
    cr_assert_eq(shale_verify(NULL, &r), SHALE_EINVAL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(verify, a_page_listed_by_two_segments_is_named)
{
    fill(SHALE_COMPRESSION_NONE, 40000);
    /* Give the second segment a page of the first in a new checkpoint. */
    shale_db *db;
    cr_assert_eq(shale_open(dir, NULL, &db), SHALE_OK);
    db_stop_threads(db);
    ver_version *v = db->current;
    cr_assert_geq(v->nsegs, 2, "segments: %zu", v->nsegs);
    uint64_t p = v->segs[0]->pages.v[0].first;
    cr_assert_eq(bl_add(&v->segs[1]->pages, p, p), SHALE_OK);
    cr_assert_eq(db_checkpoint(db), SHALE_OK);
    cr_assert_eq(shale_close(db), SHALE_OK);
    db = open_ro();
    shale_verify_report r;
    cr_assert_eq(shale_verify(db, &r), SHALE_ECORRUPT);
    cr_assert_eq(r.bad_page, p, "named page %llu, want %llu", (unsigned long long)r.bad_page,
                 (unsigned long long)p);
    cr_log_info("%s", r.fault);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(verify, a_page_in_no_set_is_named)
{
    fill(SHALE_COMPRESSION_NONE, 20000);
    shale_db *db = open_ro();
    sp_block b;
    cr_assert_eq(fs_alloc(sp_freespace_of(db->sp), 1, &b), SHALE_OK); /* no longer free */
    shale_verify_report r;
    cr_assert_eq(shale_verify(db, &r), SHALE_ECORRUPT);
    cr_assert_eq(r.bad_page, b.first);
    cr_assert(strstr(r.fault, "none") != NULL, "%s", r.fault);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(verify, a_damaged_page_is_named)
{
    fill(SHALE_COMPRESSION_LZ4, 20000);
    shale_db *db = open_ro();
    /* the last leaf of the deepest segment (the catalog, read at open, lives
     * in the first keys) */
    const seg_segment *s = db->current->segs[db->current->nsegs - 1];
    uint64_t p = s->tree.root;
    for (uint32_t h = s->tree.height; h > 1; h--) {
        node_ref n;
        node_child c;
        cr_assert_eq(seg_node_pin(s, p, &n), SHALE_OK);
        cr_assert_eq(node_parent_child(n.data, n.size, sp_page_count(n.data) - 1, &c), SHALE_OK);
        node_unpin(db->sp, &n);
        p = c.pgno;
    }
    cr_assert_eq(shale_close(db), SHALE_OK);
    char path[300];
    snprintf(path, sizeof path, "%s/data", dir);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, (long)(p * 1024 + 600), SEEK_SET), 0);
    int c = fgetc(f);
    cr_assert_eq(fseek(f, (long)(p * 1024 + 600), SEEK_SET), 0);
    fputc(c ^ 0x5a, f);
    fclose(f);
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_ECORRUPT);
    cr_assert(strstr(fault, "damaged") != NULL, "%s", fault);
}
