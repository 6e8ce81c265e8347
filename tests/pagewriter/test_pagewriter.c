/*
 * test_pagewriter.c -- loans, page writes, runs and the page accounting of
 * pw_finish and pw_abort, against a real page file.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/pagewriter/pagewriter.h"
#include "../support/testutil.h"

typedef struct env {
    char dir[64];
    char path[96];
    sp_space *sp;
    uint32_t ps;
} env;

/* env_open -- a fresh page file of page size ps. */
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

/* in_use -- pages of the file that are neither free nor pending. */
static uint64_t in_use(env *e)
{
    uint64_t fr, pend;
    sp_freespace *fs = sp_freespace_of(e->sp);
    fs_counts(fs, &fr, &pend);
    return fs_file_pages(fs) - SP_FIRST_DATA_PAGE - fr - pend;
}

/* write_page -- allocate and write one leaf-typed page whose payload is tag. */
static uint64_t write_page(pw_writer *pw, env *e, uint8_t tag)
{
    uint64_t pgno;
    uint8_t *page = malloc(e->ps);
    cr_assert_eq(pw_page_alloc(pw, &pgno), SHALE_OK);
    sp_page_init(page, e->ps, SP_PT_LEAF, pgno, pw_gen(pw));
    sp_page_set_used(page, 16);
    memset(page + SP_PAGE_HDR, tag, 16);
    cr_assert_eq(pw_page_write(pw, pgno, page), SHALE_OK);
    free(page);
    return pgno;
}

Test(pagewriter, pages_come_in_loan_order)
{
    env e;
    env_open(&e, 4096);
    pw_writer *pw;
    cr_assert_eq(pw_open(e.sp, 7, 8, &pw), SHALE_OK);
    uint64_t first = write_page(pw, &e, 0);
    for (unsigned i = 1; i < 8; i++)
        cr_assert_eq(write_page(pw, &e, (uint8_t)i), first + i);
    uint64_t ninth = write_page(pw, &e, 8); /* a second loan */
    cr_assert(ninth < first || ninth >= first + 8);
    cr_assert_eq(pw_pages_written(pw), 9);
    sp_blocklist used = BL_INIT;
    cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
    cr_assert_eq(bl_pages(&used), 9);
    cr_assert(bl_contains(&used, first) && bl_contains(&used, ninth));
    /* every page reads back, sealed, with its tag and the writer's gen */
    for (size_t b = 0; b < used.n; b++)
        for (uint64_t p = used.v[b].first; p <= used.v[b].last; p++) {
            sp_page *pg;
            cr_assert_eq(sp_page_get(e.sp, p, &pg), SHALE_OK);
            const uint8_t *d = sp_page_data(pg);
            cr_assert_eq(sp_page_gen(d), 7);
            uint8_t tag = p == ninth ? 8 : (uint8_t)(p - first);
            cr_assert_eq(d[SP_PAGE_HDR], tag);
            sp_page_put(e.sp, pg);
        }
    pw_close(pw);
    bl_free(&used);
    env_close(&e);
}

Test(pagewriter, finish_returns_unused_pages)
{
    env e;
    env_open(&e, 4096);
    uint64_t before = in_use(&e);
    pw_writer *pw;
    cr_assert_eq(pw_open(e.sp, 1, 100, &pw), SHALE_OK);
    for (unsigned i = 0; i < 5; i++)
        write_page(pw, &e, 1);
    uint64_t run;
    char data[10000];
    memset(data, 'r', sizeof(data));
    cr_assert_eq(pw_run_write(pw, SP_PT_OVERFLOW, data, sizeof(data), &run), SHALE_OK);
    cr_assert_eq(in_use(&e) - before, 100 + pw_run_pages(e.ps, sizeof(data)));
    sp_blocklist used = BL_INIT;
    cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
    cr_assert_eq(bl_pages(&used), 5 + pw_run_pages(e.ps, sizeof(data)));
    cr_assert_eq(in_use(&e) - before, bl_pages(&used), "only the written pages stay loaned");
    pw_abort(pw); /* after finish: frees only, the pages are the caller's */
    cr_assert_eq(in_use(&e) - before, bl_pages(&used));
    cr_assert_eq(fs_retire(sp_freespace_of(e.sp), &used), SHALE_OK);
    bl_free(&used);
    env_close(&e);
}

Test(pagewriter, abort_returns_every_page)
{
    env e;
    env_open(&e, 1024);
    uint64_t before = in_use(&e);
    pw_writer *pw;
    cr_assert_eq(pw_open(e.sp, 1, 16, &pw), SHALE_OK);
    for (unsigned i = 0; i < 40; i++)
        write_page(pw, &e, 2);
    uint8_t *big = calloc(1, 50000);
    uint64_t run;
    cr_assert_eq(pw_run_write(pw, SP_PT_OVERFLOW, big, 50000, &run), SHALE_OK);
    cr_assert_eq(pw_flush(pw), SHALE_OK);
    cr_assert(in_use(&e) > before);
    pw_abort(pw);
    cr_assert_eq(in_use(&e), before);
    pw_abort(NULL);
    free(big);
    env_close(&e);
}

