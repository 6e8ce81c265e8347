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
 *   2. the shallowest level n over its cap: a window of level n's keys is
 *      promoted into level n + 1 (partial promotion, choose_window): both
 *      trees are rebuilt, level n + 1 with the window's entries merged in
 *      and level n without them, each around its untouched subtrees.  The
 *      window is a run of level n's subtrees: the run densest in tombstones
 *      when dense enough, else the next run after the level's last window,
 *      wrapping at the end.  The whole level goes instead when the window
 *      would be most of it, or the two levels' key ranges do not overlap
 *      (a sequential load: then level n is spliced in whole); and when
 *      level n + 1 is empty and level n holds no tombstone, the segment just
 *      moves down: same pages, new level.
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
 * Range tombstones (graveyard.h).  The merge applies the pinned version's
 * graveyard: the stream's cursor skips entries a range deletes, the
 * destination's rebuild drops them (rewriting every subtree a range may
 * meet), and each result's seq covers the graveyard, so the ranges no longer
 * apply to it.  At install, a range no segment older than it can hold a key
 * of leaves the graveyard.  (Ranges still in memtables are left alone: they
 * are newer than every segment, and a merge must not apply a write no reader
 * of its result may see yet.)
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
#include "mergeop.h"
#include "recycle.h"

/* A merge: v->segs[from, from + n) into one segment of level out_level; or,
 * with window set, the keys of segs[from] in (lo, hi] into segs[from + 1]
 * (no lo: from the start; no hi: to the end). */
typedef struct merge_job {
    ver_version *v; /* pinned */
    size_t from, n;
    uint32_t out_level;
    bool window, has_lo, has_hi;
    uint8_t *lo, *hi;
    size_t lolen, hilen;
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
    /* merge_resolve's */
    op_cache oc;
    mo_stack st;
    shale_buf dval, out;
} merge_keep;

static void merge_keep_free(merge_keep *k)
{
    mo_free(&k->st);
    shale_buf_free(&k->dval);
    shale_buf_free(&k->out);
}

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

/* trees_live -- no dropped tree's keys can lie in (lo, hi]. */
static bool trees_live(shale_db *db, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
    uint32_t a = lo && lolen >= IKEY_PREFIX ? get_be32(lo) : 0;
    uint32_t b = hilen >= IKEY_PREFIX ? get_be32(hi) : 0;
    return !db_dead_tree_between(db, a, b);
}

