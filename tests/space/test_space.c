/*
 * test_space.c -- the page file end to end: create/reopen, page I/O through
 * the mapping and through the cache (hits, stale entries, pins, eviction,
 * concurrency; the cache-only cases with an env that cannot map), checkpoints
 * (free-list persistence, reuse only after durability, tail truncation,
 * fallback on a torn slot), corruption detection; and the POSIX env.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/space/env.h"
#include "../../src/space/space.h"
#include "../support/memenv.h"
#include "shale.h"

#define PS 4096u

static char dir[64];
static char path[96];
static sp_env *env;
static sp_env *open_env; /* the env sp_open gets: NULL (POSIX) or no_map */
static sp_env no_map;    /* POSIX without map: every read through the cache */

static void setup(void)
{
    strcpy(dir, "/tmp/shale-space-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/data", dir);
    env = sp_env_posix();
    no_map = *env;
    no_map.map = NULL;
    no_map.unmap = NULL;
    open_env = NULL;
}

/* cache_only -- open page files with an env that cannot map from now on. */
static void cache_only(void)
{
    open_env = &no_map;
}

/* rm_entry -- remove one directory entry of dir (list callback). */
static int rm_entry(void *ctx, const char *name)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/%s", (const char *)ctx, name);
    if (unlink(p) != 0)
        rmdir(p);
    return 0;
}

static void teardown(void)
{
    env->list(env, dir, rm_entry, dir);
    rmdir(dir);
}

TestSuite(space, .init = setup, .fini = teardown);
TestSuite(env_posix, .init = setup, .fini = teardown);

/* open_cfg -- open the page file with the given cache size and flags. */
static int open_cfg(sp_space **sp, size_t cache, bool create, bool ro, void **meta, size_t *mlen,
                    bool *created)
{
    sp_config cfg = {.env = open_env,
                     .path = path,
                     .page_size = PS,
                     .cache_bytes = cache,
                     .create = create,
                     .read_only = ro};
    return sp_open(&cfg, sp, meta, mlen, created);
}

/* open_rw -- open (creating) with a 1 MiB cache; asserts success. */
static sp_space *open_rw(void)
{
    sp_space *sp;
    cr_assert_eq(open_cfg(&sp, 1 << 20, true, false, NULL, NULL, NULL), SHALE_OK);
    return sp;
}

/* make_page -- a sealed leaf page numbered pgno whose payload starts with tag. */
static void make_page(uint8_t *buf, uint64_t pgno, uint32_t tag)
{
    sp_page_init(buf, PS, SP_PT_LEAF, pgno, 1);
    put_u32(buf + SP_PAGE_HDR, tag);
    sp_page_set_used(buf, 4);
    sp_page_seal(buf, PS);
}

/* write_run -- allocate n pages and write them tagged tag + i; returns first. */
static uint64_t write_run(sp_space *sp, uint64_t n, uint32_t tag)
{
    sp_block b;
    uint8_t *buf = malloc(n * PS);
    cr_assert_eq(fs_alloc(sp_freespace_of(sp), n, &b), SHALE_OK);
    for (uint64_t i = 0; i < n; i++)
        make_page(buf + i * PS, b.first + i, tag + (uint32_t)i);
    cr_assert_eq(sp_write_pages(sp, b.first, buf, n), SHALE_OK);
    free(buf);
    return b.first;
}

/* rewrite -- overwrite page pgno with a new tag. */
static void rewrite(sp_space *sp, uint64_t pgno, uint32_t tag)
{
    uint8_t buf[PS];
    make_page(buf, pgno, tag);
    cr_assert_eq(sp_write_pages(sp, pgno, buf, 1), SHALE_OK);
}

/* tag_of -- the tag of page pgno read through the cache. */
static uint32_t tag_of(sp_space *sp, uint64_t pgno)
{
    sp_page *pg;
    uint32_t tag;
    cr_assert_eq(sp_page_get(sp, pgno, &pg), SHALE_OK, "page %lu", (unsigned long)pgno);
    tag = get_u32(sp_page_data(pg) + SP_PAGE_HDR);
    sp_page_put(sp, pg);
    return tag;
}