Test(pagewriter, page_write_rejects_foreign_pages)
{
    env e;
    env_open(&e, 1024);
    pw_writer *pw;
    cr_assert_eq(pw_open(e.sp, 3, 4, &pw), SHALE_OK);
    uint8_t page[1024];
    uint64_t p;
    cr_assert_eq(pw_page_alloc(pw, &p), SHALE_OK);
    sp_page_init(page, 1024, SP_PT_LEAF, p + 1, 3); /* not handed out yet */
    cr_assert_eq(pw_page_write(pw, p + 1, page), SHALE_EINVAL);
    sp_page_init(page, 1024, SP_PT_LEAF, p, 4); /* wrong gen */
    cr_assert_eq(pw_page_write(pw, p, page), SHALE_EINVAL);
    sp_page_init(page, 1024, SP_PT_LEAF, p + 5, 3); /* header names another page */
    cr_assert_eq(pw_page_write(pw, p, page), SHALE_EINVAL);
    sp_page_init(page, 1024, SP_PT_LEAF, p, 3);
    cr_assert_eq(pw_page_write(pw, p, page), SHALE_OK);
    cr_assert_eq(pw_page_write(pw, p, page), SHALE_EINVAL); /* twice */
    cr_assert_eq(pw_run_write(pw, SP_PT_LEAF, "x", 1, &p), SHALE_EINVAL);
    pw_abort(pw);
    env_close(&e);
}

/* fill -- deterministic bytes for run data. */
static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    tu_rng r;
    tu_rng_seed(&r, seed);
    tu_rng_bytes(&r, b, n);
}

Test(pagewriter, run_round_trips_at_every_size)
{
    uint32_t sizes[] = {1024, 4096, 65536};
    for (unsigned si = 0; si < 3; si++) {
        env e;
        env_open(&e, sizes[si]);
        uint64_t pl = e.ps - SP_PAGE_HDR;
        size_t lens[] = {0,          1,          pl - 9,     pl - 8,        pl - 7,  pl,
                         2 * pl - 8, 2 * pl - 7, 5 * pl + 3, 100 * pl + 17, 3u << 20};
        pw_writer *pw;
        cr_assert_eq(pw_open(e.sp, 9, 0, &pw), SHALE_OK);
        uint64_t pg[11];
        for (unsigned i = 0; i < 11; i++) {
            uint8_t *d = malloc(lens[i] + 1);
            fill(d, lens[i], i);
            uint8_t type = i % 2 ? SP_PT_FILTER : SP_PT_OVERFLOW;
            cr_assert_eq(pw_run_write(pw, type, d, lens[i], &pg[i]), SHALE_OK);
            free(d);
        }
        sp_blocklist used = BL_INIT;
        cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
        for (unsigned i = 0; i < 11; i++) {
            uint8_t type = i % 2 ? SP_PT_FILTER : SP_PT_OVERFLOW;
            uint8_t *want = malloc(lens[i] + 1), *got = malloc(lens[i] + 1);
            void *buf;
            size_t len;
            fill(want, lens[i], i);
            cr_assert_eq(pw_run_read(e.sp, pg[i], type, &buf, &len), SHALE_OK);
            cr_assert_eq(len, lens[i]);
            cr_assert(memcmp(buf, want, len) == 0);
            free(buf);
            cr_assert_eq(pw_run_read_into(e.sp, pg[i], type, got, lens[i]), SHALE_OK);
            cr_assert(memcmp(got, want, lens[i]) == 0);
            cr_assert_eq(pw_run_read_into(e.sp, pg[i], type, got, lens[i] / 2 + (lens[i] == 0)),
                         SHALE_ECORRUPT, "a length other than the run's");
            cr_assert_eq(pw_run_read(e.sp, pg[i], SP_PT_META, &buf, &len), SHALE_ECORRUPT);
            /* run_cmp from a few offsets: equal, then a changed last byte, then longer */
            for (size_t from = 0; from <= lens[i]; from += lens[i] / 3 + 1) {
                int c;
                size_t dl = lens[i] - from;
                cr_assert_eq(pw_run_cmp(e.sp, pg[i], type, lens[i], from, want + from, dl, &c),
                             SHALE_OK);
                cr_assert_eq(c, 0);
                if (dl) {
                    want[lens[i] - 1] ^= 0x80;
                    cr_assert_eq(pw_run_cmp(e.sp, pg[i], type, lens[i], from, want + from, dl, &c),
                                 SHALE_OK);
                    cr_assert_eq(c < 0, (want[lens[i] - 1] & 0x80) == 0);
                    want[lens[i] - 1] ^= 0x80;
                    cr_assert_eq(
                        pw_run_cmp(e.sp, pg[i], type, lens[i], from, want + from, dl - 1, &c),
                        SHALE_OK);
                    cr_assert(c < 0, "a shorter key sorts first");
                }
            }
            free(want);
            free(got);
        }
        cr_assert_eq(in_use(&e), bl_pages(&used));
        pw_close(pw);
        bl_free(&used);
        env_close(&e);
    }
}

