/*
 * cleaf.c -- writing and loading compressed leaves (format in cleaf.h).
 *
 * The builder calls cleaf_write once per leaf image larger than a page; the
 * image is compressed into the builder's scratch after a two-byte-or-so
 * preamble (codec, varint U), and written raw instead when compression would
 * not save at least one page of the run.  Loading reads the whole run
 * (verified page by page by pw_run_read), decompresses to exactly U bytes and
 * checks the image header against what the run promised, so a leaf image
 * handed to node.c is as trustworthy as a page that passed its crc.
 */
#include "cleaf.h"

#include <stdlib.h>
#include <string.h>

#include "../space/common.h"
#include "node.h"

#define CLEAF_PRE 6u /* u8 codec + varint U (U <= 65536 takes at most 3 bytes) */

/* cleaf_scratch_size -- scratch bytes cleaf_write needs for an image of ilen. */
size_t cleaf_scratch_size(int codec, size_t ilen)
{
    return CLEAF_PRE + MAX(codec_bound(codec, ilen), ilen);
}

/* cleaf_write -- compress the image (raw if that saves no page) and write the run. */
int cleaf_write(pw_writer *pw, codec_ctx *c, uint8_t *img, size_t ilen, uint8_t *scratch,
                size_t cap, uint64_t *pgno, size_t *stored)
{
    uint32_t ps = sp_page_size(pw_space(pw));
    size_t clen = 0;

    if (!c || !img || !scratch || ilen <= ps || ilen > node_image_size(ps) ||
        cap < cleaf_scratch_size(codec_ctx_codec(c), ilen))
        return SHALE_EINVAL;
    size_t pre = 1 + varint_put(scratch + 1, ilen);
    int rc = codec_compress(c, img, ilen, scratch + pre, cap - pre, &clen);
    if (rc == SHALE_OK && pw_run_pages(ps, pre + clen) < pw_run_pages(ps, pre + ilen)) {
        scratch[0] = (uint8_t)codec_ctx_codec(c);
    } else if (rc == SHALE_OK || rc == SHALE_ETOOBIG) {
        scratch[0] = CODEC_NONE;
        memcpy(scratch + pre, img, ilen);
        clen = ilen;
    } else {
        return rc;
    }
    *stored = pre + clen;
    return pw_run_append(pw, SP_PT_CLEAF, scratch, pre + clen, pgno);
}

/* image_check -- the decompressed image's header against the run's promises. */
static int image_check(const uint8_t *img, uint32_t ilen, uint32_t ps, uint64_t gen)
{
    if (sp_page_type(img) != SP_PT_LEAF || sp_page_flags(img) != node_page_shift(ps) ||
        sp_page_count(img) == 0 || sp_page_used(img) != ilen - SP_PAGE_HDR ||
        sp_page_gen(img) != gen || sp_page_pgno(img) != 0 || get_u32(img) != 0)
        return SHALE_ECORRUPT;
    return SHALE_OK;
}

/* cleaf_load -- read, decompress and check the compressed leaf at pgno. */
int cleaf_load(sp_space *sp, uint64_t pgno, uint64_t gen, uint8_t **img, uint32_t *ilen,
               uint64_t *npages)
{
    uint32_t ps = sp_page_size(sp);
    uint8_t *run = NULL, *out = NULL;
    size_t len;
    uint64_t u;
    int rc;

    size_t max = CLEAF_PRE + MAX(codec_bound(CODEC_LZ4, node_image_size(ps)),
                                 codec_bound(CODEC_ZSTD, node_image_size(ps)));
    ERR(pw_run_read_max(sp, pgno, SP_PT_CLEAF, max, (void **)&run, &len));
    size_t vl = len > 1 ? varint_get(run + 1, run + len, &u) : 0;
    if (vl == 0 || u <= ps || u > node_image_size(ps))
        ERR_SET(SHALE_ECORRUPT);
    const uint8_t *src = run + 1 + vl;
    size_t n = len - 1 - vl;
    if (!(out = malloc((size_t)u)))
        ERR_SET(SHALE_ENOMEM);
    if (run[0] == CODEC_NONE) {
        if (n != u)
            ERR_SET(SHALE_ECORRUPT);
        memcpy(out, src, n);
    } else {
        ERR(codec_decompress(run[0], src, n, out, (size_t)u));
    }
    ERR(image_check(out, (uint32_t)u, ps, gen));
    put_u64(out + 8, pgno);
    *img = out;
    *ilen = (uint32_t)u;
    *npages = pw_run_pages(ps, len);
    out = NULL;
err:
    free(out);
    free(run);
    return rc;
}
