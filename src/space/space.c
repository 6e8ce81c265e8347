/*
 * space.c -- the page file: open/create, page I/O through the mapping
 * (pagemap.c) or the cache (cache.c), and checkpoints through the two header
 * slots (header.c).
 *
 * File layout: pages 0 and 1 are the header slots, every other page is a
 * normal page (page.h) or free.  The file may be shorter than file_pages
 * pages (pages loaned but never written) or, after a crash, longer (a free
 * tail not yet truncated); both are harmless: pages at or beyond file_pages
 * are free, and reading a page past the end of the file fails its check.
 * It is never shorter than the last page the header does not list as free
 * (every such page was written and synced before the header); open rejects a
 * file that is (cut behind shale's back) as SHALE_ECORRUPT.
 *
 * Reads go to the mapping when the env can map, else (and for a page beyond
 * what the mapping knows is in the file) to the cache.  Writes first make the
 * mapping forget that the pages were verified, then write, then extend the
 * mapping's extent and drop stale cache entries; a truncate shrinks the
 * extent first.
 *
 * State kept here beyond the allocator and the cache: the sequence number and
 * slot of the last durable checkpoint, and its spill run, which must stay
 * allocated until a later header that does not name it is durable.
 *
 * Checkpoint (the ordering space.h states, made concrete):
 *   1. fs_ckpt_begin_keep: pending pages become in-flight (minus any still
 *      named live, which a stale live set would otherwise free);
 *   2. fs_trim_tail: a free run at the end of the file leaves the free list;
 *   3. body = complement of (live + spill run) in [2, file_pages), then meta;
 *      if it does not fit in a slot, allocate a spill run and recompute until
 *      the run is big enough, then write the run;
 *   4. sync the page file; write the idle slot with seq + 1; sync again;
 *   5. fs_ckpt_end(ok): in-flight pages are free; the previous spill run is
 *      retired (pending); the file is truncated to file_pages under the
 *      allocator's lock, so no concurrent growth can be cut off.
 * Any failure before 5 ends with fs_ckpt_end(0) and the new spill run retired
 * (the slot naming it may have reached the disk): the previous checkpoint
 * stays in force.
 *
 * Creating a file writes a first checkpoint (seq 1, no free pages, empty
 * meta) into slot 0 and zeroes into slot 1, syncs it and its directory, so a
 * new file is always openable.  A zero-length file is treated as one whose
 * creation crashed before that, and is created again.
 */
#include "space.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "common.h"
#include "header.h"
#include "pagemap.h"

struct sp_space {
    sp_env *env;
    sp_file *f;
    uint32_t page_size;
    bool read_only;
    sp_freespace *fs;
    sp_cache *cache;
    sp_pagemap *map; /* NULL: every read goes through the cache */
    uint64_t seq;    /* last durable checkpoint */
    int slot;        /* the slot holding it */
    sp_block spill;  /* its spill run; first == 0 when none */
    _Atomic uint64_t pages_written, checkpoints;
};

/* sp_page_size_ok -- a power of two within the supported range. */
static bool sp_page_size_ok(uint32_t ps)
{
    return ps >= SP_MIN_PAGE_SIZE && ps <= SP_MAX_PAGE_SIZE && (ps & (ps - 1)) == 0;
}

/* sp_sync_parent -- sync the directory holding path (makes a create durable). */
static int sp_sync_parent(sp_env *env, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int rc;

    if (slash == NULL)
        return env->sync_dir(env, ".");
    if (slash == path)
        return env->sync_dir(env, "/");
    dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return SHALE_ENOMEM;
    rc = env->sync_dir(env, dir);
    free(dir);
    return rc;
}

/* sp_init_file -- write the first checkpoint into a new, empty file. */
static int sp_init_file(sp_space *sp, const char *path)
{
    sp_slot s = {.seq = 1, .page_size = sp->page_size, .file_pages = SP_FIRST_DATA_PAGE};
    sp_blocklist none = BL_INIT;
    uint8_t *buf, *body = NULL;
    size_t len;
    int rc = SHALE_OK;

    buf = calloc(2, sp->page_size);
    if (buf == NULL)
        return SHALE_ENOMEM;
    ERR(hdr_body_encode(&none, NULL, 0, &body, &len));
    hdr_slot_encode(buf, &s, body, len);
    ERR(sp->env->write(sp->f, buf, 2 * (size_t)sp->page_size, 0));
    ERR(sp->env->sync(sp->f));
    ERR(sp_sync_parent(sp->env, path));
    ERR(fs_create(&none, SP_FIRST_DATA_PAGE, &sp->fs));
    sp->seq = 1;
    sp->slot = 0;
err:
    free(body);
    free(buf);
    return rc;
}

