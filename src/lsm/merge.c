/*
 * merge.c -- choosing and running merges: young segments into level 1, and
 * each regular level into the next when it outgrows its share.
 *
 * Shape of a version's segment list (version.h keeps it newest first): the
 * young segments (level 0, written from memtables, key ranges overlapping),
 * then at most one segment per regular level 1, 2, ..., n in increasing
 * level order, levels possibly missing.  Every entry of level n is newer than
 * any entry for the same key in level n + 1, so reads take the first hit.
 *
 * Level sizes.  Level n may hold db_level_cap(n) = memtable_size * level_factor^n
 * bytes of pages.  One merge at a time (the merger thread), chosen by
 * merge_pick in this order:
 *   1. more than max_young_segments young segments: all of them and level 1
 *      are merged into a new level 1;
 *   2. the shallowest level n over its cap: level n and level n + 1 are
 *      merged into a new level n + 1 (when level n + 1 is empty and level n
 *      holds no tombstone, the segment just moves down: same pages, new level).
 * A merge reads a version pinned when it was chosen; flushes may prepend
 * young segments meanwhile, so the result is installed by replacing the
 * merged segments (found by pointer) in whatever version is current then.
 *
 * Recycling.  The destination (the merge's last segment when it is already
 * at the output level) is not rewritten: recycle.c rebuilds it around the
 * stream of the other segments' entries, reusing untouched subtrees by page
 * reference and splicing in whole stream segments that a sequential load
 * wrote.  Before a version is installed, its segments must share no page
 * and hold none of the pages about to become zombies (pages_sound).
 *
 * Tombstones.  A tombstone is written out unless no deeper segment of the
 * pinned version may hold its key (key range and Bloom filter): only then
 * has it nothing left to hide.  Keys of dropped trees are left out.
 *
 * Pages.  What the result no longer references (recycle.h) becomes zombies
 * tagged with the version it replaced (zombie.h); a moved segment keeps its
 * pages.
 */
#include <stdlib.h>
#include <time.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"
#include "filter.h"
#include "recycle.h"

/* A merge: v->segs[from, from + n) into one segment of level out_level. */
typedef struct merge_job {
    ver_version *v; /* pinned */
    size_t from, n;
    uint32_t out_level;
} merge_job;

/* db_level_cap -- the bytes level n (>= 1) may hold. */
uint64_t db_level_cap(const shale_db *db, uint32_t level)
{
    uint64_t f = db->opts.level_factor, cap = (uint64_t)db->opts.memtable_size * f;
    for (uint32_t i = 1; i < level; i++) {
        if (cap > UINT64_MAX / f)
            return UINT64_MAX;
        cap *= f;
    }
    return cap;
}

/* seg_bytes -- the bytes of pages a segment holds. */
static uint64_t seg_bytes(const shale_db *db, const seg_segment *s)
{
    return bl_pages(&s->pages) * db->opts.page_size;
}

/* young_count -- the young segments at the front of v's list. */
size_t db_young_count(const ver_version *v)
{
    size_t n = 0;
    while (n < v->nsegs && v->segs[n]->level == 0)
        n++;
    return n;
}

/* merge_pick -- with ver_mu held: the merge due in v, if any. */
static bool merge_pick(const shale_db *db, const ver_version *v, merge_job *j)
{
    size_t ny = db_young_count(v);
    if (ny > db->opts.max_young_segments) {
        j->from = 0;
        j->n = ny + (ny < v->nsegs && v->segs[ny]->level == 1);
        j->out_level = 1;
        return true;
    }
    for (size_t i = ny; i < v->nsegs; i++) {
        const seg_segment *s = v->segs[i];
        if (s->level < SEG_MAX_LEVEL && seg_bytes(db, s) > db_level_cap(db, s->level)) {
            j->from = i;
            j->n = 1 + (i + 1 < v->nsegs && v->segs[i + 1]->level == s->level + 1);
            j->out_level = s->level + 1;
            return true;
        }
    }
    return false;
}

bool db_merge_due(shale_db *db)
{
    merge_job j;
    return merge_pick(db, db->current, &j);
}

/* What a merge keeps: keys of live trees, and tombstones only while a
 * deeper segment of the pinned version may hold their key. */
typedef struct merge_keep {
    const ver_version *v;
    size_t deeper; /* v->segs[deeper ..] lie below the merge */
    live_cache lc;
    uint64_t dropped_tombstones;
} merge_keep;

/* deeper_may_hold -- whether a segment below the merge may hold key. */
static bool deeper_may_hold(const merge_keep *k, const void *key, size_t klen)
{
    if (k->deeper >= k->v->nsegs)
        return false;
    uint64_t h = filter_hash(key, klen);
    for (size_t i = k->deeper; i < k->v->nsegs; i++)
        if (seg_may_contain_hashed(k->v->segs[i], key, klen, h))
            return true;
    return false;
}

