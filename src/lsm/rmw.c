/*
 * rmw.c -- atomic read-modify-write of one key: compare-and-swap and update.
 *
 * Both decide under write_mu, on a version pinned there, and write before
 * any other write can land (db_write_built): the read and the write are one
 * step in the order of writes, so both are linearizable.
 *
 * shale_update runs the user's callback outside any lock: it reads the key,
 * calls fn on what it read, then commits only if the key still holds that
 * (a compare-and-swap on the value it read); if another write came between,
 * it reads and calls fn again.  After UPDATE_OPTIMISTIC rounds lost that
 * way it runs fn with write_mu held, which always succeeds, so a hot key
 * cannot starve an updater.
 */
#include <stdlib.h>

#include "../pagewriter/node.h"
#include "../space/common.h"
#include "db.h"

#define UPDATE_OPTIMISTIC 16

/* The expectation a build checks before it writes. */
typedef struct rmw_ctx {
    shale_tree *t;
    const uint8_t *ikey;
    size_t iklen;
    bool want_present;      /* the key must hold want (else be absent) */
    const void *want;
    size_t wantlen;
    bool put;               /* then write val (else delete) */
    const void *val;
    size_t vlen;
    shale_buf cur;          /* the value found */
    bool found;
    /* shale_update with write_mu held: fn runs on what is found */
    shale_update_fn fn;
    void *fnctx;
    int fnrc;
} rmw_ctx;

/* read_cur -- the key's current value into r->cur / r->found. */
static int read_cur(shale_db *db, ver_version *v, uint64_t snap, rmw_ctx *r)
{
    int rc = db_get_ikey(db, v, snap, r->ikey, r->iklen, &r->cur);
    if (rc < 0)
        return rc;
    r->found = rc == SHALE_OK;
    return SHALE_OK;
}

/* add_write -- the key set to r->val, or deleted. */
static int add_write(shale_batch *b, const rmw_ctx *r)
{
    const uint8_t *k = r->ikey + IKEY_PREFIX;
    size_t kl = r->iklen - IKEY_PREFIX;
    if (r->put)
        return batch_add(b, NODE_KIND_VALUE, r->t->id, k, kl, r->val, r->vlen);
    return batch_add(b, NODE_KIND_TOMBSTONE, r->t->id, k, kl, NULL, 0);
}

/* cas_build -- db_build_fn: write when the key holds what is expected. */
static int cas_build(shale_db *db, ver_version *v, uint64_t snap, shale_batch *b, void *ctx)
{
    rmw_ctx *r = ctx;
    RET(read_cur(db, v, snap, r));
    bool match = r->found == r->want_present &&
                 (!r->found || (r->cur.len == r->wantlen &&
                                (r->wantlen == 0 || memcmp(r->cur.data, r->want, r->wantlen) == 0)));
    if (!match)
        return SHALE_EMISMATCH;
    return add_write(b, r);
}

/* key_of -- the internal key of (t, key) in a malloc'd buffer. */
static int key_of(shale_tree *t, const void *key, size_t klen, uint8_t **ik)
{
    RET(tree_check_key(t, key, klen));
    if (!(*ik = malloc(klen + IKEY_PREFIX)))
        return SHALE_ENOMEM;
    ikey_make(*ik, t->id, key, klen);
    return SHALE_OK;
}

/* report -- a value (or its absence: data NULL) into out (may be NULL). */
static int report(bool found, const void *val, size_t len, shale_buf *out)
{
    if (!out)
        return SHALE_OK;
    if (!found) {
        shale_buf_free(out);
        return SHALE_OK;
    }
    return buf_set(out, val, len);
}

int shale_cas(shale_tree *t, const void *key, size_t klen, const void *expected, size_t elen,
              const void *desired, size_t dlen, shale_buf *actual)
{
    int rc;
    uint8_t *ik = NULL;
    shale_batch b = {0};
    if ((!expected && elen) || (!desired && dlen))
        return SHALE_EINVAL;
    if (elen > SHALE_MAX_VALUE_SIZE || dlen > SHALE_MAX_VALUE_SIZE)
        return SHALE_ETOOBIG;
    RET(key_of(t, key, klen, &ik));
    rmw_ctx r = {.t = t, .ikey = ik, .iklen = klen + IKEY_PREFIX, .want_present = expected != NULL,
                 .want = expected, .wantlen = elen, .put = desired != NULL, .val = desired,
                 .vlen = dlen};
    rc = db_write_built(t->db, &b, cas_build, &r);
    if (rc == SHALE_EMISMATCH) {
        int rr = report(r.found, r.cur.data, r.cur.len, actual);
        rc = rr < 0 ? rr : SHALE_EMISMATCH;
    } else if (rc >= 0) {
        rc = SHALE_OK;
        atomic_fetch_add_explicit(&t->db->st_user_bytes, klen + dlen, memory_order_relaxed);
    }
    free(ik);
    free(b.buf);
    shale_buf_free(&r.cur);
    return rc;
}

