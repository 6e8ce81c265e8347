/*
 * codec.h -- block compression for leaf images: LZ4 (fast, or HC at a level)
 * and ZSTD, behind one small interface.
 *
 * Codec numbers are on disk (the first byte of a compressed leaf run, see
 * cleaf.h) and equal the public SHALE_COMPRESSION_* values.
 *
 * Levels (0 is always the codec's default):
 *   LZ4   -65537..-1: the fast compressor with acceleration -level;
 *         0: the fast compressor, acceleration 1; 1..12: LZ4HC at that level.
 *   ZSTD  ZSTD_minCLevel()..ZSTD_maxCLevel(); 0: ZSTD's default (3).
 *   NONE  only 0.
 *
 * A compressor context belongs to one thread at a time (one per builder).
 * Decompression needs no context from the caller: codec_decompress draws a
 * ZSTD context from a small pool (so a read miss does not allocate ~100 KiB).
 */
#ifndef SHALE_CODEC_H
#define SHALE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define CODEC_NONE 0
#define CODEC_LZ4 1
#define CODEC_ZSTD 2

/* codec_check -- SHALE_OK when codec is known and level in its range, else SHALE_EINVAL. */
int codec_check(int codec, int level);

/* codec_bound -- the largest output compressing n bytes can give. */
size_t codec_bound(int codec, size_t n);

typedef struct codec_ctx codec_ctx;
/* codec_ctx_open -- a compressor for codec at level (checked as codec_check). */
int codec_ctx_open(int codec, int level, codec_ctx **cp);
void codec_ctx_close(codec_ctx *c); /* NULL ok */
int codec_ctx_codec(const codec_ctx *c);

/* codec_compress -- compress src[0, n) into dst (cap bytes); *out gets the
 * length.  SHALE_ETOOBIG when it does not fit in cap (the caller then keeps
 * the data uncompressed), SHALE_EINVAL for codec NONE, SHALE_ENOMEM. */
int codec_compress(codec_ctx *c, const void *src, size_t n, void *dst, size_t cap, size_t *out);

/* codec_decompress -- decompress src[0, n) into dst, which must come out at
 * exactly ulen bytes.  Malformed input of any kind gives SHALE_ECORRUPT
 * (never a read or write outside the buffers); SHALE_ENOMEM. */
int codec_decompress(int codec, const void *src, size_t n, void *dst, size_t ulen);

#endif
