/*
 * test_pagemap.c -- page reads through the mapping (src/space/pagemap.c):
 * the same bytes as the cache path, a checksum checked on first access and
 * again after every rewrite or truncate, no fault on pages past the end of
 * the file, a file cut short rejected at open, envs without map, and readers
 * racing a writer over the same bitmap words.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/space/env.h"
#include "../../src/space/space.h"
#include "../support/memenv.h"
#include "shale.h"

#define PS 4096u

static char dir[64];
static char path[96];
static sp_env *posix;
static sp_env no_map; /* POSIX without map */

static void setup(void)
{
    strcpy(dir, "/tmp/shale-pagemap-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/data", dir);
    posix = sp_env_posix();
    no_map = *posix;
    no_map.map = NULL;
    no_map.unmap = NULL;
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

TestSuite(pagemap, .init = setup, .fini = teardown);

/* open_env -- open (creating) the page file through env; asserts the result. */
static sp_space *open_env(sp_env *env, bool ro, int want)
{
    sp_config cfg = {.env = env,
                     .path = path,
                     .page_size = PS,
                     .cache_bytes = 1 << 20,
                     .create = !ro,
                     .read_only = ro};
    sp_space *sp = NULL;
    cr_assert_eq(sp_open(&cfg, &sp, NULL, NULL, NULL), want);
    return sp;
}

/* make_page -- a sealed leaf page numbered pgno whose payload starts with tag. */
static void make_page(uint8_t *buf, uint64_t pgno, uint32_t tag)
{
    sp_page_init(buf, PS, SP_PT_LEAF, pgno, 1);
    put_u32(buf + SP_PAGE_HDR, tag);
    put_u64(buf + SP_PAGE_HDR + 4, pgno * 0x9e3779b97f4a7c15ull);
    sp_page_set_used(buf, 12);
    sp_page_seal(buf, PS);
}

/* write_pages -- write pages [first, first + n) tagged tag + i. */
static void write_pages(sp_space *sp, uint64_t first, uint64_t n, uint32_t tag)
{
    uint8_t *buf = malloc(n * PS);
    for (uint64_t i = 0; i < n; i++)
        make_page(buf + i * PS, first + i, tag + (uint32_t)i);
    cr_assert_eq(sp_write_pages(sp, first, buf, n), SHALE_OK);
    free(buf);
}

/* write_run -- allocate n pages and write them tagged tag + i; returns first. */
static uint64_t write_run(sp_space *sp, uint64_t n, uint32_t tag)
{
    sp_block b;
    cr_assert_eq(fs_alloc(sp_freespace_of(sp), n, &b), SHALE_OK);
    write_pages(sp, b.first, n, tag);
    return b.first;
}

/* live_checkpoint -- checkpoint naming [first, first + n) live. */
static void live_checkpoint(sp_space *sp, uint64_t first, uint64_t n)
{
    sp_blocklist live = BL_INIT;
    cr_assert_eq(bl_add(&live, first, first + n - 1), SHALE_OK);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    bl_free(&live);
}

/* get_rc -- sp_page_get's result for pgno (the page is put back). */
static int get_rc(sp_space *sp, uint64_t pgno)
{
    sp_page *pg = (sp_page *)1;
    int rc = sp_page_get(sp, pgno, &pg);
    if (rc == SHALE_OK)
        sp_page_put(sp, pg);
    else
        cr_assert_null(pg);
    return rc;
}

/* tag_of -- the tag of page pgno (must read). */
static uint32_t tag_of(sp_space *sp, uint64_t pgno)
{
    sp_page *pg;
    uint32_t tag;
    cr_assert_eq(sp_page_get(sp, pgno, &pg), SHALE_OK, "page %lu", (unsigned long)pgno);
    tag = get_u32(sp_page_data(pg) + SP_PAGE_HDR);
    sp_page_put(sp, pg);
    return tag;
}

/* poke -- xor one byte of the file through a descriptor of its own (behind
 * the open space's back). */
static void poke(uint64_t off, uint8_t x)
{
    sp_file *f;
    uint8_t v;
    cr_assert_eq(posix->open(posix, path, 0, &f), SHALE_OK);
    cr_assert_eq(posix->read(f, &v, 1, off), SHALE_OK);
    v ^= x;
    cr_assert_eq(posix->write(f, &v, 1, off), SHALE_OK);
    posix->close(f);
}

/* cut -- set the file's size behind the space's back. */
static void cut(uint64_t size)
{
    cr_assert_eq(truncate(path, (off_t)size), 0);
}

/* mapped_reads -- how many reads the mapping served so far. */
static uint64_t mapped_reads(sp_space *sp)
{
    sp_stats st;
    sp_stats_get(sp, &st);
    return st.mapped_reads;
}

/* need_mapping -- skip when this process cannot map (e.g. a sanitizer's
 * address-space layout refused the reservation). */
static void need_mapping(sp_space *sp, uint64_t pgno)
{
    uint64_t before = mapped_reads(sp);
    (void)get_rc(sp, pgno);
    if (mapped_reads(sp) == before)
        cr_skip_test("the reservation could not be mapped here");
}

Test(pagemap, mapped_reads_return_what_the_cache_path_returns)
{
    const uint64_t n = 300;
    sp_space *sp = open_env(posix, false, SHALE_OK);
    uint64_t first = write_run(sp, n, 7);
    uint8_t *a = malloc(n * PS), *b = malloc(n * PS);
    sp_page *pg;

    live_checkpoint(sp, first, n);
    sp_close(sp);
    for (int pass = 0; pass < 2; pass++) {
        uint8_t *out = pass ? b : a;
        sp = open_env(pass ? &no_map : posix, true, SHALE_OK);
        for (uint64_t i = 0; i < n; i++) {
            cr_assert_eq(sp_page_get(sp, first + i, &pg), SHALE_OK);
            memcpy(out + i * PS, sp_page_data(pg), PS);
            sp_page_put(sp, pg);
        }
        if (pass == 1)
            cr_assert_eq(mapped_reads(sp), 0);
        sp_close(sp);
    }
    cr_assert_eq(memcmp(a, b, n * PS), 0);
    /* sp_read_run (mapped, then uncached) agrees too, whole and in part */
    sp = open_env(posix, true, SHALE_OK);
    memset(b, 0, n * PS);
    cr_assert_eq(sp_read_run(sp, first, n, b), SHALE_OK);
    cr_assert_eq(memcmp(a, b, n * PS), 0);
    cr_assert_eq(sp_read_run(sp, first + 10, 20, b), SHALE_OK);
    cr_assert_eq(memcmp(a + 10 * PS, b, 20 * PS), 0);
    cr_assert_eq(sp_read_run(sp, first + 1, n, b), SHALE_ECORRUPT); /* past the file */
    sp_close(sp);
    free(a);
    free(b);
}

Test(pagemap, a_page_corrupted_on_disk_fails_on_its_first_read_and_every_read)
{
    sp_space *sp = open_env(posix, false, SHALE_OK);
    uint64_t first = write_run(sp, 4, 20);
    uint8_t buf[2 * PS];

    need_mapping(sp, first);
    poke((first + 1) * PS + 200, 0x10); /* after it was written, never read */
    poke((first + 2) * PS + 5, 0x01);   /* the type byte */
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(get_rc(sp, first + 1), SHALE_ECORRUPT);
        cr_assert_eq(get_rc(sp, first + 2), SHALE_ECORRUPT);
    }
    cr_assert_eq(sp_read_run(sp, first, 2, buf), SHALE_ECORRUPT);
    cr_assert_eq(tag_of(sp, first), 20);
    cr_assert_eq(tag_of(sp, first + 3), 23);
    poke((first + 1) * PS + 200, 0x10); /* repaired: never marked bad for good */
    cr_assert_eq(tag_of(sp, first + 1), 21);
    sp_close(sp);
}

