/*
 * read.c -- point reads: pin the current version, then look the key up in the
 * active memtable, the immutable memtables and the segments, newest first;
 * the first version of the key found (value or tombstone) is the answer.
 */
#include <stdlib.h>

#include "../space/common.h"
#include "db.h"
#include "filter.h"
#include "mergeop.h"

/* db_pin -- a reference on the current version and the snapshot sequence to
 * read it at.  The sequence is read under ver_mu, with the version: every
 * write a segment of the version holds was published before the version was
 * installed, and a write to a memtable the version does not hold yet can
 * only be published after that memtable's version is installed, which needs
 * ver_mu.  (Read after unlocking, the sequence could cover such a write that
 * the version cannot show.) */
ver_version *db_pin(shale_db *db, uint64_t *snap)
{
    pthread_mutex_lock(&db->ver_mu);
    ver_version *v = db->current;
    ver_ref(v);
    *snap = atomic_load_explicit(&db->last_seq, memory_order_acquire);
    pthread_mutex_unlock(&db->ver_mu);
    return v;
}

int buf_reserve(shale_buf *b, size_t n)
{
    if (n > b->cap || !b->data) {
        size_t cap = n > 2 * b->cap ? n : 2 * b->cap;
        void *nd = realloc(b->data, cap ? cap : 1);
        if (!nd)
            return SHALE_ENOMEM;
        b->data = nd;
        b->cap = cap ? cap : 1;
    }
    return SHALE_OK;
}

int buf_set(shale_buf *b, const void *p, size_t n)
{
    RET(buf_reserve(b, n));
    if (n)
        memcpy(b->data, p, n);
    b->len = n;
    return SHALE_OK;
}

int db_mem_ranges(mt_table *const *mts, size_t nmts, const gy_set *base, uint64_t upto,
                  gy_set **out)
{
    const mt_range *stack[4], **heads = nmts <= 4 ? stack : malloc(nmts * sizeof *heads);
    size_t n = 0;
    *out = NULL;
    if (!heads)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < nmts; i++) /* each list as it is now, walked twice */
        for (const mt_range *r = heads[i] = mt_ranges(mts[i]); r; r = r->next)
            n += r->seq <= upto;
    gy_range *v = n ? malloc(n * sizeof *v) : NULL;
    if (n == 0 || !v) {
        if (heads != stack)
            free(heads);
        if (n && !v)
            return SHALE_ENOMEM;
        gy_ref((gy_set *)base);
        *out = (gy_set *)base;
        return SHALE_OK;
    }
    n = 0;
    for (size_t i = 0; i < nmts; i++)
        for (const mt_range *r = heads[i]; r; r = r->next)
            if (r->seq <= upto)
                v[n++] = (gy_range){r->seq, r->lo, r->hi, r->lolen, r->hilen};
    int rc = gy_with(base, v, n, out);
    free(v);
    if (heads != stack)
        free(heads);
    return rc;
}

/* db_covered -- whether a range tombstone of v visible at snap deletes a
 * version of key whose sequence (or segment seq) is after. */
bool db_covered(const ver_version *v, const void *key, size_t klen, uint64_t after, uint64_t snap)
{
    if (mt_ranges(v->mem.mt) && mt_range_covers(v->mem.mt, key, klen, after, snap))
        return true;
    for (size_t i = 0; i < v->nimm; i++)
        if (mt_ranges(v->imm[i].mt) && mt_range_covers(v->imm[i].mt, key, klen, after, snap))
            return true;
    return gy_covered(v->gy, key, klen, after);
}

/* A point read walks a key's versions newest first.  The first value or
 * deletion decides, unless merge operands come first: then they are
 * gathered until their base is found (or the data ends) and folded. */
typedef struct get_walk {
    const ver_version *v;
    uint64_t snap;
    const uint8_t *ikey;
    size_t iklen;
    shale_buf *val;
    bool merging; /* st holds operands */
    mo_stack st;
} get_walk;

enum { W_VALUE, W_ABSENT, W_MORE }; /* after an entry: the answer, or look further */

/* visit -- one version (value p, n copied when it decides); covered: a range
 * tombstone deletes it. */
static int visit(get_walk *g, uint8_t kind, bool raw_operand, const void *p, size_t n,
                 bool covered)
{
    if (covered || kind == NODE_KIND_TOMBSTONE) {
        if (!g->merging)
            return W_ABSENT;
        mo_push_absent(&g->st);
        return W_VALUE;
    }
    if (kind == NODE_KIND_VALUE && !g->merging) {
        RET(buf_set(g->val, p, n));
        return W_VALUE;
    }
    g->merging = true;
    if (kind == NODE_KIND_MERGE && raw_operand)
        RET(mo_push_operand(&g->st, p, n));
    else
        RET(mo_push_kind(&g->st, kind, p, n));
    return mo_done(&g->st) ? W_VALUE : W_MORE;
}

/* mem_walk -- one memtable's versions of the key: W_* or an error (W_MORE
 * also when it holds none). */
static int mem_walk(get_walk *g, mt_table *mt, uint64_t h)
{
    mt_iter it;
    if (!mt_may_contain(mt, h))
        return W_MORE;
    mt_iter_init(&it, mt, g->snap);
    if (!mt_iter_at(&it, g->ikey, g->iklen))
        return W_MORE;
    for (;;) {
        size_t n;
        const void *p = mt_iter_value(&it, &n);
        bool cov = db_covered(g->v, g->ikey, g->iklen, mt_iter_seq(&it), g->snap);
        int r = visit(g, mt_iter_kind(&it), true, p, n, cov);
        if (r != W_MORE || !mt_iter_older(&it))
            return r;
    }
}

int db_get_ikey(shale_db *db, ver_version *v, uint64_t snap, const void *ikey, size_t iklen,
                shale_buf *val)
{
    uint64_t h = filter_hash(ikey, iklen); /* one hash for every filter below */
    get_walk g = {.v = v, .snap = snap, .ikey = ikey, .iklen = iklen, .val = val};
    int rc = mem_walk(&g, v->mem.mt, h);
    for (size_t i = 0; rc == W_MORE && i < v->nimm; i++)
        rc = mem_walk(&g, v->imm[i].mt, h);
    for (size_t i = 0; rc == W_MORE && i < v->nsegs; i++) {
        seg_segment *s = v->segs[i];
        uint8_t kind;
        int r = seg_get_hashed(s, ikey, iklen, h, &kind, val);
        if (r == SHALE_NOTFOUND)
            continue;
        if (r < 0) {
            rc = r;
            break;
        }
        bool cov = kind != NODE_KIND_TOMBSTONE && db_covered(v, ikey, iklen, s->seq, snap);
        if (kind == NODE_KIND_VALUE && !cov && !g.merging)
            rc = W_VALUE; /* already in val */
        else
            rc = visit(&g, kind, false, val->data, val->len, cov);
    }
    if (rc >= 0 && g.merging) {
        if (!mo_done(&g.st))
            mo_push_absent(&g.st);
        op_cache oc = {.db = db};
        rc = mo_fold(&g.st, db_merge_op(&oc, ikey, iklen), ikey, iklen, val);
        rc = rc == SHALE_OK ? W_VALUE : rc == SHALE_NOTFOUND ? W_ABSENT : rc;
    }
    mo_free(&g.st);
    if (rc < 0) {
        val->len = 0;
        return rc;
    }
    if (rc != W_VALUE) {
        val->len = 0;
        return SHALE_NOTFOUND;
    }
    return SHALE_OK;
}
