/*
 * segment.h -- an immutable, sorted run of entries on disk: a B+tree of leaf
 * and parent pages (pagewriter/node.h), its overflow runs, and a Bloom filter
 * of its keys, all written in one streaming pass and never changed.
 *
 * Entries are (key, kind, value) with at most one entry per key; kinds are
 * NODE_KIND_VALUE and NODE_KIND_TOMBSTONE (NODE_KIND_MERGE reserved).  A
 * segment does not keep sequence numbers: it always holds the newest version
 * of each key among what it was built from.
 *
 * Leaves may be compressed (cleaf.h): the store a segment is built with
 * says how; a segment's readers take any mix of plain and compressed leaves.
 *
 * Descriptor encoding (seg_encode / seg_decode; part of the header body):
 *   varint id | varint gen | varint level | varint root | varint height |
 *   varint entries | varint tombstones | varint leaves | varint parents |
 *   varint overflow_pages | varint filter_pgno | varint filter_bytes |
 *   varint compressed_leaves (of leaves, those stored as compressed runs) |
 *   varint min key len | min key | varint max key len | max key |
 *   blocklist (blocklist.h encoding) of every page the segment owns
 *   (leaves, parents, overflow runs, filter run).
 * seg_decode checks every field (ranges, key order, the root and the filter
 * run inside the blocklist, the blocklist inside the file) and the filter
 * run it loads: SHALE_ECORRUPT on anything malformed.
 *
 * Filter: a blocked Bloom filter over xxh3 of the full keys, ~10 bits a key,
 * stored as a run (SP_PT_FILTER) and kept in memory (loaded by seg_decode,
 * kept by seg_build) so a point miss touches no page.  Format: filter.c.
 *
 * Lifetime: reference counted (the memory only).  Its pages are the
 * versions' business: when a version stops listing them they become zombies
 * (zombie.h).  A segment that was built but never listed in a version goes
 * back with seg_discard.
 */
#ifndef SHALE_SEGMENT_H
#define SHALE_SEGMENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shale.h"
#include "../pagewriter/codec.h"
#include "../pagewriter/node.h"
#include "../pagewriter/nodecache.h"
#include "../pagewriter/pagewriter.h"
#include "../space/space.h"

/* Where segments live and how new ones are written. */
typedef struct seg_store {
    sp_space *sp;
    node_cache *cache; /* decompressed leaves for readers; NULL: none kept */
    int codec;         /* leaves written: CODEC_* (codec.h) */
    int level;         /* the codec's level (0: its default) */
} seg_store;

typedef struct seg_segment {
    uint64_t id;
    uint64_t gen;
    uint32_t level;       /* 0 = young */
    uint64_t seq;         /* every range tombstone with seq <= this is applied
                             to the entries (graveyard.h); kept in the header */
    node_tree_info tree;  /* root, height, entries, tombstones, leaves ... */
    uint64_t filter_pgno; /* 0: no filter */
    uint64_t filter_bytes;
    uint8_t *min_key, *max_key;
    size_t min_len, max_len;
    sp_blocklist pages;
    /* runtime */
    sp_space *sp;
    node_cache *cache;
    uint8_t *filter; /* filter_bytes bytes, or NULL */
    atomic_int refs;
} seg_segment;

/* The entries a segment is built from, in strictly increasing key order. */
typedef struct seg_source {
    /* next -- SHALE_OK with the next entry (pointers valid until the next
     * call), SHALE_NOTFOUND at the end, or an error. */
    int (*next)(void *ctx, uint8_t *kind, const void **key, size_t *klen, const void **val,
                size_t *vlen);
    void *ctx;
} seg_source;

/* seg_build -- write a new segment from src.  An empty source gives
 * SHALE_NOTFOUND and writes nothing.  On error every page written is given
 * back to space at once.  The new segment has one reference. */
int seg_build(const seg_store *st, uint64_t id, uint64_t gen, uint32_t level, seg_source *src,
              seg_segment **segp);

/* seg_encode -- append the descriptor to *buf (realloc'd; *len and *cap updated). */
int seg_encode(const seg_segment *seg, uint8_t **buf, size_t *len, size_t *cap);
/* seg_decode -- parse a descriptor from [p, p+len); *used gets the bytes
 * consumed.  Loads the filter from sp.  The new segment has one reference. */
int seg_decode(const seg_store *st, const uint8_t *p, size_t len, size_t *used, seg_segment **segp);

void seg_ref(seg_segment *seg);
void seg_unref(seg_segment *seg); /* NULL ok */
/* seg_create -- an empty segment object on st's space (one reference), for
 * builders outside segment.c to fill in; seg_unref frees it. */
