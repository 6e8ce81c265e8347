/*
 * graveyard.h -- range tombstones: deletes of a whole key range in one write
 * ("graveyard" in the design notes).  shale_remove_range, shale_clear_tree
 * and shale_drop_tree write one.
 *
 * A range tombstone is [lo, hi) over internal keys with the sequence number
 * of its write.  It deletes every version of a key in the range that is
 * older than it: a memtable entry with a smaller sequence number, or any
 * entry of a segment whose `seq` is smaller (seg->seq: every range tombstone
 * up to it has already been applied to the segment's entries, so the rest of
 * its entries are older than any later one).  Readers at snapshot snap see
 * only tombstones with seq <= snap.
 *
 * Where they live.  A range tombstone is logged with its batch and held by
 * the memtable it was written to (mt_add_range), so every version sharing
 * that memtable sees it at once.  When the memtable is written out, its
 * ranges move to the version's graveyard set (this file), which the header
 * persists.  Write-outs drop the memtable's own covered entries; merges drop
 * covered entries of their inputs and rebuild every destination subtree a
 * range meets; a range leaves the graveyard once no segment older than it
 * can hold a key in it (gy_retire).
 *
 * A gy_set is immutable once built and reference counted: versions share it.
 * It holds disjoint fragments in key order, each with the newest seq of the
 * ranges over it: a version's set is only read at snapshots that see every
 * range in it (they all come from memtables written out before the version
 * was installed, and a reader's snapshot is taken after it pins the
 * version), so older overlapping ranges delete nothing more.
 *
 * Encoding (gy_encode / gy_decode, in the checkpoint body):
 *   varint n | per fragment: varint seq | varint lolen | lo | varint hilen | hi
 */
#ifndef SHALE_GRAVEYARD_H
#define SHALE_GRAVEYARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gy_range {
    uint64_t seq;
    const uint8_t *lo, *hi; /* [lo, hi), internal keys */
    size_t lolen, hilen;
} gy_range;

typedef struct gy_set {
    atomic_int refs;
    size_t n;
    gy_range *v;      /* disjoint fragments in key order (see gy_build) */
    uint64_t max_seq; /* of all fragments */
    uint8_t *keys;    /* their keys */
} gy_set;

/* gy_build -- a set of the n ranges r (copied; any order, overlapping or
 * not), cut into fragments.  n == 0 gives *out NULL (the empty set is NULL
 * everywhere).  Errors: SHALE_ENOMEM. */
int gy_build(const gy_range *r, size_t n, gy_set **out);
/* gy_with -- a set of a's ranges plus the n ranges r (a may be NULL). */
int gy_with(const gy_set *a, const gy_range *r, size_t n, gy_set **out);
void gy_ref(gy_set *g);   /* NULL ok */
void gy_unref(gy_set *g); /* NULL ok */

/* gy_covered -- whether a range newer than after (seq > after) holds key:
 * one binary search. */
bool gy_covered(const gy_set *g, const void *key, size_t klen, uint64_t after);
/* gy_meets -- whether a range with seq > after may meet the keys in
 * (lo, hi] (lo NULL: from the start) or [lo, hi]: conservative, it may say
 * yes for a span that holds no key of any range. */
bool gy_meets(const gy_set *g, const void *lo, size_t lolen, const void *hi, size_t hilen,
              uint64_t after);

/* gy_retire -- the ranges of g that keep(ctx, range) wants (*out NULL when
 * none; g itself, with a new reference, when all).  Errors: SHALE_ENOMEM. */
int gy_retire(gy_set *g, bool (*keep)(void *ctx, const gy_range *r), void *ctx, gy_set **out);

/* gy_encode -- append the encoding of g (NULL: none) to *buf (realloc'd). */
int gy_encode(const gy_set *g, uint8_t **buf, size_t *len, size_t *cap);
/* gy_decode -- parse from [p, p + len); *used gets the bytes consumed.
 * Errors: SHALE_ECORRUPT (malformed, a range with lo >= hi), SHALE_ENOMEM. */
int gy_decode(const uint8_t *p, size_t len, size_t *used, gy_set **out);

#endif
