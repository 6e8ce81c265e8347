/*
 * read.c -- point reads: pin the current version, then look the key up in the
 * active memtable, the immutable memtables and the segments, newest first;
 * the first version of the key found (value or tombstone) is the answer.
 */
#include <stdlib.h>

#include "../space/common.h"
#include "db.h"
#include "filter.h"

/* db_pin -- a reference on the current version and the snapshot sequence to
 * read it at.  The sequence is read after pinning: every write a segment of
 * the pinned version holds was published before the version was installed. */
ver_version *db_pin(shale_db *db, uint64_t *snap)
{
    pthread_mutex_lock(&db->ver_mu);
    ver_version *v = db->current;
    ver_ref(v);
    pthread_mutex_unlock(&db->ver_mu);
    *snap = atomic_load_explicit(&db->last_seq, memory_order_acquire);
    return v;
}

int buf_set(shale_buf *b, const void *p, size_t n)
{
    if (n > b->cap || !b->data) {
        size_t cap = n > 2 * b->cap ? n : 2 * b->cap;
        void *nd = realloc(b->data, cap ? cap : 1);
        if (!nd)
            return SHALE_ENOMEM;
        b->data = nd;
        b->cap = cap ? cap : 1;
    }
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

/* mem_lookup -- one memtable: SHALE_OK (value copied), SHALE_NOTFOUND
 * (tombstone, or deleted by a range), or 2 when the memtable does not know
 * the key. */
static int mem_lookup(const ver_version *v, mt_table *mt, uint64_t h, uint64_t snap,
                      const void *ikey, size_t iklen, shale_buf *val)
{
    uint8_t kind;
    const void *p;
    size_t vlen;
    uint64_t seq;
    if (!mt_may_contain(mt, h) || mt_get(mt, ikey, iklen, snap, &kind, &p, &vlen, &seq) != SHALE_OK)
        return 2;
    if (kind == NODE_KIND_TOMBSTONE || db_covered(v, ikey, iklen, seq, snap))
        return SHALE_NOTFOUND;
    return buf_set(val, p, vlen);
}

int db_get_ikey(shale_db *db, ver_version *v, uint64_t snap, const void *ikey, size_t iklen,
                shale_buf *val)
{
    uint64_t h = filter_hash(ikey, iklen); /* one hash for every filter below */
    int rc = mem_lookup(v, v->mem.mt, h, snap, ikey, iklen, val);
    for (size_t i = 0; rc == 2 && i < v->nimm; i++)
        rc = mem_lookup(v, v->imm[i].mt, h, snap, ikey, iklen, val);
    for (size_t i = 0; rc == 2 && i < v->nsegs; i++) {
        seg_segment *s = v->segs[i];
        uint8_t kind;
        int r = seg_get_hashed(s, ikey, iklen, h, &kind, val);
        if (r == SHALE_NOTFOUND)
            continue;
        if (r == SHALE_OK && kind != NODE_KIND_TOMBSTONE && db_covered(v, ikey, iklen, s->seq, snap))
            kind = NODE_KIND_TOMBSTONE;
        rc = (r == SHALE_OK && kind == NODE_KIND_TOMBSTONE) ? SHALE_NOTFOUND : r;
    }
    if (rc == 2 || rc == SHALE_NOTFOUND) {
        val->len = 0;
        return SHALE_NOTFOUND;
    }
    return rc;
}