/* sp_shrink_cb -- truncate the file to file_pages if it is longer (allocator locked). */
static int sp_shrink_cb(void *ctx, uint64_t file_pages)
{
    sp_space *sp = ctx;
    uint64_t size, want = file_pages * sp->page_size;

    RET(sp->env->size(sp->f, &size));
    if (size > want) {
        if (sp->map)
            pm_shrink(sp->map, file_pages); /* before the pages vanish */
        RET(sp->env->truncate(sp->f, want));
    }
    return SHALE_OK;
}

/* sp_used_end -- one past the last page the header does not list as free. */
static uint64_t sp_used_end(const sp_header *h)
{
    const sp_blocklist *fl = &h->free;
    uint64_t end = h->slot.file_pages;

    if (fl->n > 0 && fl->v[fl->n - 1].last + 1 >= end)
        end = fl->v[fl->n - 1].first; /* a free tail */
    return MAX(end, (uint64_t)SP_FIRST_DATA_PAGE);
}

/* sp_load_existing -- read the chosen header: page size, free list, meta. */
static int sp_load_existing(sp_space *sp, void **meta, size_t *metalen)
{
    sp_header h;
    uint64_t size;
    int rc = SHALE_OK;

    RET(hdr_read(sp->env, sp->f, &h));
    ERR(sp->env->size(sp->f, &size));
    if (size / h.slot.page_size < sp_used_end(&h))
        ERR_SET(SHALE_ECORRUPT); /* cut short: live pages are missing */
    sp->page_size = h.slot.page_size;
    sp->seq = h.slot.seq;
    sp->slot = h.which;
    if (h.slot.spill_first) {
        sp->spill.first = h.slot.spill_first;
        sp->spill.last = h.slot.spill_first + h.slot.spill_pages - 1;
    }
    ERR(fs_create(&h.free, h.slot.file_pages, &sp->fs));
    if (!sp->read_only)
        ERR(sp_shrink_cb(sp, h.slot.file_pages));
    *meta = h.meta;
    *metalen = h.metalen;
    h.meta = NULL;
err:
    hdr_free(&h);
    return rc;
}

/* sp_open_file -- open the page file, creating it when allowed; *isnew says so. */
static int sp_open_file(sp_space *sp, const sp_config *cfg, bool *isnew)
{
    uint64_t size;
    int rc;

    *isnew = false;
    rc = sp->env->open(sp->env, cfg->path, cfg->read_only ? SP_O_RDONLY : 0, &sp->f);
    if (rc == SHALE_ENOENT && cfg->create && !cfg->read_only) {
        rc = sp->env->open(sp->env, cfg->path, SP_O_CREATE | SP_O_EXCL, &sp->f);
        *isnew = rc == SHALE_OK;
    }
    RET(rc);
    if (!*isnew && cfg->create && !cfg->read_only) {
        RET(sp->env->size(sp->f, &size));
        *isnew = size == 0;
    }
    if (*isnew && !sp_page_size_ok(cfg->page_size))
        return SHALE_EINVAL;
    return SHALE_OK;
}

/* sp_map_open -- map the file when the env can (after any truncate at open). */
static int sp_map_open(sp_space *sp)
{
    uint64_t size;

    if (sp->env->map == NULL)
        return SHALE_OK;
    RET(sp->env->size(sp->f, &size));
    return pm_open(sp->env, sp->f, sp->page_size, size, &sp->map);
}

