/*
 * mergeop.h -- merge operands: gathering a key's operands and folding them
 * with its tree's operator (shale_set_merge_operator).
 *
 * A memtable holds one operand per version (kind NODE_KIND_MERGE, the raw
 * operand).  A segment holds at most one entry per key, so an entry of kind
 * NODE_KIND_MERGE there is a stack: every operand that entry stands for,
 * and what they apply to when that is known:
 *
 *   u8 base: MO_OPEN (whatever older entries hold), MO_ABSENT (no value: the
 *            operands start from nothing), MO_VALUE (the value that follows)
 *   [MO_VALUE: varint length | value]
 *   operands, oldest first, at least one: varint length | operand
 *
 * Reads gather the versions of a key newest first into an mo_stack until
 * they reach a base (a value, a tombstone, a range tombstone, or the end of
 * the data), then fold.  Merges gather what they see and fold when they
 * reach a base and the tree has an operator; otherwise they write the stack.
 */
#ifndef SHALE_MERGEOP_H
#define SHALE_MERGEOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shale.h"
#include "graveyard.h"
#include "memtable.h"

enum { MO_OPEN = 0, MO_ABSENT = 1, MO_VALUE = 2 };

/* A registered operator (never freed before the db: readers may hold it). */
typedef struct mo_op {
    shale_merge_fn fn;
    void *ctx;
    struct mo_op *older; /* the tree's earlier operators, freed with the db */
} mo_op;

typedef struct mo_slice {
    size_t off, len; /* into the stack's buf */
} mo_slice;

/* The operands of one key gathered so far, newest first, with their base
 * once one is found.  Copies everything it is given. */
typedef struct mo_stack {
    uint8_t *buf;
    size_t len, cap;
    mo_slice *ops;
    size_t nops, opcap;
    int base;
    mo_slice val; /* base MO_VALUE */
    shale_buf tmp; /* for folding */
} mo_stack;

void mo_reset(mo_stack *s); /* empty, keeping the memory */
void mo_free(mo_stack *s);
static inline bool mo_done(const mo_stack *s) { return s->base != MO_OPEN; }

/* Gathering, newest first; each is older than everything pushed before.
 * mo_push_operand -- one raw operand (a memtable version).
 * mo_push_stack -- a segment's MERGE entry (SHALE_ECORRUPT if malformed).
 * mo_push_value / mo_push_absent -- the base: a value, or nothing. */
int mo_push_operand(mo_stack *s, const void *p, size_t n);
int mo_push_stack(mo_stack *s, const void *p, size_t n);
int mo_push_value(mo_stack *s, const void *p, size_t n);
void mo_push_absent(mo_stack *s);
/* mo_push_kind -- an entry of kind NODE_KIND_* with value (p, n). */
int mo_push_kind(mo_stack *s, uint8_t kind, const void *p, size_t n);
/* mo_push_versions -- a memtable's versions of it's key, from it on (newest
 * first), until a base is found; it is a copy, so the caller's iterator
 * stays where it is.  A version a range tombstone of gy[0 .. ngy) deletes
 * (entries may be NULL) counts as absent. */
int mo_push_versions(mo_stack *s, mt_iter it, const gy_set *const *gy, size_t ngy);

/* mo_fold -- the operands applied oldest first to the base (nothing when
 * the stack is still open) with op: SHALE_OK with the value in *out,
 * SHALE_NOTFOUND when the result is "deleted", SHALE_ENOMERGEOP when op is
 * NULL, or the operator's own error.  ikey is the internal key (the operator
 * gets the user's key). */
int mo_fold(mo_stack *s, const mo_op *op, const uint8_t *ikey, size_t iklen, shale_buf *out);

/* mo_encode -- the stack as a segment's MERGE entry into *out. */
int mo_encode(const mo_stack *s, shale_buf *out);

/* mo_settle -- what a write-out or merge writes for the stack: with a base
 * and op, the folded value (*kind NODE_KIND_VALUE) or NODE_KIND_TOMBSTONE;
 * otherwise, and when the operator fails, the stack (NODE_KIND_MERGE).
 * Errors: SHALE_ENOMEM. */
int mo_settle(mo_stack *s, const mo_op *op, const uint8_t *ikey, size_t iklen, shale_buf *out,
              uint8_t *kind);

#endif
