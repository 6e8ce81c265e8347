/*
 * mergeop.c -- merge operand stacks and folding (see mergeop.h).
 */
#include "mergeop.h"

#include <stdlib.h>

#include "../pagewriter/node.h"
#include "../space/common.h"
#include "db.h"

void mo_reset(mo_stack *s)
{
    s->len = 0;
    s->nops = 0;
    s->base = MO_OPEN;
}

void mo_free(mo_stack *s)
{
    free(s->buf);
    free(s->ops);
    shale_buf_free(&s->tmp);
    *s = (mo_stack){0};
}

/* copy -- n bytes at the end of buf; their offset in *off. */
static int copy(mo_stack *s, const void *p, size_t n, size_t *off)
{
    if (s->len + n > s->cap || !s->buf) {
        size_t cap = MAX(s->len + n, MAX(2 * s->cap, (size_t)256));
        uint8_t *nb = realloc(s->buf, cap);
        if (!nb)
            return SHALE_ENOMEM;
        s->buf = nb;
        s->cap = cap;
    }
    if (n)
        memcpy(s->buf + s->len, p, n);
    *off = s->len;
    s->len += n;
    return SHALE_OK;
}

int mo_push_operand(mo_stack *s, const void *p, size_t n)
{
    if (s->nops == s->opcap) {
        size_t cap = MAX(2 * s->opcap, (size_t)8);
        mo_slice *no = realloc(s->ops, cap * sizeof *no);
        if (!no)
            return SHALE_ENOMEM;
        s->ops = no;
        s->opcap = cap;
    }
    mo_slice *o = &s->ops[s->nops];
    RET(copy(s, p, n, &o->off));
    o->len = n;
    s->nops++;
    return SHALE_OK;
}

int mo_push_value(mo_stack *s, const void *p, size_t n)
{
    RET(copy(s, p, n, &s->val.off));
    s->val.len = n;
    s->base = MO_VALUE;
    return SHALE_OK;
}

void mo_push_absent(mo_stack *s) { s->base = MO_ABSENT; }

int mo_push_stack(mo_stack *s, const void *p, size_t n)
{
    const uint8_t *q = p, *end = q + n;
    uint64_t l;
    size_t k, first = s->nops;
    if (n == 0 || *q > MO_VALUE)
        return SHALE_ECORRUPT;
    int base = *q++;
    const uint8_t *bval = NULL;
    size_t blen = 0;
    if (base == MO_VALUE) {
        if (!(k = varint_get(q, end, &l)) || l > (uint64_t)(end - q - k))
            return SHALE_ECORRUPT;
        bval = q + k;
        blen = (size_t)l;
        q += k + l;
    }
    if (q == end)
        return SHALE_ECORRUPT; /* a stack holds at least one operand */
    while (q < end) {
        if (!(k = varint_get(q, end, &l)) || l > (uint64_t)(end - q - k))
            return SHALE_ECORRUPT;
        RET(mo_push_operand(s, q + k, (size_t)l));
        q += k + l;
    }
    /* pushed oldest first: newest first is the order kept */
    for (size_t i = first, j = s->nops - 1; i < j; i++, j--) {
        mo_slice t = s->ops[i];
        s->ops[i] = s->ops[j];
        s->ops[j] = t;
    }
    if (base == MO_VALUE)
        return mo_push_value(s, bval, blen);
    s->base = base;
    return SHALE_OK;
}

int mo_push_kind(mo_stack *s, uint8_t kind, const void *p, size_t n)
{
    switch (kind) {
    case NODE_KIND_VALUE: return mo_push_value(s, p, n);
    case NODE_KIND_TOMBSTONE: mo_push_absent(s); return SHALE_OK;
    case NODE_KIND_MERGE: return mo_push_stack(s, p, n);
    }
    return SHALE_ECORRUPT;
}