Test(pagemap, a_page_rewritten_after_its_check_is_checked_again)
{
    sp_space *sp = open_env(posix, false, SHALE_OK);
    uint64_t p = write_run(sp, 1, 1);
    uint8_t buf[PS];

    need_mapping(sp, p);
    cr_assert_eq(tag_of(sp, p), 1); /* checked, marked verified */
    write_pages(sp, p, 1, 2);       /* a rewrite forgets the mark... */
    poke(p * PS + 300, 0x40);       /* ...so damage to the new contents shows */
    cr_assert_eq(get_rc(sp, p), SHALE_ECORRUPT);
    cr_assert_eq(sp_read_run(sp, p, 1, buf), SHALE_ECORRUPT);
    write_pages(sp, p, 1, 3);
    cr_assert_eq(tag_of(sp, p), 3);
    /* the same through a run read that marks the page */
    cr_assert_eq(sp_read_run(sp, p, 1, buf), SHALE_OK);
    write_pages(sp, p, 1, 4);
    poke(p * PS + PS - 1, 0x02);
    cr_assert_eq(sp_read_run(sp, p, 1, buf), SHALE_ECORRUPT);
    cr_assert_eq(get_rc(sp, p), SHALE_ECORRUPT);
    sp_close(sp);
}

Test(pagemap, pages_cut_by_a_truncate_are_checked_again_when_the_file_regrows)
{
    sp_space *sp = open_env(posix, false, SHALE_OK);
    sp_freespace *fs = sp_freespace_of(sp);
    uint64_t first = write_run(sp, 30, 0);
    sp_blocklist live = BL_INIT;
    sp_block b;

    need_mapping(sp, first);
    for (uint64_t i = 0; i < 30; i++)
        cr_assert_eq(tag_of(sp, first + i), i);
    live_checkpoint(sp, first, 30);
    cr_assert_eq(fs_retire_block(fs, first + 10, first + 29), SHALE_OK);
    cr_assert_eq(bl_add(&live, first, first + 9), SHALE_OK);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK); /* frees them */
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK); /* cuts them off */
    cr_assert_eq(get_rc(sp, first + 15), SHALE_ECORRUPT);      /* beyond the file */
    /* the file regrows by a write at its far end: the pages between are holes */
    cr_assert_eq(fs_alloc(fs, 20, &b), SHALE_OK);
    cr_assert_eq(b.first, first + 10);
    write_pages(sp, first + 29, 1, 99);
    cr_assert_eq(tag_of(sp, first + 29), 99);
    cr_assert_eq(get_rc(sp, first + 15), SHALE_ECORRUPT); /* zeroes, not the old page */
    cr_assert_eq(tag_of(sp, first + 9), 9);
    sp_close(sp);
    bl_free(&live);
}

