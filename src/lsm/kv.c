/*
 * kv.c -- single-key operations on a tree: get, insert, remove; and
 * removing a range of keys with one range tombstone.
 *
 * Keys are turned into internal keys (tree prefix + key) in a stack buffer
 * when short, so a get of a short key allocates nothing.
 */
#include <stdlib.h>

#include "../pagewriter/node.h"
#include "../space/common.h"
#include "db.h"

#define IKEY_STACK 512

/* tree_check_key -- validate a tree handle and key; SHALE_OK or an error. */
int tree_check_key(shale_tree *t, const void *key, size_t klen)
{
    if (!t || (!key && klen) || atomic_load_explicit(&t->dropped, memory_order_relaxed))
        return SHALE_EINVAL;
    if (klen > SHALE_MAX_KEY_SIZE)
        return SHALE_ETOOBIG;
    return SHALE_OK;
}

/* ikey_get -- the internal key in stack (if it fits) or a malloc'd buffer. */
static uint8_t *ikey_get(shale_tree *t, const void *key, size_t klen, uint8_t *stack)
{
    uint8_t *p = klen + IKEY_PREFIX <= IKEY_STACK ? stack : malloc(klen + IKEY_PREFIX);
    if (p)
        ikey_make(p, t->id, key, klen);
    return p;
}

int shale_get(shale_tree *t, const void *key, size_t klen, shale_buf *val)
{
    uint8_t stack[IKEY_STACK];
    uint64_t snap;
    if (!val)
        return SHALE_EINVAL;
    RET(tree_check_key(t, key, klen));
    uint8_t *ik = ikey_get(t, key, klen, stack);
    if (!ik)
        return SHALE_ENOMEM;
    ver_version *v = db_pin(t->db, &snap);
    int rc = db_get_ikey(t->db, v, snap, ik, klen + IKEY_PREFIX, val);
    ver_unref(v);
    if (ik != stack)
        free(ik);
    return rc;
}

/* The key whose previous value a read-modify-write returns. */
typedef struct old_read {
    const uint8_t *ikey;
    size_t iklen;
    shale_buf *old;
} old_read;

/* read_old -- db_build_fn: the previous value into r->old (the batch is ready). */
static int read_old(shale_db *db, ver_version *v, uint64_t snap, shale_batch *b, void *ctx)
{
    old_read *r = ctx;
    return db_get_ikey(db, v, snap, r->ikey, r->iklen, r->old);
}

/* write_one -- a one-op batch, blind or read-modify-write. */
static int write_one(shale_tree *t, uint8_t kind, const void *key, size_t klen, const void *val,
                     size_t vlen, shale_buf *old)
{
    int rc;
    uint8_t stack[IKEY_STACK + 64];
    shale_batch b = {0};
    RET(tree_check_key(t, key, klen));
    if ((!val && vlen) || vlen > SHALE_MAX_VALUE_SIZE)
        return (!val && vlen) ? SHALE_EINVAL : SHALE_ETOOBIG;
    /* Small batches live on the stack: no allocation per write. */
    if (klen + vlen + 48 <= sizeof stack) {
        b.buf = stack;
        b.cap = sizeof stack;
    }
    rc = batch_add(&b, kind, t->id, key, klen, val, vlen);
    if (rc == SHALE_OK) {
        if (old) {
            old_read r = {b.buf + VARINT_MAX + 1 + varint_len(klen + IKEY_PREFIX),
                          klen + IKEY_PREFIX, old};
            rc = db_write_built(t->db, &b, read_old, &r);
        } else {
            rc = db_write(t->db, &b);
        }
    }
    if (rc >= 0)
        atomic_fetch_add_explicit(&t->db->st_user_bytes, klen + vlen, memory_order_relaxed);
    if (b.buf != stack)
        free(b.buf);
    return rc;
}

int shale_insert(shale_tree *t, const void *key, size_t klen, const void *val, size_t vlen,
                 shale_buf *old)
{
    return write_one(t, NODE_KIND_VALUE, key, klen, val, vlen, old);
}

int shale_remove(shale_tree *t, const void *key, size_t klen, shale_buf *old)
{
    return write_one(t, NODE_KIND_TOMBSTONE, key, klen, NULL, 0, old);
}

int shale_merge(shale_tree *t, const void *key, size_t klen, const void *operand, size_t oplen)
{
    return write_one(t, NODE_KIND_MERGE, key, klen, operand, oplen, NULL);
}

int shale_remove_range(shale_tree *t, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
    shale_batch b = {0};
    RET(tree_check_key(t, lo, lolen));
    if (hi || hilen)
        RET(tree_check_key(t, hi, hilen));
    int rc = batch_add_range(&b, t->id, lo, lolen, hi, hilen);
    if (rc == SHALE_OK)
        rc = db_write(t->db, &b);
    free(b.buf);
    return rc;
}
