/*
 * space.h -- the page file: I/O of pages through a read-only mapping or a page
 * cache, the allocator, and checkpoints through the two header slots.  Nothing here knows what a
 * key or a segment is: the layer above hands a checkpoint an opaque body
 * ("meta") and the set of pages it keeps live, and gets the body back at open.
 *
 * Crash-safety ordering of sp_checkpoint (the invariant everything relies on):
 *   1. sync the page file: every page the new header can reach is durable;
 *   2. write the idle header slot (higher sequence number);
 *   3. sync again: now the new header is the one open will choose;
 *   4. only then do pages freed before step 1 become reusable, and a free tail
 *      of the file may be truncated.
 * A torn or failed slot write leaves the other slot, which still describes a
 * complete, durable state.
 *
 * Thread safety: page reads and writes and allocation may run from any thread;
 * checkpoints must be serialised by the caller.
 *
 * Reads: where the env can map files, pages are served from the mapping (no
 * lock, copy or system call; each page's checksum checked on its first access
 * and again after each rewrite); otherwise, and for pages the mapping does not
 * cover yet, from the cache.  Either way a pinned page's bytes stay valid
 * until sp_page_put, but a mapped page shows a rewrite at once: the layer
 * above must not rewrite a page while a reader may hold it (it reuses pages
 * only once no version that names them is pinned).
 */
#ifndef SHALE_SPACE_H
#define SHALE_SPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blocklist.h"
#include "env.h"
#include "freespace.h"
#include "page.h"

typedef struct sp_space sp_space;
typedef struct sp_page sp_page; /* a pinned page in the cache */

typedef struct sp_config {
    sp_env *env;          /* NULL: sp_env_posix() */
    const char *path;     /* the page file */
    uint32_t page_size;   /* used when creating; read from the header otherwise */
    size_t cache_bytes;
    bool create;          /* create the file if it does not exist */
    bool read_only;
} sp_config;

/* sp_open -- open or create the page file.  On success *meta (malloc'd, may be
 * NULL when len 0) holds the body of the newest valid checkpoint, and
 * *created tells whether the file was new (then *meta is NULL).
 * Errors: SHALE_ENOENT (missing, create false), SHALE_ECORRUPT (no valid
 * slot, or the file ends before the last page the header does not list as
 * free), SHALE_EFORMAT (other format version), SHALE_EINVAL (bad page size),
 * SHALE_EIO, SHALE_ENOMEM. */
int sp_open(const sp_config *cfg, sp_space **spp, void **meta, size_t *metalen, bool *created);
/* sp_close -- release everything (no checkpoint, no sync). */
void sp_close(sp_space *sp);

uint32_t sp_page_size(const sp_space *sp);
/* sp_header_pages -- the pages the header itself takes: the two slots and
 * the spill run of the last durable checkpoint (into *out, bl_init'ed). */
int sp_header_pages(const sp_space *sp, sp_blocklist *out);
/* sp_set_cache_bytes -- change the page cache's budget. */
void sp_set_cache_bytes(sp_space *sp, size_t bytes);
sp_freespace *sp_freespace_of(sp_space *sp);
uint64_t sp_ckpt_seq(const sp_space *sp); /* sequence number of the last durable checkpoint */

/* sp_checkpoint -- make a new header durable that holds `meta` and declares
 * `live` (the pages the layer above references; header slots and the body's
 * spill pages are added here) as the only non-free pages.  Follows the
 * ordering above; on error the previous checkpoint stays in force. */
int sp_checkpoint(sp_space *sp, const sp_blocklist *live, const void *meta, size_t metalen);

/* sp_page_get -- pin page pgno: from the mapping, verified on its first
 * access, else through the cache, verified on a miss.
 * Errors: SHALE_ECORRUPT (checksum, pgno or type mismatch; a page beyond the
 * file), SHALE_EIO, SHALE_ENOMEM. */
int sp_page_get(sp_space *sp, uint64_t pgno, sp_page **pgp);
const uint8_t *sp_page_data(const sp_page *pg);
void sp_page_put(sp_space *sp, sp_page *pg); /* unpin; NULL is a no-op */

/* sp_read_run -- copy npages pages from pgno into buf (not through the
 * cache), verifying each page (mapped pages: unless verified since their
 * last write).  Errors as sp_page_get. */
int sp_read_run(sp_space *sp, uint64_t pgno, uint64_t npages, uint8_t *buf);

/* sp_write_pages -- write npages sealed pages from buf at pgno (pages must be
 * loaned to the caller).  Drops stale cache entries and verified marks. */
int sp_write_pages(sp_space *sp, uint64_t pgno, const uint8_t *buf, uint64_t npages);

/* sp_sync -- fdatasync the page file. */
int sp_sync(sp_space *sp);

/* Page reads count in cache_hits/cache_misses whichever path served them; a
 * mapped read is a miss when it checked the page (first access), a hit when
 * not.  mapped_reads counts the mapped ones among them. */
typedef struct sp_stats {
    uint64_t file_pages, free_pages, pending_pages;
    uint64_t cache_hits, cache_misses, pages_written, checkpoints;
    uint64_t mapped_reads;
} sp_stats;
void sp_stats_get(sp_space *sp, sp_stats *st);

#endif
