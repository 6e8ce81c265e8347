/*
 * pagewriter.c -- streams the pages of one structure (a segment) into blocks
 * loaned from the allocator, and writes and reads runs.
 *
 * Loans.  A writer loans `hint` pages at a time (fs_alloc) and hands them out
 * in order from pw_page_alloc, so the pages of a segment are mostly one or a
 * few contiguous blocks.  A run needs consecutive pages and gets a loan of
 * exactly its size.  Every page loaned is in `loaned` until it is given back:
 *   pw_finish  gives back loaned - written (pages never written, e.g. the rest
 *              of the current loan) and hands `written` to the caller, who
 *              publishes them (or retires them);
 *   pw_abort   gives back everything loaned (written or not: no header ever
 *              named them, so they are free at once).
 * So a page is never lost: it is loaned, written-and-owned by the caller, or
 * free again.
 *
 * Batching.  pw_page_write seals a page and appends it to a batch of
 * consecutive pages (up to PW_BATCH_BYTES); the batch goes out in one
 * sp_write_pages when the next page is not the next number, when it is full,
 * and at pw_flush/pw_finish.  A failed write poisons the writer (every later
 * call returns the error); the caller then aborts.
 *
 * Run format (types SP_PT_OVERFLOW, SP_PT_FILTER, SP_PT_CLEAF), npages
 * consecutive pages:
 *   every page  the page.h header: type, gen = the writer's gen, count 0,
 *               aux = index of the page in the run (0..npages-1),
 *               used = payload bytes in use, crc over the page;
 *   page 0      payload: u64 total length L, then the first
 *               min(L, PL - 8) data bytes             (PL = page_size - 32)
 *   page i > 0  payload: data bytes [i*PL - 8, min(L, (i+1)*PL - 8))
 * so npages = ceil((L + 8) / PL) and page i's used = min(PL, L + 8 - i*PL).
 * A reader checks every page: crc and number (space), type, index, the same
 * gen as page 0, and used as the length says; a length that would run past
 * the end of the file is corrupt.
 */
#include "pagewriter.h"

#include <stdlib.h>
#include <string.h>

#include "../space/common.h"

#define PW_BATCH_BYTES (256u * 1024u) /* bytes of pages per write call */
#define PW_DEFAULT_HINT 64u           /* pages a loan when the caller gives 0 */
#define PW_RUN_LEN 8u                 /* the u64 length that opens a run */
#define PW_RUN_CACHED 4u              /* runs this short are read through the cache */
#define PW_MIN_LOAN 16u               /* a free block shorter than this is left alone */

struct pw_writer {
    sp_space *sp;
    sp_freespace *fs;
    uint32_t page_size;
    uint64_t gen;
    uint64_t hint;
    uint64_t next, end;   /* the part of the current loan not handed out: [next, end) */
    sp_blocklist loaned;  /* every page loaned and not given back */
    sp_blocklist written; /* every page written (or batched to be) */
    uint64_t pages_written;
    uint8_t *batch; /* batch_n sealed pages from batch_first, not yet written */
    uint64_t batch_first;
    uint32_t batch_n, batch_max;
    uint8_t *runbuf; /* batch_max pages of scratch for run writes and reads */
    int err;         /* sticky: the first failed write */
    bool finished;
};

/* run_payload -- payload bytes of one page. */
static inline uint64_t run_payload(uint32_t page_size)
{
    return page_size - SP_PAGE_HDR;
}

/* run_page_used -- the used field of page k of a run of len bytes. */
static uint64_t run_page_used(uint32_t page_size, uint64_t len, uint64_t k)
{
    uint64_t pl = run_payload(page_size);
    uint64_t total = len + PW_RUN_LEN;
    return MIN(pl, total - k * pl);
}

/* pw_run_pages -- pages a run of len bytes takes (UINT64_MAX if absurd). */
uint64_t pw_run_pages(uint32_t page_size, uint64_t len)
{
    uint64_t pl = run_payload(page_size);
    if (page_size <= SP_PAGE_HDR || len > UINT64_MAX - PW_RUN_LEN - pl)
        return UINT64_MAX;
    return (len + PW_RUN_LEN + pl - 1) / pl;
}

