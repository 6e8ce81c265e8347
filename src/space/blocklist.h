/*
 * blocklist.h -- sets of pages as sorted, consolidated lists of blocks.
 *
 * A block is a run of contiguous pages {first, last} (inclusive).  A blocklist
 * holds blocks sorted by first page, none overlapping or touching (adjacent
 * blocks are merged): that canonical form makes equality a memcmp and keeps
 * lists short.  Every operation that returns SHALE_OK leaves the list
 * canonical; on SHALE_ENOMEM the list is unchanged.
 *
 * Encoding (bl_encode): varint block count, then per block varint
 * (first - end_of_previous_block) and varint (last - first), where
 * end_of_previous_block is previous.last + 1 (0 before the first block).
 */
#ifndef SHALE_BLOCKLIST_H
#define SHALE_BLOCKLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sp_block {
    uint64_t first;
    uint64_t last;
} sp_block;

typedef struct sp_blocklist {
    sp_block *v;
    size_t n;
    size_t cap;
} sp_blocklist;

#define BL_INIT {NULL, 0, 0}

void bl_init(sp_blocklist *bl);
void bl_free(sp_blocklist *bl);              /* release memory; bl becomes empty */
void bl_clear(sp_blocklist *bl);             /* empty, keeping memory */
int bl_copy(sp_blocklist *dst, const sp_blocklist *src);
int bl_add(sp_blocklist *bl, uint64_t first, uint64_t last);     /* union with a block */
int bl_add_list(sp_blocklist *bl, const sp_blocklist *other);     /* union */
int bl_remove(sp_blocklist *bl, uint64_t first, uint64_t last);  /* subtract a block */
int bl_subtract(sp_blocklist *bl, const sp_blocklist *other);     /* bl -= other */
int bl_intersect(const sp_blocklist *a, const sp_blocklist *b, sp_blocklist *out);
bool bl_contains(const sp_blocklist *bl, uint64_t page);
bool bl_overlaps(const sp_blocklist *bl, uint64_t first, uint64_t last);
bool bl_overlaps_list(const sp_blocklist *a, const sp_blocklist *b); /* any page in both */
uint64_t bl_pages(const sp_blocklist *bl);    /* number of pages */
bool bl_equal(const sp_blocklist *a, const sp_blocklist *b);
/* bl_complement -- out = [lo, hi) minus bl. */
int bl_complement(const sp_blocklist *bl, uint64_t lo, uint64_t hi, sp_blocklist *out);

size_t bl_encoded_len(const sp_blocklist *bl);
size_t bl_encode(const sp_blocklist *bl, uint8_t *out); /* returns bytes written */
/* bl_decode -- parse an encoding from [p, p+len) into bl (replacing its
 * contents); *used gets the bytes consumed.  SHALE_ECORRUPT on malformed,
 * overlapping or overflowing input (bl is then empty). */
int bl_decode(sp_blocklist *bl, const uint8_t *p, size_t len, size_t *used);

#endif
