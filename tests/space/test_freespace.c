/*
 * test_freespace.c -- the allocator: earliest-fit reuse, growth, the
 * pending -> in-flight -> free protocol around checkpoints, tail trimming,
 * rejected double frees, and concurrent use.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>

#include "../../src/space/freespace.h"
#include "shale.h"

static sp_freespace *fs;

/* fs_with -- an allocator over file_pages pages with the given free blocks. */
static sp_freespace *fs_with(uint64_t file_pages, size_t n, const uint64_t *pairs)
{
    sp_blocklist fl = BL_INIT;
    sp_freespace *f;

    for (size_t i = 0; i < n; i++)
        cr_assert_eq(bl_add(&fl, pairs[2 * i], pairs[2 * i + 1]), SHALE_OK);
    cr_assert_eq(fs_create(&fl, file_pages, &f), SHALE_OK);
    bl_free(&fl);
    return f;
}

/* alloc_at -- allocate want pages and expect them at first. */
static void alloc_at(uint64_t want, uint64_t first)
{
    sp_block b;
    cr_assert_eq(fs_alloc(fs, want, &b), SHALE_OK);
    cr_assert_eq(b.first, first, "alloc %lu: got %lu want %lu", (unsigned long)want,
                 (unsigned long)b.first, (unsigned long)first);
    cr_assert_eq(b.last, first + want - 1);
}

/* counts -- free and pending page counts. */
static void counts(uint64_t want_free, uint64_t want_pending)
{
    uint64_t f, p;
    fs_counts(fs, &f, &p);
    cr_assert_eq(f, want_free, "free %lu want %lu", (unsigned long)f, (unsigned long)want_free);
    cr_assert_eq(p, want_pending, "pending %lu want %lu", (unsigned long)p,
                 (unsigned long)want_pending);
}

static void teardown(void)
{
    fs_destroy(fs);
    fs = NULL;
}

TestSuite(freespace, .fini = teardown);

Test(freespace, new_file_grows_from_the_first_data_page)
{
    fs = fs_with(SP_FIRST_DATA_PAGE, 0, NULL);
    cr_assert_eq(fs_file_pages(fs), SP_FIRST_DATA_PAGE);
    alloc_at(3, 2);
    alloc_at(1, 5);
    cr_assert_eq(fs_file_pages(fs), 6);
    counts(0, 0);
}

Test(freespace, rejects_bad_arguments)
{
    sp_block b;
    sp_blocklist fl = BL_INIT;
    sp_freespace *f;

    fs = fs_with(10, 0, NULL);
    cr_assert_eq(fs_alloc(fs, 0, &b), SHALE_EINVAL);
    cr_assert_eq(fs_create(NULL, 1, &f), SHALE_EINVAL);
    bl_add(&fl, 1, 3); /* a header slot cannot be free */
    cr_assert_eq(fs_create(&fl, 10, &f), SHALE_EINVAL);
    bl_clear(&fl);
    bl_add(&fl, 5, 10); /* beyond the file */
    cr_assert_eq(fs_create(&fl, 10, &f), SHALE_EINVAL);
    bl_free(&fl);
}

Test(freespace, alloc_reuses_the_earliest_block_that_fits)
{
    fs = fs_with(100, 3, (uint64_t[]){10, 11, 20, 29, 40, 59});
    alloc_at(5, 20); /* 10-11 too small */
    alloc_at(2, 10); /* earliest block that fits */
    alloc_at(5, 25);
    alloc_at(10, 40);
    alloc_at(1, 50); /* taken from the start of 50-59 */
    counts(9, 0);
}

Test(freespace, alloc_upto_takes_shorter_free_blocks_before_growing)
{
    sp_block b;
    fs = fs_with(200, 3, (uint64_t[]){10, 19, 30, 99, 150, 199});
    /* the earliest block of at least 16: [30, 99], 64 of it */
    cr_assert_eq(fs_alloc_upto(fs, 64, 16, &b), SHALE_OK);
    cr_assert_eq(b.first, 30);
    cr_assert_eq(b.last, 93);
    /* [94, 99] is too short for 16: the 10-page block is too; the tail grows */
    cr_assert_eq(fs_alloc_upto(fs, 64, 16, &b), SHALE_OK);
    cr_assert_eq(b.first, 150);
    cr_assert_eq(b.last, 213);
    /* a short block whole when min allows it */
    cr_assert_eq(fs_alloc_upto(fs, 64, 8, &b), SHALE_OK);
    cr_assert_eq(b.first, 10);
    cr_assert_eq(b.last, 19);
    cr_assert_eq(fs_alloc_upto(fs, 4, 8, &b), SHALE_EINVAL);
    cr_assert_eq(fs_alloc_upto(fs, 4, 0, &b), SHALE_EINVAL);
    cr_assert_eq(fs_alloc_upto(fs, 0, 0, &b), SHALE_EINVAL);
}

Test(freespace, alloc_grows_the_file_when_nothing_fits)
{
    fs = fs_with(100, 1, (uint64_t[]){10, 12});
    alloc_at(4, 100);
    cr_assert_eq(fs_file_pages(fs), 104);
    counts(3, 0);
}

Test(freespace, alloc_extends_a_free_block_at_the_end_of_the_file)
{
    fs = fs_with(100, 2, (uint64_t[]){10, 11, 97, 99});
    alloc_at(5, 97);
    cr_assert_eq(fs_file_pages(fs), 102);
    counts(2, 0);
}

Test(freespace, release_frees_at_once)
{
    fs = fs_with(2, 0, NULL);
    alloc_at(4, 2);
    cr_assert_eq(fs_release(fs, 3, 4), SHALE_OK);
    counts(2, 0);
    alloc_at(2, 3);
}

