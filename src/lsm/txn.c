/*
 * txn.c -- serializable transactions by optimistic validation
 * (shale_transaction).
 *
 * A run pins a version and a sequence number (its snapshot) and calls the
 * user's function.  Reads go to the transaction's own writes first, then to
 * the snapshot, and are recorded: each key read from the snapshot, and each
 * range a scan walked (up to where it stopped).  Writes are kept twice: as a
 * batch, in order, for the commit, and per key (its last insert or remove
 * and the operands merged after it), sorted, for reads.
 *
 * Commit runs the validation under write_mu (db_write_built), so no write
 * can come between it and the batch: the transaction commits only if no
 * write with a sequence number above the snapshot touched a key it read or
 * a range it scanned.  Every such write is still in a memtable of the
 * current version unless a memtable holding writes after the snapshot has
 * been written out since (db->written_seq says how far that went); then the
 * transaction cannot be checked and counts as a conflict.  So a committed
 * transaction read exactly what it would have read at its commit point: the
 * order of commits is a serial order.  Phantoms are covered because a range
 * counts as read, not just the keys found in it.
 *
 * A conflict runs the function again on a fresh snapshot, up to
 * SHALE_TXN_RETRIES runs.  Transactions that wrote nothing commit without
 * validation: they read one consistent snapshot.
 */
#include <sched.h>
#include <stdlib.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"
#include "mergeop.h"

/* A read: the key [lo] (hi NULL, point) or the range [lo, hi). */
typedef struct txn_read {
    uint8_t *lo, *hi;
    size_t lolen, hilen;
    bool point;
} txn_read;

struct shale_txn {
    shale_db *db;
    shale_tree *const *trees;
    size_t ntrees;
    ver_version *v;
    uint64_t snap;
    mt_table *w;     /* the writes, each a version (NULL: none yet) */
    uint64_t wseq;   /* the last version's number in w */
    int broken;      /* a write failed half way: the run cannot commit */
    txn_read *r;
    size_t nr, rcap;
    shale_batch b;
    mo_stack st;
    shale_buf snapval;
    op_cache oc;
};

/* ---- bookkeeping ------------------------------------------------------------ */

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

/* txn_reset -- forget every read and write (the snapshot stays). */
static void txn_reset(shale_txn *x)
{
    mt_unref(x->w);
    x->w = NULL;
    x->wseq = 0;
    x->broken = 0;
    for (size_t i = 0; i < x->nr; i++) {
        free(x->r[i].lo);
        free(x->r[i].hi);
    }
    x->nr = 0;
    x->b.len = x->b.count = 0;
    x->b.user_bytes = 0;
}

static void txn_free(shale_txn *x)
{
    txn_reset(x);
    free(x->r);
    free(x->b.buf);
    mo_free(&x->st);
    shale_buf_free(&x->snapval);
    ver_unref(x->v);
}

/* add_read -- record a read of [lo] (hi NULL) or [lo, hi). */
static int add_read(shale_txn *x, const uint8_t *lo, size_t lolen, const uint8_t *hi, size_t hilen,
                    bool point)
{
    if (x->nr == x->rcap) {
        size_t cap = MAX(2 * x->rcap, (size_t)16);
        txn_read *nr = realloc(x->r, cap * sizeof *nr);
        if (!nr)
            return SHALE_ENOMEM;
        x->r = nr;
        x->rcap = cap;
    }
    txn_read *r = &x->r[x->nr];
    *r = (txn_read){dup_bytes(lo, lolen), NULL, lolen, 0, point};
    if (!point)
        r->hi = dup_bytes(hi, hilen), r->hilen = hilen;
    if (!r->lo || (!point && !r->hi)) {
        free(r->lo);
        free(r->hi);
        return SHALE_ENOMEM;
    }
    x->nr++;
    return SHALE_OK;
}

/* ---- the transaction's view ----------------------------------------------- */

