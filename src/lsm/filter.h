/*
 * filter.h -- a blocked Bloom filter over 64-bit key hashes: "certainly not
 * here" for point reads, so that a miss in a segment touches no page.
 *
 * Every key's bits fall in one 64-byte block (one cache line), so a query
 * costs one cache miss at most.  The serialised format is in filter.c.  A
 * filter is built once from the hashes of every key (filter_builder) and then
 * only queried, in place, from any number of threads.
 */
#ifndef SHALE_FILTER_H
#define SHALE_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FILTER_BITS_PER_KEY 10u /* ~1% false positives */

/* filter_hash -- the hash every key is filtered by (XXH3, 64 bits). */
uint64_t filter_hash(const void *key, size_t klen);

/* Collects hashes while a segment streams by; the filter is sized at the end,
 * when the number of keys is known. */
typedef struct filter_builder {
    uint64_t *hashes;
    size_t n;
    size_t cap;
} filter_builder;

#define FILTER_BUILDER_INIT                                                                        \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void filter_builder_init(filter_builder *fb);
void filter_builder_free(filter_builder *fb);
/* filter_builder_add -- remember one key hash.  Errors: SHALE_ENOMEM. */
int filter_builder_add(filter_builder *fb, uint64_t hash);
/* filter_builder_finish -- encode a filter of every hash added, at
 * bits_per_key (1..64), into *out (malloc'd, *len bytes).  The builder keeps
 * its hashes.  Errors: SHALE_EINVAL, SHALE_ETOOBIG, SHALE_ENOMEM. */
int filter_builder_finish(const filter_builder *fb, unsigned bits_per_key, uint8_t **out,
                          size_t *len);

/* filter_check -- SHALE_OK when [f, f+len) is a well-formed filter,
 * SHALE_ECORRUPT otherwise. */
int filter_check(const uint8_t *f, size_t len);
/* filter_may_contain -- false only when no key with this hash was added.  A
 * malformed filter answers true (it never hides a key). */
bool filter_may_contain(const uint8_t *f, size_t len, uint64_t hash);

#endif /* SHALE_FILTER_H */
