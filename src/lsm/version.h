/*
 * version.h -- an immutable, reference-counted view of the database: the
 * active memtable, the immutable memtables waiting to be written out, and the
 * segments, each list newest first.
 *
 * Every read, iterator and snapshot pins the current version; a memtable
 * switch, a write-out or a merge installs a new one (under db->ver_mu) and
 * drops the db's reference to the old.  A version holds a reference on each
 * memtable and segment it lists, so whatever a reader can reach stays alive
 * until the reader lets go; pages a newer version stopped referencing are
 * zombies (zombie.h) until every version up to the one that last listed
 * them has ended.
 */
#ifndef SHALE_VERSION_H
#define SHALE_VERSION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "graveyard.h"
#include "memtable.h"
#include "segment.h"
#include "zombie.h"

/* A memtable and the log file that holds its writes. */
typedef struct ver_mem {
    mt_table *mt;
    uint64_t log_no;
    uint64_t last_seq; /* for immutable ones: the last sequence it holds */
} ver_mem;

typedef struct ver_version {
    atomic_int refs;
    zb_set *zb;
    zb_node node; /* node.id: the version's id, increasing */
    ver_mem mem;    /* the active memtable */
    ver_mem *imm;   /* immutable memtables, newest first */
    size_t nimm;
    seg_segment **segs; /* newest first */
    size_t nsegs;
    gy_set *gy;         /* range tombstones of written-out memtables (NULL: none) */
} ver_version;

/* ver_new -- a version with the given lists and graveyard gy (may be NULL),
 * registered live in zb; takes new references on each memtable, segment and
 * gy.  The version starts with one reference. */
int ver_new(zb_set *zb, const ver_mem *mem, const ver_mem *imm, size_t nimm, seg_segment *const *segs,
            size_t nsegs, gy_set *gy, ver_version **vp);
/* ver_new_around -- the same with segment front (if not NULL) before segs
 * and back (if not NULL) after them: a write-out adds its segment in front, a
 * merge its result behind the segments it leaves alone. */
int ver_new_around(zb_set *zb, const ver_mem *mem, const ver_mem *imm, size_t nimm, seg_segment *front,
                   seg_segment *const *segs, size_t nsegs, seg_segment *back, gy_set *gy,
                   ver_version **vp);
void ver_ref(ver_version *v);
void ver_unref(ver_version *v); /* NULL ok; the last reference frees and ends it in zb */

#endif