Test(pagemap, pages_past_the_end_of_the_file_are_ecorrupt_not_a_fault)
{
    sp_space *sp = open_env(posix, false, SHALE_OK);
    uint64_t first = write_run(sp, 2, 1);
    uint8_t buf[PS];
    sp_block b;

    need_mapping(sp, first);
    cr_assert_eq(fs_alloc(sp_freespace_of(sp), 5, &b), SHALE_OK); /* loaned, unwritten */
    for (uint64_t p = b.first; p <= b.last; p++)
        cr_assert_eq(get_rc(sp, p), SHALE_ECORRUPT);
    cr_assert_eq(sp_read_run(sp, b.first, 2, buf), SHALE_ECORRUPT);
    cr_assert_eq(sp_read_run(sp, first + 1, 2, buf), SHALE_ECORRUPT); /* straddles the end */
    sp_close(sp);
}

Test(pagemap, a_file_cut_short_behind_our_back_fails_to_open)
{
    sp_space *sp = open_env(posix, false, SHALE_OK);
    uint64_t first = write_run(sp, 10, 0);

    live_checkpoint(sp, first, 6); /* pages first + 6.. are a free tail */
    sp_close(sp);
    cut((first + 6) * PS); /* only the free tail: fine */
    sp = open_env(posix, true, SHALE_OK);
    cr_assert_eq(tag_of(sp, first + 5), 5);
    cr_assert_eq(get_rc(sp, first + 6), SHALE_ECORRUPT);
    sp_close(sp);
    cut((first + 6) * PS - 1); /* into the last live page */
    open_env(posix, true, SHALE_ECORRUPT);
    open_env(posix, false, SHALE_ECORRUPT);
    open_env(&no_map, true, SHALE_ECORRUPT);
    cut(3 * PS);
    open_env(posix, false, SHALE_ECORRUPT);
    cut(2 * PS); /* the header slots alone */
    open_env(posix, true, SHALE_ECORRUPT);
}

