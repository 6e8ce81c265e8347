/*
 * cleaf.h -- compressed leaves: a leaf image larger than a page, stored
 * compressed as a short run.
 *
 * When a segment is written with compression, its builder fills leaves up to
 * node_image_size(page_size) bytes instead of one page.  A leaf that still
 * fits one page is written as a plain leaf page; a larger one becomes a run
 * of type SP_PT_CLEAF (pagewriter.h run format) whose data is
 *   u8      codec (CODEC_LZ4, CODEC_ZSTD, or CODEC_NONE when compressing
 *           would not save a page: the image is then stored as is)
 *   varint  U, the image's length: SP_PAGE_HDR + its used payload,
 *           page_size < U <= node_image_size(page_size)
 *   ...     the codec's output for the U image bytes (or the bytes)
 * The image is a leaf in node.h's format with the header fields type
 * SP_PT_LEAF, flags log2(page_size), gen the run's gen, used U - SP_PAGE_HDR,
 * and pgno and crc 0 (the run's pages carry crcs; the run's place is decided
 * after compressing, so cleaf_load writes its first page into pgno).
 * Parents point at the run's first page like at any other child.
 */
#ifndef SHALE_CLEAF_H
#define SHALE_CLEAF_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "pagewriter.h"

/* cleaf_write -- write the leaf image img (ilen bytes, header as above) as a
 * compressed leaf run through pw (pw_run_append), compressing with c into
 * scratch, which holds cleaf_scratch_size(ilen) bytes.  Returns the run's
 * first page. */
size_t cleaf_scratch_size(int codec, size_t ilen);
int cleaf_write(pw_writer *pw, codec_ctx *c, uint8_t *img, size_t ilen, uint8_t *scratch,
                size_t cap, uint64_t *pgno, size_t *stored);
/* (*stored gets the run's data length: the preamble and the compressed or raw image.) */

/* cleaf_load -- read the compressed leaf run at pgno (its first page seen by
 * the caller with gen `gen`) and decompress it: *img (malloc'd, *ilen bytes)
 * is the checked-header leaf image; *npages the run's length.
 * Errors: SHALE_ECORRUPT (anything malformed), SHALE_EIO, SHALE_ENOMEM. */
int cleaf_load(sp_space *sp, uint64_t pgno, uint64_t gen, uint8_t **img, uint32_t *ilen,
               uint64_t *npages);

#endif
