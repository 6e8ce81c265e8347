/*
 * compact.c -- shale_compact: offline compaction into a fresh database.
 *
 * The source is opened read-only and read through one merging cursor over
 * its current version (memtables replayed from its log included), tombstones
 * hidden and dropped trees' keys left out, so the stream is exactly the live
 * internal keys of every tree, the catalog (tree 0) among them.  The
 * destination is created with the source's page size, level factor and
 * compression; its background threads are stopped, the stream is written as
 * one segment (at the shallowest level whose size it fits) and installed,
 * and closing it checkpoints.  The pages are written in loan order from the
 * start of an empty file, so the file has no free blocks but the tail that
 * the checkpoint cuts off.
 */
#include <stdlib.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"

#define CP_PROGRESS_EVERY 65536u

typedef struct cp_src {
    cur_cursor *c;
    bool started;
    live_cache lc;
    uint64_t done, total;
    shale_progress_fn progress;
    void *ctx;
} cp_src;

static int cp_next(void *ctx, uint8_t *kind, const void **key, size_t *klen, const void **val,
                   size_t *vlen)
{
    cp_src *s = ctx;
    for (;;) {
        int rc = s->started ? cur_next(s->c) : cur_first(s->c);
        s->started = true;
        if (rc != SHALE_OK)
            return rc;
        *key = cur_key(s->c, klen);
        if (!db_key_live(&s->lc, *key, *klen))
            continue;
        *kind = cur_kind(s->c);
        if (++s->done % CP_PROGRESS_EVERY == 0 && s->progress)
            s->progress(s->ctx, s->done, s->total);
        return cur_value(s->c, val, vlen);
    }
}

/* cp_level -- the shallowest level whose size holds bytes. */
static uint32_t cp_level(const shale_db *db, uint64_t bytes)
{
    uint32_t level = 1;
    while (level < SEG_MAX_LEVEL && bytes > db_level_cap(db, level))
        level++;
    return level;
}

/* cp_install -- the segment as the destination's only one (threads stopped). */
static int cp_install(shale_db *db, seg_segment *seg)
{
    int rc;
    ver_version *nv = NULL;
    pthread_mutex_lock(&db->ver_mu);
    ver_version *cur = db->current;
    rc = ver_new(cur->zb, &cur->mem, cur->imm, cur->nimm, &seg, 1, cur->gy, &nv);
    if (rc == SHALE_OK) {
        db_set_current(db, nv);
        ver_unref(cur);
    }
    pthread_mutex_unlock(&db->ver_mu);
    return rc;
}

int shale_compact(const char *src, const char *dst, shale_progress_fn progress, void *ctx)
{
    int rc = SHALE_OK;
    shale_options o;
    shale_db *from = NULL, *to = NULL;
    ver_version *v = NULL;
    seg_segment *seg = NULL;
    cp_src s = {.progress = progress, .ctx = ctx};

    if (!src || !dst)
        return SHALE_EINVAL;
    shale_options_default(&o);
    o.read_only = true;
    o.create_if_missing = false;
    ERR(shale_open(src, &o, &from));
    rc = shale_open(dst, &o, &to); /* read-only: an existing dst stays untouched */
    if (rc == SHALE_OK)
        ERR_SET(SHALE_EEXIST);
    if (rc != SHALE_ENOENT)
        goto err;
    shale_options_default(&o);
    o.page_size = from->opts.page_size;
    o.level_factor = from->opts.level_factor;
    o.compression = from->opts.compression;
    o.flush_every_ms = 0;
    ERR(shale_open(dst, &o, &to));
    if (!to->created || to->current->nsegs || mt_count(to->current->mem.mt))
        ERR_SET(SHALE_EEXIST); /* created by someone else meanwhile */
    db_stop_threads(to);

    uint64_t snap, id, gen;
    v = db_pin(from, &snap);
    for (size_t i = 0; i < v->nsegs; i++)
        s.total += v->segs[i]->tree.entries;
    s.total += mt_count(v->mem.mt);
    for (size_t i = 0; i < v->nimm; i++)
        s.total += mt_count(v->imm[i].mt);
    s.lc.db = from;
    /* no operators here: operands are copied as they are */
    ERR(cur_open(v, snap, true, 0, v->nsegs, CUR_HIDE | CUR_KEEP_STACKS, &s.c));
    seg_source source = {cp_next, &s};
    db_next_ids(to, &id, &gen);
    rc = seg_build(&to->store, id, gen, 1, &source, &seg);
    if (rc == SHALE_NOTFOUND)
        rc = SHALE_OK; /* nothing live: an empty database */
    ERR(rc);
    if (seg) {
        seg->level = cp_level(to, bl_pages(&seg->pages) * to->opts.page_size);
        ERR(cp_install(to, seg));
    }
    if (progress)
        progress(ctx, s.done, s.done);
err:
    if (rc < 0 && seg && !(to && to->current->nsegs)) /* built, never installed */
        (void)seg_discard(seg);
    seg_unref(seg);
    cur_close(s.c);
    ver_unref(v);
    if (from)
        (void)shale_close(from);
    if (to) {
        int crc = shale_close(to);
        if (rc == SHALE_OK)
            rc = crc;
    }
    return rc;
}
