/*
 * meta.c -- encoding of the checkpoint body (format in meta.h).
 */
#include "meta.h"

#include <stdlib.h>

#include "../space/common.h"

int meta_encode(const meta_body *m, uint8_t **buf, size_t *len)
{
    size_t cap = 256, n = 0;
    uint8_t *b = malloc(cap);
    if (!b)
        return SHALE_ENOMEM;
    put_u32(b, META_MAGIC);
    put_u32(b + 4, META_VERSION);
    n = 8;
    uint64_t fields[] = {m->ckpt_seq,    m->log_no,      m->next_seg_id, m->next_gen,
                         m->level_factor, m->compression, m->nsegs};
    for (size_t i = 0; i < ARRAY_LEN(fields); i++)
        n += varint_put(b + n, fields[i]);
    int rc = SHALE_OK;
    for (size_t i = 0; i < m->nsegs && rc == SHALE_OK; i++)
        rc = seg_encode(m->segs[i], &b, &n, &cap);
    for (size_t i = 0; i < m->nsegs && rc == SHALE_OK; i++) {
        if (n + VARINT_MAX > cap) {
            uint8_t *nb = realloc(b, cap = 2 * cap + VARINT_MAX);
            if (!nb) {
                rc = SHALE_ENOMEM;
                break;
            }
            b = nb;
        }
        n += varint_put(b + n, m->segs[i]->seq);
    }
    if (rc == SHALE_OK)
        rc = gy_encode(m->gy, &b, &n, &cap);
    if (rc == SHALE_OK && n + VARINT_MAX > cap) {
        uint8_t *nb = realloc(b, cap = n + VARINT_MAX);
        if (!nb)
            rc = SHALE_ENOMEM;
        else
            b = nb;
    }
    if (rc == SHALE_OK)
        n += varint_put(b + n, m->flags);
    if (rc < 0) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return SHALE_OK;
}

/* meta_check_levels -- young segments first, then strictly increasing levels. */
static int meta_check_levels(const meta_body *m)
{
    uint32_t prev = 0;
    for (size_t i = 0; i < m->nsegs; i++) {
        uint32_t l = m->segs[i]->level;
        if (l > SEG_MAX_LEVEL || (l == 0 && prev > 0) || (l > 0 && l <= prev))
            return SHALE_ECORRUPT;
        prev = l;
    }
    return SHALE_OK;
}

int meta_decode(const seg_store *st, const uint8_t *p, size_t len, meta_body *m)
{
    int rc = SHALE_OK;
    const uint8_t *end = p + len;
    uint64_t nsegs = 0;
    uint64_t *fields[] = {&m->ckpt_seq,    &m->log_no,      &m->next_seg_id, &m->next_gen,
                          &m->level_factor, &m->compression, &nsegs};
    memset(m, 0, sizeof *m);
    if (len < 8 || get_u32(p) != META_MAGIC)
        return SHALE_ECORRUPT;
    uint32_t version = get_u32(p + 4);
    if (version < 2 || version > META_VERSION)
        return SHALE_EFORMAT;
    p += 8;
    for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
        size_t n = varint_get(p, end, fields[i]);
        if (!n)
            return SHALE_ECORRUPT;
        p += n;
    }
    if (nsegs > len || m->compression > CODEC_ZSTD)
        return SHALE_ECORRUPT;
    if (nsegs && !(m->segs = calloc(nsegs, sizeof *m->segs)))
        return SHALE_ENOMEM;
    for (; m->nsegs < nsegs; m->nsegs++) {
        size_t used;
        ERR(seg_decode(st, p, (size_t)(end - p), &used, &m->segs[m->nsegs]));
        p += used;
        /* Ids and gens are handed out above these; a gen reused would let the
         * node cache serve an old segment's leaf for a new one's. */
        const seg_segment *s = m->segs[m->nsegs];
        if (s->gen >= m->next_gen || s->id >= m->next_seg_id) {
            m->nsegs++;
            ERR_SET(SHALE_ECORRUPT);
        }
    }
    if (version >= 3) {
        for (size_t i = 0; i < m->nsegs; i++) {
            size_t n = varint_get(p, end, &m->segs[i]->seq);
            if (!n || m->segs[i]->seq > m->ckpt_seq)
                ERR_SET(SHALE_ECORRUPT);
            p += n;
        }
        size_t used;
        ERR(gy_decode(p, (size_t)(end - p), &used, &m->gy));
        p += used;
        if (m->gy && m->gy->max_seq > m->ckpt_seq)
            ERR_SET(SHALE_ECORRUPT);
        if (p < end) {
            size_t n = varint_get(p, end, &m->flags);
            if (!n || (m->flags & ~(uint64_t)META_CLEAN))
                ERR_SET(SHALE_ECORRUPT);
            p += n;
            m->has_flags = true;
        }
    }
    if (p != end)
        ERR_SET(SHALE_ECORRUPT);
    ERR(meta_check_levels(m));
    return SHALE_OK;
err:
    meta_free_segs(m);
    return rc;
}

void meta_free_segs(meta_body *m)
{
    for (size_t i = 0; i < m->nsegs; i++)
        seg_unref(m->segs[i]);
    free(m->segs);
    m->segs = NULL;
    m->nsegs = 0;
    gy_unref(m->gy);
    m->gy = NULL;
}