int seg_create(const seg_store *st, seg_segment **segp);
/* seg_clone_level -- a new segment object (one reference) with seg's pages
 * and contents at another level: a level moved down without a rewrite. */
int seg_clone_level(const seg_segment *seg, uint32_t level, seg_segment **out);
/* seg_discard -- hand the pages of a segment no version ever listed back to
 * space (pending until the next checkpoint); the caller still unrefs it.
 * Errors from fs_retire (ENOMEM): the pages stay unusable until the database
 * is reopened (a checkpoint writes the complement of the live set as free). */
int seg_discard(seg_segment *seg);

/* seg_may_contain -- false only when key is certainly absent (filter, range).
 * seg_get makes this check itself. */
bool seg_may_contain(const seg_segment *seg, const void *key, size_t klen);
/* seg_may_contain_hashed -- the same with h = filter_hash(key, klen), so a
 * read through many segments (and memtables) hashes the key once. */
bool seg_may_contain_hashed(const seg_segment *seg, const void *key, size_t klen, uint64_t h);

/* seg_get -- look key up.  SHALE_OK with *kind and, for values, the value
 * copied into *val (grown as needed); SHALE_NOTFOUND when the segment has no
 * entry for key.  Errors: SHALE_ECORRUPT, SHALE_EIO, SHALE_ENOMEM. */
int seg_get(seg_segment *seg, const void *key, size_t klen, uint8_t *kind, shale_buf *val);
/* seg_get_hashed -- seg_get with h = filter_hash(key, klen). */
int seg_get_hashed(seg_segment *seg, const void *key, size_t klen, uint64_t h, uint8_t *kind,
                   shale_buf *val);

/* A cursor over one segment.  Keys and values it returns stay valid until
 * the next move or close.  Moves return SHALE_OK (positioned), SHALE_NOTFOUND
 * (ran off an end; unpositioned) or an error (unpositioned).  next/prev of an
 * unpositioned cursor give SHALE_EINVAL.  seek_le finds the last key <= key.
 * A cursor pins one node per tree level (at most tree.height). */
typedef struct seg_cursor seg_cursor;
int seg_cursor_open(seg_segment *seg, seg_cursor **cp); /* takes a reference */
void seg_cursor_close(seg_cursor *c);                   /* NULL ok */
int seg_cursor_first(seg_cursor *c);
int seg_cursor_last(seg_cursor *c);
int seg_cursor_seek_ge(seg_cursor *c, const void *key, size_t klen);
int seg_cursor_seek_le(seg_cursor *c, const void *key, size_t klen);
int seg_cursor_next(seg_cursor *c);
int seg_cursor_prev(seg_cursor *c);
bool seg_cursor_valid(const seg_cursor *c);
const void *seg_cursor_key(const seg_cursor *c, size_t *klen);
uint8_t seg_cursor_kind(const seg_cursor *c);
/* seg_cursor_value -- the value (read from its overflow run on first use;
 * empty for a tombstone).  Errors: SHALE_EINVAL (unpositioned), SHALE_ECORRUPT,
 * SHALE_EIO, SHALE_ENOMEM (the cursor stays positioned). */
int seg_cursor_value(seg_cursor *c, const void **val, size_t *vlen);
/* seg_cursor_value_run -- true with the run's first page and the value's
 * length when the current value lives in an overflow run (so a merge can
 * move it by reference); false otherwise or when unpositioned. */
bool seg_cursor_value_run(const seg_cursor *c, uint64_t *pgno, uint64_t *vlen);

/* ---- shared by segment.c and segcursor.c ------------------------------- */

#define SEG_MAX_HEIGHT 32u /* deeper trees are rejected as corrupt */
#define SEG_MAX_LEVEL 30u  /* regular levels 1..SEG_MAX_LEVEL; 0 is young */

/* seg_owns -- whether every page of [first, last] belongs to the segment. */
bool seg_owns(const seg_segment *seg, uint64_t first, uint64_t last);
/* seg_read_value -- the vlen-byte value in the segment's overflow run at
 * pgno into buf (vlen bytes of room).  SHALE_ECORRUPT when vlen is over the
 * limit or the run is not the segment's; else as pw_run_read_into. */
int seg_read_value(const seg_segment *seg, uint64_t pgno, uint64_t vlen, void *buf);
/* seg_node_pin -- pin node pgno of the segment's tree (node_pin) and check
 * that all its pages are the segment's; SHALE_ECORRUPT if not. */
int seg_node_pin(const seg_segment *seg, uint64_t pgno, node_ref *r);

#endif