/* file_size -- the page file's size in bytes. */
static uint64_t file_size(void)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* poke -- overwrite one byte of the closed page file. */
static void poke(uint64_t off, uint8_t v)
{
    sp_file *f;
    cr_assert_eq(env->open(env, path, 0, &f), SHALE_OK);
    cr_assert_eq(env->write(f, &v, 1, off), SHALE_OK);
    env->close(f);
}

Test(space, create_then_reopen)
{
    sp_space *sp;
    bool created;
    void *meta = (void *)1;
    size_t mlen = 99;

    cr_assert_eq(open_cfg(&sp, 0, true, false, &meta, &mlen, &created), SHALE_OK);
    cr_assert(created);
    cr_assert_null(meta);
    cr_assert_eq(mlen, 0);
    cr_assert_eq(sp_page_size(sp), PS);
    cr_assert_eq(sp_ckpt_seq(sp), 1);
    cr_assert_eq(fs_file_pages(sp_freespace_of(sp)), 2);
    sp_close(sp);
    cr_assert_eq(file_size(), 2 * PS);
    cr_assert_eq(open_cfg(&sp, 0, false, false, &meta, &mlen, &created), SHALE_OK);
    cr_assert(!created);
    cr_assert_eq(sp_ckpt_seq(sp), 1);
    sp_close(sp);
}

Test(space, open_missing_without_create_is_enoent)
{
    sp_space *sp;
    cr_assert_eq(open_cfg(&sp, 0, false, false, NULL, NULL, NULL), SHALE_ENOENT);
    cr_assert_null(sp);
}

Test(space, create_with_a_bad_page_size_is_einval)
{
    sp_config cfg = {.path = path, .page_size = 3000, .create = true};
    sp_space *sp;
    cr_assert_eq(sp_open(&cfg, &sp, NULL, NULL, NULL), SHALE_EINVAL);
    cfg.page_size = 512;
    cr_assert_eq(sp_open(&cfg, &sp, NULL, NULL, NULL), SHALE_EINVAL);
}

Test(space, empty_file_is_created_again)
{
    sp_space *sp;
    bool created;
    FILE *f = fopen(path, "w");
    fclose(f);
    cr_assert_eq(open_cfg(&sp, 0, true, false, NULL, NULL, &created), SHALE_OK);
    cr_assert(created);
    sp_close(sp);
}

/* read_back -- a first read of each page misses, later ones hit (either path). */
static void read_back(bool mapped)
{
    sp_space *sp = open_rw();
    sp_stats st;
    uint64_t first = write_run(sp, 10, 100);

    for (int round = 0; round < 3; round++)
        for (uint64_t i = 0; i < 10; i++)
            cr_assert_eq(tag_of(sp, first + i), 100 + i);
    sp_stats_get(sp, &st);
    cr_assert_eq(st.cache_misses, 10);
    cr_assert_eq(st.cache_hits, 20);
    cr_assert_eq(st.pages_written, 10);
    cr_assert_eq(st.mapped_reads, mapped ? 30 : 0);
    sp_close(sp);
}

Test(space, pages_are_read_back_through_the_mapping)
{
    read_back(true);
}

Test(space, pages_are_read_back_through_the_cache)
{
    cache_only();
    read_back(false);
}

/* rewrite_read -- a rewritten page reads back new. */
static void rewrite_read(void)
{
    sp_space *sp = open_rw();
    uint64_t p = write_run(sp, 1, 1);

    cr_assert_eq(tag_of(sp, p), 1);
    rewrite(sp, p, 2);
    cr_assert_eq(tag_of(sp, p), 2);
    sp_close(sp);
}

Test(space, rewrite_is_seen_through_the_mapping)
{
    rewrite_read();
}

Test(space, rewrite_drops_the_stale_cache_entry)
{
    cache_only();
    rewrite_read();
}

