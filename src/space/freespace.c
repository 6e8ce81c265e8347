/*
 * freespace.c -- the free-space allocator of the page file.
 *
 * State, all under one mutex:
 *   free        blocklist of pages reusable now;
 *   pending     pages retired since the last fs_ckpt_begin;
 *   inflight    pages retired before the running checkpoint began: they become
 *               free when that checkpoint is durable (fs_ckpt_end(ok));
 *   file_pages  the file's logical size in pages; pages at or beyond it are
 *               free by definition and not listed.  Changed only under the
 *               mutex, but atomic so that page reads can check against it
 *               without taking the mutex.
 *
 * Invariants: free, pending and inflight are disjoint, lie in
 * [SP_FIRST_DATA_PAGE, file_pages), and no free block ends at file_pages - 1
 * unless fs_alloc or fs_release put it there since the last trim (fs_trim_tail
 * removes it).  A page retired during a checkpoint lands in pending, not in
 * inflight: the header being written may still have been computed while that
 * page was live, so only the next checkpoint may free it.
 *
 * Allocation is earliest-fit: the lowest free block with at least `want`
 * pages, cut from its start.  Failing that, a free block ending at the end of
 * the file is extended by growing the file (so the run stays contiguous), or
 * else the file grows by `want` pages.  Growing only moves file_pages; the
 * writer's pwrite extends the file itself.
 *
 * When an update of a list cannot allocate memory in fs_ckpt_begin/end (which
 * cannot fail), pages stay in the more conservative state (inflight rather
 * than free): at worst they are leaked until the next checkpoint or reopen,
 * never reused early.
 *
 * Nothing here is on disk; the header (header.c) persists the free list.
 */
#include "freespace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common.h"

struct sp_freespace {
    pthread_mutex_t mu;
    sp_blocklist free;
    sp_blocklist pending;
    sp_blocklist inflight;
    _Atomic uint64_t file_pages; /* written under mu; read without it */
};

/* fs_list_in_range -- whether every page of bl lies in [lo, hi). */
static bool fs_list_in_range(const sp_blocklist *bl, uint64_t lo, uint64_t hi)
{
    return bl->n == 0 || (bl->v[0].first >= lo && bl->v[bl->n - 1].last < hi);
}

/* fs_create -- an allocator over a file of file_pages pages, free ones given. */
int fs_create(const sp_blocklist *free_list, uint64_t file_pages, sp_freespace **fsp)
{
    sp_freespace *fs;
    int rc = SHALE_OK;

    *fsp = NULL;
    if (file_pages < SP_FIRST_DATA_PAGE ||
        (free_list && !fs_list_in_range(free_list, SP_FIRST_DATA_PAGE, file_pages)))
        return SHALE_EINVAL;
    fs = calloc(1, sizeof(*fs));
    if (fs == NULL)
        return SHALE_ENOMEM;
    bl_init(&fs->free);
    bl_init(&fs->pending);
    bl_init(&fs->inflight);
    fs->file_pages = file_pages;
    if (free_list)
        ERR(bl_copy(&fs->free, free_list));
    if (pthread_mutex_init(&fs->mu, NULL) != 0)
        ERR_SET(SHALE_ENOMEM);
    *fsp = fs;
    return SHALE_OK;
err:
    bl_free(&fs->free);
    free(fs);
    return rc;
}

/* fs_destroy -- free the allocator. */
void fs_destroy(sp_freespace *fs)
{
    if (fs == NULL)
        return;
    pthread_mutex_destroy(&fs->mu);
    bl_free(&fs->free);
    bl_free(&fs->pending);
    bl_free(&fs->inflight);
    free(fs);
}