Test(pagemap, an_env_without_map_reads_through_the_cache)
{
    memenv *m = memenv_create();
    sp_env *env = memenv_env(m);
    sp_space *sp;
    uint64_t first;

    cr_assert_null(env->map);
    cr_assert_eq(env->mkdir(env, "/tmp"), SHALE_OK);
    cr_assert_eq(env->mkdir(env, dir), SHALE_OK);
    sp = open_env(env, false, SHALE_OK);
    first = write_run(sp, 20, 50);
    for (int round = 0; round < 2; round++)
        for (uint64_t i = 0; i < 20; i++)
            cr_assert_eq(tag_of(sp, first + i), 50 + i);
    write_pages(sp, first + 3, 1, 7);
    cr_assert_eq(tag_of(sp, first + 3), 7);
    live_checkpoint(sp, first, 20);
    cr_assert_eq(mapped_reads(sp), 0);
    sp_close(sp);
    sp = open_env(env, true, SHALE_OK);
    cr_assert_eq(tag_of(sp, first + 19), 69);
    cr_assert_eq(mapped_reads(sp), 0);
    sp_close(sp);
    memenv_destroy(m);
}

#define RACE_PAGES 256u

typedef struct race_arg {
    sp_space *sp;
    uint64_t first;
    unsigned seed;
    _Atomic int *stop;
} race_arg;

/* race_reader -- read even pages until told to stop; NULL if all were right. */
static void *race_reader(void *p)
{
    race_arg *a = p;
    while (!atomic_load(a->stop)) {
        sp_page *pg;
        uint64_t k = (uint64_t)rand_r(&a->seed) % (RACE_PAGES / 2) * 2;
        if (sp_page_get(a->sp, a->first + k, &pg) != SHALE_OK)
            return (void *)1;
        if (get_u32(sp_page_data(pg) + SP_PAGE_HDR) != 1000 + k)
            return (void *)2;
        sp_page_put(a->sp, pg);
    }
    return NULL;
}

Test(pagemap, readers_and_a_writer_share_bitmap_words)
{
    sp_space *sp = open_env(posix, false, SHALE_OK);
    uint64_t first = write_run(sp, RACE_PAGES, 1000);
    _Atomic int stop = 0;
    pthread_t t[3];
    race_arg args[3];
    void *res;
    uint32_t round;

    /* Even pages are read, odd ones rewritten (no reader holds them, as the
     * contract asks) and read back: every bitmap word is shared. */
    for (int i = 0; i < 3; i++) {
        args[i] = (race_arg){sp, first, (unsigned)i + 1, &stop};
        cr_assert_eq(pthread_create(&t[i], NULL, race_reader, &args[i]), 0);
    }
    for (round = 0; round < 100; round++)
        for (uint64_t k = 1; k < RACE_PAGES; k += 2) {
            write_pages(sp, first + k, 1, round * 10000 + (uint32_t)k);
            cr_assert_eq(tag_of(sp, first + k), round * 10000 + k);
        }
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], &res);
        cr_expect_null(res);
    }
    for (uint64_t k = 0; k < RACE_PAGES; k++)
        cr_assert_eq(tag_of(sp, first + k), k & 1 ? (round - 1) * 10000 + k : 1000 + k);
    sp_close(sp);
}