/* (Cache only: a mapped page shows a rewrite at once, see space.h.) */
Test(space, rewrite_while_pinned_keeps_the_pinners_copy)
{
    cache_only();
    sp_space *sp = open_rw();
    uint64_t p = write_run(sp, 1, 1);
    sp_page *old;

    cr_assert_eq(sp_page_get(sp, p, &old), SHALE_OK);
    rewrite(sp, p, 2);
    cr_assert_eq(get_u32(sp_page_data(old) + SP_PAGE_HDR), 1);
    cr_assert_eq(tag_of(sp, p), 2);
    sp_page_put(sp, old); /* freed now: ASan would catch a leak or double free */
    cr_assert_eq(tag_of(sp, p), 2);
    sp_close(sp);
}

Test(space, small_cache_evicts_yet_serves_every_page)
{
    sp_space *sp;
    sp_page *pins[40];
    uint64_t first;

    cache_only();
    cr_assert_eq(open_cfg(&sp, 8 * PS, true, false, NULL, NULL, NULL), SHALE_OK);
    first = write_run(sp, 200, 7);
    for (int round = 0; round < 2; round++)
        for (uint64_t i = 0; i < 200; i++)
            cr_assert_eq(tag_of(sp, first + i), 7 + i);
    /* more pins than the budget: the cache grows rather than failing */
    for (int i = 0; i < 40; i++)
        cr_assert_eq(sp_page_get(sp, first + (uint64_t)i, &pins[i]), SHALE_OK);
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(get_u32(sp_page_data(pins[i]) + SP_PAGE_HDR), 7 + (uint32_t)i);
        sp_page_put(sp, pins[i]);
    }
    sp_close(sp);
}

typedef struct reader_arg {
    sp_space *sp;
    uint64_t first;
    unsigned seed;
} reader_arg;

/* reader -- read random pages and check each one's tag. */
static void *reader(void *p)
{
    reader_arg *a = p;
    for (int i = 0; i < 20000; i++) {
        sp_page *pg;
        uint64_t k = (uint64_t)rand_r(&a->seed) % 300;
        if (sp_page_get(a->sp, a->first + k, &pg) != SHALE_OK)
            return (void *)1;
        if (get_u32(sp_page_data(pg) + SP_PAGE_HDR) != 1000 + k)
            return (void *)2;
        sp_page_put(a->sp, pg);
    }
    return NULL;
}

/* concurrent_reads -- four threads read random pages and check each one. */
static void concurrent_reads(void)
{
    sp_space *sp;
    pthread_t t[4];
    reader_arg args[4];
    void *res;
    uint64_t first;

    cr_assert_eq(open_cfg(&sp, 64 * PS, true, false, NULL, NULL, NULL), SHALE_OK);
    first = write_run(sp, 300, 1000);
    for (int i = 0; i < 4; i++) {
        args[i] = (reader_arg){sp, first, (unsigned)i + 1};
        cr_assert_eq(pthread_create(&t[i], NULL, reader, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &res);
        cr_expect_null(res);
    }
    sp_close(sp);
}

Test(space, concurrent_readers_get_the_right_pages)
{
    concurrent_reads();
}

Test(space, concurrent_readers_get_the_right_pages_through_the_cache)
{
    cache_only();
    concurrent_reads();
}

Test(space, read_run_verifies_every_page)
{
    sp_blocklist live = BL_INIT;
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 5, 50);
    uint8_t *buf = malloc(5 * PS);

    cr_assert_eq(sp_read_run(sp, first, 5, buf), SHALE_OK);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(get_u32(buf + (size_t)i * PS + SP_PAGE_HDR), 50 + (uint32_t)i);
    cr_assert_eq(sp_read_run(sp, first + 1, 5, buf), SHALE_ECORRUPT); /* past the file */
    bl_add(&live, first, first + 4);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    bl_free(&live);
    sp_close(sp);
    poke((first + 3) * PS + 100, 0x77);
    sp = open_rw();
    cr_assert_eq(sp_read_run(sp, first, 5, buf), SHALE_ECORRUPT);
    cr_assert_eq(sp_read_run(sp, first, 3, buf), SHALE_OK);
    sp_close(sp);
    free(buf);
}

Test(space, corrupted_page_is_ecorrupt)
{
    sp_blocklist live = BL_INIT;
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 3, 9);
    sp_page *pg;

    bl_add(&live, first, first + 2);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    sp_close(sp);
    poke((first + 1) * PS + PS - 1, 0x01); /* last byte of the page */
    sp = open_rw();
    cr_assert_eq(tag_of(sp, first), 9);
    cr_assert_eq(sp_page_get(sp, first + 1, &pg), SHALE_ECORRUPT);
    cr_assert_null(pg);
    cr_assert_eq(tag_of(sp, first + 2), 11);
    sp_close(sp);
    bl_free(&live);
}

