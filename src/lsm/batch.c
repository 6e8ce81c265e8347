/*
 * batch.c -- encoding and decoding of write batches (format in batch.h).
 */
#include "batch.h"

#include <stdlib.h>

#include "../pagewriter/node.h"
#include "../space/common.h"

/* batch_reserve -- make room for n more bytes. */
static int batch_reserve(shale_batch *b, size_t n)
{
    if (b->len + n <= b->cap)
        return SHALE_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *nb = realloc(b->buf, cap);
    if (!nb)
        return SHALE_ENOMEM;
    b->buf = nb;
    b->cap = cap;
    return SHALE_OK;
}

void ikey_make(uint8_t *buf, uint32_t tree, const void *key, size_t klen)
{
    put_be32(buf, tree);
    if (klen)
        memcpy(buf + IKEY_PREFIX, key, klen);
}

uint8_t *key_after(const void *key, size_t klen)
{
    uint8_t *p = malloc(klen + 1);
    if (p) {
        if (klen)
            memcpy(p, key, klen);
        p[klen] = 0;
    }
    return p;
}

int batch_add(shale_batch *b, uint8_t kind, uint32_t tree, const void *key, size_t klen,
              const void *val, size_t vlen)
{
    size_t ik = klen + IKEY_PREFIX;
    size_t need = 1 + VARINT_MAX + ik + (kind != NODE_KIND_TOMBSTONE ? VARINT_MAX + vlen : 0);
    /* Leave VARINT_MAX bytes in front free for the op count (batch_payload). */
    if (b->len == 0)
        RET(batch_reserve(b, VARINT_MAX));
    if (b->len == 0)
        b->len = VARINT_MAX;
    RET(batch_reserve(b, need));
    uint8_t *p = b->buf + b->len;
    *p++ = kind;
    p += varint_put(p, ik);
    ikey_make(p, tree, key, klen);
    p += ik;
    if (kind != NODE_KIND_TOMBSTONE) {
        p += varint_put(p, vlen);
        if (vlen)
            memcpy(p, val, vlen);
        p += vlen;
    }
    b->len = (size_t)(p - b->buf);
    b->count++;
    b->user_bytes += klen + (kind != NODE_KIND_TOMBSTONE ? vlen : 0);
    return SHALE_OK;
}

int batch_add_range(shale_batch *b, uint32_t tree, const void *lo, size_t lolen, const void *hi,
                    size_t hilen)
{
    uint8_t end[IKEY_PREFIX];
    if (!hi) { /* the tree's end: the next tree id's prefix */
        if (tree == UINT32_MAX)
            return SHALE_EINVAL;
        put_be32(end, tree + 1);
        return batch_add(b, BATCH_KIND_RANGE, tree, lo, lolen, end, sizeof end);
    }
    if (key_cmp(lo, lolen, hi, hilen) >= 0)
        return SHALE_EINVAL;
    uint8_t *ih = malloc(hilen + IKEY_PREFIX);
    if (!ih)
        return SHALE_ENOMEM;
    ikey_make(ih, tree, hi, hilen);
    int rc = batch_add(b, BATCH_KIND_RANGE, tree, lo, lolen, ih, hilen + IKEY_PREFIX);
    free(ih);
    return rc;
}

int batch_payload(shale_batch *b, const uint8_t **out, size_t *len)
{
    uint8_t tmp[VARINT_MAX];
    if (b->count == 0) {
        static const uint8_t empty[1] = {0};
        *out = empty;
        *len = 1;
        return SHALE_OK;
    }
    size_t n = varint_put(tmp, b->count);
    uint8_t *start = b->buf + VARINT_MAX - n;
    memcpy(start, tmp, n);
    *out = start;
    *len = b->len - (VARINT_MAX - n);
    return SHALE_OK;
}

int batch_reader_init(batch_reader *r, const void *payload, size_t len)
{
    r->p = payload;
    r->end = r->p + len;
    size_t n = varint_get(r->p, r->end, &r->left);
    if (!n || r->left > len)
        return SHALE_ECORRUPT;
    r->p += n;
    return SHALE_OK;
}

int batch_reader_next(batch_reader *r, batch_op *op)
{
    uint64_t v;
    size_t n;
    if (r->left == 0)
        return r->p == r->end ? SHALE_NOTFOUND : SHALE_ECORRUPT;
    if (r->p >= r->end)
        return SHALE_ECORRUPT;
    op->kind = *r->p++;
    if (op->kind > BATCH_KIND_RANGE)
        return SHALE_ECORRUPT;
    if (!(n = varint_get(r->p, r->end, &v)) || v < IKEY_PREFIX ||
        v > (uint64_t)(r->end - r->p - n))
        return SHALE_ECORRUPT;
    r->p += n;
    op->ikey = r->p;
    op->iklen = v;
    r->p += v;
    op->val = NULL;
    op->vlen = 0;
    if (op->kind != NODE_KIND_TOMBSTONE) {
        if (!(n = varint_get(r->p, r->end, &v)) || v > (uint64_t)(r->end - r->p - n))
            return SHALE_ECORRUPT;
        r->p += n;
        op->val = r->p;
        op->vlen = v;
        r->p += v;
    }
    if (op->kind == BATCH_KIND_RANGE &&
        (op->vlen < IKEY_PREFIX || key_cmp(op->ikey, op->iklen, op->val, op->vlen) >= 0))
        return SHALE_ECORRUPT;
    r->left--;
    return SHALE_OK;
}