static bool merge_span_live(void *ctx, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
    merge_keep *k = ctx;
    uint32_t a = lo && lolen >= IKEY_PREFIX ? get_be32(lo) : 0;
    uint32_t b = hilen >= IKEY_PREFIX ? get_be32(hi) : 0;
    return !db_dead_tree_between(k->lc.db, a, b);
}

static bool merge_keep_fn(void *ctx, const void *key, size_t klen, uint8_t kind)
{
    merge_keep *k = ctx;
    if (!db_key_live(&k->lc, key, klen))
        return false;
    if (kind == NODE_KIND_TOMBSTONE && !deeper_may_hold(k, key, klen)) {
        k->dropped_tombstones++;
        return false;
    }
    return true;
}

/* The stream: a merging cursor over the job's segments above the
 * destination, newest entry of each key, values in runs by reference. */
typedef struct merge_stream {
    cur_cursor *c;
    bool started;
} merge_stream;

/* stream_load -- the cursor's current entry into e. */
static int stream_load(merge_stream *s, rc_entry *e)
{
    e->key = cur_key(s->c, &e->klen);
    e->kind = cur_kind(s->c);
    uint64_t pg, vl;
    if (e->kind != NODE_KIND_TOMBSTONE && cur_value_run(s->c, &pg, &vl)) {
        e->val_run = pg;
        e->val = NULL;
        e->vlen = (size_t)vl;
        return SHALE_OK;
    }
    e->val_run = 0;
    return cur_value(s->c, &e->val, &e->vlen);
}

static int merge_stream_next(void *ctx, rc_entry *e)
{
    merge_stream *s = ctx;
    int rc = s->started ? cur_next(s->c) : cur_first(s->c);
    s->started = true;
    return rc == SHALE_OK ? stream_load(s, e) : rc;
}

static int merge_stream_skip(void *ctx, const void *key, size_t klen, rc_entry *e)
{
    merge_stream *s = ctx;
    int rc = cur_seek_ge(s->c, key, klen);
    if (rc == SHALE_OK) {
        size_t kl;
        const void *k = cur_key(s->c, &kl);
        if (key_cmp(k, kl, key, klen) == 0)
            rc = cur_next(s->c);
    }
    s->started = true;
    return rc == SHALE_OK ? stream_load(s, e) : rc;
}

/* merge_rebuild -- run the job: the destination (the last segment, when it
 * is already at the output level) rebuilt with the rest streamed in.  *dead
 * gets every page the result no longer references, *fresh the pages only
 * the result holds (given back if it is never installed). */
static int merge_rebuild(shale_db *db, const merge_job *j, seg_segment **out, sp_blocklist *dead,
                         sp_blocklist *fresh)
{
    int rc = SHALE_OK;
    uint64_t id, gen;
    const seg_segment *last = j->v->segs[j->from + j->n - 1];
    const seg_segment *dest = last->level == j->out_level ? last : NULL;
    size_t nstream = j->n - (dest != NULL);
    merge_keep keep = {.v = j->v, .deeper = j->from + j->n, .lc = {.db = db}};
    merge_stream ms = {0};
    rc_stream src = {merge_stream_next, merge_stream_skip, &ms, j->v->segs + j->from, 0};
    rc_result res = {0};

    *out = NULL;
    src.nsegs = nstream;
    ERR(cur_open(j->v, UINT64_MAX, false, j->from, nstream, false, &ms.c));
    db_next_ids(db, &id, &gen);
    rc_filter keepf = {merge_keep_fn, merge_span_live, &keep};
    ERR(seg_rebuild(&db->store, id, gen, j->out_level, dest, &src, &keepf, &res));
    ERR(bl_add_list(dead, &res.dead));
    for (size_t i = j->from; i < j->from + nstream; i++) {
        sp_blocklist gone = BL_INIT;
        rc = bl_copy(&gone, &j->v->segs[i]->pages);
        if (rc == SHALE_OK)
            rc = bl_subtract(&gone, &res.moved);
        if (rc == SHALE_OK)
            rc = bl_add_list(dead, &gone);
        bl_free(&gone);
        ERR(rc);
    }
    if (res.seg) {
        ERR(bl_copy(fresh, &res.seg->pages));
        if (dest)
            ERR(bl_subtract(fresh, &dest->pages));
        ERR(bl_subtract(fresh, &res.moved));
    }
    atomic_fetch_add(&db->st_leaves_rewritten, res.fig.leaves_rewritten);
    atomic_fetch_add(&db->st_leaves_recycled, res.fig.leaves_recycled);
    atomic_fetch_add(&db->st_merge_pages, res.fig.pages_written);
    atomic_fetch_add(&db->st_merge_keys, res.fig.entries_in);
    atomic_fetch_add(&db->st_merge_parents, res.fig.parents_written);
    *out = res.seg;
    res.seg = NULL;
err:
    if (res.seg) { /* failed after the build: its own pages go back, here only */
        sp_blocklist own = BL_INIT;
        if (bl_copy(&own, &res.seg->pages) == SHALE_OK &&
            (!dest || bl_subtract(&own, &dest->pages) == SHALE_OK) &&
            bl_subtract(&own, &res.moved) == SHALE_OK)
            (void)fs_retire(sp_freespace_of(db->sp), &own);
        bl_free(&own);
        bl_clear(fresh); /* (partial: it may still hold dest's or moved pages) */
        seg_unref(res.seg);
    }
    bl_free(&res.dead);
    bl_free(&res.moved);
    cur_close(ms.c);
    return rc;
}

