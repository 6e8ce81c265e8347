/*
 * recycle.h -- rebuilding a segment with a stream of newer entries, reusing
 * every subtree the stream does not touch by page reference.
 *
 * A merge into level n + 1 (or of the young segments into level 1) does not
 * rewrite the destination: it walks the destination's tree top-down beside
 * the sorted stream of newer entries.  A child whose key range holds no
 * stream key is untouched; runs of at least RC_MIN_RUN untouched siblings are
 * added to the new tree whole (node_builder_add_child), shorter runs are
 * rewritten (leaves) or descended into (parents), and leaves less than half
 * full are rewritten even when untouched, so recycling does not leave the
 * tree cut into underfull pages.  A touched leaf is rewritten with the
 * stream's entries merged in (the stream wins on equal keys); parents on the
 * paths to touched leaves are rewritten.  Values in overflow runs move by
 * reference, the destination's and the stream's alike.
 *
 * Pages.  The new segment owns the destination's pages minus those it no
 * longer references (`dead`: rewritten leaves and parents, the old filter,
 * runs of superseded or dropped values, key runs of rewritten entries, which
 * the builder writes anew), plus what it wrote, plus the stream's value runs
 * it took over (`moved`).  The caller makes the dead pages and the stream
 * segments' pages but the moved ones zombies.
 *
 * Splicing.  Past the destination's last key, a stream segment whose key
 * range no other stream segment touches and that holds no tombstone is added
 * whole, its root by reference: a young segment written from sequential keys
 * enters its level without a rewrite.  Its pages but the filter's are moved.
 *
 * The filter is built over every key of the new tree, so recycled subtrees
 * are read (not written) to hash their keys; their leaves and parents are
 * counted into the tree's figures on the way.
 */
#ifndef SHALE_RECYCLE_H
#define SHALE_RECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#include "graveyard.h"
#include "segment.h"

#define RC_MIN_RUN 4u /* untouched siblings worth reusing as they are */

/* An entry of the stream: the value inline (val, vlen), or in the run at
 * val_run (vlen bytes) when val_run is nonzero. */
typedef struct rc_entry {
    uint8_t kind;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
    uint64_t val_run;
} rc_entry;

typedef struct rc_stream {
    /* next -- SHALE_OK with the next entry (valid until the next call),
     * SHALE_NOTFOUND at the end, or an error. */
    int (*next)(void *ctx, rc_entry *e);
    /* skip_past -- the next entry after key (as next); NULL if the stream
     * cannot skip, and then no segment is spliced. */
    int (*skip_past)(void *ctx, const void *key, size_t klen, rc_entry *e);
    void *ctx;
    /* the segments the stream merges: one whose key range no other touches
     * and that holds no tombstone is spliced in whole when the stream
     * reaches it past the destination's last key (a sequential load) */
    seg_segment *const *segs;
    size_t nsegs;
} rc_stream;

/* What a rebuild keeps.  keep -- whether an entry of the destination or the
 * stream is written out (false: a tombstone with nothing left below, a
 * dropped tree's key).  span_live -- false when keys in (lo, hi] may belong
 * to a dropped tree (lo NULL: from the start), so a subtree or segment
 * covering that span is rewritten, never reused whole. */
typedef struct rc_filter {
    bool (*keep)(void *ctx, const void *key, size_t klen, uint8_t kind);
    bool (*span_live)(void *ctx, const void *lo, size_t lolen, const void *hi, size_t hilen);
    void *ctx;
    /* range tombstones (graveyard.h; may be NULL): a destination entry one
     * of them deletes (seq above dest->seq) is dropped, a subtree one may
     * meet is rewritten, and a stream segment one may meet is not spliced */
    const gy_set *gy;
    /* resolve (may be NULL) -- for a stream entry of kind NODE_KIND_MERGE,
     * the entry to write instead, given the destination's entry for its key
     * (d; a tombstone when a range tombstone deletes it; NULL when it has
     * none): into *out, valid until the next call, value inline */
    int (*resolve)(void *ctx, const rc_entry *s, const rc_entry *d, rc_entry *out);
} rc_filter;

typedef struct rc_figures {
    uint64_t leaves_rewritten; /* destination leaves rewritten */
    uint64_t subtrees_recycled; /* destination subtrees reused whole */
    uint64_t leaves_recycled;  /* leaves inside them */
    uint64_t entries_in;       /* stream entries written */
    uint64_t segs_spliced;     /* stream segments taken whole */
    uint64_t parents_written;  /* parent pages written */
    uint64_t pages_written;
} rc_figures;

typedef struct rc_result {
    seg_segment *seg;   /* the new segment, one reference (NULL: nothing left) */
    sp_blocklist dead;  /* destination pages the new segment does not reference */
    sp_blocklist moved; /* stream value runs the new segment took over */
    rc_figures fig;
} rc_result;

/* seg_rebuild -- a new segment (id, gen, level) of dest (may be NULL)
 * overridden by the stream.  On success the caller owns res->seg and the two
 * lists (bl_free them); on error nothing was published and every page
 * written is given back.  Errors: SHALE_EINVAL (stream out of order),
 * SHALE_ECORRUPT, SHALE_EIO, SHALE_ENOMEM, SHALE_ENOSPC. */
int seg_rebuild(const seg_store *st, uint64_t id, uint64_t gen, uint32_t level,
                const seg_segment *dest, rc_stream *src, const rc_filter *keep,
                rc_result *res);

#endif
