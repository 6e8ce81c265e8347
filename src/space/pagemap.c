/*
 * pagemap.c -- page reads straight from a read-only mapping of the page file,
 * each page's checksum checked on its first access only.
 *
 * Why: a read through the cache costs a shard mutex and a hash lookup, and a
 * miss a pread, a malloc and a copy.  Here a read is an atomic load of the
 * extent, one of a bitmap word, and a pointer; the kernel's page cache is the
 * cache (LMDB's design).  space.c falls back to the cache for envs without
 * map and for pages outside the extent.
 *
 * Extent (pages [0, extent) are in the file, so touching them cannot fault):
 * set from the file size at open, raised by pm_extend after each write that
 * ends beyond it, lowered by pm_shrink before the file is truncated.  The
 * file only shrinks by a free tail, so no page a reader may hold is cut; a
 * reader racing a truncate can only be following a corrupt pointer into
 * free pages.  A file cut or an I/O error behind shale's back faults the
 * process, as with any mapping (LMDB shares this); open rejects a file
 * already too short for its header (space.c).
 *
 * Verified bits: one per page, set once sp_page_verify passed on the page's
 * current contents, cleared by pm_forget before a page is rewritten and by
 * pm_shrink for pages cut off.  A failed check sets nothing, so a corrupt
 * page fails every time.  Two levels, so a big reservation costs nothing
 * until read: a fixed array of chunk pointers sized at open, and chunks of
 * PM_CHUNK_PAGES bits allocated on first need and installed by
 * compare-and-swap (a loser frees its copy).  Bits are set with atomic OR and
 * cleared with atomic AND; chunks live until pm_close.
 *
 * One race is left benign on purpose: a reader that checked a page's old
 * contents may set its bit just after a writer cleared it, so the new
 * contents go unchecked until the next rewrite.  Only a page no reader may
 * reach is rewritten (it is loaned to the writer), so this needs a stale or
 * corrupt pointer, and the contents are then the writer's own sealed page.
 *
 * Counters are striped by thread so that readers do not share a cache line.
 */
#include "pagemap.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "page.h"

/* Address space reserved per open file: files beyond it are read through the
 * cache past this point.  1 TiB keeps over a hundred open files within the
 * 128 TiB of an x86-64 process. */
#define PM_RESERVE ((uint64_t)1 << 40)
#define PM_CHUNK_SHIFT 16 /* 64 Ki pages a chunk: 8 KiB of bits */
#define PM_CHUNK_PAGES ((uint64_t)1 << PM_CHUNK_SHIFT)
#define PM_CHUNK_WORDS (PM_CHUNK_PAGES / 64)
#define PM_STRIPES 16
#define PM_LINE 64

typedef _Atomic uint64_t pm_word;

typedef struct pm_counter {
    _Alignas(PM_LINE) _Atomic uint64_t hits;
    _Atomic uint64_t misses;
} pm_counter;

struct sp_pagemap {
    sp_env *env;
    sp_file *f;
    const uint8_t *base;
    uint32_t page_size;
    uint64_t max_pages; /* pages the reservation holds */
    _Atomic uint64_t extent;
    size_t nchunks;
    _Atomic(pm_word *) *chunks;
    pm_counter counters[PM_STRIPES];
};

static _Atomic unsigned pm_next_stripe;
static _Thread_local unsigned pm_stripe; /* this thread's stripe + 1; 0 until first use */

/* pm_counter_of -- this thread's counters. */
static inline pm_counter *pm_counter_of(sp_pagemap *pm)
{
    unsigned s = pm_stripe;

    if (UNLIKELY(s == 0)) {
        s = atomic_fetch_add_explicit(&pm_next_stripe, 1, memory_order_relaxed) % PM_STRIPES + 1;
        pm_stripe = s;
    }
    return &pm->counters[s - 1];
}

/* pm_count -- add one to a striped counter (only this thread's stripe is hot). */
static inline void pm_count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* pm_open -- map f if the env can; *pmp stays NULL when it cannot. */
int pm_open(sp_env *env, sp_file *f, uint32_t page_size, uint64_t file_bytes, sp_pagemap **pmp)
{
    sp_pagemap *pm;
    const void *addr;

    *pmp = NULL;
    if (env->map == NULL || env->unmap == NULL || sizeof(void *) < 8 || page_size == 0)
        return SHALE_OK;
    pm = aligned_alloc(PM_LINE, sizeof(*pm));
    if (pm == NULL)
        return SHALE_ENOMEM;
    memset(pm, 0, sizeof(*pm));
    pm->max_pages = PM_RESERVE / page_size;
    pm->nchunks = (size_t)((pm->max_pages + PM_CHUNK_PAGES - 1) >> PM_CHUNK_SHIFT);
    pm->chunks = calloc(pm->nchunks, sizeof(*pm->chunks));
    if (pm->chunks == NULL) {
        free(pm);
        return SHALE_ENOMEM;
    }
    if (env->map(f, PM_RESERVE, &addr) < 0) {
        free(pm->chunks);
        free(pm);
        return SHALE_OK; /* no address space: read through the cache */
    }
    pm->env = env;
    pm->f = f;
    pm->base = addr;
    pm->page_size = page_size;
    atomic_init(&pm->extent, MIN(file_bytes / page_size, pm->max_pages));
    *pmp = pm;
    return SHALE_OK;
}