/* sp_open -- open or create the page file. */
int sp_open(const sp_config *cfg, sp_space **spp, void **meta, size_t *metalen, bool *created)
{
    sp_space *sp;
    void *m = NULL;
    size_t mlen = 0;
    bool isnew = false;
    int rc = SHALE_OK;

    if (spp)
        *spp = NULL;
    if (cfg == NULL || cfg->path == NULL || spp == NULL)
        return SHALE_EINVAL;
    sp = calloc(1, sizeof(*sp));
    if (sp == NULL)
        return SHALE_ENOMEM;
    sp->env = cfg->env ? cfg->env : sp_env_posix();
    sp->read_only = cfg->read_only;
    ERR(sp_open_file(sp, cfg, &isnew));
    if (isnew) {
        sp->page_size = cfg->page_size;
        ERR(sp_init_file(sp, cfg->path));
    } else
        ERR(sp_load_existing(sp, &m, &mlen));
    ERR(cache_create(cfg->cache_bytes, sp->page_size, &sp->cache));
    ERR(sp_map_open(sp));
    if (meta)
        *meta = m;
    else
        free(m);
    if (metalen)
        *metalen = mlen;
    if (created)
        *created = isnew;
    *spp = sp;
    return SHALE_OK;
err:
    free(m);
    sp_close(sp);
    return rc;
}

/* sp_close -- release everything (no checkpoint, no sync). */
void sp_close(sp_space *sp)
{
    if (sp == NULL)
        return;
    pm_close(sp->map);
    cache_destroy(sp->cache);
    fs_destroy(sp->fs);
    if (sp->f)
        sp->env->close(sp->f);
    free(sp);
}

/* sp_page_size -- the file's page size. */
uint32_t sp_page_size(const sp_space *sp)
{
    return sp->page_size;
}

/* sp_header_pages -- slots 0 and 1 and the spill run. */
int sp_header_pages(const sp_space *sp, sp_blocklist *out)
{
    RET(bl_add(out, 0, SP_FIRST_DATA_PAGE - 1));
    return sp->spill.first ? bl_add(out, sp->spill.first, sp->spill.last) : SHALE_OK;
}

/* sp_set_cache_bytes -- the page cache's new budget. */
void sp_set_cache_bytes(sp_space *sp, size_t bytes)
{
    cache_set_budget(sp->cache, bytes);
}

/* sp_freespace_of -- the file's allocator. */
sp_freespace *sp_freespace_of(sp_space *sp)
{
    return sp->fs;
}

/* sp_ckpt_seq -- sequence number of the last durable checkpoint. */
uint64_t sp_ckpt_seq(const sp_space *sp)
{
    return sp->seq;
}

/* sp_range_ok -- whether [pgno, pgno + n) are data pages inside the file. */
static bool sp_range_ok(sp_space *sp, uint64_t pgno, uint64_t n)
{
    uint64_t fp = fs_file_pages(sp->fs);
    return pgno >= SP_FIRST_DATA_PAGE && pgno < fp && n <= fp - pgno;
}

/* sp_load_page -- cache miss: read page pgno into buf and verify it. */
static int sp_load_page(void *ctx, uint64_t pgno, uint8_t *buf)
{
    sp_space *sp = ctx;

    RET(sp->env->read(sp->f, buf, sp->page_size, pgno * sp->page_size));
    return sp_page_verify(buf, sp->page_size, pgno);
}

/* sp_page_get -- pin page pgno: mapped, or read and verified on a cache miss. */
int sp_page_get(sp_space *sp, uint64_t pgno, sp_page **pgp)
{
    const uint8_t *p;

    if (pgp == NULL)
        return SHALE_EINVAL;
    *pgp = NULL;
    if (!sp_range_ok(sp, pgno, 1))
        return SHALE_ECORRUPT;
    if (LIKELY(sp->map != NULL)) {
        RET(pm_get(sp->map, pgno, &p));
        if (LIKELY(p != NULL)) {
            *pgp = cache_mapped_handle(p);
            return SHALE_OK;
        }
    }
    return cache_get(sp->cache, pgno, sp_load_page, sp, pgp);
}

/* sp_page_put -- unpin (a mapped page holds no pin). */
void sp_page_put(sp_space *sp, sp_page *pg)
{
    if (!cache_is_mapped(pg))
        cache_put(sp->cache, pg);
}

/* sp_read_mapped -- copy the leading pages of a run that the mapping holds;
 * *done says how many. */
static int sp_read_mapped(sp_space *sp, uint64_t pgno, uint64_t npages, uint8_t *buf,
                          uint64_t *done)
{
    uint32_t ps = sp->page_size;
    const uint8_t *p;

    for (*done = 0; *done < npages; ++*done) {
        RET(pm_get(sp->map, pgno + *done, &p));
        if (p == NULL)
            break;
        memcpy(buf + *done * ps, p, ps);
    }
    return SHALE_OK;
}

