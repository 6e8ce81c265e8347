/*
 * cache.h -- the sharded page cache behind sp_page_get.
 *
 * Holds verified copies of pages, up to a byte budget, in shards chosen by a
 * hash of the page number; each shard has its own mutex, hash table and CLOCK
 * hand.  Entries are pinned (reference counted) while a caller reads them and
 * are never evicted while pinned; a shard whose entries are all pinned grows
 * beyond its budget instead of failing.
 *
 * Pages read from the mapping (pagemap.h) never enter the cache: their handle
 * is the page's address with the low bit set (mapped pages are at least
 * SP_MIN_PAGE_SIZE-aligned), which sp_page_data strips and sp_page_put skips.
 */
#ifndef SHALE_CACHE_H
#define SHALE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "space.h"

typedef struct sp_cache sp_cache;

#define CACHE_MAPPED_TAG ((uintptr_t)1)

/* cache_mapped_handle -- the handle of a page served from the mapping. */
static inline sp_page *cache_mapped_handle(const uint8_t *p)
{
    return (sp_page *)((uintptr_t)p | CACHE_MAPPED_TAG);
}

/* cache_is_mapped -- whether pg is a mapped page's handle (not an entry). */
static inline bool cache_is_mapped(const sp_page *pg)
{
    return ((uintptr_t)pg & CACHE_MAPPED_TAG) != 0;
}

/* cache_load_fn -- fill buf (one page) with verified page pgno. */
typedef int (*cache_load_fn)(void *ctx, uint64_t pgno, uint8_t *buf);

/* cache_create -- a cache of about cache_bytes of page_size pages. */
int cache_create(size_t cache_bytes, uint32_t page_size, sp_cache **cp);
/* cache_set_budget -- change the byte budget. */
void cache_set_budget(sp_cache *c, size_t cache_bytes);
/* cache_destroy -- free every cached entry (none may be pinned). */
void cache_destroy(sp_cache *c);
/* cache_get -- pin pgno, calling load on a miss.  Errors: what load returns,
 * SHALE_ENOMEM. */
int cache_get(sp_cache *c, uint64_t pgno, cache_load_fn load, void *ctx, sp_page **pgp);
/* cache_put -- unpin (NULL is a no-op). */
void cache_put(sp_cache *c, sp_page *pg);
/* cache_drop -- forget pages [first, first + n) (they are being rewritten);
 * a pinned entry stays with its pinners and is freed on its last put. */
void cache_drop(sp_cache *c, uint64_t first, uint64_t n);
/* cache_counts -- hits and misses so far. */
void cache_counts(sp_cache *c, uint64_t *hits, uint64_t *misses);

#endif
