/*
 * node.h -- leaf and parent pages of a segment's B+tree: the entry model, the
 * page formats (encode and decode), and binary search in place.
 *
 * Keys are compared with key_cmp (common.h).  A key longer than
 * node_key_inline_max(page_size) is stored in an overflow run (the full key),
 * with its first node_key_inline_max bytes kept inline so that most
 * comparisons never read the run.  A value longer than
 * node_val_inline_max(page_size) lives in an overflow run (with compression,
 * node_val_inline_max of the leaf image size: see builder.c); the entry holds
 * its page and length.
 *
 * Leaf page (type SP_PT_LEAF; count = entries; aux = prefix length P;
 *   flags = 0, or in a decompressed leaf image log2 of the page size):
 *   payload: [P bytes: prefix shared by every entry's inline key bytes]
 *            [count x u16: offset of each entry from the page start, ascending keys]
 *            [entries, stored in slot order at ascending, non-overlapping offsets]
 *   entry:   u8 kind | flags  (low 4 bits NODE_KIND_*, NODE_F_KEY_OVF, NODE_F_VAL_OVF)
 *            varint  key length (full)
 *            varint  inline key suffix length S (inline bytes after the prefix)
 *            S bytes key suffix
 *            [NODE_F_KEY_OVF: varint overflow page of the full key]
 *            varint  value length (0 for a tombstone)
 *            [NODE_F_VAL_OVF: varint overflow page]  else the value bytes
 *   An inline key has key length == P + S <= node_key_inline_max; an
 *   overflowed one has P + S == node_key_inline_max < key length.  The prefix
 *   P is the longest common prefix of the inline key bytes of all entries.
 * Parent page (type SP_PT_PARENT; count = children):
 *   payload: [count x u16 offsets] [children]
 *   child:   varint child page | varint entries | varint tombstones |
 *            u8 flags (NODE_F_KEY_OVF) | varint key length | varint inline length S |
 *            S bytes of the child's last key | [varint overflow page]
 *   A child may be a leaf or a parent of any height (its page type says which);
 *   children appear in key order, child i holding keys <= its last key and >
 *   child i-1's last key.
 */
#ifndef SHALE_NODE_H
#define SHALE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../space/space.h"
#include "pagewriter.h"

enum node_kind {
    NODE_KIND_VALUE = 0,
    NODE_KIND_TOMBSTONE = 1,
    NODE_KIND_MERGE = 2, /* a merge operand (reserved for the merge-operator issue) */
};
#define NODE_KIND_MASK 0x0f
#define NODE_F_KEY_OVF 0x10
#define NODE_F_VAL_OVF 0x20

/* Keys stored here are the layer above's keys with its own prefix (lsm puts a
 * 4-byte tree id in front), so the limit leaves room above the public one. */
#define NODE_MAX_KEY (SHALE_MAX_KEY_SIZE + 64u)

/* Leaf images (node.c, cleaf.h): a compressed leaf holds a leaf of up to
 * node_image_size(page_size) bytes; slot offsets are u16, hence the cap. */
#define NODE_IMAGE_MAX 65536u
#define NODE_IMAGE_MIN (16u * 1024u)
#define NODE_PAGE_SHIFT_MIN 10 /* log2 of SP_MIN_PAGE_SIZE */
#define NODE_PAGE_SHIFT_MAX 16 /* log2 of SP_MAX_PAGE_SIZE */
static inline uint32_t node_image_size(uint32_t page_size)
{
    uint32_t n = page_size * 4 > NODE_IMAGE_MIN ? page_size * 4 : NODE_IMAGE_MIN;
    return n < NODE_IMAGE_MAX ? n : NODE_IMAGE_MAX;
}

/* node_page_shift -- log2 of a (power-of-two) page size: a leaf image's flags. */
static inline uint8_t node_page_shift(uint32_t page_size)
{
    uint8_t s = 0;
    while ((1u << s) < page_size)
        s++;
    return s;
}

static inline uint32_t node_key_inline_max(uint32_t page_size) { return page_size / 8; }
static inline uint32_t node_val_inline_max(uint32_t page_size) { return page_size / 4; }

/* A decoded reference to a key inside a page: prefix + suffix are inline; if
 * ovf_pgno != 0 the full key (klen bytes) is in that overflow run. */
typedef struct node_key {
    const uint8_t *prefix;
    uint32_t plen;
    const uint8_t *suffix;
    uint32_t slen;
    uint64_t klen;     /* full length */
    uint64_t ovf_pgno; /* 0: the key is entirely inline (klen == plen + slen) */
} node_key;

typedef struct node_entry {
    uint8_t kind;
    node_key key;
    const uint8_t *val; /* inline value, or NULL when val_ovf_pgno != 0 */
    uint64_t vlen;
    uint64_t val_ovf_pgno;
} node_entry;