Test(space, misdirected_page_is_ecorrupt)
{
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 2, 1);
    uint8_t buf[PS];
    sp_page *pg;

    make_page(buf, first, 5); /* numbered for `first`, written at first + 1 */
#ifdef SHALE_DEBUG
    cr_assert_eq(sp_write_pages(sp, first + 1, buf, 1), SHALE_EINVAL); /* debug build checks */
#endif
    sp_close(sp);
    {
        sp_file *f;
        cr_assert_eq(env->open(env, path, 0, &f), SHALE_OK);
        cr_assert_eq(env->write(f, buf, PS, (first + 1) * PS), SHALE_OK);
        env->close(f);
    }
    sp = open_rw();
    cr_assert_eq(sp_page_get(sp, first + 1, &pg), SHALE_ECORRUPT);
    sp_close(sp);
}

Test(space, page_beyond_the_file_is_ecorrupt)
{
    sp_space *sp = open_rw();
    sp_page *pg;
    uint64_t first = write_run(sp, 2, 1);
    sp_block b;

    cr_assert_eq(sp_page_get(sp, first + 2, &pg), SHALE_ECORRUPT);
    cr_assert_eq(sp_page_get(sp, 0, &pg), SHALE_ECORRUPT);
    cr_assert_eq(sp_page_get(sp, 1, &pg), SHALE_ECORRUPT);
    /* allocated but never written: past the end of the file */
    cr_assert_eq(fs_alloc(sp_freespace_of(sp), 1, &b), SHALE_OK);
    cr_assert_eq(sp_page_get(sp, b.first, &pg), SHALE_ECORRUPT);
    sp_close(sp);
}

Test(space, checkpoint_free_list_and_meta_persist_across_reopen)
{
    sp_blocklist live = BL_INIT, fl = BL_INIT, want = BL_INIT;
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 20, 0);
    void *meta;
    size_t mlen;

    bl_add(&live, first, first + 4);
    bl_add(&live, first + 10, first + 19);
    cr_assert_eq(sp_checkpoint(sp, &live, "meta-1", 6), SHALE_OK);
    cr_assert_eq(sp_ckpt_seq(sp), 2);
    sp_close(sp);
    cr_assert_eq(open_cfg(&sp, 0, false, false, &meta, &mlen, NULL), SHALE_OK);
    cr_assert_eq(mlen, 6);
    cr_assert_eq(memcmp(meta, "meta-1", 6), 0);
    free(meta);
    cr_assert_eq(fs_free_list(sp_freespace_of(sp), &fl), SHALE_OK);
    bl_add(&want, first + 5, first + 9);
    cr_assert(bl_equal(&fl, &want));
    cr_assert_eq(tag_of(sp, first + 12), 12);
    sp_close(sp);
    bl_free(&live);
    bl_free(&fl);
    bl_free(&want);
}

Test(space, retired_pages_become_free_only_after_a_checkpoint)
{
    sp_blocklist live = BL_INIT;
    sp_space *sp = open_rw();
    sp_freespace *fs = sp_freespace_of(sp);
    uint64_t first = write_run(sp, 10, 0), p, fp;
    sp_stats st;
    sp_block b;

    bl_add(&live, first, first + 9);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    cr_assert_eq(fs_retire_block(fs, first + 2, first + 4), SHALE_OK);
    bl_remove(&live, first + 2, first + 4);
    fp = fs_file_pages(fs);
    cr_assert_eq(fs_alloc(fs, 3, &b), SHALE_OK);
    cr_assert_eq(b.first, fp, "pending pages must not be reused");
    cr_assert_eq(fs_release(fs, b.first, b.last), SHALE_OK);
    sp_stats_get(sp, &st);
    cr_assert_eq(st.pending_pages, 3);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    sp_stats_get(sp, &st);
    cr_assert_eq(st.pending_pages, 0);
    cr_assert_eq(st.checkpoints, 2);
    p = write_run(sp, 3, 0);
    cr_assert_eq(p, first + 2);
    sp_close(sp);
    bl_free(&live);
}