/* pages_sound -- the new list's segments share no page, and none holds a
 * page about to become a zombie: the accounting that lets recycling share
 * pages between segments over time, checked before anything is installed. */
static bool pages_sound(seg_segment *const *segs, size_t n, const sp_blocklist *dead)
{
    for (size_t i = 0; i < n; i++) {
        if (bl_overlaps_list(&segs[i]->pages, dead))
            return false;
        for (size_t k = i + 1; k < n; k++)
            if (bl_overlaps_list(&segs[i]->pages, &segs[k]->pages))
                return false;
    }
    return true;
}

/* merge_install -- with ver_mu held: a new current version in which the
 * job's segments are replaced by out (may be NULL); dead (taken over) become
 * zombies tagged with the version replaced. */
static int merge_install(shale_db *db, const merge_job *j, seg_segment *out, sp_blocklist *dead)
{
    int rc = SHALE_OK;
    ver_version *cur = db->current, *nv = NULL;
    seg_segment **segs = malloc((cur->nsegs + 1) * sizeof *segs);
    size_t n = 0;

    if (!segs)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < cur->nsegs; i++) {
        seg_segment *s = cur->segs[i];
        bool merged = false;
        for (size_t k = j->from; k < j->from + j->n && !merged; k++)
            merged = s == j->v->segs[k];
        if (merged)
            continue;
        if (out && s->level > out->level) { /* the result goes before deeper levels */
            segs[n++] = out;
            out = NULL;
        }
        segs[n++] = s;
    }
    if (out)
        segs[n++] = out;
    if (!pages_sound(segs, n, dead))
        ERR_SET(SHALE_ECORRUPT);
    ERR(ver_new(cur->zb, &cur->mem, cur->imm, cur->nimm, segs, n, &nv));
    ERR(zb_add(db->zb, cur->node.id, dead));
    db_set_current(db, nv);
    nv = NULL;
    ver_unref(cur); /* the db's reference */
    pthread_cond_broadcast(&db->room_cv);
err:
    ver_unref(nv);
    free(segs);
    return rc;
}

int db_merge_one(shale_db *db)
{
    int rc;
    merge_job j;
    seg_segment *out = NULL;
    sp_blocklist dead = BL_INIT, fresh = BL_INIT;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&db->ver_mu);
    bool due = merge_pick(db, db->current, &j);
    if (due) {
        j.v = db->current;
        ver_ref(j.v);
    }
    pthread_mutex_unlock(&db->ver_mu);
    if (!due)
        return SHALE_NOTFOUND;
    const seg_segment *first = j.v->segs[j.from];
    if (j.n == 1 && first->level > 0 && first->tree.tombstones == 0)
        rc = seg_clone_level(first, j.out_level, &out); /* moved down, pages and all */
    else
        rc = merge_rebuild(db, &j, &out, &dead, &fresh);
    if (rc == SHALE_OK) {
        pthread_mutex_lock(&db->ver_mu);
        rc = merge_install(db, &j, out, &dead);
        pthread_mutex_unlock(&db->ver_mu);
    }
    if (rc < 0 && fresh.n)
        (void)fs_retire(sp_freespace_of(db->sp), &fresh);
    seg_unref(out);
    bl_free(&dead);
    bl_free(&fresh);
    ver_unref(j.v);
    if (rc == SHALE_OK) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        atomic_fetch_add(&db->st_merges, 1);
        atomic_fetch_add(&db->st_merge_us, (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000u +
                                               (uint64_t)(t1.tv_nsec - t0.tv_nsec) / 1000);
    }
    return rc;
}
