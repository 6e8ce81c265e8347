/*
 * page.h -- the common header every page of the page file starts with (except
 * the two header slots, see header.h), and its checksum.
 *
 * Layout (little-endian), SP_PAGE_HDR = 32 bytes:
 *   0  u32 crc     crc32c_mask(crc32c(bytes [4, page_size)))
 *   4  u8  type    SP_PT_*
 *   5  u8  flags   type-specific
 *   6  u16 count   entries (leaf, parent); 0 otherwise
 *   8  u64 pgno    the page's own number: a misdirected read fails the check
 *  16  u64 gen     write generation of the structure the page was written for;
 *                  a stale pointer into a reused page sees a different gen
 *  24  u32 used    payload bytes in use after the header
 *  28  u32 aux     type-specific (leaf: prefix length; run pages: index in run)
 * The rest of the page is payload; unused bytes are zero.
 */
#ifndef SHALE_PAGE_H
#define SHALE_PAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define SP_PAGE_HDR 32u
#define SP_MIN_PAGE_SIZE 1024u
#define SP_MAX_PAGE_SIZE 65536u

enum sp_page_type {
    SP_PT_LEAF = 1,
    SP_PT_PARENT = 2,
    SP_PT_OVERFLOW = 3, /* a run: large value or key */
    SP_PT_FILTER = 4,   /* a run: a segment's filter */
    SP_PT_META = 5,     /* a run: a header body spilled out of its slot */
    SP_PT_CLEAF = 6,    /* a run: a compressed leaf (pagewriter/cleaf.h) */
};

static inline uint8_t sp_page_type(const uint8_t *p) { return p[4]; }
static inline uint8_t sp_page_flags(const uint8_t *p) { return p[5]; }
static inline uint16_t sp_page_count(const uint8_t *p) { return get_u16(p + 6); }
static inline uint64_t sp_page_pgno(const uint8_t *p) { return get_u64(p + 8); }
static inline uint64_t sp_page_gen(const uint8_t *p) { return get_u64(p + 16); }
static inline uint32_t sp_page_used(const uint8_t *p) { return get_u32(p + 24); }
static inline uint32_t sp_page_aux(const uint8_t *p) { return get_u32(p + 28); }

/* sp_page_init -- zero the page and fill the header fields (crc left 0). */
void sp_page_init(uint8_t *page, uint32_t page_size, uint8_t type, uint64_t pgno, uint64_t gen);
static inline void sp_page_set_count(uint8_t *p, uint16_t n) { put_u16(p + 6, n); }
static inline void sp_page_set_used(uint8_t *p, uint32_t n) { put_u32(p + 24, n); }
static inline void sp_page_set_aux(uint8_t *p, uint32_t n) { put_u32(p + 28, n); }
static inline void sp_page_set_flags(uint8_t *p, uint8_t f) { p[5] = f; }
static inline void sp_page_set_pgno(uint8_t *p, uint64_t pgno) { put_u64(p + 8, pgno); }

/* sp_page_seal -- compute and store the crc; call after the last change. */
void sp_page_seal(uint8_t *page, uint32_t page_size);

/* sp_page_verify -- SHALE_OK when the crc matches, pgno is `pgno` and `used`
 * fits in the page; SHALE_ECORRUPT otherwise. */
int sp_page_verify(const uint8_t *page, uint32_t page_size, uint64_t pgno);

#endif
