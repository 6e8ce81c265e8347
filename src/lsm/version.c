/*
 * version.c -- construction and lifetime of versions (see version.h).
 */
#include "version.h"

#include <stdlib.h>

#include "../space/common.h"

int ver_new(zb_set *zb, const ver_mem *mem, const ver_mem *imm, size_t nimm,
            seg_segment *const *segs, size_t nsegs, gy_set *gy, ver_version **vp)
{
    return ver_new_around(zb, mem, imm, nimm, NULL, segs, nsegs, NULL, gy, vp);
}

/* add_seg -- append seg (with a reference) to v's segment list. */
static void add_seg(ver_version *v, seg_segment *seg)
{
    v->segs[v->nsegs++] = seg;
    seg_ref(seg);
}

int ver_new_around(zb_set *zb, const ver_mem *mem, const ver_mem *imm, size_t nimm,
                   seg_segment *front, seg_segment *const *segs, size_t nsegs, seg_segment *back,
                   gy_set *gy, ver_version **vp)
{
    ver_version *v = calloc(1, sizeof *v);
    size_t total = nsegs + (front != NULL) + (back != NULL);
    if (!v)
        return SHALE_ENOMEM;
    if (nimm && !(v->imm = malloc(nimm * sizeof *v->imm)))
        goto nomem;
    if (total && !(v->segs = malloc(total * sizeof *v->segs)))
        goto nomem;
    atomic_init(&v->refs, 1);
    v->mem = *mem;
    mt_ref(v->mem.mt);
    for (size_t i = 0; i < nimm; i++) {
        v->imm[i] = imm[i];
        mt_ref(imm[i].mt);
    }
    v->nimm = nimm;
    if (front)
        add_seg(v, front);
    for (size_t i = 0; i < nsegs; i++)
        add_seg(v, segs[i]);
    if (back)
        add_seg(v, back);
    v->gy = gy;
    gy_ref(gy);
    v->zb = zb;
    zb_version_begin(zb, &v->node);
    *vp = v;
    return SHALE_OK;
nomem:
    free(v->imm);
    free(v);
    return SHALE_ENOMEM;
}

void ver_ref(ver_version *v) { atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed); }

void ver_unref(ver_version *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    mt_unref(v->mem.mt);
    for (size_t i = 0; i < v->nimm; i++)
        mt_unref(v->imm[i].mt);
    for (size_t i = 0; i < v->nsegs; i++)
        seg_unref(v->segs[i]);
    gy_unref(v->gy);
    zb_version_end(v->zb, &v->node);
    free(v->imm);
    free(v->segs);
    free(v);
}