/* call_fn -- run the update callback on r's current value; r->put, val and
 * vlen get its answer.  Returns fn's result (non-zero: abort). */
static int call_fn(rmw_ctx *r)
{
    const void *nv = NULL;
    size_t nl = 0;
    int rc = r->fn(r->fnctx, r->found ? (r->cur.data ? r->cur.data : "") : NULL, r->cur.len, &nv,
                   &nl);
    if (rc != 0)
        return rc;
    if (!nv && nl)
        return SHALE_EINVAL;
    if (nl > SHALE_MAX_VALUE_SIZE)
        return SHALE_ETOOBIG;
    r->put = nv != NULL;
    r->val = nv;
    r->vlen = nl;
    return SHALE_OK;
}

/* locked_build -- db_build_fn: fn runs on the value found under write_mu. */
static int locked_build(shale_db *db, ver_version *v, uint64_t snap, shale_batch *b, void *ctx)
{
    rmw_ctx *r = ctx;
    RET(read_cur(db, v, snap, r));
    int rc = call_fn(r);
    if (rc != 0) {
        r->fnrc = rc;
        return SHALE_EMISMATCH; /* (any negative: nothing is written) */
    }
    return add_write(b, r);
}

int shale_update(shale_tree *t, const void *key, size_t klen, shale_update_fn fn, void *ctx,
                 int mode, shale_buf *out)
{
    int rc = SHALE_OK;
    uint8_t *ik = NULL;
    shale_batch b = {0};
    shale_buf old = SHALE_BUF_INIT;
    if (!fn || (mode != SHALE_UPDATE_RETURN_OLD && mode != SHALE_UPDATE_RETURN_NEW))
        return SHALE_EINVAL;
    if (t && t->db->opts.read_only)
        return SHALE_EREADONLY;
    RET(key_of(t, key, klen, &ik));
    rmw_ctx r = {.t = t, .ikey = ik, .iklen = klen + IKEY_PREFIX, .fn = fn, .fnctx = ctx};
    bool old_found = false, done = false;
    for (int round = 0; round < UPDATE_OPTIMISTIC && !done; round++) {
        /* read, call fn outside any lock, then commit if nothing changed */
        uint64_t snap;
        ver_version *v = db_pin(t->db, &snap);
        rc = read_cur(t->db, v, snap, &r);
        ver_unref(v);
        ERR(rc);
        old_found = r.found;
        ERR(buf_set(&old, r.cur.data, r.found ? r.cur.len : 0));
        int f = call_fn(&r);
        if (f != 0) {
            rc = f; /* the callback's own result, unchanged */
            goto err;
        }
        r.want_present = old_found;
        r.want = old.data;
        r.wantlen = old.len;
        b.len = b.count = 0;
        rc = db_write_built(t->db, &b, cas_build, &r);
        if (rc == SHALE_EMISMATCH)
            continue; /* someone wrote in between: again */
        ERR(rc);
        done = true;
    }
    if (!done) { /* contended: once more with write_mu held */
        b.len = b.count = 0;
        rc = db_write_built(t->db, &b, locked_build, &r);
        if (rc == SHALE_EMISMATCH) {
            rc = r.fnrc;
            goto err;
        }
        ERR(rc);
        old_found = r.found;
        ERR(buf_set(&old, r.cur.data, r.found ? r.cur.len : 0));
    }
    atomic_fetch_add_explicit(&t->db->st_user_bytes, klen + r.vlen, memory_order_relaxed);
    if (mode == SHALE_UPDATE_RETURN_OLD) {
        ERR(report(old_found, old.data, old.len, out));
        rc = old_found ? SHALE_OK : SHALE_NOTFOUND;
    } else {
        ERR(report(r.put, r.val, r.vlen, out));
        rc = r.put ? SHALE_OK : SHALE_NOTFOUND;
    }
err:
    free(ik);
    free(b.buf);
    shale_buf_free(&r.cur);
    shale_buf_free(&old);
    return rc;
}