/* check -- t is one of the transaction's trees (and live), key is valid. */
static int check(shale_txn *x, shale_tree *t, const void *key, size_t klen)
{
    if (!x)
        return SHALE_EINVAL;
    RET(tree_check_key(t, key, klen));
    for (size_t i = 0; i < x->ntrees; i++)
        if (x->trees[i] == t)
            return SHALE_OK;
    return SHALE_EINVAL;
}

/* make_ikey -- the internal key in a malloc'd buffer. */
static uint8_t *make_ikey(shale_tree *t, const void *key, size_t klen)
{
    uint8_t *ik = malloc(klen + IKEY_PREFIX);
    if (ik)
        ikey_make(ik, t->id, key, klen);
    return ik;
}

/* gather -- the transaction's writes to the key it (positioned on the
 * key's newest write) onto x->st, newest first, down to an insert or a
 * remove (then the stack is done) or to the first write (open: the
 * snapshot's value is what they apply to). */
static int gather(shale_txn *x, mt_iter it)
{
    mo_reset(&x->st);
    return mo_push_versions(&x->st, it, NULL, 0);
}

/* view -- the gathered key as the transaction sees it, given the snapshot's
 * value (snap NULL: absent there; used only when the stack is open):
 * SHALE_OK with the value in *out, SHALE_NOTFOUND, or an error. */
static int view(shale_txn *x, const uint8_t *ik, size_t iklen, const shale_buf *snap,
                shale_buf *out)
{
    if (!mo_done(&x->st)) {
        if (snap)
            RET(mo_push_value(&x->st, snap->data ? snap->data : "", snap->len));
        else
            mo_push_absent(&x->st);
    }
    if (x->st.nops == 0) { /* the last write was an insert or a remove */
        if (x->st.base == MO_ABSENT)
            return SHALE_NOTFOUND;
        return buf_set(out, x->st.buf + x->st.val.off, x->st.val.len);
    }
    return mo_fold(&x->st, db_merge_op(&x->oc, ik, iklen), ik, iklen, out);
}

int shale_txn_get(shale_txn *x, shale_tree *t, const void *key, size_t klen, shale_buf *val)
{
    int rc;
    mt_iter it;
    if (!val)
        return SHALE_EINVAL;
    RET(check(x, t, key, klen));
    uint8_t *ik = make_ikey(t, key, klen);
    if (!ik)
        return SHALE_ENOMEM;
    size_t iklen = klen + IKEY_PREFIX;
    bool written = false;
    if (x->w) {
        mt_iter_init(&it, x->w, UINT64_MAX);
        written = mt_iter_at(&it, ik, iklen);
    }
    if (written)
        ERR(gather(x, it));
    if (written && mo_done(&x->st)) {
        rc = view(x, ik, iklen, NULL, val);
    } else {
        /* the snapshot's value counts as read */
        ERR(add_read(x, ik, iklen, NULL, 0, true));
        rc = db_get_ikey(x->db, x->v, x->snap, ik, iklen, written ? &x->snapval : val);
        if (written && rc >= 0)
            rc = view(x, ik, iklen, rc == SHALE_OK ? &x->snapval : NULL, val);
    }
err:
    if (rc == SHALE_NOTFOUND)
        val->len = 0;
    free(ik);
    return rc;
}

/* txn_write -- record a write of kind for key (value or operand v). */
static int txn_write(shale_txn *x, shale_tree *t, uint8_t kind, const void *key, size_t klen,
                     const void *v, size_t vlen)
{
    int rc;
    RET(check(x, t, key, klen));
    if ((!v && vlen) || vlen > SHALE_MAX_VALUE_SIZE)
        return !v && vlen ? SHALE_EINVAL : SHALE_ETOOBIG;
    uint8_t *ik = make_ikey(t, key, klen);
    if (!ik)
        return SHALE_ENOMEM;
    if (!x->w)
        ERR(mt_create(&x->w));
    ERR(batch_add(&x->b, kind, t->id, key, klen, v, vlen));
    rc = mt_add(x->w, ++x->wseq, kind, ik, klen + IKEY_PREFIX, v ? v : "", vlen);
    if (rc < 0) /* the batch holds an op the table does not */
        x->broken = rc;
err:
    free(ik);
    return rc;
}

