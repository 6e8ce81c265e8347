/*
 * cursor.h -- the multi-way cursor: merges the memtables and segments of a
 * version into one ordered stream of internal keys.
 *
 * Children are ordered newest first (active memtable, immutable memtables,
 * segments).  At each key the newest child wins and the older ones' entries
 * for that key are skipped.  With hide_tombstones a winning tombstone hides
 * the key (the view users get); without it tombstones come through (the view
 * a merge writes out).  Bounds [lo, hi) are internal keys (hi NULL = open).
 *
 * Direction: the cursor can move either way at any time.  Moving forward, every
 * valid child sits on its first key > the current key; moving backward, on
 * its last key < it.  A change of direction re-seeks every child around the
 * current key.  With a handful of children a linear scan beats a heap.
 */
#ifndef SHALE_CURSOR_H
#define SHALE_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "version.h"

typedef struct cur_cursor cur_cursor;

/* Flags.  CUR_HIDE: the users' view -- tombstones hidden, merge operands
 * folded with their tree's operator (cur_use_operators; a key whose tree has
 * none fails with SHALE_ENOMERGEOP).  CUR_KEEP_STACKS, with CUR_HIDE: such
 * a key comes out as a NODE_KIND_MERGE stack over nothing (mergeop.h)
 * instead.  Without CUR_HIDE (a merge's view) a key's operands and what they
 * apply to among the cursor's children come out as one stack. */
#define CUR_HIDE 1
#define CUR_KEEP_STACKS 2

/* cur_open -- a cursor over version v (a reference is taken) at snapshot snap.
 * include_mem false leaves out the memtables (a merge of segments only);
 * segs_from/segs_n choose which segments (all: 0, v->nsegs). */
int cur_open(ver_version *v, uint64_t snap, bool include_mem, size_t segs_from, size_t segs_n,
             int flags, cur_cursor **cp);
/* cur_use_operators -- fold with db's merge operators (CUR_HIDE). */
struct shale_db;
void cur_use_operators(cur_cursor *c, struct shale_db *db);
void cur_close(cur_cursor *c); /* NULL ok */
/* cur_set_bounds -- [lo, hi) over internal keys; copied; unpositions. */
int cur_set_bounds(cur_cursor *c, const void *lo, size_t lolen, const void *hi, size_t hilen);

int cur_first(cur_cursor *c);
int cur_last(cur_cursor *c);
int cur_seek_ge(cur_cursor *c, const void *key, size_t klen);
int cur_seek_le(cur_cursor *c, const void *key, size_t klen);
int cur_next(cur_cursor *c);
int cur_prev(cur_cursor *c);
bool cur_valid(const cur_cursor *c);
const void *cur_key(const cur_cursor *c, size_t *klen);
uint8_t cur_kind(const cur_cursor *c);
/* cur_value -- value of the current entry (valid until the next move). */
int cur_value(cur_cursor *c, const void **val, size_t *vlen);
/* cur_value_run -- whether the current value lives in a segment's overflow
 * run (then its first page and length), for moving it by reference. */
bool cur_value_run(const cur_cursor *c, uint64_t *pgno, uint64_t *vlen);

#endif
