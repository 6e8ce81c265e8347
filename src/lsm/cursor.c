/*
 * cursor.c -- the multi-way merging cursor (see cursor.h).
 *
 * Invariant while positioned moving forward (dir > 0): every child is either
 * invalid or on its first entry with key > cur (after the winner's key has
 * been consumed by step_fwd); moving backward the mirror image.  `cur` is a
 * copy of the current key, because the winning child moves on the next step.
 */
#include "cursor.h"

#include <stdlib.h>

#include "../space/common.h"
#include "db.h"
#include "mergeop.h"

enum { CH_MEM, CH_SEG };

typedef struct cur_child {
    int type;
    bool valid;
    mt_iter mt;
    seg_cursor *sc;
    uint64_t seg_seq; /* CH_SEG: the segment's seq (graveyard.h) */
} cur_child;

struct cur_cursor {
    ver_version *v;
    cur_child *ch;
    size_t n;
    bool hide;
    bool keep_stacks; /* CUR_KEEP_STACKS */
    bool complete;    /* every memtable and segment: nothing lies below */
    int dir; /* +1 forward, -1 backward, 0 unpositioned */
    int win; /* index of the child holding the current entry */
    int *tie; /* the children on the current key (win among them), from pick */
    size_t ntie;
    uint8_t *cur;
    size_t curlen, curcap;
    uint8_t *lo, *hi;
    size_t lolen, hilen;
    bool has_lo, has_hi;
    gy_set *mem_ranges; /* the memtables' range tombstones visible at the
                           snapshot (include_mem; NULL: none) */
    bool ranges;        /* some range tombstone may apply */
    /* a winner holding merge operands is resolved into these */
    bool resolved;
    uint8_t rkind;
    shale_buf rval;
    mo_stack st;
    op_cache oc; /* oc.db NULL: no operators (cur_use_operators) */
};

/* ch_key -- the child's current key. */
static const void *ch_key(const cur_child *h, size_t *klen)
{
    if (h->type == CH_MEM)
        return mt_iter_key(&h->mt, klen);
    return seg_cursor_key(h->sc, klen);
}

static uint8_t ch_kind(const cur_child *h)
{
    return h->type == CH_MEM ? mt_iter_kind(&h->mt) : seg_cursor_kind(h->sc);
}

/* The moves a child makes; one dispatcher serves both kinds of child. */
enum ch_op { OP_FIRST, OP_LAST, OP_SEEK_GE, OP_SEEK_LE, OP_NEXT, OP_PREV };

/* mem_move -- op on a memtable iterator (cannot fail). */
static void mem_move(mt_iter *it, enum ch_op op, const void *k, size_t kl)
{
    switch (op) {
    case OP_FIRST: mt_iter_first(it); break;
    case OP_LAST: mt_iter_last(it); break;
    case OP_SEEK_GE: mt_iter_seek_ge(it, k, kl); break;
    case OP_SEEK_LE: mt_iter_seek_le(it, k, kl); break;
    case OP_NEXT: mt_iter_next(it); break;
    case OP_PREV: mt_iter_prev(it); break;
    }
}

/* seg_move -- op on a segment cursor. */
static int seg_move(seg_cursor *sc, enum ch_op op, const void *k, size_t kl)
{
    switch (op) {
    case OP_FIRST: return seg_cursor_first(sc);
    case OP_LAST: return seg_cursor_last(sc);
    case OP_SEEK_GE: return seg_cursor_seek_ge(sc, k, kl);
    case OP_SEEK_LE: return seg_cursor_seek_le(sc, k, kl);
    case OP_NEXT: return seg_cursor_next(sc);
    case OP_PREV: return seg_cursor_prev(sc);
    }
    return SHALE_EINVAL;
}

