/*
 * freespace.h -- the free-space allocator of the page file.
 *
 * Pages 0 and 1 are the header slots; every other page below file_pages is in
 * exactly one state, and this module tracks the first three of them:
 *   free     reusable now;
 *   pending  freed by a commit (fs_retire), reusable once a checkpoint begun
 *            after the retire is durable: the header on disk may still name them;
 *   in-flight pending pages a running checkpoint will free when it is durable;
 *   loaned   handed out by fs_alloc and not yet published; returned with
 *            fs_release they are free at once (no header ever named them);
 *   live     published in the current version (owned by lsm, not tracked here).
 *
 * Allocation takes the earliest free block of at least `want` pages (keeping
 * the file compact and runs contiguous); failing that it extends a free block
 * at the end of the file, or grows the file.  A free tail is trimmed at a
 * checkpoint (fs_trim_tail) so the file can be truncated.
 *
 * Thread-safe: one mutex inside.
 */
#ifndef SHALE_FREESPACE_H
#define SHALE_FREESPACE_H

#include <stdint.h>

#include "blocklist.h"

#define SP_FIRST_DATA_PAGE 2 /* pages 0 and 1 are the header slots */

typedef struct sp_freespace sp_freespace;

/* fs_create -- an allocator over a file of file_pages pages, free ones given. */
int fs_create(const sp_blocklist *free, uint64_t file_pages, sp_freespace **fsp);
void fs_destroy(sp_freespace *fs);

/* fs_alloc -- loan a block of exactly `want` pages (want >= 1). */
int fs_alloc(sp_freespace *fs, uint64_t want, sp_block *out);
/* fs_alloc_upto -- loan between min and want pages: the earliest free block
 * of at least min pages (all of it, up to want) before growing the file.
 * Errors as fs_alloc; SHALE_EINVAL unless 1 <= min <= want. */
int fs_alloc_upto(sp_freespace *fs, uint64_t want, uint64_t min, sp_block *out);
/* fs_release -- give back loaned, never-published pages: free at once. */
int fs_release(sp_freespace *fs, uint64_t first, uint64_t last);
/* fs_retire -- pages a commit stopped referencing: pending.
 * fs_release and fs_retire return SHALE_EINVAL (and change nothing) for pages
 * outside [SP_FIRST_DATA_PAGE, file_pages) or already free/pending. */
int fs_retire(sp_freespace *fs, const sp_blocklist *pages);
int fs_retire_block(sp_freespace *fs, uint64_t first, uint64_t last);

/* Checkpoint protocol (checkpoints are serialised by the caller):
 * fs_ckpt_begin moves pending to in-flight; fs_ckpt_end(ok) frees in-flight if
 * the header was made durable, else returns it to pending. */
void fs_ckpt_begin(sp_freespace *fs);
/* fs_ckpt_begin_keep -- fs_ckpt_begin, but pending pages that are in `keep`
 * (the live set the new header names: a stale live set must not free them)
 * stay pending.  SHALE_ENOMEM leaves everything unchanged. */
int fs_ckpt_begin_keep(sp_freespace *fs, const sp_blocklist *keep);
void fs_ckpt_end(sp_freespace *fs, int ok);

/* fs_trim_tail -- drop a free run at the end of the file from the free list and
 * lower file_pages; returns the new file_pages. */
uint64_t fs_trim_tail(sp_freespace *fs);

uint64_t fs_file_pages(sp_freespace *fs);
/* fs_counts -- pages free, pending (incl. in-flight); any pointer may be NULL. */
void fs_counts(sp_freespace *fs, uint64_t *free_pages, uint64_t *pending_pages);
/* fs_free_list -- copy of the free list (for tests and stats). */
int fs_free_list(sp_freespace *fs, sp_blocklist *out);
/* fs_with_file_pages -- call fn(ctx, file_pages) with the allocator locked, so
 * no allocation can grow the file meanwhile (used to truncate a trimmed file);
 * returns what fn returns. */
int fs_with_file_pages(sp_freespace *fs, int (*fn)(void *ctx, uint64_t file_pages), void *ctx);

#endif
