/*
 * common.h -- helpers every layer uses: the error idiom, little-endian and
 * varint coding, and small arithmetic.  Everything here is static inline.
 *
 * Error idiom (WiredTiger's): every fallible internal function returns int,
 * SHALE_OK or a negative SHALE_E* code.  RET(x) returns on failure; ERR(x)
 * jumps to the function's single `err:` label, where cleanup runs with `rc`
 * holding the result.  A function using ERR declares `int rc = SHALE_OK;`.
 *
 * Varints are LEB128 (7 bits a byte, low bits first, at most 10 bytes for a
 * u64).  Decoders never read past `end` and return 0 bytes consumed on a
 * malformed or truncated varint, which callers turn into SHALE_ECORRUPT.
 */
#ifndef SHALE_COMMON_H
#define SHALE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shale.h"

#define RET(x)                                                                 \
    do {                                                                       \
        int ret_rc_ = (x);                                                     \
        if (ret_rc_ < 0)                                                       \
            return ret_rc_;                                                    \
    } while (0)

#define ERR(x)                                                                 \
    do {                                                                       \
        rc = (x);                                                              \
        if (rc < 0)                                                            \
            goto err;                                                          \
    } while (0)

/* ERR_SET -- set rc to an error code and jump to err. */
#define ERR_SET(code)                                                          \
    do {                                                                       \
        rc = (code);                                                           \
        goto err;                                                              \
    } while (0)

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static inline void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
/* (x86-64 and aarch64 are little-endian; a big-endian port swaps in put/get.) */

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#define VARINT_MAX 10

/* varint_len -- bytes the varint encoding of v takes. */
static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

/* varint_put -- encode v at p; returns the bytes written (<= VARINT_MAX). */
static inline size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

/* varint_get -- decode from [p, end) into *v; returns bytes read, 0 if malformed. */
static inline size_t varint_get(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    size_t n = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p + n >= end)
            return 0;
        uint8_t b = p[n++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return n;
        }
    }
    return 0;
}

/* key_cmp -- the one key order: memcmp, shorter first on a tie. */
static inline int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

#endif /* SHALE_COMMON_H */