/* ch_move -- move child h and record whether it is positioned; errors pass up. */
static int ch_move(cur_child *h, enum ch_op op, const void *k, size_t kl)
{
    if (h->type == CH_MEM) {
        mem_move(&h->mt, op, k, kl);
        h->valid = mt_iter_valid(&h->mt);
        return SHALE_OK;
    }
    int rc = seg_move(h->sc, op, k, kl);
    h->valid = (rc == SHALE_OK);
    return rc < 0 ? rc : SHALE_OK;
}

static int ch_first(cur_child *h) { return ch_move(h, OP_FIRST, NULL, 0); }
static int ch_last(cur_child *h) { return ch_move(h, OP_LAST, NULL, 0); }
static int ch_next(cur_child *h) { return ch_move(h, OP_NEXT, NULL, 0); }
static int ch_prev(cur_child *h) { return ch_move(h, OP_PREV, NULL, 0); }
static int ch_seek_ge(cur_child *h, const void *k, size_t kl) { return ch_move(h, OP_SEEK_GE, k, kl); }
static int ch_seek_le(cur_child *h, const void *k, size_t kl) { return ch_move(h, OP_SEEK_LE, k, kl); }

/* ch_cmp -- compare the child's key with (k, kl). */
static int ch_cmp(const cur_child *h, const void *k, size_t kl)
{
    size_t hl;
    const void *hk = ch_key(h, &hl);
    return key_cmp(hk, hl, k, kl);
}

int cur_open(ver_version *v, uint64_t snap, bool include_mem, size_t segs_from, size_t segs_n,
             int flags, cur_cursor **cp)
{
    int rc = SHALE_OK;
    cur_cursor *c = calloc(1, sizeof *c);
    size_t nmem = include_mem ? 1 + v->nimm : 0;
    if (!c)
        return SHALE_ENOMEM;
    if (!(c->ch = calloc(nmem + segs_n + 1, sizeof *c->ch)) ||
        !(c->tie = calloc(nmem + segs_n + 1, sizeof *c->tie)))
        ERR_SET(SHALE_ENOMEM);
    ver_ref(v);
    c->v = v;
    c->hide = (flags & CUR_HIDE) != 0;
    c->keep_stacks = (flags & CUR_KEEP_STACKS) != 0;
    c->complete = include_mem && segs_from == 0 && segs_n >= v->nsegs;
    if (include_mem) {
        mt_table *stack[4], **mts = v->nimm < 4 ? stack : malloc((1 + v->nimm) * sizeof *mts);
        if (!mts)
            ERR_SET(SHALE_ENOMEM);
        mts[0] = v->mem.mt;
        for (size_t i = 0; i < v->nimm; i++)
            mts[1 + i] = v->imm[i].mt;
        rc = db_mem_ranges(mts, 1 + v->nimm, NULL, snap, &c->mem_ranges);
        if (mts != stack)
            free(mts);
        ERR(rc);
    }
    c->ranges = v->gy != NULL || c->mem_ranges != NULL;
    if (include_mem) {
        c->ch[c->n].type = CH_MEM;
        mt_iter_init(&c->ch[c->n++].mt, v->mem.mt, snap);
        for (size_t i = 0; i < v->nimm; i++) {
            c->ch[c->n].type = CH_MEM;
            mt_iter_init(&c->ch[c->n++].mt, v->imm[i].mt, snap);
        }
    }
    for (size_t i = segs_from; i < segs_from + segs_n && i < v->nsegs; i++) {
        c->ch[c->n].type = CH_SEG;
        c->ch[c->n].seg_seq = v->segs[i]->seq;
        ERR(seg_cursor_open(v->segs[i], &c->ch[c->n].sc));
        c->n++;
    }
    *cp = c;
    return SHALE_OK;
err:
    cur_close(c);
    return rc;
}

void cur_close(cur_cursor *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (c->ch[i].type == CH_SEG)
            seg_cursor_close(c->ch[i].sc);
    free(c->ch);
    free(c->tie);
    gy_unref(c->mem_ranges);
    shale_buf_free(&c->rval);
    mo_free(&c->st);
    ver_unref(c->v);
    free(c->cur);
    free(c->lo);
    free(c->hi);
    free(c);
}