/* pw_open -- a writer of pages tagged with generation gen, loaning hint pages at a time. */
int pw_open(sp_space *sp, uint64_t gen, uint64_t hint_pages, pw_writer **pwp)
{
    if (!sp || !pwp)
        return SHALE_EINVAL;
    pw_writer *pw = calloc(1, sizeof(*pw));
    if (!pw)
        return SHALE_ENOMEM;
    pw->sp = sp;
    pw->fs = sp_freespace_of(sp);
    pw->page_size = sp_page_size(sp);
    pw->gen = gen;
    pw->hint = hint_pages ? hint_pages : PW_DEFAULT_HINT;
    pw->batch_max = MAX(1u, PW_BATCH_BYTES / pw->page_size);
    bl_init(&pw->loaned);
    bl_init(&pw->written);
    *pwp = pw;
    return SHALE_OK;
}

/* pw_loan -- loan exactly n pages and remember them. */
static int pw_loan(pw_writer *pw, uint64_t n, sp_block *blk)
{
    RET(fs_alloc(pw->fs, n, blk));
    int rc = bl_add(&pw->loaned, blk->first, blk->last);
    if (rc < 0)
        (void)fs_release(pw->fs, blk->first, blk->last);
    return rc;
}

/* pw_loan_upto -- the next loan of a page stream: up to hint pages, from
 * the earliest free block of at least PW_MIN_LOAN (fs_alloc_upto). */
static int pw_loan_upto(pw_writer *pw, sp_block *blk)
{
    RET(fs_alloc_upto(pw->fs, pw->hint, MIN(pw->hint, (uint64_t)PW_MIN_LOAN), blk));
    int rc = bl_add(&pw->loaned, blk->first, blk->last);
    if (rc < 0)
        (void)fs_release(pw->fs, blk->first, blk->last);
    return rc;
}

/* pw_page_alloc -- the number of the next page to write (in loan order). */
int pw_page_alloc(pw_writer *pw, uint64_t *pgno)
{
    if (!pw || !pgno || pw->finished)
        return SHALE_EINVAL;
    if (pw->err)
        return pw->err;
    if (pw->next == pw->end) {
        sp_block blk;
        RET(pw_loan_upto(pw, &blk));
        pw->next = blk.first;
        pw->end = blk.last + 1;
    }
    *pgno = pw->next++;
    return SHALE_OK;
}

/* pw_flush -- write the batch out in one call; a failure is sticky. */
int pw_flush(pw_writer *pw)
{
    if (!pw)
        return SHALE_EINVAL;
    if (pw->err)
        return pw->err;
    if (pw->batch_n == 0)
        return SHALE_OK;
    int rc = sp_write_pages(pw->sp, pw->batch_first, pw->batch, pw->batch_n);
    pw->batch_n = 0;
    if (rc < 0)
        pw->err = rc;
    return rc;
}

/* pw_handed_out -- whether pgno is loaned and was returned by pw_page_alloc. */
static bool pw_handed_out(const pw_writer *pw, uint64_t pgno)
{
    if (pgno >= pw->next && pgno < pw->end)
        return false;
    return bl_contains(&pw->loaned, pgno);
}

/* pw_page_write -- seal one allocated page and add it to the batch. */
int pw_page_write(pw_writer *pw, uint64_t pgno, uint8_t *page)
{
    if (!pw || !page || pw->finished)
        return SHALE_EINVAL;
    if (pw->err)
        return pw->err;
    if (!pw_handed_out(pw, pgno) || bl_contains(&pw->written, pgno) || sp_page_pgno(page) != pgno ||
        sp_page_gen(page) != pw->gen)
        return SHALE_EINVAL;
    if (!pw->batch) {
        pw->batch = malloc((size_t)pw->batch_max * pw->page_size);
        if (!pw->batch)
            return SHALE_ENOMEM;
    }
    if (pw->batch_n && (pgno != pw->batch_first + pw->batch_n || pw->batch_n == pw->batch_max))
        RET(pw_flush(pw));
    RET(bl_add(&pw->written, pgno, pgno));
    sp_page_seal(page, pw->page_size);
    memcpy(pw->batch + (size_t)pw->batch_n * pw->page_size, page, pw->page_size);
    if (pw->batch_n++ == 0)
        pw->batch_first = pgno;
    pw->pages_written++;
    return SHALE_OK;
}

/* run_fill -- build page k of a run of len bytes at first into page. */
static void run_fill(const pw_writer *pw, uint8_t *page, uint8_t type, uint64_t first, uint64_t k,
                     const uint8_t *data, uint64_t len)
{
    uint32_t ps = pw->page_size;
    uint64_t pl = run_payload(ps);
    uint64_t used = run_page_used(ps, len, k);
    uint8_t *out = page + SP_PAGE_HDR;

    sp_page_init(page, ps, type, first + k, pw->gen);
    sp_page_set_aux(page, (uint32_t)k);
    sp_page_set_used(page, (uint32_t)used);
    if (k == 0) {
        put_u64(out, len);
        if (used > PW_RUN_LEN)
            memcpy(out + PW_RUN_LEN, data, used - PW_RUN_LEN);
    } else {
        memcpy(out, data + k * pl - PW_RUN_LEN, used);
    }
    sp_page_seal(page, ps);
}

