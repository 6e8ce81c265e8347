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
 * Level sizes.  Level n may hold level_cap(n) = memtable_size * level_factor^n
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
 * Tombstones.  A tombstone is written out unless no deeper segment of the
 * pinned version may hold its key (key range and Bloom filter): only then
 * has it nothing left to hide.  Keys of dropped trees are left out.
 *
 * Pages.  The merged segments' pages become zombies tagged with the version
 * the result replaced (zombie.h); a moved segment keeps its pages.
 */
#include <stdlib.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"
#include "filter.h"

/* A merge: v->segs[from, from + n) into one segment of level out_level. */
typedef struct merge_job {
    ver_version *v; /* pinned */
    size_t from, n;
    uint32_t out_level;
} merge_job;

/* level_cap -- the bytes level n (>= 1) may hold. */
static uint64_t level_cap(const shale_db *db, uint32_t level)
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
        if (s->level < SEG_MAX_LEVEL && seg_bytes(db, s) > level_cap(db, s->level)) {
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

/* Source over a merging cursor of the job's segments. */
typedef struct merge_src {
    cur_cursor *c;
    bool started;
    const ver_version *v;
    size_t deeper; /* v->segs[deeper ..] may hold older entries */
    live_cache lc;
    uint64_t dropped_tombstones;
} merge_src;

/* deeper_may_hold -- whether a segment below the merge may hold key. */
static bool deeper_may_hold(const merge_src *s, const void *key, size_t klen)
{
    if (s->deeper >= s->v->nsegs)
        return false;
    uint64_t h = filter_hash(key, klen);
    for (size_t i = s->deeper; i < s->v->nsegs; i++)
        if (seg_may_contain_hashed(s->v->segs[i], key, klen, h))
            return true;
    return false;
}

static int merge_next(void *ctx, uint8_t *kind, const void **key, size_t *klen, const void **val,
                      size_t *vlen)
{
    merge_src *s = ctx;
    for (;;) {
        int rc = s->started ? cur_next(s->c) : cur_first(s->c);
        s->started = true;
        if (rc != SHALE_OK)
            return rc;
        *key = cur_key(s->c, klen);
        *kind = cur_kind(s->c);
        if (!db_key_live(&s->lc, *key, *klen))
            continue;
        if (*kind == NODE_KIND_TOMBSTONE && !deeper_may_hold(s, *key, *klen)) {
            s->dropped_tombstones++;
            continue;
        }
        return cur_value(s->c, val, vlen);
    }
}

/* merge_write -- the job's output segment (*out NULL when nothing is left). */
static int merge_write(shale_db *db, const merge_job *j, seg_segment **out)
{
    int rc;
    uint64_t id, gen;
    merge_src s = {.v = j->v, .deeper = j->from + j->n, .lc = {.db = db}};
    seg_source src = {merge_next, &s};

    *out = NULL;
    RET(cur_open(j->v, UINT64_MAX, false, j->from, j->n, false, &s.c));
    db_next_ids(db, &id, &gen);
    rc = seg_build(&db->store, id, gen, j->out_level, &src, out);
    cur_close(s.c);
    if (rc == SHALE_NOTFOUND) {
        *out = NULL;
        rc = SHALE_OK;
    }
    return rc;
}

/* merge_install -- with ver_mu held: a new current version in which the
 * job's segments are replaced by out (may be NULL); their pages are zombies
 * tagged with the version replaced (unless moved is set: out has them). */
static int merge_install(shale_db *db, const merge_job *j, seg_segment *out, bool moved)
{
    int rc = SHALE_OK;
    ver_version *cur = db->current, *nv = NULL;
    seg_segment **segs = malloc((cur->nsegs + 1) * sizeof *segs);
    sp_blocklist dead = BL_INIT;
    size_t n = 0;

    if (!segs)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < cur->nsegs; i++) {
        seg_segment *s = cur->segs[i];
        bool merged = false;
        for (size_t k = j->from; k < j->from + j->n && !merged; k++)
            merged = s == j->v->segs[k];
        if (merged) {
            if (!moved)
                ERR(bl_add_list(&dead, &s->pages));
            continue;
        }
        if (out && s->level > out->level) { /* the result goes before deeper levels */
            segs[n++] = out;
            out = NULL;
        }
        segs[n++] = s;
    }
    if (out)
        segs[n++] = out;
    ERR(ver_new(cur->zb, &cur->mem, cur->imm, cur->nimm, segs, n, &nv));
    ERR(zb_add(db->zb, cur->node.id, &dead));
    db->current = nv;
    nv = NULL;
    ver_unref(cur); /* the db's reference */
    pthread_cond_broadcast(&db->room_cv);
err:
    ver_unref(nv);
    bl_free(&dead);
    free(segs);
    return rc;
}

int db_merge_one(shale_db *db)
{
    int rc;
    merge_job j;
    seg_segment *out = NULL;
    bool moved = false;

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
    if (j.n == 1 && first->level > 0 && first->tree.tombstones == 0) {
        rc = seg_clone_level(first, j.out_level, &out); /* moved down, pages and all */
        moved = true;
    } else {
        rc = merge_write(db, &j, &out);
    }
    if (rc == SHALE_OK) {
        pthread_mutex_lock(&db->ver_mu);
        rc = merge_install(db, &j, out, moved);
        pthread_mutex_unlock(&db->ver_mu);
    }
    if (rc < 0 && out && !moved)
        seg_discard(out);
    seg_unref(out);
    ver_unref(j.v);
    if (rc == SHALE_OK)
        atomic_fetch_add(&db->st_merges, 1);
    return rc;
}