/* dup_bound -- copy a bound key. */
static int dup_bound(const void *k, size_t kl, uint8_t **out, size_t *outlen, bool *has)
{
    free(*out);
    *out = NULL;
    *outlen = 0;
    *has = (k != NULL);
    if (!k)
        return SHALE_OK;
    if (!(*out = malloc(kl ? kl : 1)))
        return SHALE_ENOMEM;
    memcpy(*out, k, kl);
    *outlen = kl;
    return SHALE_OK;
}

int cur_set_bounds(cur_cursor *c, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
    c->dir = 0;
    RET(dup_bound(lo, lolen, &c->lo, &c->lolen, &c->has_lo));
    return dup_bound(hi, hilen, &c->hi, &c->hilen, &c->has_hi);
}

/* set_cur -- copy the winner's key into cur. */
static int set_cur(cur_cursor *c, int win)
{
    size_t kl;
    const void *k = ch_key(&c->ch[win], &kl);
    if (kl > c->curcap) {
        size_t cap = MAX(kl, 2 * c->curcap);
        uint8_t *nb = realloc(c->cur, cap);
        if (!nb)
            return SHALE_ENOMEM;
        c->cur = nb;
        c->curcap = cap;
    }
    if (kl)
        memcpy(c->cur, k, kl);
    c->curlen = kl;
    c->win = win;
    return SHALE_OK;
}

/* pick -- the child with the smallest (dir > 0) or largest key, newest on a
 * tie; every child on that key is recorded in c->tie, so stepping past it
 * needs no more comparisons. */
static int pick(cur_cursor *c, int dir)
{
    int best = -1;
    size_t bl = 0;
    const void *bk = NULL;
    c->ntie = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->ch[i].valid)
            continue;
        size_t kl;
        const void *k = ch_key(&c->ch[i], &kl);
        int cmp = best < 0 ? -1 : dir * key_cmp(k, kl, bk, bl);
        if (cmp < 0) {
            best = (int)i;
            bk = k;
            bl = kl;
            c->ntie = 0;
        }
        if (cmp <= 0)
            c->tie[c->ntie++] = (int)i;
    }
    return best;
}

/* skip_ties -- move every child on the current key (as pick found them) one
 * step in direction dir. */
static int skip_ties(cur_cursor *c, int dir)
{
    for (size_t i = 0; i < c->ntie; i++) {
        cur_child *h = &c->ch[c->tie[i]];
        RET(dir > 0 ? ch_next(h) : ch_prev(h));
    }
    c->ntie = 0;
    return SHALE_OK;
}

/* skip_key -- move every child sitting on cur one step in direction dir. */
static int skip_key(cur_cursor *c, int dir)
{
    for (size_t i = 0; i < c->n; i++) {
        cur_child *h = &c->ch[i];
        if (h->valid && ch_cmp(h, c->cur, c->curlen) == 0)
            RET(dir > 0 ? ch_next(h) : ch_prev(h));
    }
    return SHALE_OK;
}

void cur_use_operators(cur_cursor *c, shale_db *db) { c->oc = (op_cache){.db = db}; }

/* covered_at -- whether a range tombstone deletes a version of cur whose
 * sequence (or segment seq) is after. */
static bool covered_at(const cur_cursor *c, uint64_t after)
{
    return c->ranges && (gy_covered(c->v->gy, c->cur, c->curlen, after) ||
                         gy_covered(c->mem_ranges, c->cur, c->curlen, after));
}

/* gather -- child h's versions of cur onto the stack, newest first, until a
 * base is found. */
