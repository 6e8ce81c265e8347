/*
 * pagemap.h -- the read-only mapping of the page file that serves page reads
 * with no lock, copy or system call, and the bitmap that checks each page's
 * checksum once, on its first access.
 *
 * The mapping reserves PM_RESERVE bytes of address space at open (far more
 * than the file); only pages below the *extent* are handed out, where the
 * extent is a number of pages the file is known to hold: it rises when a
 * write ends beyond it and falls before the file is truncated, so a page
 * handed out never lies past the end of the file.  Pages at or beyond the
 * extent (and beyond the reservation) are for the caller to read otherwise.
 *
 * Thread safety: pm_get from any number of threads, concurrently with
 * pm_forget/pm_extend (writers) and pm_shrink (under the allocator lock).
 */
#ifndef SHALE_PAGEMAP_H
#define SHALE_PAGEMAP_H

#include <stdint.h>

#include "env.h"

typedef struct sp_pagemap sp_pagemap;

/* pm_open -- map f (file_bytes long now) if env can; *pmp is NULL, with
 * SHALE_OK, when it cannot (no map in the env, no address space, 32-bit).
 * Errors: SHALE_ENOMEM. */
int pm_open(sp_env *env, sp_file *f, uint32_t page_size, uint64_t file_bytes, sp_pagemap **pmp);
/* pm_close -- unmap and free (NULL is a no-op); no page it gave may be in use. */
void pm_close(sp_pagemap *pm);

/* pm_get -- *pp = page pgno in the mapping, its checksum checked unless it
 * was since its last pm_forget; *pp = NULL (SHALE_OK) when pgno is at or
 * beyond the extent.  Errors: SHALE_ECORRUPT (checksum or page number). */
int pm_get(sp_pagemap *pm, uint64_t pgno, const uint8_t **pp);
/* pm_forget -- pages [first, first + n) are about to be rewritten: check
 * them again on their next access. */
void pm_forget(sp_pagemap *pm, uint64_t first, uint64_t n);
/* pm_extend -- the file now holds at least pages [0, end). */
void pm_extend(sp_pagemap *pm, uint64_t end);
/* pm_shrink -- the file is about to be cut to `end` pages. */
void pm_shrink(sp_pagemap *pm, uint64_t end);
/* pm_counts -- accesses served with the checksum known good (hits) and
 * accesses that checked it (misses). */
void pm_counts(sp_pagemap *pm, uint64_t *hits, uint64_t *misses);

#endif /* SHALE_PAGEMAP_H */