int shale_txn_insert(shale_txn *x, shale_tree *t, const void *key, size_t klen, const void *val,
                     size_t vlen)
{
    return txn_write(x, t, NODE_KIND_VALUE, key, klen, val, vlen);
}

int shale_txn_remove(shale_txn *x, shale_tree *t, const void *key, size_t klen)
{
    return txn_write(x, t, NODE_KIND_TOMBSTONE, key, klen, NULL, 0);
}

int shale_txn_merge(shale_txn *x, shale_tree *t, const void *key, size_t klen,
                    const void *operand, size_t oplen)
{
    return txn_write(x, t, NODE_KIND_MERGE, key, klen, operand, oplen);
}

/* ---- scans ---------------------------------------------------------------- */

/* wit_start -- the written keys' iterator on the first key of [lo, hi) in
 * the scan's direction (unpositioned when there is none). */
static void wit_start(mt_iter *it, bool reverse, const uint8_t *lo, size_t lolen,
                      const uint8_t *hi, size_t hilen)
{
    size_t kl;
    if (!reverse) {
        mt_iter_seek_ge(it, lo, lolen);
        return;
    }
    mt_iter_seek_le(it, hi, hilen);
    if (mt_iter_valid(it)) {
        const void *k = mt_iter_key(it, &kl);
        if (key_cmp(k, kl, hi, hilen) == 0)
            mt_iter_prev(it);
    }
}

/* wit_past -- the written keys' iterator on the first key after k in the
 * scan's direction. */
static void wit_past(mt_iter *it, bool reverse, const uint8_t *k, size_t kl)
{
    size_t wl;
    if (reverse)
        mt_iter_seek_le(it, k, kl);
    else
        mt_iter_seek_ge(it, k, kl);
    const void *wk = mt_iter_valid(it) ? mt_iter_key(it, &wl) : NULL;
    if (wk && key_cmp(wk, wl, k, kl) == 0) {
        if (reverse)
            mt_iter_prev(it);
        else
            mt_iter_next(it);
    }
}