static int gather(cur_cursor *c, cur_child *h)
{
    mo_stack *st = &c->st;
    if (h->type == CH_MEM) {
        const gy_set *gy[2] = {c->v->gy, c->mem_ranges};
        return mo_push_versions(st, h->mt, gy, c->ranges ? 2 : 0);
    }
    if (covered_at(c, h->seg_seq)) {
        mo_push_absent(st);
        return SHALE_OK;
    }
    const void *p;
    size_t n;
    RET(seg_cursor_value(h->sc, &p, &n));
    return mo_push_kind(st, seg_cursor_kind(h->sc), p, n);
}

/* resolve -- the winner (cur) holds merge operands: gather them and what
 * they apply to from the children on cur, oldest last, then fold them (the
 * users' view) or write them as one stack (a merge's view, which folds
 * later).  c->rkind is NODE_KIND_TOMBSTONE when the fold deleted the key. */
static int resolve(cur_cursor *c)
{
    mo_reset(&c->st);
    c->resolved = true;
    for (size_t i = 0; i < c->ntie && !mo_done(&c->st); i++)
        RET(gather(c, &c->ch[c->tie[i]]));
    if (!mo_done(&c->st) && c->complete)
        mo_push_absent(&c->st);
    if (c->hide && mo_done(&c->st)) { /* (open only over part of the data) */
        const mo_op *op = c->oc.db ? db_merge_op(&c->oc, c->cur, c->curlen) : NULL;
        int rc = mo_fold(&c->st, op, c->cur, c->curlen, &c->rval);
        if (rc == SHALE_OK || rc == SHALE_NOTFOUND) {
            c->rkind = rc == SHALE_OK ? NODE_KIND_VALUE : NODE_KIND_TOMBSTONE;
            return SHALE_OK;
        }
        if (rc != SHALE_ENOMERGEOP || !c->keep_stacks)
            return rc;
    }
    c->rkind = NODE_KIND_MERGE;
    return mo_encode(&c->st, &c->rval);
}

/* covered -- whether a range tombstone deletes the winner's entry (cur):
 * the graveyard's, and with memtables in the cursor theirs (as of the
 * snapshot, gathered at open); over segments only (a merge), the graveyard's
 * alone, since only those are sure to be older than every reader of the
 * merge's result. */
static bool covered(const cur_cursor *c)
{
    const cur_child *h = &c->ch[c->win];
    return covered_at(c, h->type == CH_MEM ? mt_iter_seq(&h->mt) : h->seg_seq);
}

/* settle -- from children positioned for direction dir, find the next visible
 * entry within bounds: SHALE_OK positioned, SHALE_NOTFOUND off the end.  An
 * entry a range tombstone deletes is skipped like a hidden tombstone, hidden
 * or not: the range tombstone itself stands for it. */
static int settle(cur_cursor *c, int dir)
{
    for (;;) {
        int w = pick(c, dir);
        if (w < 0)
            break;
        size_t kl;
        const void *k = ch_key(&c->ch[w], &kl);
        if (dir > 0 && c->has_hi && key_cmp(k, kl, c->hi, c->hilen) >= 0)
            break;
        if (dir < 0 && c->has_lo && key_cmp(k, kl, c->lo, c->lolen) < 0)
            break;
        RET(set_cur(c, w));
        c->resolved = false;
        if (!(c->ranges && covered(c))) {
            if (ch_kind(&c->ch[w]) == NODE_KIND_MERGE)
                RET(resolve(c));
            if (!(c->hide && cur_kind(c) == NODE_KIND_TOMBSTONE)) {
                c->dir = dir;
                return SHALE_OK;
            }
        }
        RET(skip_ties(c, dir));
    }
    c->dir = 0;
    return SHALE_NOTFOUND;
}

/* finish -- unposition on error. */
static int finish(cur_cursor *c, int rc)
{
    if (rc < 0)
        c->dir = 0;
    return rc;
}

/* seek_all -- position every child at its first key >= k (dir > 0) or last <= k. */
static int seek_all(cur_cursor *c, const void *k, size_t kl, int dir)
{
    for (size_t i = 0; i < c->n; i++)
        RET(dir > 0 ? ch_seek_ge(&c->ch[i], k, kl) : ch_seek_le(&c->ch[i], k, kl));
    return SHALE_OK;
}