/* run_type_ok -- the page types written as runs. */
static bool run_type_ok(uint8_t type)
{
    return type == SP_PT_OVERFLOW || type == SP_PT_FILTER || type == SP_PT_CLEAF;
}

/* pw_run_append -- a short run from the current loan, through the page batch. */
int pw_run_append(pw_writer *pw, uint8_t type, const void *data, size_t len, uint64_t *pgno)
{
    if (!pw || !pgno || pw->finished || (!data && len) || !run_type_ok(type))
        return SHALE_EINVAL;
    if (pw->err)
        return pw->err;
    uint64_t n = pw_run_pages(pw->page_size, len);
    if (n > pw->hint)
        return pw_run_write(pw, type, data, len, pgno);
    if (!pw->runbuf) {
        pw->runbuf = malloc((size_t)pw->batch_max * pw->page_size);
        if (!pw->runbuf)
            return SHALE_ENOMEM;
    }
    if (pw->end - pw->next < n) {
        sp_block blk;
        RET(pw_loan(pw, pw->hint, &blk));
        pw->next = blk.first;
        pw->end = blk.last + 1;
    }
    uint64_t first = pw->next;
    pw->next += n;
    for (uint64_t k = 0; k < n; k++) {
        run_fill(pw, pw->runbuf, type, first, k, data, len);
        RET(pw_page_write(pw, first + k, pw->runbuf));
    }
    *pgno = first;
    return SHALE_OK;
}

/* pw_run_write -- write data as a run in a loan of exactly its size. */
int pw_run_write(pw_writer *pw, uint8_t type, const void *data, size_t len, uint64_t *pgno)
{
    if (!pw || !pgno || pw->finished || (!data && len) || !run_type_ok(type))
        return SHALE_EINVAL;
    if (pw->err)
        return pw->err;
    uint32_t ps = pw->page_size;
    uint64_t n = pw_run_pages(ps, len);
    if (n > UINT32_MAX)
        return SHALE_ETOOBIG;
    if (!pw->runbuf) {
        pw->runbuf = malloc((size_t)pw->batch_max * ps);
        if (!pw->runbuf)
            return SHALE_ENOMEM;
    }
    sp_block blk;
    RET(pw_loan(pw, n, &blk));
    for (uint64_t i = 0; i < n; i += pw->batch_max) {
        uint64_t c = MIN((uint64_t)pw->batch_max, n - i);
        for (uint64_t j = 0; j < c; j++)
            run_fill(pw, pw->runbuf + j * ps, type, blk.first, i + j, data, len);
        int rc = sp_write_pages(pw->sp, blk.first + i, pw->runbuf, c);
        if (rc < 0)
            return pw->err = rc; /* the loan stays in `loaned`; abort gives it back */
    }
    int rc = bl_add(&pw->written, blk.first, blk.last);
    if (rc < 0)
        return pw->err = rc;
    pw->pages_written += n;
    *pgno = blk.first;
    return SHALE_OK;
}

/* run_page_check -- the checks on page k of a run that space does not make. */
static int run_page_check(const uint8_t *p, uint32_t ps, uint8_t type, uint64_t k, uint64_t gen,
                          uint64_t len)
{
    if (sp_page_type(p) != type || sp_page_aux(p) != k || sp_page_gen(p) != gen ||
        sp_page_used(p) != run_page_used(ps, len, k))
        return SHALE_ECORRUPT;
    return SHALE_OK;
}

/* run_head -- verify the first page of a run: its length, page count and gen. */
static int run_head(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t *len, uint64_t *npages,
                    uint64_t *gen)
{
    uint32_t ps = sp_page_size(sp);
    sp_page *pg = NULL;
    int rc;

    ERR(sp_page_get(sp, pgno, &pg));
    const uint8_t *p = sp_page_data(pg);
    if (sp_page_used(p) < PW_RUN_LEN)
        ERR_SET(SHALE_ECORRUPT);
    *len = get_u64(p + SP_PAGE_HDR);
    *gen = sp_page_gen(p);
    *npages = pw_run_pages(ps, *len);
    uint64_t file = fs_file_pages(sp_freespace_of(sp));
    if (*npages > file || pgno > file - *npages)
        ERR_SET(SHALE_ECORRUPT);
    ERR(run_page_check(p, ps, type, 0, *gen, *len));
err:
    sp_page_put(sp, pg);
    return rc;
}