int shale_txn_scan(shale_txn *x, shale_tree *t, const void *lo, size_t lolen, const void *hi,
                   size_t hilen, bool reverse, shale_scan_fn fn, void *ctx)
{
    int rc;
    cur_cursor *c = NULL;
    uint8_t *ilo = NULL, *ihi = NULL, *stop = NULL;
    size_t ilolen = lolen + IKEY_PREFIX, ihilen = (hi ? hilen : 0) + IKEY_PREFIX, stoplen = 0;
    shale_buf out = SHALE_BUF_INIT;
    mt_iter wit = {0};
    bool stopped = false;
    if (!fn)
        return SHALE_EINVAL;
    RET(check(x, t, lo, lolen));
    if (hi || hilen)
        RET(check(x, t, hi, hilen));
    if (!(ilo = make_ikey(t, lo, lolen)))
        ERR_SET(SHALE_ENOMEM);
    if (!(ihi = hi ? make_ikey(t, hi, hilen) : malloc(IKEY_PREFIX)))
        ERR_SET(SHALE_ENOMEM);
    if (!hi)
        put_be32(ihi, t->id + 1); /* the end of the tree */
    if (key_cmp(ilo, ilolen, ihi, ihilen) >= 0) {
        rc = SHALE_OK; /* an empty range reads nothing */
        goto err;
    }
    ERR(cur_open(x->v, x->snap, true, 0, x->v->nsegs, CUR_HIDE, &c));
    cur_use_operators(c, x->db);
    ERR(cur_set_bounds(c, ilo, ilolen, ihi, ihilen));
    int step = reverse ? -1 : 1;
    int crc = reverse ? cur_last(c) : cur_first(c);
    if (x->w) {
        mt_iter_init(&wit, x->w, UINT64_MAX);
        wit_start(&wit, reverse, ilo, ilolen, ihi, ihilen);
    }
    for (;;) {
        if (crc < 0)
            ERR_SET(crc);
        size_t ckl = 0, wkl = 0;
        const uint8_t *ck = crc == SHALE_OK ? cur_key(c, &ckl) : NULL;
        const uint8_t *wk = x->w && mt_iter_valid(&wit) ? mt_iter_key(&wit, &wkl) : NULL;
        if (wk && (reverse ? key_cmp(wk, wkl, ilo, ilolen) < 0 : key_cmp(wk, wkl, ihi, ihilen) >= 0))
            wk = NULL; /* past the range */
        if (!ck && !wk)
            break;
        int cmp = !wk ? -1 : !ck ? 1 : step * key_cmp(ck, ckl, wk, wkl);
        bool wit_moved = false;
        const uint8_t *key = cmp <= 0 ? ck : wk;
        size_t klen = cmp <= 0 ? ckl : wkl;
        const void *val = NULL;
        size_t vlen = 0;
        int vr = SHALE_OK;
        if (cmp < 0) {
            ERR(cur_value(c, &val, &vlen));
        } else {
            shale_buf sv = SHALE_BUF_INIT;
            if (cmp == 0) {
                const void *p;
                ERR(cur_value(c, &p, &sv.len));
                sv.data = (void *)p;
            }
            ERR(gather(x, wit));
            vr = view(x, wk, wkl, cmp == 0 ? &sv : NULL, &out);
            if (vr < 0)
                ERR_SET(vr);
            val = out.data ? out.data : "";
            vlen = out.len;
        }
        if (vr == SHALE_OK) {
            uint64_t wseq = x->wseq;
            int r = fn(ctx, key + IKEY_PREFIX, klen - IKEY_PREFIX, val, vlen);
            if (r != 0) { /* read up to and including key (all of the range
                             when there is no memory to say where it stopped) */
                stop = reverse ? dup_bytes(key, klen) : key_after(key, klen);
                stoplen = reverse ? klen : klen + 1;
                rc = r;
                stopped = true;
                break;
            }
            if (x->wseq != wseq) { /* fn wrote: the written keys past key are
                                      found again, as they are now */
                mt_iter_init(&wit, x->w, UINT64_MAX);
                wit_past(&wit, reverse, key, klen);
                wit_moved = true;
            }
        }
        if (cmp <= 0)
            crc = reverse ? cur_prev(c) : cur_next(c);
        if (cmp >= 0 && !wit_moved) {
            if (reverse)
                mt_iter_prev(&wit);
            else
                mt_iter_next(&wit);
        }
    }
    if (!stopped)
        rc = SHALE_OK;
    {
        int ar = reverse ? add_read(x, stop ? stop : ilo, stop ? stoplen : ilolen, ihi, ihilen, false)
                         : add_read(x, ilo, ilolen, stop ? stop : ihi, stop ? stoplen : ihilen, false);
        if (ar < 0)
            rc = x->broken = ar; /* what fn saw cannot be validated */
    }
    goto out;
err:
    /* fn may have seen part of the range: all of it counts as read */
    if (c && add_read(x, ilo, ilolen, ihi, ihilen, false) < 0)
        x->broken = rc;
out:
    cur_close(c);
    shale_buf_free(&out);
    free(ilo);
    free(ihi);
    free(stop);
    return rc;
}

/* ---- commit --------------------------------------------------------------- */

