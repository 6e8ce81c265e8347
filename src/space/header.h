/*
 * header.h -- the two checksummed header slots of the page file (pages 0 and
 * 1) and the META page runs a header body spills into.  The byte format is
 * specified at the top of header.c.
 *
 * A header holds fixed fields (sequence number, page size, file size in
 * pages) and a body: the persisted free list followed by the opaque meta of
 * the layer above.  The body lives inside the slot when it fits
 * (hdr_fits_inline), else in a run of SP_PT_META pages written, and synced,
 * before the slot that names them.
 */
#ifndef SHALE_HEADER_H
#define SHALE_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blocklist.h"
#include "env.h"

#define SP_HDR_VERSION 1u
#define SP_HDR_FIXED 80u /* slot bytes before an inline body */

/* sp_slot -- the fixed fields of one header slot. */
typedef struct sp_slot {
    uint64_t seq; /* checkpoint sequence number, >= 1 */
    uint32_t page_size;
    uint64_t file_pages; /* pages at or beyond this are free */
    uint64_t body_len;
    uint32_t body_crc;    /* crc32c_mask(crc32c(body)) */
    uint64_t spill_first; /* first page of the spill run; 0: body inline */
    uint64_t spill_pages; /* pages in the spill run; 0 when inline */
} sp_slot;

/* sp_header -- a decoded, verified header as chosen at open. */
typedef struct sp_header {
    sp_slot slot;
    int which;         /* the slot it came from: 0 or 1 */
    sp_blocklist free; /* persisted free list */
    void *meta;        /* malloc'd body of the layer above; NULL when 0 bytes */
    size_t metalen;
} sp_header;

/* hdr_fits_inline -- whether a body of len bytes fits in a slot. */
bool hdr_fits_inline(uint32_t page_size, uint64_t len);
/* hdr_spill_need -- META pages a spilled body of len bytes needs. */
uint64_t hdr_spill_need(uint32_t page_size, uint64_t len);

/* hdr_body_encode -- *body (malloc'd) = encoding of free, then meta. */
int hdr_body_encode(const sp_blocklist *free, const void *meta, size_t metalen, uint8_t **body,
                    size_t *len);
/* hdr_body_decode -- split a body into the free list and a malloc'd meta copy.
 * SHALE_ECORRUPT on a malformed free list. */
int hdr_body_decode(const uint8_t *body, size_t len, sp_blocklist *free, void **meta,
                    size_t *metalen);

/* hdr_slot_encode -- fill a page_size buffer with slot s (body_len, body_crc
 * and, when inline, the body are taken from body/len). */
void hdr_slot_encode(uint8_t *buf, const sp_slot *s, const uint8_t *body, size_t len);
/* hdr_slot_decode -- parse and check a slot from the avail bytes at buf.
 * page_size 0 accepts the slot's own page size, else it must match.  On
 * SHALE_OK *inl points at the inline body (NULL when spilled).  Errors:
 * SHALE_ECORRUPT (torn, zeroed or truncated), SHALE_EFORMAT (intact but of
 * another format version). */
int hdr_slot_decode(const uint8_t *buf, size_t avail, uint32_t page_size, sp_slot *s,
                    const uint8_t **inl);

/* hdr_spill_encode -- fill s->spill_pages sealed META pages at out with body. */
void hdr_spill_encode(uint8_t *out, const sp_slot *s, const uint8_t *body, size_t len);
/* hdr_spill_decode -- verify a spill run read into pages and reassemble its
 * body into out (s->body_len bytes).  SHALE_ECORRUPT on any mismatch. */
int hdr_spill_decode(const uint8_t *pages, const sp_slot *s, uint8_t *out);

/* hdr_read -- read both slots of f, choose the valid one with the higher
 * sequence number (a slot whose spill run or body fails is invalid) and
 * decode it into h.  Errors: SHALE_ECORRUPT (no valid slot), SHALE_EFORMAT,
 * SHALE_EIO, SHALE_ENOMEM. */
int hdr_read(sp_env *env, sp_file *f, sp_header *h);
/* hdr_write_slot -- write slot `which` (a full page) holding s and, when
 * inline, the body.  Does not sync. */
int hdr_write_slot(sp_env *env, sp_file *f, int which, const sp_slot *s, const uint8_t *body,
                   size_t len);
/* hdr_free -- release what hdr_read put in h. */
void hdr_free(sp_header *h);

#endif