/* run_copy_page -- copy the data bytes of verified run page k into out. */
static void run_copy_page(const uint8_t *p, uint32_t ps, uint64_t k, uint8_t *out)
{
    uint32_t used = sp_page_used(p);
    const uint8_t *src = p + SP_PAGE_HDR;
    if (k == 0)
        memcpy(out, src + PW_RUN_LEN, used - PW_RUN_LEN);
    else
        memcpy(out + k * run_payload(ps) - PW_RUN_LEN, src, used);
}

/* run_copy_cached -- copy a short run page by page through the cache. */
static int run_copy_cached(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t n, uint64_t gen,
                           uint64_t len, uint8_t *out)
{
    uint32_t ps = sp_page_size(sp);
    for (uint64_t k = 0; k < n; k++) {
        sp_page *pg;
        RET(sp_page_get(sp, pgno + k, &pg));
        const uint8_t *p = sp_page_data(pg);
        int rc = run_page_check(p, ps, type, k, gen, len);
        if (rc == SHALE_OK)
            run_copy_page(p, ps, k, out);
        sp_page_put(sp, pg);
        RET(rc);
    }
    return SHALE_OK;
}

/* run_copy_direct -- copy a long run in chunks of uncached reads. */
static int run_copy_direct(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t n, uint64_t gen,
                           uint64_t len, uint8_t *out)
{
    uint32_t ps = sp_page_size(sp);
    uint64_t chunk = MIN(n, (uint64_t)MAX(1u, PW_BATCH_BYTES / ps));
    uint8_t *buf = malloc((size_t)chunk * ps);
    int rc = SHALE_OK;

    if (!buf)
        return SHALE_ENOMEM;
    for (uint64_t i = 0; i < n; i += chunk) {
        uint64_t c = MIN(chunk, n - i);
        ERR(sp_read_run(sp, pgno + i, c, buf));
        for (uint64_t j = 0; j < c; j++) {
            const uint8_t *p = buf + j * ps;
            ERR(run_page_check(p, ps, type, i + j, gen, len));
            run_copy_page(p, ps, i + j, out);
        }
    }
err:
    free(buf);
    return rc;
}

/* run_read -- verify the run at pgno holds len bytes and copy them to out. */
static int run_read(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t n, uint64_t gen,
                    uint64_t len, uint8_t *out)
{
    if (n <= PW_RUN_CACHED)
        return run_copy_cached(sp, pgno, type, n, gen, len, out);
    return run_copy_direct(sp, pgno, type, n, gen, len, out);
}

/* run_tail_check -- verify the last page of a run before allocating for all of it. */
static int run_tail_check(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t n, uint64_t gen,
                          uint64_t len)
{
    sp_page *pg;
    RET(sp_page_get(sp, pgno + n - 1, &pg));
    int rc = run_page_check(sp_page_data(pg), sp_page_size(sp), type, n - 1, gen, len);
    sp_page_put(sp, pg);
    return rc;
}

/* pw_run_read -- read and verify a whole run into a malloc'd buffer. */
int pw_run_read(sp_space *sp, uint64_t pgno, uint8_t type, void **buf, size_t *len)
{
    return pw_run_read_max(sp, pgno, type, SIZE_MAX - 1, buf, len);
}

/* pw_run_read_max -- the same, refusing a run longer than max bytes. */
int pw_run_read_max(sp_space *sp, uint64_t pgno, uint8_t type, size_t max, void **buf,
                    size_t *len)
{
    uint64_t l, n, gen;
    int rc;

    if (!sp || !buf || !len)
        return SHALE_EINVAL;
    RET(run_head(sp, pgno, type, &l, &n, &gen));
    if (l > max || l > SIZE_MAX - 1)
        return SHALE_ECORRUPT;
    if (n > 1)
        RET(run_tail_check(sp, pgno, type, n, gen, l));
    uint8_t *out = malloc(l ? (size_t)l : 1);
    if (!out)
        return SHALE_ENOMEM;
    ERR(run_read(sp, pgno, type, n, gen, l, out));
    *buf = out;
    *len = (size_t)l;
    return SHALE_OK;
err:
    free(out);
    return rc;
}

/* pw_run_read_into -- read and verify a run of exactly len bytes into buf. */
int pw_run_read_into(sp_space *sp, uint64_t pgno, uint8_t type, void *buf, size_t len)
{
    uint64_t l, n, gen;

    if (!sp || (!buf && len))
        return SHALE_EINVAL;
    RET(run_head(sp, pgno, type, &l, &n, &gen));
    if (l != len)
        return SHALE_ECORRUPT;
    return run_read(sp, pgno, type, n, gen, l, buf);
}