/* pm_close -- unmap and free. */
void pm_close(sp_pagemap *pm)
{
    if (pm == NULL)
        return;
    pm->env->unmap(pm->f, pm->base, PM_RESERVE);
    for (size_t i = 0; i < pm->nchunks; i++)
        free(atomic_load_explicit(&pm->chunks[i], memory_order_relaxed));
    free(pm->chunks);
    free(pm);
}

/* pm_chunk -- the chunk holding pgno's bit; allocated when create, else NULL if none. */
static pm_word *pm_chunk(sp_pagemap *pm, uint64_t pgno, bool create)
{
    _Atomic(pm_word *) *slot = &pm->chunks[pgno >> PM_CHUNK_SHIFT];
    pm_word *c = atomic_load_explicit(slot, memory_order_acquire);
    pm_word *none = NULL;

    if (c != NULL || !create)
        return c;
    c = calloc(PM_CHUNK_WORDS, sizeof(pm_word));
    if (c == NULL)
        return NULL; /* the bit stays clear: the page is checked again next time */
    if (!atomic_compare_exchange_strong_explicit(slot, &none, c, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        free(c);
        c = none;
    }
    return c;
}

/* pm_word_of -- the bitmap word of pgno inside chunk c. */
static inline pm_word *pm_word_of(pm_word *c, uint64_t pgno)
{
    return &c[(pgno & (PM_CHUNK_PAGES - 1)) >> 6];
}

/* pm_get -- the mapped page pgno, checked on its first access. */
int pm_get(sp_pagemap *pm, uint64_t pgno, const uint8_t **pp)
{
    uint64_t bit = (uint64_t)1 << (pgno & 63);
    const uint8_t *p;
    pm_word *c;

    *pp = NULL;
    if (pgno >= atomic_load_explicit(&pm->extent, memory_order_acquire))
        return SHALE_OK;
    p = pm->base + pgno * pm->page_size;
    c = pm_chunk(pm, pgno, false);
    if (LIKELY(c != NULL &&
               (atomic_load_explicit(pm_word_of(c, pgno), memory_order_acquire) & bit))) {
        pm_count(&pm_counter_of(pm)->hits);
        *pp = p;
        return SHALE_OK;
    }
    pm_count(&pm_counter_of(pm)->misses);
    RET(sp_page_verify(p, pm->page_size, pgno));
    c = pm_chunk(pm, pgno, true);
    if (c != NULL)
        atomic_fetch_or_explicit(pm_word_of(c, pgno), bit, memory_order_release);
    *pp = p;
    return SHALE_OK;
}

/* pm_clear -- clear the bits of pages [first, end) (end <= max_pages). */
static void pm_clear(sp_pagemap *pm, uint64_t first, uint64_t end)
{
    uint64_t p = first;

    while (p < end) {
        uint64_t cend = MIN(end, ((p >> PM_CHUNK_SHIFT) + 1) << PM_CHUNK_SHIFT);
        pm_word *c = pm_chunk(pm, p, false);
        for (; c != NULL && p < cend;) {
            unsigned b = (unsigned)(p & 63);
            uint64_t k = MIN(64 - b, cend - p);
            uint64_t mask = (k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1)) << b;
            /* seq_cst: ordered before the write that follows (see the essay) */
            atomic_fetch_and(pm_word_of(c, p), ~mask);
            p += k;
        }
        p = cend;
    }
}

/* pm_forget -- check pages [first, first + n) again on their next access. */
void pm_forget(sp_pagemap *pm, uint64_t first, uint64_t n)
{
    if (first < pm->max_pages)
        pm_clear(pm, first, first + MIN(n, pm->max_pages - first));
}

/* pm_extend -- raise the extent to end (within the reservation). */
void pm_extend(sp_pagemap *pm, uint64_t end)
{
    uint64_t cur = atomic_load_explicit(&pm->extent, memory_order_relaxed);

    end = MIN(end, pm->max_pages);
    while (cur < end && !atomic_compare_exchange_weak_explicit(
                            &pm->extent, &cur, end, memory_order_release, memory_order_relaxed))
        ;
}

/* pm_shrink -- lower the extent to end and forget the pages cut off. */
void pm_shrink(sp_pagemap *pm, uint64_t end)
{
    uint64_t cur = atomic_load_explicit(&pm->extent, memory_order_relaxed);

    while (cur > end && !atomic_compare_exchange_weak_explicit(
                            &pm->extent, &cur, end, memory_order_seq_cst, memory_order_relaxed))
        ;
    if (cur > end)
        pm_clear(pm, end, cur);
}

/* pm_counts -- sums of the striped counters. */
void pm_counts(sp_pagemap *pm, uint64_t *hits, uint64_t *misses)
{
    uint64_t h = 0, m = 0;

    for (unsigned i = 0; i < PM_STRIPES; i++) {
        h += atomic_load_explicit(&pm->counters[i].hits, memory_order_relaxed);
        m += atomic_load_explicit(&pm->counters[i].misses, memory_order_relaxed);
    }
    if (hits)
        *hits = h;
    if (misses)
        *misses = m;
}