typedef struct node_child {
    uint64_t pgno;
    uint64_t entries;
    uint64_t tombstones;
    node_key last; /* the last key in the child's subtree */
} node_child;

/* Decoding: pages are verified by space (crc); these check structure and
 * return SHALE_ECORRUPT for anything out of bounds (SHALE_EINVAL for a bad
 * page_size or an index >= count).  For a leaf, page_size is the size of
 * the buffer holding it: the page size, or a decompressed image's size.  The accessors and searches check only
 * what they touch; node_*_check decode everything and also verify the key
 * order (from inline bytes: two overflowed keys whose inline bytes tie are
 * not compared). */
int node_leaf_check(const uint8_t *page, uint32_t page_size);
int node_parent_check(const uint8_t *page, uint32_t page_size);
int node_leaf_entry(const uint8_t *page, uint32_t page_size, unsigned i, node_entry *e);
int node_parent_child(const uint8_t *page, uint32_t page_size, unsigned i, node_child *c);

/* node_key_cmp -- compare (key, klen) with a stored key, reading its overflow
 * run from sp only when the inline bytes tie.  *cmp gets <0, 0, >0 as key is
 * less, equal or greater. */
int node_key_cmp(sp_space *sp, const void *key, size_t klen, const node_key *nk, int *cmp);
/* node_key_copy -- the full key into *buf (grown with realloc; *cap updated). */
int node_key_copy(sp_space *sp, const node_key *nk, uint8_t **buf, size_t *cap, size_t *len);

/* node_leaf_search -- index of the first entry >= key (== count if none);
 * *exact tells whether it equals key. */
int node_leaf_search(sp_space *sp, const uint8_t *page, uint32_t page_size, const void *key,
                     size_t klen, unsigned *idx, bool *exact);
/* node_parent_search -- index of the first child whose last key >= key (== count if none). */
int node_parent_search(sp_space *sp, const uint8_t *page, uint32_t page_size, const void *key,
                       size_t klen, unsigned *idx);

/* ---- building ---------------------------------------------------------- */

/* The tree builder streams sorted entries into leaves, and leaves (or whole
 * subtrees) into parents, bottom-up, writing each page as soon as it is full.
 * Large keys and values go to overflow runs automatically. */
typedef struct node_builder node_builder;

typedef struct node_tree_info {
    uint64_t root;       /* root page (0 when the tree is empty) */
    uint32_t height;     /* 1 = the root is a leaf; 0 empty */
    uint64_t entries;    /* including tombstones */
    uint64_t tombstones;
    uint64_t leaves;
    uint64_t parents;
    uint64_t overflow_pages;
    uint64_t compressed_leaves; /* of `leaves`, those written as compressed runs */
    uint64_t recycled;          /* subtrees added by reference (not persisted; the
                                   leaves .. overflow_pages counts above are only
                                   of what this builder wrote) */
} node_tree_info;

int node_builder_open(pw_writer *pw, node_builder **bp);
/* node_builder_set_codec -- write leaves compressed with codec (CODEC_*,
 * codec.h) at level: leaves then fill up to node_image_size(page_size), and
 * those larger than a page become compressed leaf runs (cleaf.h).  Call
 * before the first add.  Errors: SHALE_EINVAL (bad codec or level, entries
 * already added), SHALE_ENOMEM. */
int node_builder_set_codec(node_builder *b, int codec, int level);
/* node_builder_add -- append an entry; keys must be strictly increasing.
 * val is ignored for tombstones.  Errors: SHALE_EINVAL (out of order),
 * SHALE_ETOOBIG, I/O errors. */
int node_builder_add(node_builder *b, uint8_t kind, const void *key, size_t klen, const void *val,
                     size_t vlen);
/* node_builder_add_ovf -- append an entry whose value already lives in an
 * overflow run (moved by reference, never copied). */
int node_builder_add_ovf(node_builder *b, uint8_t kind, const void *key, size_t klen,
                         uint64_t val_pgno, uint64_t vlen);
/* node_builder_add_child -- append the subtree c (a child record from a
 * parent page of another tree on the same space, of the given height: 1 for
 * a leaf) by reference, without reading it.  last (lastlen bytes) is the
 * subtree's full last key (c->last names its inline bytes and key run, which
 * the new parent shares).  The caller guarantees every key of the subtree is
 * greater than everything added before; entries and tombstones count it.
 * Partial pages below the subtree's level are written first, so a tree
 * rebuilt this way stays balanced.  Errors as node_builder_add. */
int node_builder_add_child(node_builder *b, const node_child *c, uint32_t height,
                           const void *last, size_t lastlen);
/* node_builder_finish -- flush partial pages, write the parents up to a single
 * root and describe the tree.  Frees the builder (also on error). */
int node_builder_finish(node_builder *b, node_tree_info *info);
/* node_builder_abort -- free without finishing.  NULL ok. */
void node_builder_abort(node_builder *b);

#endif