Test(space, checkpoint_truncates_a_free_tail)
{
    sp_blocklist live = BL_INIT;
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 30, 0);

    bl_add(&live, first, first + 29);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    cr_assert_eq(file_size(), (first + 30) * PS);
    cr_assert_eq(fs_retire_block(sp_freespace_of(sp), first + 10, first + 29), SHALE_OK);
    bl_remove(&live, first + 10, first + 29);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK); /* frees them */
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK); /* trims them */
    cr_assert_eq(fs_file_pages(sp_freespace_of(sp)), first + 10);
    cr_assert_eq(file_size(), (first + 10) * PS);
    sp_close(sp);
    sp = open_rw();
    cr_assert_eq(fs_file_pages(sp_freespace_of(sp)), first + 10);
    cr_assert_eq(tag_of(sp, first + 9), 9);
    sp_close(sp);
    bl_free(&live);
}

Test(space, open_truncates_pages_beyond_the_header)
{
    sp_blocklist live = BL_INIT;
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 4, 0);

    bl_add(&live, first, first + 3);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    write_run(sp, 6, 0); /* written after the checkpoint: free on reopen */
    sp_close(sp);
    cr_assert_eq(file_size(), (first + 10) * PS);
    sp = open_rw();
    cr_assert_eq(file_size(), (first + 4) * PS);
    cr_assert_eq(fs_file_pages(sp_freespace_of(sp)), first + 4);
    sp_close(sp);
    bl_free(&live);
}

Test(space, torn_newest_slot_falls_back_to_the_previous_checkpoint)
{
    sp_space *sp = open_rw();
    void *meta;
    size_t mlen;

    cr_assert_eq(sp_checkpoint(sp, NULL, "two", 3), SHALE_OK);   /* slot 1 */
    cr_assert_eq(sp_checkpoint(sp, NULL, "three", 5), SHALE_OK); /* slot 0 */
    sp_close(sp);
    poke(20, 0xff); /* slot 0: page size field */
    cr_assert_eq(open_cfg(&sp, 0, false, false, &meta, &mlen, NULL), SHALE_OK);
    cr_assert_eq(sp_ckpt_seq(sp), 2);
    cr_assert_eq(mlen, 3);
    cr_assert_eq(memcmp(meta, "two", 3), 0);
    free(meta);
    /* the next checkpoint overwrites the torn slot */
    cr_assert_eq(sp_checkpoint(sp, NULL, "four", 4), SHALE_OK);
    sp_close(sp);
    cr_assert_eq(open_cfg(&sp, 0, false, false, &meta, &mlen, NULL), SHALE_OK);
    cr_assert_eq(sp_ckpt_seq(sp), 3);
    cr_assert_eq(memcmp(meta, "four", 4), 0);
    free(meta);
    sp_close(sp);
}

Test(space, both_slots_torn_is_ecorrupt)
{
    sp_space *sp = open_rw();
    sp_close(sp);
    poke(30, 0x42);
    cr_assert_eq(open_cfg(&sp, 0, false, false, NULL, NULL, NULL), SHALE_ECORRUPT);
}

Test(space, read_only_rejects_writes_and_checkpoints)
{
    sp_space *sp = open_rw();
    uint64_t first = write_run(sp, 1, 5);
    sp_blocklist live = BL_INIT;
    uint8_t buf[PS];

    bl_add(&live, first, first);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_OK);
    sp_close(sp);
    cr_assert_eq(open_cfg(&sp, 0, false, true, NULL, NULL, NULL), SHALE_OK);
    cr_assert_eq(tag_of(sp, first), 5);
    make_page(buf, first, 6);
    cr_assert_eq(sp_write_pages(sp, first, buf, 1), SHALE_EREADONLY);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_EREADONLY);
    sp_close(sp);
    bl_free(&live);
}