static bool merge_span_live(void *ctx, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
    merge_keep *k = ctx;
    return trees_live(k->lc.db, lo, lolen, hi, hilen);
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

/* merge_resolve -- rc_filter.resolve: a stream entry's operands over the
 * destination's entry, or over nothing when neither it nor a segment below
 * may hold the key; folded when the tree has an operator (mo_settle). */
static int merge_resolve(void *ctx, const rc_entry *s, const rc_entry *d, rc_entry *out)
{
    merge_keep *k = ctx;
    mo_reset(&k->st);
    RET(mo_push_stack(&k->st, s->val, s->vlen));
    if (!mo_done(&k->st) && d) {
        const void *p = d->val;
        if (d->val_run && d->kind != NODE_KIND_TOMBSTONE) {
            /* the destination is the segment just above the deeper ones */
            if (d->vlen > SHALE_MAX_VALUE_SIZE)
                return SHALE_ECORRUPT;
            RET(buf_reserve(&k->dval, d->vlen));
            RET(seg_read_value(k->v->segs[k->deeper - 1], d->val_run, d->vlen, k->dval.data));
            p = k->dval.data;
        }
        RET(mo_push_kind(&k->st, d->kind, p, d->vlen));
    } else if (!mo_done(&k->st) && !deeper_may_hold(k, s->key, s->klen)) {
        mo_push_absent(&k->st);
    }
    uint8_t kind;
    RET(mo_settle(&k->st, db_merge_op(&k->oc, s->key, s->klen), s->key, s->klen, &k->out, &kind));
    *out = (rc_entry){kind, s->key, s->klen, k->out.data ? k->out.data : "", k->out.len, 0};
    return SHALE_OK;
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
    if (e->kind == NODE_KIND_VALUE && cur_value_run(s->c, &pg, &vl)) {
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

/* rebuild -- one output segment: dest (may be NULL) rebuilt at level with
 * src streamed in (may be NULL), kept by f; seq is the result's (segment.h).  *dead gets the pages the result
 * no longer references of dest and, when retire is set, of the stream's
 * segments; *moved (may be NULL) the stream's value runs the result took
 * over; *own the pages only the result holds (to give back if it is never
 * installed).  On error nothing is added to *own: the result's pages went
 * back here. */
static int rebuild(shale_db *db, uint32_t level, uint64_t seq, const seg_segment *dest,
                   rc_stream *src, bool retire, const rc_filter *f, seg_segment **out,
                   sp_blocklist *dead, sp_blocklist *moved, sp_blocklist *own)
{
    int rc = SHALE_OK;
    uint64_t id, gen;
    rc_result res = {0};
    sp_blocklist mine = BL_INIT;
    bool mine_ok = false;

    *out = NULL;
    db_next_ids(db, &id, &gen);
    ERR(seg_rebuild(&db->store, id, gen, level, dest, src, f, &res));
    if (res.seg) {
        res.seg->seq = seq;
        ERR(bl_copy(&mine, &res.seg->pages));
        if (dest)
            ERR(bl_subtract(&mine, &dest->pages));
        ERR(bl_subtract(&mine, &res.moved));
    }
    mine_ok = true;
    ERR(bl_add_list(dead, &res.dead));
    for (size_t i = 0; retire && src && i < src->nsegs; i++) {
        sp_blocklist gone = BL_INIT;
        rc = bl_copy(&gone, &src->segs[i]->pages);
        if (rc == SHALE_OK)
            rc = bl_subtract(&gone, &res.moved);
        if (rc == SHALE_OK)
            rc = bl_add_list(dead, &gone);
        bl_free(&gone);
        ERR(rc);
    }
    if (moved)
        ERR(bl_add_list(moved, &res.moved));
    atomic_fetch_add(&db->st_leaves_rewritten, res.fig.leaves_rewritten);
    atomic_fetch_add(&db->st_leaves_recycled, res.fig.leaves_recycled);
    atomic_fetch_add(&db->st_merge_pages, res.fig.pages_written);
    atomic_fetch_add(&db->st_merge_keys, res.fig.entries_in);
    atomic_fetch_add(&db->st_merge_parents, res.fig.parents_written);
    *own = mine;
    mine = (sp_blocklist)BL_INIT;
    *out = res.seg;
    res.seg = NULL;
err:
    if (res.seg) { /* failed after the build: its own pages go back, here only */
        if (mine_ok)
            (void)fs_retire(sp_freespace_of(db->sp), &mine);
        seg_unref(res.seg);
    }
    bl_free(&mine);
    bl_free(&res.dead);
    bl_free(&res.moved);
    return rc;
}

/* merge_rebuild -- a whole-level job: the destination (the last segment, when
 * it is already at the output level) rebuilt with the rest streamed in. */
static int merge_rebuild(shale_db *db, const merge_job *j, seg_segment **outs, sp_blocklist *dead,
                         sp_blocklist *fresh)
{
    int rc = SHALE_OK;
    const seg_segment *last = j->v->segs[j->from + j->n - 1];
    const seg_segment *dest = last->level == j->out_level ? last : NULL;
    size_t nstream = j->n - (dest != NULL);
    merge_keep keep = {.v = j->v, .deeper = j->from + j->n, .lc = {.db = db}, .oc = {.db = db}};
    merge_stream ms = {0};
    rc_stream src = {merge_stream_next, merge_stream_skip, &ms, j->v->segs + j->from, nstream};
    rc_filter keepf = {merge_keep_fn, merge_span_live, &keep, j->v->gy, merge_resolve};
    uint64_t seq = j->v->gy ? j->v->gy->max_seq : 0;
    for (size_t i = j->from; i < j->from + j->n; i++)
        seq = MAX(seq, j->v->segs[i]->seq);

    ERR(cur_open(j->v, UINT64_MAX, false, j->from, nstream, 0, &ms.c));
    ERR(rebuild(db, j->out_level, seq, dest, &src, true, &keepf, &outs[0], dead, NULL,
                &fresh[0]));
err:
    merge_keep_free(&keep);
    cur_close(ms.c);
    return rc;
}

/* ---- partial promotion ------------------------------------------------------ */

/* in_window -- whether key lies in the job's window. */
static bool in_window(const merge_job *j, const void *key, size_t klen)
{
    return (!j->has_lo || key_cmp(key, klen, j->lo, j->lolen) > 0) &&
           (!j->has_hi || key_cmp(key, klen, j->hi, j->hilen) <= 0);
}

/* What the source level keeps: its keys of live trees outside the window. */
typedef struct window_keep {
    const merge_job *j;
    live_cache lc;
} window_keep;

static bool window_keep_fn(void *ctx, const void *key, size_t klen, uint8_t kind)
{
    window_keep *w = ctx;
    (void)kind;
    return !in_window(w->j, key, klen) && db_key_live(&w->lc, key, klen);
}

static bool window_span_live(void *ctx, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
    window_keep *w = ctx;
    const merge_job *j = w->j;
    /* (lo, hi] meets the window (j->lo, j->hi] */
    bool meets = (!j->has_lo || key_cmp(hi, hilen, j->lo, j->lolen) > 0) &&
                 (!j->has_hi || !lo || key_cmp(lo, lolen, j->hi, j->hilen) < 0);
    return !meets && trees_live(w->lc.db, lo, lolen, hi, hilen);
}

/* A unit a window is made of: a subtree of the source level. */
typedef struct win_unit {
    uint64_t pgno, entries, tombstones;
    uint8_t *last; /* its last key */
    size_t lastlen;
} win_unit;

typedef struct win_units {
    win_unit *u;
    size_t n;
    uint32_t height; /* of every unit */
} win_units;

static void units_free(win_units *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->u[i].last);
    free(w->u);
    w->u = NULL;
    w->n = 0;
}

/* units_expand -- replace every unit by its children (height - 1). */
static int units_expand(shale_db *db, const seg_segment *s, win_units *w)
{
    int rc = SHALE_OK;
    win_units out = {.height = w->height - 1};
    size_t cap = 0;
    for (size_t i = 0; i < w->n; i++) {
        node_ref r;
        ERR(seg_node_pin(s, w->u[i].pgno, &r));
        unsigned n = sp_page_count(r.data);
        if (sp_page_type(r.data) != SP_PT_PARENT)
            rc = SHALE_ECORRUPT;
        for (unsigned c = 0; c < n && rc == SHALE_OK; c++) {
            node_child ch;
            size_t kcap = 0;
            if (out.n == cap) {
                size_t ncap = MAX(2 * cap, (size_t)64);
                win_unit *nu = realloc(out.u, ncap * sizeof *nu);
                if (!nu) {
                    rc = SHALE_ENOMEM;
                    break;
                }
                out.u = nu;
                cap = ncap;
            }
            win_unit *u = &out.u[out.n];
            rc = node_parent_child(r.data, r.size, c, &ch);
            if (rc == SHALE_OK) {
                *u = (win_unit){ch.pgno, ch.entries, ch.tombstones, NULL, 0};
                rc = node_key_copy(db->sp, &ch.last, &u->last, &kcap, &u->lastlen);
                out.n += rc == SHALE_OK;
                if (rc != SHALE_OK)
                    free(u->last);
            }
        }
        node_unpin(db->sp, &r);
        ERR(rc);
    }
    units_free(w);
    *w = out;
    return SHALE_OK;
err:
    units_free(&out);
    return rc;
}

bool db_window_densest(const uint64_t *entries, const uint64_t *tombstones, size_t n, size_t k,
                       size_t *start)
{
    uint64_t te = 0, tt = 0, best_e = 0, best_t = 0;
    if (k == 0 || k > n)
        return false;
    for (size_t i = 0; i < n; i++) {
        te += entries[i];
        tt += tombstones[i];
        if (i >= k) {
            te -= entries[i - k];
            tt -= tombstones[i - k];
        }
        if (i + 1 >= k && tt > best_t) {
            best_t = tt;
            best_e = te;
            *start = i + 1 - k;
        }
    }
    return best_t > 0 && best_t * 16 >= best_e;
}

/* choose_window -- for a job of level n into an existing level n + 1: promote
 * only a run of level n's subtrees (those at the shallowest depth with at
 * least WIN_UNITS of them), enough to bring the level back under its cap and
 * at least a quarter of them (when that is more than three quarters, or the
 * level's key range does not overlap level n + 1's, the whole level goes).
 * The run is the one densest in tombstones when that density is at least
 * 1/16, else the next one after the level's last rotating window, wrapping
 * at the end. */
#define WIN_UNITS 16u
static int choose_window(shale_db *db, merge_job *j)
{
    int rc = SHALE_OK;
    const seg_segment *s = j->v->segs[j->from], *d = j->v->segs[j->from + 1];
    win_units w = {0};
    uint64_t *ent = NULL, *tomb = NULL;

    if (s->tree.height < 2 ||
        key_cmp(s->min_key, s->min_len, d->max_key, d->max_len) > 0 ||
        key_cmp(s->max_key, s->max_len, d->min_key, d->min_len) < 0)
        return SHALE_OK;
    /* the root as the one unit, expanded until there are enough */
    if (!(w.u = calloc(1, sizeof *w.u)))
        return SHALE_ENOMEM;
    w.n = 1;
    w.u[0].pgno = s->tree.root;
    w.height = s->tree.height;
    while (w.n < WIN_UNITS && w.height > 1)
        ERR(units_expand(db, s, &w));
    uint64_t bytes = seg_bytes(db, s), cap = db_level_cap(db, s->level);
    uint64_t excess = bytes > cap ? bytes - cap : 0, n = w.n;
    uint64_t k = MAX((n * excess + bytes - 1) / (bytes ? bytes : 1), (n + 3) / 4);
    if (n < 4 || k * 4 > n * 3)
        goto err; /* the whole level */
    size_t start = 0;
    if (!(ent = malloc(n * sizeof *ent)) || !(tomb = malloc(n * sizeof *tomb)))
        ERR_SET(SHALE_ENOMEM);
    for (size_t i = 0; i < n; i++) {
        ent[i] = w.u[i].entries;
        tomb[i] = w.u[i].tombstones;
    }
    bool rotate = !db_window_densest(ent, tomb, (size_t)n, (size_t)k, &start);
    if (rotate) {
        const uint8_t *at = db->promote_at[s->level].key;
        size_t atlen = db->promote_at[s->level].len;
        start = 0;
        while (at && start < n && key_cmp(w.u[start].last, w.u[start].lastlen, at, atlen) <= 0)
            start++;
        if (start == n)
            start = 0;
    }
    size_t end = (size_t)MIN((uint64_t)start + k, n);
    if ((j->has_lo = start > 0)) { /* the units' keys pass to the job */
        j->lo = w.u[start - 1].last;
        j->lolen = w.u[start - 1].lastlen;
        w.u[start - 1].last = NULL;
    }
    if ((j->has_hi = end < n)) {
        j->hi = w.u[end - 1].last;
        j->hilen = w.u[end - 1].lastlen;
        w.u[end - 1].last = NULL;
    }
    if (rotate) {
        free(db->promote_at[s->level].key);
        db->promote_at[s->level].key = NULL;
        if (j->has_hi) {
            if (!(db->promote_at[s->level].key = malloc(j->hilen)))
                ERR_SET(SHALE_ENOMEM);
            memcpy(db->promote_at[s->level].key, j->hi, j->hilen);
            db->promote_at[s->level].len = j->hilen;
        }
    }
    j->window = true;
err:
    units_free(&w);
    free(ent);
    free(tomb);
    return rc;
}

/* merge_window -- a window job: the window's entries streamed into level
 * n + 1 (outs[1]), and level n rebuilt without them (outs[0]).  The window's
 * value runs move to the new level n + 1; every other page of the window
 * becomes dead with the source's rebuild. */
static int merge_window(shale_db *db, const merge_job *j, seg_segment **outs, sp_blocklist *dead,
                        sp_blocklist *fresh)
{
    int rc = SHALE_OK;
    const seg_segment *s = j->v->segs[j->from], *d = j->v->segs[j->from + 1];
    merge_keep keep = {.v = j->v, .deeper = j->from + 2, .lc = {.db = db}, .oc = {.db = db}};
    window_keep wk = {.j = j, .lc = {.db = db}};
    merge_stream ms = {0};
    rc_stream src = {merge_stream_next, NULL, &ms, NULL, 0};
    rc_filter keepf = {merge_keep_fn, merge_span_live, &keep, j->v->gy, merge_resolve};
    rc_filter cutf = {window_keep_fn, window_span_live, &wk, j->v->gy, NULL};
    uint64_t gseq = j->v->gy ? j->v->gy->max_seq : 0;
    sp_blocklist moved = BL_INIT, cut_dead = BL_INIT;
    uint8_t *lo = NULL, *hi = NULL;

    if ((j->has_lo && !(lo = key_after(j->lo, j->lolen))) ||
        (j->has_hi && !(hi = key_after(j->hi, j->hilen))))
        ERR_SET(SHALE_ENOMEM);
    ERR(cur_open(j->v, UINT64_MAX, false, j->from, 1, 0, &ms.c));
    ERR(cur_set_bounds(ms.c, lo, j->lolen + 1, hi, j->hilen + 1));
    ERR(rebuild(db, j->out_level, MAX(gseq, MAX(s->seq, d->seq)), d, &src, false, &keepf,
                &outs[1], dead, &moved, &fresh[1]));
    ERR(rebuild(db, s->level, MAX(gseq, s->seq), s, NULL, false, &cutf, &outs[0], &cut_dead, NULL,
                &fresh[0]));
    ERR(bl_subtract(&cut_dead, &moved));
    ERR(bl_add_list(dead, &cut_dead));
    atomic_fetch_add(&db->st_merge_windows, 1);
err:
    merge_keep_free(&keep);
    cur_close(ms.c);
    free(lo);
    free(hi);
    bl_free(&moved);
    bl_free(&cut_dead);
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

/* A range tombstone stays in the graveyard while a segment it has not been
 * applied to (seq below the range's) may hold a key in it. */
typedef struct gy_keep {
    seg_segment *const *segs;
    size_t n;
} gy_keep;

static bool range_needed(void *ctx, const gy_range *r)
{
    const gy_keep *k = ctx;
    for (size_t i = 0; i < k->n; i++) {
        const seg_segment *s = k->segs[i];
        if (s->seq < r->seq && key_cmp(s->max_key, s->max_len, r->lo, r->lolen) >= 0 &&
            key_cmp(s->min_key, s->min_len, r->hi, r->hilen) < 0)
            return true;
    }
    return false;
}

/* merge_install -- with ver_mu held: a new current version in which the
 * job's segments are replaced by outs[0..2) (NULLs left out; in level
 * order); dead (taken over) become zombies tagged with the version replaced. */
static int merge_install(shale_db *db, const merge_job *j, seg_segment *const *outs,
                         sp_blocklist *dead)
{
    int rc = SHALE_OK;
    ver_version *cur = db->current, *nv = NULL;
    gy_set *gy = NULL;
    seg_segment **segs = malloc((cur->nsegs + 2) * sizeof *segs);
    size_t n = 0, o = 0;

    if (!segs)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < cur->nsegs; i++) {
        seg_segment *s = cur->segs[i];
        bool merged = false;
        for (size_t k = j->from; k < j->from + j->n && !merged; k++)
            merged = s == j->v->segs[k];
        if (merged)
            continue;
        for (; o < 2 && (!outs[o] || s->level > outs[o]->level); o++) /* results go before deeper levels */
            if (outs[o])
                segs[n++] = outs[o];
        segs[n++] = s;
    }
    for (; o < 2; o++)
        if (outs[o])
            segs[n++] = outs[o];
    if (!pages_sound(segs, n, dead))
        ERR_SET(SHALE_ECORRUPT);
    gy_keep gk = {segs, n};
    ERR(gy_retire(cur->gy, range_needed, &gk, &gy));
    ERR(ver_new(cur->zb, &cur->mem, cur->imm, cur->nimm, segs, n, gy, &nv));
    ERR(zb_add(db->zb, cur->node.id, dead));
    db_set_current(db, nv);
    nv = NULL;
    ver_unref(cur); /* the db's reference */
    pthread_cond_broadcast(&db->room_cv);
err:
    ver_unref(nv);
    gy_unref(gy);
    free(segs);
    return rc;
}

int db_merge_one(shale_db *db)
{
    int rc;
    merge_job j = {0};
    seg_segment *outs[2] = {NULL, NULL};
    sp_blocklist dead = BL_INIT, fresh[2] = {BL_INIT, BL_INIT};

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&db->ver_mu);
    bool due = merge_pick(db, db->current, &j);
    if (due) {
        j.v = db->current;
        ver_ref(j.v);
    }
    void (*hook)(void *, const db_merge_info *) = db->merge_hook;
    void *hook_ctx = db->merge_hook_ctx;
    pthread_mutex_unlock(&db->ver_mu);
    if (!due)
        return SHALE_NOTFOUND;
    const seg_segment *first = j.v->segs[j.from];
    rc = first->level > 0 && j.n == 2 ? choose_window(db, &j) : SHALE_OK;
    if (rc == SHALE_OK && hook) {
        db_merge_info mi = {first->level, j.out_level, first->tree.tombstones, j.window,
                            j.has_lo, j.has_hi, j.lo, j.hi, j.lolen, j.hilen};
        hook(hook_ctx, &mi);
    }
    if (rc == SHALE_OK) {
        if (j.window)
            rc = merge_window(db, &j, outs, &dead, fresh);
        else if (j.n == 1 && first->level > 0 && first->tree.tombstones == 0)
            rc = seg_clone_level(first, j.out_level, &outs[0]); /* moved down, pages and all */
        else
            rc = merge_rebuild(db, &j, outs, &dead, fresh);
    }
    if (rc == SHALE_OK) {
        pthread_mutex_lock(&db->ver_mu);
        rc = merge_install(db, &j, outs, &dead);
        pthread_mutex_unlock(&db->ver_mu);
    }
    for (int i = 0; i < 2; i++) {
        if (rc < 0 && fresh[i].n)
            (void)fs_retire(sp_freespace_of(db->sp), &fresh[i]);
        seg_unref(outs[i]);
        bl_free(&fresh[i]);
    }
    bl_free(&dead);
    free(j.lo);
    free(j.hi);
    ver_unref(j.v);
    if (rc == SHALE_OK) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        atomic_fetch_add(&db->st_merges, 1);
        int64_t us = ((int64_t)t1.tv_sec - (int64_t)t0.tv_sec) * 1000000 +
                     ((int64_t)t1.tv_nsec - (int64_t)t0.tv_nsec) / 1000;
        atomic_fetch_add(&db->st_merge_us, us > 0 ? (uint64_t)us : 0);
    }
    return rc;
}
