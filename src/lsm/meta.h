/*
 * meta.h -- the body of a checkpoint: what the lsm layer keeps in the header
 * (space treats it as opaque bytes).
 *
 * Encoding (little-endian / varints):
 *   u32 magic 0x4d4c4853 ("SHLM") | u32 body version (4; 3 and 2 are read
 *   too).  Version 4 is version 3's layout; it marks a database whose
 *   segments and logs may hold merge operands (NODE_KIND_MERGE), which a
 *   binary that reads only 3 would take for values: such a binary refuses
 *   it (SHALE_EFORMAT) instead
 *   varint ckpt_seq     last sequence number whose writes the segments hold
 *   varint log_no       first log file recovery must replay
 *   varint next_seg_id | varint next_gen
 *   varint level_factor | varint compression (settings fixed at creation)
 *   varint segment count, then each segment descriptor (segment.h), newest
 *   first: the young segments (level 0), then one segment per regular level
 *   in increasing level order (checked: anything else is SHALE_ECORRUPT)
 *   version 3 and later (version 2 reads as seq 0 and no range tombstones):
 *   per segment, in the same order, varint seq (segment.h: every range
 *   tombstone up to it is applied to the segment), then the graveyard
 *   (graveyard.h encoding), then (optional: absent in early version 3
 *   bodies) varint flags: META_CLEAN when this checkpoint was written by a
 *   clean close
 */
#ifndef SHALE_META_H
#define SHALE_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graveyard.h"
#include "segment.h"

#define META_MAGIC 0x4d4c4853u
#define META_VERSION 4u

typedef struct meta_body {
    uint64_t ckpt_seq;
    uint64_t log_no;
    uint64_t next_seg_id;
    uint64_t next_gen;
    uint64_t level_factor;
    uint64_t compression;
    seg_segment **segs;
    size_t nsegs;
    gy_set *gy; /* range tombstones (NULL: none) */
    uint64_t flags;
    bool has_flags; /* decoded: the body carried flags */
} meta_body;

#define META_CLEAN 1u /* written by a clean close: nothing to recover */

/* meta_encode -- the body into *buf (malloc'd). */
int meta_encode(const meta_body *m, uint8_t **buf, size_t *len);
/* meta_decode -- parse a body; segments are opened on sp (each with one
 * reference, owned by m->segs).  SHALE_ECORRUPT / SHALE_EFORMAT on bad input. */
int meta_decode(const seg_store *st, const uint8_t *p, size_t len, meta_body *m);
void meta_free_segs(meta_body *m); /* unref and free m->segs and m->gy */

#endif