int cur_first(cur_cursor *c)
{
    int rc = SHALE_OK;
    if (c->has_lo)
        ERR(seek_all(c, c->lo, c->lolen, 1));
    else
        for (size_t i = 0; i < c->n; i++)
            ERR(ch_first(&c->ch[i]));
    rc = settle(c, 1);
err:
    return finish(c, rc);
}

int cur_last(cur_cursor *c)
{
    int rc = SHALE_OK;
    if (c->has_hi) {
        /* last key < hi: seek_le(hi), then step back over an exact hit. */
        ERR(seek_all(c, c->hi, c->hilen, -1));
        for (size_t i = 0; i < c->n; i++)
            if (c->ch[i].valid && ch_cmp(&c->ch[i], c->hi, c->hilen) == 0)
                ERR(ch_prev(&c->ch[i]));
    } else {
        for (size_t i = 0; i < c->n; i++)
            ERR(ch_last(&c->ch[i]));
    }
    rc = settle(c, -1);
err:
    return finish(c, rc);
}

int cur_seek_ge(cur_cursor *c, const void *key, size_t klen)
{
    int rc;
    if (c->has_lo && key_cmp(key, klen, c->lo, c->lolen) < 0) {
        key = c->lo;
        klen = c->lolen;
    }
    ERR(seek_all(c, key, klen, 1));
    rc = settle(c, 1);
err:
    return finish(c, rc);
}

int cur_seek_le(cur_cursor *c, const void *key, size_t klen)
{
    int rc;
    if (c->has_hi && key_cmp(key, klen, c->hi, c->hilen) >= 0)
        return cur_last(c);
    ERR(seek_all(c, key, klen, -1));
    rc = settle(c, -1);
err:
    return finish(c, rc);
}

/* turn -- reposition every child for direction dir around cur, excluding cur. */
static int turn(cur_cursor *c, int dir)
{
    RET(seek_all(c, c->cur, c->curlen, dir));
    return skip_key(c, dir);
}

int cur_next(cur_cursor *c)
{
    int rc;
    if (c->dir == 0)
        return SHALE_NOTFOUND;
    if (c->dir > 0)
        ERR(skip_ties(c, 1));
    else
        ERR(turn(c, 1));
    rc = settle(c, 1);
err:
    return finish(c, rc);
}

int cur_prev(cur_cursor *c)
{
    int rc;
    if (c->dir == 0)
        return SHALE_NOTFOUND;
    if (c->dir < 0)
        ERR(skip_ties(c, -1));
    else
        ERR(turn(c, -1));
    rc = settle(c, -1);
err:
    return finish(c, rc);
}

bool cur_valid(const cur_cursor *c) { return c->dir != 0; }

const void *cur_key(const cur_cursor *c, size_t *klen)
{
    *klen = c->curlen;
    return c->cur;
}

uint8_t cur_kind(const cur_cursor *c)
{
    return c->resolved ? c->rkind : ch_kind(&c->ch[c->win]);
}

bool cur_value_run(const cur_cursor *c, uint64_t *pgno, uint64_t *vlen)
{
    const cur_child *h = &c->ch[c->win];
    if (c->resolved)
        return false;
    return h->type == CH_SEG && seg_cursor_value_run(h->sc, pgno, vlen);
}

int cur_value(cur_cursor *c, const void **val, size_t *vlen)
{
    cur_child *h = &c->ch[c->win];
    if (c->resolved) {
        *val = c->rval.data ? c->rval.data : "";
        *vlen = c->rval.len;
        return SHALE_OK;
    }
    if (h->type == CH_MEM) {
        *val = mt_iter_value(&h->mt, vlen);
        return SHALE_OK;
    }
    return seg_cursor_value(h->sc, val, vlen);
}