Test(pagewriter, multi_megabyte_value_round_trips)
{
    env e;
    env_open(&e, 4096);
    size_t len = (8u << 20) + 12345;
    uint8_t *d = malloc(len);
    fill(d, len, 42);
    pw_writer *pw;
    cr_assert_eq(pw_open(e.sp, 2, 0, &pw), SHALE_OK);
    uint64_t pg;
    cr_assert_eq(pw_run_write(pw, SP_PT_OVERFLOW, d, len, &pg), SHALE_OK);
    cr_assert_eq(pw_pages_written(pw), pw_run_pages(4096, len));
    sp_blocklist used = BL_INIT;
    cr_assert_eq(pw_finish(pw, &used), SHALE_OK);
    cr_assert_eq(used.n, 1, "a run is one block");
    void *buf;
    size_t got;
    cr_assert_eq(pw_run_read(e.sp, pg, SP_PT_OVERFLOW, &buf, &got), SHALE_OK);
    cr_assert_eq(got, len);
    cr_assert(memcmp(buf, d, len) == 0);
    free(buf);
    pw_close(pw);
    bl_free(&used);
    free(d);
    env_close(&e);
}

/* rewrite -- replace page pgno of the file with a re-sealed copy changed by fn. */
static void rewrite(env *e, uint64_t pgno, void (*fn)(uint8_t *page))
{
    uint8_t *p = malloc(e->ps);
    cr_assert_eq(sp_read_run(e->sp, pgno, 1, p), SHALE_OK);
    fn(p);
    sp_page_seal(p, e->ps);
    cr_assert_eq(sp_write_pages(e->sp, pgno, p, 1), SHALE_OK);
    free(p);
}

static void bump_aux(uint8_t *p)
{
    sp_page_set_aux(p, sp_page_aux(p) + 1);
}
static void bump_gen(uint8_t *p)
{
    put_u64(p + 16, sp_page_gen(p) + 1);
}
static void cut_used(uint8_t *p)
{
    sp_page_set_used(p, sp_page_used(p) - 1);
}
static void huge_len(uint8_t *p)
{
    put_u64(p + SP_PAGE_HDR, (uint64_t)1 << 40);
}
static void to_filter(uint8_t *p)
{
    p[4] = SP_PT_FILTER;
}

Test(pagewriter, damaged_runs_are_corrupt)
{
    void (*damage[])(uint8_t *) = {bump_aux, bump_gen, cut_used, huge_len, to_filter};
    for (unsigned di = 0; di < 5; di++) {
        for (unsigned which = 0; which < 3; which++) { /* first, middle, last page */
            env e;
            env_open(&e, 1024);
            size_t len = 20 * 992;
            uint8_t *d = calloc(1, len), *got = malloc(len);
            pw_writer *pw;
            uint64_t pg, n = pw_run_pages(1024, len);
            cr_assert_eq(pw_open(e.sp, 2, 0, &pw), SHALE_OK);
            cr_assert_eq(pw_run_write(pw, SP_PT_OVERFLOW, d, len, &pg), SHALE_OK);
            if (damage[di] == huge_len && which)
                goto next;
            rewrite(&e, pg + (which == 0 ? 0 : which == 1 ? n / 2 : n - 1), damage[di]);
            void *buf = NULL;
            size_t l;
            cr_assert_eq(pw_run_read(e.sp, pg, SP_PT_OVERFLOW, &buf, &l), SHALE_ECORRUPT,
                         "damage %u at %u", di, which);
            cr_assert_eq(pw_run_read_into(e.sp, pg, SP_PT_OVERFLOW, got, len), SHALE_ECORRUPT);
        next:
            pw_abort(pw);
            free(d);
            free(got);
            env_close(&e);
        }
    }
}

Test(pagewriter, run_read_of_a_non_run_is_corrupt)
{
    env e;
    env_open(&e, 1024);
    pw_writer *pw;
    cr_assert_eq(pw_open(e.sp, 2, 4, &pw), SHALE_OK);
    uint64_t p = write_page(pw, &e, 0xff);
    cr_assert_eq(pw_flush(pw), SHALE_OK);
    void *buf;
    size_t l;
    cr_assert_eq(pw_run_read(e.sp, p, SP_PT_OVERFLOW, &buf, &l), SHALE_ECORRUPT);
    cr_assert_eq(pw_run_read(e.sp, 1u << 30, SP_PT_OVERFLOW, &buf, &l), SHALE_ECORRUPT);
    int c;
    cr_assert_eq(pw_run_cmp(e.sp, p, SP_PT_OVERFLOW, 10, 0, "x", 1, &c), SHALE_ECORRUPT);
    cr_assert_eq(pw_run_cmp(NULL, p, SP_PT_OVERFLOW, 10, 0, "x", 1, &c), SHALE_EINVAL);
    pw_abort(pw);
    env_close(&e);
}