/* fs_alloc_locked -- fs_alloc with the mutex held. */
static int fs_alloc_locked(sp_freespace *fs, uint64_t want, sp_block *out)
{
    sp_blocklist *fl = &fs->free;
    uint64_t start = fs->file_pages;

    for (size_t i = 0; i < fl->n; i++) {
        if (fl->v[i].last - fl->v[i].first + 1 >= want) {
            start = fl->v[i].first;
            break;
        }
    }
    if (start == fs->file_pages && fl->n > 0 && fl->v[fl->n - 1].last + 1 == fs->file_pages)
        start = fl->v[fl->n - 1].first; /* extend the free tail block */
    if (start > UINT64_MAX - want)
        return SHALE_ENOSPC;
    RET(bl_remove(fl, start, start + want - 1));
    if (start + want > fs->file_pages)
        fs->file_pages = start + want;
    out->first = start;
    out->last = start + want - 1;
    return SHALE_OK;
}

/* fs_alloc -- loan a block of exactly `want` pages (want >= 1). */
int fs_alloc(sp_freespace *fs, uint64_t want, sp_block *out)
{
    int rc;

    if (want == 0 || out == NULL)
        return SHALE_EINVAL;
    pthread_mutex_lock(&fs->mu);
    rc = fs_alloc_locked(fs, want, out);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* fs_alloc_upto -- loan up to `want` pages: the earliest free block of at
 * least `min` pages, whole if it is shorter than want; else, as fs_alloc,
 * `want` pages from the tail.  Page streams take it, so free space broken
 * into blocks shorter than their loan is used before the file grows. */
int fs_alloc_upto(sp_freespace *fs, uint64_t want, uint64_t min, sp_block *out)
{
    int rc;

    if (want == 0 || min == 0 || min > want || out == NULL)
        return SHALE_EINVAL;
    pthread_mutex_lock(&fs->mu);
    const sp_blocklist *fl = &fs->free;
    uint64_t take = want;
    for (size_t i = 0; i < fl->n; i++) {
        uint64_t len = fl->v[i].last - fl->v[i].first + 1;
        bool tail = fl->v[i].last + 1 == fs->file_pages;
        if (len >= min && !tail) {
            take = MIN(len, want);
            break;
        }
    }
    rc = fs_alloc_locked(fs, take, out);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* fs_block_ok -- whether {first, last} is a sane block inside the file. */
static bool fs_block_ok(const sp_freespace *fs, uint64_t first, uint64_t last)
{
    return first >= SP_FIRST_DATA_PAGE && first <= last && last < fs->file_pages;
}

/* fs_tracked -- whether any page of {first, last} is free, pending or in-flight. */
static bool fs_tracked(const sp_freespace *fs, uint64_t first, uint64_t last)
{
    return bl_overlaps(&fs->free, first, last) || bl_overlaps(&fs->pending, first, last) ||
           bl_overlaps(&fs->inflight, first, last);
}

/* fs_release -- give back loaned, never-published pages: free at once. */
int fs_release(sp_freespace *fs, uint64_t first, uint64_t last)
{
    int rc = SHALE_EINVAL;

    pthread_mutex_lock(&fs->mu);
    if (fs_block_ok(fs, first, last) && !fs_tracked(fs, first, last))
        rc = bl_add(&fs->free, first, last);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* fs_retire_list_ok -- every block of pages is inside the file and untracked. */
static bool fs_retire_list_ok(const sp_freespace *fs, const sp_blocklist *pages)
{
    for (size_t i = 0; i < pages->n; i++) {
        if (!fs_block_ok(fs, pages->v[i].first, pages->v[i].last) ||
            fs_tracked(fs, pages->v[i].first, pages->v[i].last))
            return false;
    }
    return true;
}

/* fs_retire -- pages a commit stopped referencing: pending. */
int fs_retire(sp_freespace *fs, const sp_blocklist *pages)
{
    int rc = SHALE_EINVAL;

    pthread_mutex_lock(&fs->mu);
    if (fs_retire_list_ok(fs, pages))
        rc = bl_add_list(&fs->pending, pages);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* fs_retire_block -- retire one block. */
int fs_retire_block(sp_freespace *fs, uint64_t first, uint64_t last)
{
    int rc = SHALE_EINVAL;

    pthread_mutex_lock(&fs->mu);
    if (fs_block_ok(fs, first, last) && !fs_tracked(fs, first, last))
        rc = bl_add(&fs->pending, first, last);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* fs_move_all -- dst |= src and empty src; on ENOMEM src keeps its pages. */
static void fs_move_all(sp_blocklist *dst, sp_blocklist *src)
{
    if (src->n == 0)
        return;
    if (dst->n == 0) {
        sp_blocklist t = *dst;
        *dst = *src;
        *src = t;
        return;
    }
    if (bl_add_list(dst, src) == SHALE_OK)
        bl_clear(src);
}

/* fs_ckpt_begin -- pending pages become in-flight for this checkpoint. */
void fs_ckpt_begin(sp_freespace *fs)
{
    pthread_mutex_lock(&fs->mu);
    fs_move_all(&fs->inflight, &fs->pending);
    pthread_mutex_unlock(&fs->mu);
}

/* fs_ckpt_begin_keep -- fs_ckpt_begin, except that pending pages in `keep`
 * (the live set the new header will name) stay pending. */
int fs_ckpt_begin_keep(sp_freespace *fs, const sp_blocklist *keep)
{
    sp_blocklist move = BL_INIT, stay = BL_INIT;
    int rc = SHALE_OK;

    pthread_mutex_lock(&fs->mu);
    if (!bl_overlaps_list(&fs->pending, keep)) {
        fs_move_all(&fs->inflight, &fs->pending);
        goto err;
    }
    ERR(bl_copy(&move, &fs->pending));
    ERR(bl_subtract(&move, keep));
    ERR(bl_intersect(&fs->pending, keep, &stay));
    ERR(bl_add_list(&fs->inflight, &move));
    bl_free(&fs->pending);
    fs->pending = stay;
    bl_init(&stay);
err:
    pthread_mutex_unlock(&fs->mu);
    bl_free(&move);
    bl_free(&stay);
    return rc;
}

/* fs_ckpt_end -- in-flight pages become free (ok) or pending again (!ok). */
void fs_ckpt_end(sp_freespace *fs, int ok)
{
    pthread_mutex_lock(&fs->mu);
    fs_move_all(ok ? &fs->free : &fs->pending, &fs->inflight);
    pthread_mutex_unlock(&fs->mu);
}

/* fs_trim_tail -- drop a free run at the end of the file; returns file_pages. */
uint64_t fs_trim_tail(sp_freespace *fs)
{
    uint64_t pages;
    sp_blocklist *fl = &fs->free;

    pthread_mutex_lock(&fs->mu);
    if (fl->n > 0 && fl->v[fl->n - 1].last + 1 == fs->file_pages) {
        fs->file_pages = fl->v[fl->n - 1].first;
        fl->n--; /* dropping the last block keeps the list canonical */
    }
    pages = fs->file_pages;
    pthread_mutex_unlock(&fs->mu);
    return pages;
}

/* fs_file_pages -- the file's logical size in pages (lock-free: page reads
 * check against it). */
uint64_t fs_file_pages(sp_freespace *fs)
{
    return atomic_load_explicit(&fs->file_pages, memory_order_acquire);
}

/* fs_counts -- pages free and pending (incl. in-flight). */
void fs_counts(sp_freespace *fs, uint64_t *free_pages, uint64_t *pending_pages)
{
    pthread_mutex_lock(&fs->mu);
    if (free_pages)
        *free_pages = bl_pages(&fs->free);
    if (pending_pages)
        *pending_pages = bl_pages(&fs->pending) + bl_pages(&fs->inflight);
    pthread_mutex_unlock(&fs->mu);
}

/* fs_free_list -- copy of the free list. */
int fs_free_list(sp_freespace *fs, sp_blocklist *out)
{
    int rc;

    pthread_mutex_lock(&fs->mu);
    rc = bl_copy(out, &fs->free);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* fs_with_file_pages -- call fn(ctx, file_pages) with the allocator locked. */
int fs_with_file_pages(sp_freespace *fs, int (*fn)(void *ctx, uint64_t file_pages), void *ctx)
{
    int rc;

    pthread_mutex_lock(&fs->mu);
    rc = fn(ctx, fs->file_pages);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}
