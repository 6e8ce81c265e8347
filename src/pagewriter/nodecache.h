/*
 * nodecache.h -- pinning the nodes of a tree for reading: leaf and parent
 * pages straight from space, compressed leaves (cleaf.h) decompressed once
 * into a shared, bounded cache of leaf images.
 *
 * A reader pins a node with node_pin and gets its bytes and size, which it
 * hands to node.h's accessors as (page, page_size) whatever the node's form;
 * node_unpin releases it.  Images are keyed by (first page, gen): a page
 * number reused by a later structure carries another gen, so a stale image
 * is never served; it ages out of the cache instead.
 *
 * The cache is sharded by key, each shard a hash table and an LRU list of
 * the unpinned images under one mutex.  A pinned image is never evicted, so
 * the cache can exceed its budget by what readers hold pinned; unpinning
 * brings it back under.  Two readers missing the same image both decompress
 * it; the second insert finds the first and keeps it.  All calls are thread
 * safe.
 */
#ifndef SHALE_NODECACHE_H
#define SHALE_NODECACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../space/space.h"

typedef struct node_cache node_cache;
typedef struct nc_image nc_image;

/* node_cache_open -- a cache keeping at most about `bytes` of unpinned
 * images (the shard count is chosen from it). */
int node_cache_open(size_t bytes, node_cache **ncp);
/* node_cache_set_budget -- change the budget; unpinned images beyond it go now. */
void node_cache_set_budget(node_cache *nc, size_t bytes);
/* node_cache_close -- free the cache; every node pinned through it must be
 * unpinned first.  NULL ok. */
void node_cache_close(node_cache *nc);

typedef struct node_cache_stats {
    uint64_t hits, misses; /* image lookups */
    uint64_t images, bytes; /* held now, pinned or not */
} node_cache_stats;
void node_cache_stats_get(node_cache *nc, node_cache_stats *st);

/* A pinned node. */
typedef struct node_ref {
    const uint8_t *data; /* the page, or the leaf image */
    uint32_t size;       /* page_size for node.h: the page size or the image's size */
    uint64_t pages;      /* pages the node takes on disk (a compressed leaf: its run) */
    sp_page *pg;         /* the pinned page, or NULL for an image */
    nc_image *img;       /* the pinned image, or NULL for a page */
} node_ref;

/* node_pin -- pin the node at pgno: a leaf or parent page with at least one
 * entry, or a compressed leaf (through nc; nc NULL decompresses a private
 * copy each time).  Errors: SHALE_ECORRUPT (another page type, no entries,
 * a bad run or image), SHALE_EIO, SHALE_ENOMEM. */
int node_pin(sp_space *sp, node_cache *nc, uint64_t pgno, node_ref *r);
/* node_unpin -- release a pinned node (a zeroed ref is a no-op); the ref is
 * zeroed. */
void node_unpin(sp_space *sp, node_ref *r);

#endif