Test(space, checkpoint_rejects_live_pages_outside_the_file)
{
    sp_blocklist live = BL_INIT;
    sp_space *sp = open_rw();

    bl_add(&live, 1, 1);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_EINVAL);
    bl_clear(&live);
    bl_add(&live, 2, 2);
    cr_assert_eq(sp_checkpoint(sp, &live, NULL, 0), SHALE_EINVAL);
    cr_assert_eq(sp_ckpt_seq(sp), 1);
    sp_close(sp);
    bl_free(&live);
}

/* --- the POSIX env --- */

Test(env_posix, read_past_the_end_is_ecorrupt)
{
    sp_file *f;
    uint8_t buf[16] = {0};

    cr_assert_eq(env->open(env, path, SP_O_CREATE, &f), SHALE_OK);
    cr_assert_eq(env->write(f, "abcdefgh", 8, 0), SHALE_OK);
    cr_assert_eq(env->read(f, buf, 8, 0), SHALE_OK);
    cr_assert_eq(memcmp(buf, "abcdefgh", 8), 0);
    cr_assert_eq(env->read(f, buf, 9, 0), SHALE_ECORRUPT);
    cr_assert_eq(env->read(f, buf, 1, 100), SHALE_ECORRUPT);
    cr_assert_eq(env->sync(f), SHALE_OK);
    env->close(f);
}

Test(env_posix, size_truncate_and_open_flags)
{
    sp_file *f, *g;
    uint64_t size;

    cr_assert_eq(env->open(env, path, 0, &f), SHALE_ENOENT);
    cr_assert_eq(env->open(env, path, SP_O_CREATE | SP_O_EXCL, &f), SHALE_OK);
    cr_assert_eq(env->open(env, path, SP_O_CREATE | SP_O_EXCL, &g), SHALE_EEXIST);
    cr_assert_eq(env->truncate(f, 12345), SHALE_OK);
    cr_assert_eq(env->size(f, &size), SHALE_OK);
    cr_assert_eq(size, 12345);
    cr_assert_eq(env->open(env, path, SP_O_RDONLY, &g), SHALE_OK);
    cr_assert_eq(env->write(g, "x", 1, 0), SHALE_EIO);
    env->close(g);
    env->close(f);
}

Test(env_posix, second_lock_of_a_path_is_ebusy)
{
    char lp[128];
    sp_lock *a, *b;

    snprintf(lp, sizeof(lp), "%s/LOCK", dir);
    cr_assert_eq(env->lock(env, lp, &a), SHALE_OK);
    cr_assert_eq(env->lock(env, lp, &b), SHALE_EBUSY);
    cr_assert_null(b);
    env->unlock(a);
    cr_assert_eq(env->lock(env, lp, &b), SHALE_OK);
    env->unlock(b);
}

/* count_entry -- list callback counting entries; stops at "stop". */
static int count_entry(void *ctx, const char *name)
{
    (*(int *)ctx)++;
    return strcmp(name, "stop") == 0 ? 7 : 0;
}