Test(freespace, release_and_retire_reject_double_frees)
{
    fs = fs_with(20, 1, (uint64_t[]){5, 9});
    cr_assert_eq(fs_release(fs, 8, 12), SHALE_EINVAL);
    cr_assert_eq(fs_retire_block(fs, 9, 9), SHALE_EINVAL);
    cr_assert_eq(fs_retire_block(fs, 12, 13), SHALE_OK);
    cr_assert_eq(fs_retire_block(fs, 13, 14), SHALE_EINVAL);
    cr_assert_eq(fs_release(fs, 0, 1), SHALE_EINVAL);
    cr_assert_eq(fs_release(fs, 19, 20), SHALE_EINVAL);
    counts(5, 2);
}

Test(freespace, pending_pages_are_not_reused_until_a_checkpoint_ends)
{
    fs = fs_with(2, 0, NULL);
    alloc_at(10, 2);
    cr_assert_eq(fs_retire_block(fs, 2, 5), SHALE_OK);
    counts(0, 4);
    alloc_at(2, 12); /* pending pages are skipped */
    fs_ckpt_begin(fs);
    alloc_at(1, 14); /* in-flight pages too */
    fs_ckpt_end(fs, 1);
    counts(4, 0);
    alloc_at(4, 2);
}

Test(freespace, failed_checkpoint_returns_pages_to_pending)
{
    fs = fs_with(2, 0, NULL);
    alloc_at(10, 2);
    cr_assert_eq(fs_retire_block(fs, 4, 6), SHALE_OK);
    fs_ckpt_begin(fs);
    fs_ckpt_end(fs, 0);
    counts(0, 3);
    fs_ckpt_begin(fs);
    fs_ckpt_end(fs, 1);
    counts(3, 0);
}

Test(freespace, retire_during_a_checkpoint_waits_for_the_next_one)
{
    sp_blocklist pages = BL_INIT;

    fs = fs_with(2, 0, NULL);
    alloc_at(20, 2);
    cr_assert_eq(fs_retire_block(fs, 2, 3), SHALE_OK);
    fs_ckpt_begin(fs);
    bl_add(&pages, 10, 12);
    bl_add(&pages, 15, 15);
    cr_assert_eq(fs_retire(fs, &pages), SHALE_OK);
    fs_ckpt_end(fs, 1);
    counts(2, 4);
    alloc_at(3, 22); /* 2-3 free but too small; 10-12 still pending */
    fs_ckpt_begin(fs);
    fs_ckpt_end(fs, 1);
    counts(6, 0);
    alloc_at(3, 10);
    bl_free(&pages);
}

Test(freespace, begin_keep_leaves_pages_still_named_live_pending)
{
    sp_blocklist live = BL_INIT;

    fs = fs_with(2, 0, NULL);
    alloc_at(20, 2);
    cr_assert_eq(fs_retire_block(fs, 5, 14), SHALE_OK);
    bl_add(&live, 8, 9);
    cr_assert_eq(fs_ckpt_begin_keep(fs, &live), SHALE_OK);
    fs_ckpt_end(fs, 1);
    counts(8, 2);
    bl_clear(&live);
    cr_assert_eq(fs_ckpt_begin_keep(fs, &live), SHALE_OK);
    fs_ckpt_end(fs, 1);
    counts(10, 0);
    bl_free(&live);
}

Test(freespace, trim_tail_drops_a_free_run_at_the_end)
{
    sp_blocklist fl = BL_INIT;

    fs = fs_with(50, 2, (uint64_t[]){10, 19, 40, 49});
    cr_assert_eq(fs_trim_tail(fs), 40);
    cr_assert_eq(fs_file_pages(fs), 40);
    cr_assert_eq(fs_trim_tail(fs), 40); /* nothing more to trim */
    cr_assert_eq(fs_free_list(fs, &fl), SHALE_OK);
    cr_assert_eq(fl.n, 1);
    cr_assert_eq(fl.v[0].first, 10);
    alloc_at(11, 40); /* 10-19 too small: grows from the trimmed end */
    bl_free(&fl);
}

Test(freespace, trim_tail_leaves_pending_pages_alone)
{
    fs = fs_with(2, 0, NULL);
    alloc_at(10, 2);
    cr_assert_eq(fs_retire_block(fs, 8, 11), SHALE_OK);
    cr_assert_eq(fs_trim_tail(fs), 12);
    fs_ckpt_begin(fs);
    fs_ckpt_end(fs, 1);
    cr_assert_eq(fs_trim_tail(fs), 8);
}

/* worker -- allocate, check exclusivity via a shared map, release. */
static void *worker(void *arg)
{
    uint8_t *owner = arg;
    for (int i = 0; i < 2000; i++) {
        sp_block b;
        uint64_t want = 1 + (uint64_t)(i % 7);
        if (fs_alloc(fs, want, &b) != SHALE_OK)
            return (void *)1;
        for (uint64_t p = b.first; p <= b.last; p++) {
            if (p >= 4096 || __atomic_exchange_n(&owner[p], 1, __ATOMIC_SEQ_CST))
                return (void *)1;
        }
        for (uint64_t p = b.first; p <= b.last; p++)
            __atomic_store_n(&owner[p], 0, __ATOMIC_SEQ_CST);
        if (fs_release(fs, b.first, b.last) != SHALE_OK)
            return (void *)1;
    }
    return NULL;
}

Test(freespace, concurrent_allocations_never_share_a_page)
{
    pthread_t t[4];
    static uint8_t owner[4096];
    void *res;

    fs = fs_with(2, 0, NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker, owner), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &res);
        cr_expect_null(res);
    }
    cr_assert_leq(fs_file_pages(fs), 2 + 4 * 7 * 2);
}
