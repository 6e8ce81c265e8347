/*
 * crc32c.h -- CRC-32C (Castagnoli), the checksum on every page, header slot and
 * log record.  Uses the SSE4.2 crc32 instruction when the CPU has it (checked
 * once at run time) and a slicing-by-8 table otherwise; both give identical
 * results.  No Debian package ships a C CRC-32C library, hence this file.
 */
#ifndef SHALE_CRC32C_H
#define SHALE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* crc32c_extend -- continue crc (0 to start) over n bytes of data. */
uint32_t crc32c_extend(uint32_t crc, const void *data, size_t n);

static inline uint32_t crc32c(const void *data, size_t n) { return crc32c_extend(0, data, n); }

/* crc32c_mask -- a stored CRC is masked (LevelDB's trick) so that a CRC over
 * data that itself embeds CRCs does not degenerate. */
static inline uint32_t crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

#endif