Test(env_posix, directories_list_exists_remove)
{
    char sub[128], file[160];
    sp_file *f;
    int n = 0;

    snprintf(sub, sizeof(sub), "%s/sub", dir);
    cr_assert_eq(env->mkdir(env, sub), SHALE_OK);
    cr_assert_eq(env->mkdir(env, sub), SHALE_EEXIST);
    cr_assert_eq(env->exists(env, sub), 1);
    snprintf(file, sizeof(file), "%s/a", sub);
    cr_assert_eq(env->exists(env, file), 0);
    cr_assert_eq(env->open(env, file, SP_O_CREATE, &f), SHALE_OK);
    env->close(f);
    cr_assert_eq(env->exists(env, file), 1);
    cr_assert_eq(env->list(env, sub, count_entry, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(env->sync_dir(env, sub), SHALE_OK);
    cr_assert_eq(env->remove(env, file), SHALE_OK);
    cr_assert_eq(env->remove(env, file), SHALE_ENOENT);
    snprintf(file, sizeof(file), "%s/stop", sub);
    cr_assert_eq(env->open(env, file, SP_O_CREATE, &f), SHALE_OK);
    env->close(f);
    n = 0;
    cr_assert_eq(env->list(env, sub, count_entry, &n), 7);
    cr_assert_eq(env->remove(env, file), SHALE_OK);
    cr_assert_eq(rmdir(sub), 0);
    cr_assert_eq(env->list(env, sub, count_entry, &n), SHALE_ENOENT);
    cr_assert_eq(sp_errno_to_rc(28 /* ENOSPC */), SHALE_ENOSPC);
}

/* --- power loss at every sync point of a run of checkpoints (memenv) --- */

#define CRASH_CKPTS 10

typedef struct crash_state {
    memenv *m;
    sp_space *sp;
    sp_blocklist live;
    uint64_t cut;  /* sync point at which the power goes; 0: never */
    uint64_t done; /* highest checkpoint that sp_checkpoint reported durable */
} crash_state;

/* cut_hook -- cut the power at sync point cut. */
static int cut_hook(void *ctx, uint64_t point, const char *p)
{
    return point == ((crash_state *)ctx)->cut;
}

/* crash_open -- open /db/data on the memenv; returns the meta (or NULL). */
static int crash_open(crash_state *cs, void **meta, size_t *mlen)
{
    sp_config cfg = {.env = memenv_env(cs->m),
                     .path = "/db/data",
                     .page_size = 1024,
                     .cache_bytes = 16 * 1024,
                     .create = true};
    return sp_open(&cfg, &cs->sp, meta, mlen, NULL);
}

/* crash_meta -- meta of checkpoint i: u64 i, the live list, padding (spills
 * out of a 1 KiB slot every other checkpoint). */
static uint8_t *crash_meta(uint64_t i, const sp_blocklist *live, size_t *len)
{
    size_t bl = bl_encoded_len(live), pad = i % 2 ? 1500 : 10;
    uint8_t *m = calloc(1, 8 + bl + pad);
    put_u64(m, i);
    bl_encode(live, m + 8);
    *len = 8 + bl + pad;
    return m;
}

/* crash_step -- write pages for checkpoint i, retire some, checkpoint. */
static int crash_step(crash_state *cs, uint64_t i, unsigned *seed)
{
    sp_freespace *fs = sp_freespace_of(cs->sp);
    uint64_t n = 1 + (uint64_t)rand_r(seed) % 6;
    uint8_t buf[6 * 1024];
    sp_block b;
    size_t len;
    uint8_t *meta;
    int rc;

    RET(fs_alloc(fs, n, &b));
    for (uint64_t k = 0; k < n; k++) {
        sp_page_init(buf + k * 1024, 1024, SP_PT_LEAF, b.first + k, i);
        sp_page_seal(buf + k * 1024, 1024);
    }
    RET(sp_write_pages(cs->sp, b.first, buf, n));
    cr_assert_eq(bl_add(&cs->live, b.first, b.last), SHALE_OK);
    if (cs->live.n > 2 && rand_r(seed) % 2) {
        sp_block old = cs->live.v[(size_t)rand_r(seed) % (cs->live.n - 1)];
        RET(fs_retire_block(fs, old.first, old.last));
        cr_assert_eq(bl_remove(&cs->live, old.first, old.last), SHALE_OK);
    }
    meta = crash_meta(i, &cs->live, &len);
    rc = sp_checkpoint(cs->sp, &cs->live, meta, len);
    free(meta);
    if (rc == SHALE_OK)
        cs->done = i;
    return rc;
}

/* crash_verify -- the recovered checkpoint is at least the last durable one,
 * and every page it names as live reads back intact. */
static void crash_verify(crash_state *cs, const uint8_t *meta, size_t mlen)
{
    sp_blocklist live = BL_INIT;
    uint64_t i = 0;
    size_t used;

    if (mlen) {
        cr_assert_geq(mlen, 9);
        i = get_u64(meta);
        cr_assert_eq(bl_decode(&live, meta + 8, mlen - 8, &used), SHALE_OK);
    }
    cr_assert_geq(i, cs->done, "cut %lu: recovered checkpoint %lu, durable was %lu",
                  (unsigned long)cs->cut, (unsigned long)i, (unsigned long)cs->done);
    cr_assert_leq(i, cs->done + 1);
    for (size_t k = 0; k < live.n; k++)
        for (uint64_t p = live.v[k].first; p <= live.v[k].last; p++) {
            sp_page *pg;
            cr_assert_eq(sp_page_get(cs->sp, p, &pg), SHALE_OK, "cut %lu: page %lu",
                         (unsigned long)cs->cut, (unsigned long)p);
            cr_assert_leq(sp_page_gen(sp_page_data(pg)), i);
            sp_page_put(cs->sp, pg);
        }
    bl_free(&live);
}

/* crash_run -- run the workload, cutting the power at sync point cut;
 * returns the sync points the run used. */
static uint64_t crash_run(uint64_t cut, uint64_t seed)
{
    crash_state cs = {.m = memenv_create(), .live = BL_INIT, .cut = cut};
    unsigned rseed = 12345;
    void *meta;
    size_t mlen;
    uint64_t points;

    cr_assert_not_null(cs.m);
    cr_assert_eq(memenv_env(cs.m)->mkdir(memenv_env(cs.m), "/db"), SHALE_OK);
    cr_assert_eq(crash_open(&cs, NULL, NULL), SHALE_OK);
    cr_assert_eq(memenv_sync_all(cs.m), SHALE_OK);
    memenv_set_sync_hook(cs.m, cut_hook, &cs);
    for (uint64_t i = 1; i <= CRASH_CKPTS; i++)
        if (crash_step(&cs, i, &rseed) != SHALE_OK)
            break;
    points = memenv_sync_points(cs.m);
    memenv_set_sync_hook(cs.m, NULL, NULL);
    sp_close(cs.sp);
    if (memenv_crashed(cs.m))
        cr_assert_eq(memenv_revive(cs.m, seed), SHALE_OK);
    else
        cr_assert_eq(memenv_power_loss(cs.m, seed), SHALE_OK);
    cr_assert_eq(crash_open(&cs, &meta, &mlen), SHALE_OK, "cut %lu seed %lu", (unsigned long)cut,
                 (unsigned long)seed);
    crash_verify(&cs, meta, mlen);
    free(meta);
    /* and it goes on working */
    cr_assert_eq(sp_checkpoint(cs.sp, NULL, NULL, 0), SHALE_OK);
    sp_close(cs.sp);
    bl_free(&cs.live);
    memenv_destroy(cs.m);
    return points;
}

Test(space_crash, power_loss_at_any_sync_point_keeps_a_durable_checkpoint)
{
    uint64_t points = crash_run(0, 1);

    cr_assert_geq(points, 2 * CRASH_CKPTS);
    for (uint64_t cut = 1; cut <= points; cut++)
        for (uint64_t seed = 1; seed <= 4; seed++)
            crash_run(cut, seed * 7919 + cut);
}

Test(space_crash, failed_checkpoints_leave_the_previous_one_in_force)
{
    for (uint64_t n = 1; n <= 40; n++) {
        crash_state cs = {.m = memenv_create(), .live = BL_INIT};
        memenv_fault fault = {
            .n = n, .kinds = MEM_OP_WRITE | MEM_OP_SYNC | MEM_OP_TRUNCATE, .torn = true, .seed = n};
        unsigned rseed = 99;
        void *meta;
        size_t mlen;
        uint64_t i;

        cr_assert_eq(memenv_env(cs.m)->mkdir(memenv_env(cs.m), "/db"), SHALE_OK);
        cr_assert_eq(crash_open(&cs, NULL, NULL), SHALE_OK);
        memenv_set_fault(cs.m, &fault);
        for (i = 1; i <= CRASH_CKPTS; i++)
            crash_step(&cs, i, &rseed); /* one call fails somewhere */
        memenv_set_fault(cs.m, NULL);
        cr_assert_eq(crash_step(&cs, i, &rseed), SHALE_OK, "fault at call %lu", (unsigned long)n);
        sp_close(cs.sp);
        cr_assert_eq(memenv_power_loss(cs.m, n), SHALE_OK);
        cr_assert_eq(crash_open(&cs, &meta, &mlen), SHALE_OK);
        crash_verify(&cs, meta, mlen);
        cr_assert_eq(get_u64(meta), i);
        free(meta);
        sp_close(cs.sp);
        bl_free(&cs.live);
        memenv_destroy(cs.m);
    }
}
