/*
 * batch.h -- a list of writes encoded as the payload of one log record, so a
 * batch is durable (and recovered) whole or not at all.
 *
 * Payload encoding (the LG_T_BATCH record body):
 *   varint op count
 *   per op: u8 kind (NODE_KIND_*, or BATCH_KIND_RANGE) | varint internal key
 *           length | internal key | [kind != tombstone: varint value length | value]
 * A range tombstone (graveyard.h) deletes [key, value): both internal keys,
 * key < value.
 * An internal key is the 4-byte big-endian tree id followed by the user key,
 * so every tree is a contiguous key range and memcmp order within a tree is
 * the user's order.  Sequence numbers are not stored per op: op i of a record
 * with sequence s has sequence s + i.
 */
#ifndef SHALE_BATCH_H
#define SHALE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "shale.h"

#define IKEY_PREFIX 4u
#define TREE_ID_CATALOG 0u
#define TREE_ID_DEFAULT 1u
#define BATCH_KIND_RANGE 3u /* a range tombstone: [ikey, val) */

struct shale_batch {
    uint8_t *buf; /* ops only; the count is prepended when encoded */
    size_t len;
    size_t cap;
    size_t count;
    uint64_t user_bytes; /* key + value bytes, for the statistics */
    shale_db *db; /* db of the first tree used; all must match */
};

/* batch_add -- append an op for tree id `tree` (for BATCH_KIND_RANGE, val is
 * the range's internal end key). */
int batch_add(shale_batch *b, uint8_t kind, uint32_t tree, const void *key, size_t klen,
              const void *val, size_t vlen);

/* batch_add_range -- append a range tombstone deleting the keys of tree id
 * `tree` in [lo, hi) (hi NULL: to the tree's end).  Errors: SHALE_EINVAL
 * (hi given and not above lo), SHALE_ENOMEM. */
int batch_add_range(shale_batch *b, uint32_t tree, const void *lo, size_t lolen, const void *hi,
                    size_t hilen);

/* batch_encode_payload -- the full record payload: varint count + ops.  *out
 * points into a buffer owned by b (valid until the next change to b). */
int batch_payload(shale_batch *b, const uint8_t **out, size_t *len);

/* A decoded op, pointing into the payload. */
typedef struct batch_op {
    uint8_t kind;
    const uint8_t *ikey;
    size_t iklen;
    const uint8_t *val;
    size_t vlen;
} batch_op;

typedef struct batch_reader {
    const uint8_t *p, *end;
    uint64_t left;
} batch_reader;

/* batch_reader_init -- SHALE_ECORRUPT when the header is malformed. */
int batch_reader_init(batch_reader *r, const void *payload, size_t len);
/* batch_reader_next -- SHALE_OK with the next op, SHALE_NOTFOUND at the end,
 * SHALE_ECORRUPT when malformed (including trailing bytes). */
int batch_reader_next(batch_reader *r, batch_op *op);

/* ikey_make -- write the internal key for (tree, key) into buf (klen + 4 bytes). */
void ikey_make(uint8_t *buf, uint32_t tree, const void *key, size_t klen);

/* key_after -- key followed by one zero byte (malloc'd; NULL when out of
 * memory): the least key above key. */
uint8_t *key_after(const void *key, size_t klen);

#endif