/* mt_changed -- whether memtable mt holds a write after seq to the read r. */
static bool mt_changed(mt_table *mt, const txn_read *r, uint64_t seq)
{
    for (const mt_range *g = mt_ranges(mt); g; g = g->next) {
        if (g->seq <= seq)
            break; /* newest first */
        if (r->point ? key_cmp(g->lo, g->lolen, r->lo, r->lolen) <= 0 &&
                           key_cmp(r->lo, r->lolen, g->hi, g->hilen) < 0
                     : key_cmp(g->lo, g->lolen, r->hi, r->hilen) < 0 &&
                           key_cmp(r->lo, r->lolen, g->hi, g->hilen) < 0)
            return true;
    }
    if (r->point) {
        uint8_t kind;
        const void *v;
        size_t vl;
        uint64_t s;
        return mt_get(mt, r->lo, r->lolen, UINT64_MAX, &kind, &v, &vl, &s) == SHALE_OK && s > seq;
    }
    mt_iter it;
    mt_iter_init(&it, mt, UINT64_MAX);
    for (mt_iter_seek_ge(&it, r->lo, r->lolen); mt_iter_valid(&it); mt_iter_next(&it)) {
        size_t kl;
        const void *k = mt_iter_key(&it, &kl);
        if (key_cmp(k, kl, r->hi, r->hilen) >= 0)
            break;
        if (mt_iter_seq(&it) > seq)
            return true;
    }
    return false;
}

/* validate -- db_build_fn, under write_mu: SHALE_ECONFLICT when a write
 * since the snapshot touched what the transaction read. */
static int validate(shale_db *db, ver_version *v, uint64_t snap, shale_batch *b, void *ctx)
{
    shale_txn *x = ctx;
    (void)b;
    if (x->nr == 0 || snap == x->snap)
        return SHALE_OK;
    if (atomic_load(&db->written_seq) > x->snap)
        return SHALE_ECONFLICT; /* writes since the snapshot left the memtables */
    for (size_t i = 0; i < x->nr; i++) {
        if (mt_changed(v->mem.mt, &x->r[i], x->snap))
            return SHALE_ECONFLICT;
        for (size_t j = 0; j < v->nimm; j++)
            if (mt_changed(v->imm[j].mt, &x->r[i], x->snap))
                return SHALE_ECONFLICT;
    }
    return SHALE_OK;
}

int shale_transaction(shale_db *db, shale_tree *const *trees, size_t ntrees, shale_txn_fn fn,
                      void *ctx)
{
    if (!db || !fn || (!trees && ntrees))
        return SHALE_EINVAL;
    for (size_t i = 0; i < ntrees; i++)
        if (!trees[i] || trees[i]->db != db)
            return SHALE_EINVAL;
    shale_txn x = {.db = db, .trees = trees, .ntrees = ntrees, .oc = {.db = db}};
    int rc = SHALE_ECONFLICT;
    bool lost = false; /* the last run's commit found a conflict */
    for (int run = 0; run < SHALE_TXN_RETRIES && rc == SHALE_ECONFLICT; run++) {
        lost = false;
        if (run)
            sched_yield(); /* let the writer we lost to finish */
        txn_reset(&x);
        ver_unref(x.v);
        x.v = db_pin(db, &x.snap);
        rc = fn(&x, ctx);
        if (rc != 0)
            break; /* the user's abort, as it is */
        if (x.broken && x.b.count) {
            rc = x.broken; /* fn went on after a failed write or read */
            break;
        }
        if (x.b.count == 0)
            break; /* read only: one consistent snapshot */
        x.b.db = db;
        rc = db_write_built(db, &x.b, validate, &x);
        if (rc == SHALE_OK) {
            atomic_fetch_add_explicit(&db->st_user_bytes, x.b.user_bytes, memory_order_relaxed);
            atomic_fetch_add_explicit(&db->st_txn_commits, 1, memory_order_relaxed);
        } else if (rc == SHALE_ECONFLICT) {
            atomic_fetch_add_explicit(&db->st_txn_reruns, 1, memory_order_relaxed);
            lost = true;
        }
    }
    if (lost)
        atomic_fetch_add_explicit(&db->st_txn_conflicts, 1, memory_order_relaxed);
    txn_free(&x);
    return rc;
}