/* sp_read_run -- copy npages pages from pgno into buf uncached, verifying each. */
int sp_read_run(sp_space *sp, uint64_t pgno, uint64_t npages, uint8_t *buf)
{
    uint32_t ps = sp->page_size;
    uint64_t i = 0;

    if (npages == 0)
        return SHALE_OK;
    if (!sp_range_ok(sp, pgno, npages))
        return SHALE_ECORRUPT;
    if (npages > SIZE_MAX / ps)
        return SHALE_ENOMEM;
    if (sp->map)
        RET(sp_read_mapped(sp, pgno, npages, buf, &i));
    if (i == npages)
        return SHALE_OK;
    RET(sp->env->read(sp->f, buf + i * ps, (size_t)((npages - i) * ps), (pgno + i) * ps));
    for (; i < npages; i++)
        RET(sp_page_verify(buf + i * ps, ps, pgno + i));
    return SHALE_OK;
}

/* sp_write_pages -- write npages sealed pages at pgno and drop stale cache entries. */
int sp_write_pages(sp_space *sp, uint64_t pgno, const uint8_t *buf, uint64_t npages)
{
    uint32_t ps = sp->page_size;

    if (sp->read_only)
        return SHALE_EREADONLY;
    if (npages == 0)
        return SHALE_OK;
    if (!sp_range_ok(sp, pgno, npages) || npages > SIZE_MAX / ps)
        return SHALE_EINVAL;
#ifdef SHALE_DEBUG
    for (uint64_t i = 0; i < npages; i++)
        if (sp_page_verify(buf + i * ps, ps, pgno + i) < 0)
            return SHALE_EINVAL; /* the caller forgot to seal, or misnumbered */
#endif
    /* Before the write: a reader must check the new contents again. */
    if (sp->map)
        pm_forget(sp->map, pgno, npages);
    RET(sp->env->write(sp->f, buf, (size_t)(npages * ps), pgno * ps));
    if (sp->map)
        pm_extend(sp->map, pgno + npages);
    /* After the write: a miss racing with it either inserted before this drop
     * (and is dropped) or sees the shard epoch move and does not insert. */
    cache_drop(sp->cache, pgno, npages);
    atomic_fetch_add_explicit(&sp->pages_written, npages, memory_order_relaxed);
    return SHALE_OK;
}

/* sp_sync -- fdatasync the page file. */
int sp_sync(sp_space *sp)
{
    return sp->env->sync(sp->f);
}

/* sp_ckpt_compute -- free list and body for a header naming live and spill. */
static int sp_ckpt_compute(sp_space *sp, const sp_blocklist *live, const sp_block *spill,
                           const void *meta, size_t metalen, sp_slot *s, uint8_t **body,
                           size_t *len)
{
    sp_blocklist used = BL_INIT, freel = BL_INIT;
    int rc = SHALE_OK;

    s->file_pages = fs_file_pages(sp->fs);
    ERR(bl_copy(&used, live));
    if (spill->first)
        ERR(bl_add(&used, spill->first, spill->last));
    ERR(bl_complement(&used, SP_FIRST_DATA_PAGE, s->file_pages, &freel));
    free(*body);
    *body = NULL;
    ERR(hdr_body_encode(&freel, meta, metalen, body, len));
err:
    bl_free(&used);
    bl_free(&freel);
    return rc;
}

/* sp_ckpt_body -- build the header body, allocating a spill run if needed. */
static int sp_ckpt_body(sp_space *sp, const sp_blocklist *live, const void *meta, size_t metalen,
                        sp_slot *s, uint8_t **body, size_t *len)
{
    sp_block spill = {0, 0};
    uint64_t have = 0;
    int rc = SHALE_OK;

    /* Each round sees the run allocated by the one before; the slack absorbs
     * the few bytes the free list changes by when the run splits a block. */
    for (unsigned round = 0;; round++) {
        uint64_t need;
        ERR(sp_ckpt_compute(sp, live, &spill, meta, metalen, s, body, len));
        if (have == 0 && hdr_fits_inline(sp->page_size, *len))
            break;
        need = hdr_spill_need(sp->page_size, *len);
        if (have >= need)
            break;
        if (have)
            fs_release(sp->fs, spill.first, spill.last);
        have = 0;
        spill.first = 0;
        if (round >= 16)
            ERR_SET(SHALE_EIO); /* the file keeps growing under us: give up */
        ERR(fs_alloc(sp->fs, need + need / 8 + ((uint64_t)1 << round), &spill));
        have = spill.last - spill.first + 1;
    }
    s->spill_first = spill.first;
    s->spill_pages = have;
    return SHALE_OK;
err:
    if (have)
        fs_release(sp->fs, spill.first, spill.last);
    return rc;
}

