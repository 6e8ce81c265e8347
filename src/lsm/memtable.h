/*
 * memtable.h -- the in-memory sorted table writes land in before they are
 * written out to a segment.
 *
 * A skiplist in an arena, ordered by (key ascending by key_cmp, seq
 * descending): several versions of one key sit together, newest first.  One
 * writer at a time (the caller serialises mt_add); any number of readers run
 * concurrently without locks (nodes are published with release stores and
 * never change or move afterwards; the arena is freed only with the table).
 * Values larger than the arena chunk are allocated on their own and freed
 * with the table.
 *
 * Readers see an entry only if its seq <= their snapshot sequence, and only
 * the newest such version of each key.
 *
 * Reference counted: mt_create gives one reference; versions and iterators
 * take more; the last mt_unref frees it.
 */
#ifndef SHALE_MEMTABLE_H
#define SHALE_MEMTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_table mt_table;

int mt_create(mt_table **mtp);
/* mt_create_sized -- the same with a Bloom filter sized for a table of
 * expect_bytes (mt_bytes), for mt_may_contain. */
int mt_create_sized(mt_table **mtp, size_t expect_bytes);
void mt_ref(mt_table *mt);
void mt_unref(mt_table *mt); /* NULL ok */

/* mt_add -- insert a version.  kind is a NODE_KIND_* (value, tombstone, merge).
 * seq must be larger than any seq already added for this key.
 * Errors: SHALE_ETOOBIG (klen > 65535 or vlen > UINT32_MAX), SHALE_ENOMEM. */
int mt_add(mt_table *mt, uint64_t seq, uint8_t kind, const void *key, size_t klen,
           const void *val, size_t vlen);

/* mt_get -- newest version of key with seq <= snap.  SHALE_OK with *kind, *val,
 * *vlen (pointing into the table; valid while a reference is held) and *seq
 * (if not NULL), or SHALE_NOTFOUND when the table has no visible version of
 * key.  Range tombstones are not applied here (mt_range_covers). */
int mt_get(mt_table *mt, const void *key, size_t klen, uint64_t snap, uint8_t *kind,
           const void **val, size_t *vlen, uint64_t *seq);

/* Range tombstones (graveyard.h) written to the table: a list, newest first,
 * published like nodes (readers walk it without a lock).  Each counts as a
 * version in mt_count.  Point reads walk the whole list, so the db switches
 * to a new memtable once one holds MT_MAX_RANGES of them. */
#define MT_MAX_RANGES 128u
typedef struct mt_range {
    uint64_t seq;
    const uint8_t *lo, *hi; /* [lo, hi), internal keys */
    size_t lolen, hilen;
    const struct mt_range *next;
} mt_range;

/* mt_add_range -- add [lo, hi) at seq (one writer, as mt_add).
 * Errors: SHALE_ENOMEM. */
int mt_add_range(mt_table *mt, uint64_t seq, const void *lo, size_t lolen, const void *hi,
                 size_t hilen);
const mt_range *mt_ranges(const mt_table *mt); /* newest first; NULL: none */
uint32_t mt_range_count(const mt_table *mt);    /* ranges added so far */
/* mt_range_covers -- whether a range of the table with after < seq <= upto
 * holds key. */
bool mt_range_covers(const mt_table *mt, const void *key, size_t klen, uint64_t after,
                     uint64_t upto);

/* mt_may_contain -- false only when the key whose filter_hash (filter.h) is h
 * is certainly not in the table; always true for a table without a filter. */
bool mt_may_contain(const mt_table *mt, uint64_t h);

size_t mt_bytes(const mt_table *mt);   /* memory used (arena + large values) */
uint64_t mt_count(const mt_table *mt); /* versions added */

/* Iterator: a cursor over the newest visible version of each key (tombstones
 * included: the caller hides them).  Lives on the caller's stack; holds no
 * reference (the caller holds one on mt). */
typedef struct mt_iter {
    mt_table *mt;
    uint64_t snap;
    void *node; /* current node, NULL when not positioned */
} mt_iter;

void mt_iter_init(mt_iter *it, mt_table *mt, uint64_t snap);
bool mt_iter_valid(const mt_iter *it);
void mt_iter_first(mt_iter *it);
void mt_iter_last(mt_iter *it);
void mt_iter_seek_ge(mt_iter *it, const void *key, size_t klen); /* first key >= key */
void mt_iter_seek_le(mt_iter *it, const void *key, size_t klen); /* last key <= key */
void mt_iter_next(mt_iter *it); /* to the next larger key */
void mt_iter_prev(mt_iter *it); /* to the next smaller key */
/* mt_iter_at -- on the newest visible version of exactly key (false and
 * unpositioned when there is none). */
bool mt_iter_at(mt_iter *it, const void *key, size_t klen);
/* mt_iter_older -- to the next older version of the current key (false, not
 * moved, when there is none).  next/prev still move by key from there. */
bool mt_iter_older(mt_iter *it);
const void *mt_iter_key(const mt_iter *it, size_t *klen);
uint8_t mt_iter_kind(const mt_iter *it);
const void *mt_iter_value(const mt_iter *it, size_t *vlen);
uint64_t mt_iter_seq(const mt_iter *it);

#endif
