/*
 * codec.c -- LZ4 and ZSTD behind codec.h.
 *
 * Compression keeps its state in the context (LZ4's or LZ4HC's state, or a
 * ZSTD_CCtx), so a builder compresses every leaf without allocating.
 * Decompression is stateless for LZ4 (LZ4_decompress_safe never reads or
 * writes outside the buffers it is given) and uses a pooled ZSTD_DCtx for
 * ZSTD: up to CODEC_POOL idle contexts are kept process-wide under a mutex,
 * so concurrent readers each take one and a miss allocates only when every
 * pooled one is in use.  Pooled contexts stay reachable until exit.
 */
#include "codec.h"

#include <limits.h>
#include <lz4.h>
#include <lz4hc.h>
#include <pthread.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "../space/common.h"

#define CODEC_POOL 16
#define LZ4_MIN_LEVEL (-65537)

struct codec_ctx {
    int codec;
    int level;
    void *lz4; /* LZ4 or LZ4HC state */
    ZSTD_CCtx *zc;
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static ZSTD_DCtx *pool[CODEC_POOL];
static unsigned pool_n;

/* codec_check -- whether codec and level are valid together. */
int codec_check(int codec, int level)
{
    switch (codec) {
    case CODEC_NONE:
        return level == 0 ? SHALE_OK : SHALE_EINVAL;
    case CODEC_LZ4:
        return level >= LZ4_MIN_LEVEL && level <= LZ4HC_CLEVEL_MAX ? SHALE_OK : SHALE_EINVAL;
    case CODEC_ZSTD:
        return level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel() ? SHALE_OK : SHALE_EINVAL;
    default:
        return SHALE_EINVAL;
    }
}

/* codec_bound -- worst-case compressed size of n bytes. */
size_t codec_bound(int codec, size_t n)
{
    if (codec == CODEC_LZ4)
        return n > (size_t)LZ4_MAX_INPUT_SIZE ? 0 : (size_t)LZ4_compressBound((int)n);
    if (codec == CODEC_ZSTD)
        return ZSTD_compressBound(n);
    return n;
}

/* codec_ctx_open -- allocate a compressor's state. */
int codec_ctx_open(int codec, int level, codec_ctx **cp)
{
    if (!cp || codec == CODEC_NONE)
        return SHALE_EINVAL;
    RET(codec_check(codec, level));
    codec_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return SHALE_ENOMEM;
    c->codec = codec;
    c->level = level;
    if (codec == CODEC_LZ4)
        c->lz4 = malloc((size_t)(level > 0 ? LZ4_sizeofStateHC() : LZ4_sizeofState()));
    else
        c->zc = ZSTD_createCCtx();
    if (!c->lz4 && !c->zc) {
        free(c);
        return SHALE_ENOMEM;
    }
    *cp = c;
    return SHALE_OK;
}

/* codec_ctx_close -- free a compressor. */
void codec_ctx_close(codec_ctx *c)
{
    if (!c)
        return;
    free(c->lz4);
    ZSTD_freeCCtx(c->zc);
    free(c);
}

/* codec_ctx_codec -- the codec a context compresses with. */
int codec_ctx_codec(const codec_ctx *c)
{
    return c->codec;
}

/* codec_compress -- one block, into at most cap bytes. */
int codec_compress(codec_ctx *c, const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
    if (!c || (!src && n) || !dst || !out)
        return SHALE_EINVAL;
    if (c->codec == CODEC_LZ4) {
        if (n > (size_t)LZ4_MAX_INPUT_SIZE)
            return SHALE_ETOOBIG;
        int dcap = (int)MIN(cap, (size_t)INT_MAX);
        int r = c->level > 0 ? LZ4_compress_HC_extStateHC(c->lz4, src, dst, (int)n, dcap, c->level)
                             : LZ4_compress_fast_extState(c->lz4, src, dst, (int)n, dcap,
                                                          c->level < 0 ? -c->level : 1);
        if (r <= 0)
            return SHALE_ETOOBIG; /* LZ4 fails only when the output does not fit */
        *out = (size_t)r;
        return SHALE_OK;
    }
    size_t r = ZSTD_compressCCtx(c->zc, dst, cap, src, n, c->level);
    if (ZSTD_isError(r))
        return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? SHALE_ETOOBIG
               : ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? SHALE_ENOMEM
                                                                        : SHALE_EINVAL;
    *out = r;
    return SHALE_OK;
}

/* pool_take -- an idle ZSTD decompression context, or a new one. */
static ZSTD_DCtx *pool_take(void)
{
    ZSTD_DCtx *d = NULL;
    pthread_mutex_lock(&pool_mu);
    if (pool_n > 0)
        d = pool[--pool_n];
    pthread_mutex_unlock(&pool_mu);
    return d ? d : ZSTD_createDCtx();
}

/* pool_give -- return a context to the pool (freed when the pool is full). */
static void pool_give(ZSTD_DCtx *d)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_n < CODEC_POOL) {
        pool[pool_n++] = d;
        d = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
    ZSTD_freeDCtx(d);
}

/* codec_decompress -- exactly ulen bytes, or SHALE_ECORRUPT. */
int codec_decompress(int codec, const void *src, size_t n, void *dst, size_t ulen)
{
    if ((!src && n) || (!dst && ulen))
        return SHALE_EINVAL;
    if (codec == CODEC_LZ4) {
        if (n > (size_t)INT_MAX || ulen > (size_t)INT_MAX)
            return SHALE_ECORRUPT;
        int r = LZ4_decompress_safe(src, dst, (int)n, (int)ulen);
        return r >= 0 && (size_t)r == ulen ? SHALE_OK : SHALE_ECORRUPT;
    }
    if (codec != CODEC_ZSTD)
        return SHALE_ECORRUPT;
    ZSTD_DCtx *d = pool_take();
    if (!d)
        return SHALE_ENOMEM;
    size_t r = ZSTD_decompressDCtx(d, dst, ulen, src, n);
    int rc = SHALE_OK;
    if (ZSTD_isError(r))
        rc = ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? SHALE_ENOMEM : SHALE_ECORRUPT;
    else if (r != ulen)
        rc = SHALE_ECORRUPT;
    pool_give(d);
    return rc;
}