/* sp_ckpt_spill -- write the spill run of s. */
static int sp_ckpt_spill(sp_space *sp, const sp_slot *s, const uint8_t *body, size_t len)
{
    uint8_t *pages;
    int rc;

    if (s->spill_pages > SIZE_MAX / sp->page_size)
        return SHALE_ENOMEM;
    pages = malloc((size_t)(s->spill_pages * sp->page_size));
    if (pages == NULL)
        return SHALE_ENOMEM;
    hdr_spill_encode(pages, s, body, len);
    rc = sp_write_pages(sp, s->spill_first, pages, s->spill_pages);
    free(pages);
    return rc;
}

/* sp_ckpt_write -- steps 2-4: trim, body, spill, sync, slot, sync. */
static int sp_ckpt_write(sp_space *sp, const sp_blocklist *live, const void *meta, size_t metalen,
                         sp_slot *s)
{
    uint8_t *body = NULL;
    size_t len = 0;
    int rc = SHALE_OK;

    fs_trim_tail(sp->fs);
    ERR(sp_ckpt_body(sp, live, meta, metalen, s, &body, &len));
    if (s->spill_first)
        ERR(sp_ckpt_spill(sp, s, body, len));
    ERR(sp_sync(sp));
    ERR(hdr_write_slot(sp->env, sp->f, !sp->slot, s, body, len));
    ERR(sp_sync(sp));
err:
    free(body);
    return rc;
}

/* sp_live_ok -- live lies in the data pages of the file. */
static bool sp_live_ok(sp_space *sp, const sp_blocklist *live)
{
    return live->n == 0 ||
           sp_range_ok(sp, live->v[0].first, live->v[live->n - 1].last - live->v[0].first + 1);
}

/* sp_checkpoint -- make a new header durable holding meta and declaring live. */
int sp_checkpoint(sp_space *sp, const sp_blocklist *live, const void *meta, size_t metalen)
{
    sp_blocklist none = BL_INIT;
    sp_slot s = {.seq = sp->seq + 1, .page_size = sp->page_size};
    int rc;

    if (sp->read_only)
        return SHALE_EREADONLY;
    if (live == NULL)
        live = &none;
    if (!sp_live_ok(sp, live) || (metalen && meta == NULL))
        return SHALE_EINVAL;
    RET(fs_ckpt_begin_keep(sp->fs, live));
    rc = sp_ckpt_write(sp, live, meta, metalen, &s);
    if (rc < 0) {
        fs_ckpt_end(sp->fs, 0);
        if (s.spill_first)
            fs_retire_block(sp->fs, s.spill_first, s.spill_first + s.spill_pages - 1);
        return rc;
    }
    fs_ckpt_end(sp->fs, 1);
    if (sp->spill.first)
        fs_retire_block(sp->fs, sp->spill.first, sp->spill.last);
    sp->spill.first = s.spill_first;
    sp->spill.last = s.spill_first + s.spill_pages - 1;
    sp->seq = s.seq;
    sp->slot = !sp->slot;
    atomic_fetch_add_explicit(&sp->checkpoints, 1, memory_order_relaxed);
    /* Only space is at stake now: a failed truncate leaves a longer file,
     * which the next checkpoint or open truncates again. */
    (void)fs_with_file_pages(sp->fs, sp_shrink_cb, sp);
    return SHALE_OK;
}

/* sp_stats_get -- counters of the file, the allocator and the cache. */
void sp_stats_get(sp_space *sp, sp_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->file_pages = fs_file_pages(sp->fs);
    fs_counts(sp->fs, &st->free_pages, &st->pending_pages);
    cache_counts(sp->cache, &st->cache_hits, &st->cache_misses);
    if (sp->map) {
        uint64_t h, m;
        pm_counts(sp->map, &h, &m);
        st->cache_hits += h;
        st->cache_misses += m;
        st->mapped_reads = h + m;
    }
    st->pages_written = atomic_load_explicit(&sp->pages_written, memory_order_relaxed);
    st->checkpoints = atomic_load_explicit(&sp->checkpoints, memory_order_relaxed);
}
