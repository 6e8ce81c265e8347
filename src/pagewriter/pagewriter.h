/*
 * pagewriter.h -- streams pages into blocks loaned from space.
 *
 * A pw_writer belongs to one structure being written (a segment).  It loans a
 * block of `hint` pages at a time from the allocator and hands out its pages
 * in order, so a segment's pages are mostly contiguous.  Runs (overflow
 * values/keys, filters) need consecutive pages and get a block of exactly
 * their size.  pw_finish returns the unused rest of the current loan to space
 * at once (it was never published) and hands back the blocklist of every page
 * written; pw_abort returns all of it.
 *
 * Run format (SP_PT_OVERFLOW, SP_PT_FILTER, SP_PT_CLEAF): npages consecutive pages, each a
 * normal page (page.h header, its own crc, aux = index in the run), payload
 * page_size - SP_PAGE_HDR bytes each; the first page's payload starts with the
 * u64 total length of the data.  So a run of len bytes takes
 * pw_run_pages(page_size, len) pages.
 */
#ifndef SHALE_PAGEWRITER_H
#define SHALE_PAGEWRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../space/space.h"

typedef struct pw_writer pw_writer;

/* pw_open -- a writer of pages tagged with generation gen, loaning hint pages at a time. */
int pw_open(sp_space *sp, uint64_t gen, uint64_t hint_pages, pw_writer **pwp);
/* pw_page_alloc -- the number of the next page to write (in loan order). */
int pw_page_alloc(pw_writer *pw, uint64_t *pgno);
/* pw_page_write -- seal (crc) and write one page that was allocated above; the
 * caller has filled its header with sp_page_init and set count/used/aux.
 * Consecutive pages are batched into one sp_write_pages (see pw_flush).
 * SHALE_EINVAL for a page not handed out by pw_page_alloc, written twice, or
 * whose header names another pgno or gen.  A failed write is sticky: every
 * later call returns it, and the caller aborts. */
int pw_page_write(pw_writer *pw, uint64_t pgno, uint8_t *page);
/* pw_run_write -- write data as a run of type SP_PT_OVERFLOW or SP_PT_FILTER;
 * returns its first page. */
int pw_run_write(pw_writer *pw, uint8_t type, const void *data, size_t len, uint64_t *pgno);
uint64_t pw_run_pages(uint32_t page_size, uint64_t len);
/* pw_run_append -- write data as a short run of any run type (SP_PT_CLEAF
 * among them) in loan order, batched with the pages around it: it takes the
 * next pages of the current loan, or starts a new loan when they are too few
 * (the old loan's rest goes back at pw_finish).  A run longer than the loan
 * hint goes to pw_run_write.  Returns its first page. */
int pw_run_append(pw_writer *pw, uint8_t type, const void *data, size_t len, uint64_t *pgno);
/* pw_run_read -- read and verify a whole run into *buf (malloc'd, *len bytes),
 * expecting `type`.  Errors: SHALE_ECORRUPT, SHALE_EIO, SHALE_ENOMEM. */
int pw_run_read(sp_space *sp, uint64_t pgno, uint8_t type, void **buf, size_t *len);
/* pw_run_read_max -- the same, SHALE_ECORRUPT for a run of more than max
 * bytes (before anything is allocated). */
int pw_run_read_max(sp_space *sp, uint64_t pgno, uint8_t type, size_t max, void **buf,
                    size_t *len);
/* pw_run_read_into -- the same into a caller-sized buffer; expects exactly len bytes. */
int pw_run_read_into(sp_space *sp, uint64_t pgno, uint8_t type, void *buf, size_t len);
/* pw_run_cmp -- compare data[0, dlen) with bytes [from, len) of the run at
 * pgno, which must hold exactly len bytes, reading page by page through the
 * cache (no copy, no allocation); *cmp <0, 0, >0 as data is less, equal or
 * greater (memcmp, then shorter first).  Errors: SHALE_EINVAL (sp NULL,
 * from > len), SHALE_ECORRUPT, SHALE_EIO. */
int pw_run_cmp(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t len, uint64_t from,
               const void *data, size_t dlen, int *cmp);
/* pw_flush -- write out pages that pw_page_write batched (pw_finish does it;
 * a page written is readable through space only after one of them). */
int pw_flush(pw_writer *pw);
/* pw_finish -- return the unused loan; *used (bl_init'ed by caller) gets every page written. */
int pw_finish(pw_writer *pw, sp_blocklist *used);
/* pw_abort -- return every loaned page to space at once and free the writer.
 * NULL ok.  After a successful pw_finish it only frees (the pages in *used
 * are the caller's); after a failed one it returns everything. */
void pw_abort(pw_writer *pw);
void pw_close(pw_writer *pw); /* free after pw_finish */
sp_space *pw_space(pw_writer *pw);
uint64_t pw_gen(pw_writer *pw);
uint64_t pw_pages_written(const pw_writer *pw);

#endif