/* run_cmp_page -- compare the data on page k from run offset *at with data; advances *at. */
static int run_cmp_page(const uint8_t *p, uint32_t ps, uint64_t k, uint64_t *at,
                        const uint8_t *data, uint64_t from, uint64_t dlen)
{
    uint64_t pl = run_payload(ps);
    uint64_t page_start = k * pl; /* in payload coordinates (length included) */
    uint64_t page_end = page_start + sp_page_used(p);
    uint64_t pos = *at + PW_RUN_LEN; /* the same coordinates for *at */
    uint64_t n = MIN(page_end - pos, from + dlen - *at);
    int c = n ? memcmp(data + (*at - from), p + SP_PAGE_HDR + (pos - page_start), n) : 0;
    *at += n;
    return c;
}

/* pw_run_cmp -- compare data with bytes [from, len) of a run, page by page. */
int pw_run_cmp(sp_space *sp, uint64_t pgno, uint8_t type, uint64_t len, uint64_t from,
               const void *data, size_t dlen, int *cmp)
{
    uint64_t l, n, gen;

    if (!sp || !cmp || from > len || (!data && dlen))
        return SHALE_EINVAL;
    RET(run_head(sp, pgno, type, &l, &n, &gen));
    if (l != len)
        return SHALE_ECORRUPT;
    uint32_t ps = sp_page_size(sp);
    uint64_t pl = run_payload(ps);
    uint64_t at = from; /* the next run data offset to compare */
    for (uint64_t k = (from + PW_RUN_LEN) / pl; k < n && at < len && at < from + dlen; k++) {
        sp_page *pg;
        RET(sp_page_get(sp, pgno + k, &pg));
        const uint8_t *p = sp_page_data(pg);
        int rc = run_page_check(p, ps, type, k, gen, len);
        int c = rc == SHALE_OK ? run_cmp_page(p, ps, k, &at, data, from, dlen) : 0;
        sp_page_put(sp, pg);
        RET(rc);
        if (c) {
            *cmp = c;
            return SHALE_OK;
        }
    }
    uint64_t rest = len - from;
    *cmp = (dlen > rest) - (dlen < rest);
    return SHALE_OK;
}

/* pw_give_back -- release every block of bl to the allocator; the first error wins. */
static int pw_give_back(pw_writer *pw, const sp_blocklist *bl)
{
    int rc = SHALE_OK;
    for (size_t i = 0; i < bl->n; i++) {
        int r = fs_release(pw->fs, bl->v[i].first, bl->v[i].last);
        if (r < 0 && rc == SHALE_OK)
            rc = r;
    }
    return rc;
}

/* pw_finish -- flush, give back what was loaned and not written, hand over the rest. */
int pw_finish(pw_writer *pw, sp_blocklist *used)
{
    sp_blocklist unused = BL_INIT;
    int rc;

    if (!pw || !used || pw->finished)
        return SHALE_EINVAL;
    RET(pw_flush(pw));
    RET(bl_copy(&unused, &pw->loaned));
    ERR(bl_subtract(&unused, &pw->written));
    ERR(bl_add_list(used, &pw->written));
    /* Point of no return: the written pages now belong to the caller. */
    pw->finished = true;
    pw->next = pw->end = 0;
    rc = pw_give_back(pw, &unused);
    bl_clear(&pw->loaned);
err:
    bl_free(&unused);
    return rc;
}

/* pw_destroy -- free the writer's memory. */
static void pw_destroy(pw_writer *pw)
{
    bl_free(&pw->loaned);
    bl_free(&pw->written);
    free(pw->batch);
    free(pw->runbuf);
    free(pw);
}

/* pw_abort -- give every loaned page back and free; after pw_finish, only free. */
void pw_abort(pw_writer *pw)
{
    if (!pw)
        return;
    if (!pw->finished)
        (void)pw_give_back(pw, &pw->loaned);
    pw_destroy(pw);
}

/* pw_close -- free a writer after pw_finish (aborts one that was not finished). */
void pw_close(pw_writer *pw)
{
    pw_abort(pw);
}

/* pw_space -- the space the writer writes to. */
sp_space *pw_space(pw_writer *pw)
{
    return pw->sp;
}

/* pw_gen -- the generation every page of this writer carries. */
uint64_t pw_gen(pw_writer *pw)
{
    return pw->gen;
}

/* pw_pages_written -- pages written so far (pages and runs). */
uint64_t pw_pages_written(const pw_writer *pw)
{
    return pw->pages_written;
}