int mo_push_versions(mo_stack *s, mt_iter it, const gy_set *const *gy, size_t ngy)
{
    size_t kl;
    const void *key = mt_iter_key(&it, &kl);
    do {
        size_t n;
        const void *p = mt_iter_value(&it, &n);
        uint8_t kind = mt_iter_kind(&it);
        bool covered = false;
        for (size_t i = 0; i < ngy && !covered; i++)
            covered = gy_covered(gy[i], key, kl, mt_iter_seq(&it));
        if (covered)
            mo_push_absent(s);
        else if (kind == NODE_KIND_MERGE)
            RET(mo_push_operand(s, p, n));
        else
            RET(mo_push_kind(s, kind, p, n));
    } while (!mo_done(s) && mt_iter_older(&it));
    return SHALE_OK;
}

int mo_fold(mo_stack *s, const mo_op *op, const uint8_t *ikey, size_t iklen, shale_buf *out)
{
    if (!op)
        return SHALE_ENOMERGEOP;
    /* Each step reads the previous result and writes the other buffer; the
     * last one must land in out, so the first writes out when the count is
     * odd. */
    const void *cur = s->base == MO_VALUE ? s->buf + s->val.off : NULL;
    size_t curlen = s->base == MO_VALUE ? s->val.len : 0;
    shale_buf *bufs[2] = {out, &s->tmp};
    size_t w = s->nops % 2 ? 0 : 1;
    for (size_t i = s->nops; i-- > 0; w ^= 1) {
        const mo_slice *o = &s->ops[i];
        shale_buf *dst = bufs[w];
        dst->len = 0;
        int rc = op->fn(op->ctx, ikey + IKEY_PREFIX, iklen - IKEY_PREFIX, cur, curlen,
                        s->buf + o->off, o->len, dst);
        if (rc == SHALE_NOTFOUND) {
            cur = NULL;
            curlen = 0;
            continue;
        }
        if (rc != SHALE_OK)
            return rc < 0 ? rc : SHALE_EINVAL;
        if (!dst->data && dst->len)
            return SHALE_EINVAL;
        if (dst->len > SHALE_MAX_VALUE_SIZE)
            return SHALE_ETOOBIG;
        cur = dst->data ? dst->data : "";
        curlen = dst->len;
    }
    if (!cur) {
        out->len = 0;
        return SHALE_NOTFOUND;
    }
    if (cur != out->data) /* a delete part way left the result in tmp */
        return buf_set(out, cur, curlen);
    return SHALE_OK;
}

int mo_settle(mo_stack *s, const mo_op *op, const uint8_t *ikey, size_t iklen, shale_buf *out,
              uint8_t *kind)
{
    if (mo_done(s) && op) {
        int rc = mo_fold(s, op, ikey, iklen, out);
        if (rc == SHALE_OK || rc == SHALE_NOTFOUND) {
            *kind = rc == SHALE_OK ? NODE_KIND_VALUE : NODE_KIND_TOMBSTONE;
            return SHALE_OK;
        }
        if (rc == SHALE_ENOMEM)
            return rc;
    }
    *kind = NODE_KIND_MERGE;
    return mo_encode(s, out);
}

int mo_encode(const mo_stack *s, shale_buf *out)
{
    size_t n = 1 + (s->base == MO_VALUE ? VARINT_MAX + s->val.len : 0);
    for (size_t i = 0; i < s->nops; i++)
        n += VARINT_MAX + s->ops[i].len;
    if (n > out->cap || !out->data) {
        void *nd = realloc(out->data, n);
        if (!nd)
            return SHALE_ENOMEM;
        out->data = nd;
        out->cap = n;
    }
    uint8_t *p = out->data;
    *p++ = (uint8_t)s->base;
    if (s->base == MO_VALUE) {
        p += varint_put(p, s->val.len);
        memcpy(p, s->buf + s->val.off, s->val.len);
        p += s->val.len;
    }
    for (size_t i = s->nops; i-- > 0;) {
        p += varint_put(p, s->ops[i].len);
        if (s->ops[i].len)
            memcpy(p, s->buf + s->ops[i].off, s->ops[i].len);
        p += s->ops[i].len;
    }
    out->len = (size_t)(p - (uint8_t *)out->data);
    return SHALE_OK;
}
