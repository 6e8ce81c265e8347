/*
 * graveyard.c -- sets of range tombstones (graveyard.h has the contract).
 *
 * Lookups find the ranges whose lo is at or below the key by binary search
 * and walk back from there; reach[] (the index of the largest hi so far)
 * stops the walk as soon as no earlier range can reach the key, so a lookup
 * costs a search plus the ranges that actually straddle the key.
 */
#include "graveyard.h"

#include <stdlib.h>

#include "../space/common.h"

static int range_cmp(const void *a, const void *b)
{
    const gy_range *x = a, *y = b;
    int c = key_cmp(x->lo, x->lolen, y->lo, y->lolen);
    if (!c)
        c = key_cmp(x->hi, x->hilen, y->hi, y->hilen);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static bool same_span(const gy_range *x, const gy_range *y)
{
    return key_cmp(x->lo, x->lolen, y->lo, y->lolen) == 0 &&
           key_cmp(x->hi, x->hilen, y->hi, y->hilen) == 0;
}

int gy_build(const gy_range *r, size_t n, gy_set **out)
{
    *out = NULL;
    if (n == 0)
        return SHALE_OK;
    size_t kb = 0;
    for (size_t i = 0; i < n; i++)
        kb += r[i].lolen + r[i].hilen;
    gy_set *g = calloc(1, sizeof *g);
    if (!g || !(g->v = malloc(n * sizeof *g->v)) || !(g->reach = malloc(n * sizeof *g->reach)) ||
        !(g->keys = malloc(kb ? kb : 1))) {
        if (g) {
            free(g->v);
            free(g->reach);
        }
        free(g);
        return SHALE_ENOMEM;
    }
    uint8_t *p = g->keys;
    for (size_t i = 0; i < n; i++) {
        gy_range *d = &g->v[i];
        *d = r[i];
        memcpy(p, r[i].lo, r[i].lolen);
        d->lo = p;
        p += r[i].lolen;
        memcpy(p, r[i].hi, r[i].hilen);
        d->hi = p;
        p += r[i].hilen;
        g->max_seq = MAX(g->max_seq, d->seq);
    }
    qsort(g->v, n, sizeof *g->v, range_cmp);
    /* Of ranges over the same keys only the newest counts: a set is read at
     * snapshots that see all of it (graveyard.h), so an older copy deletes
     * nothing the newest does not (a tree cleared over and over keeps one). */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && same_span(&g->v[m - 1], &g->v[i]))
            m--;
        g->v[m++] = g->v[i];
    }
    n = m;
    for (size_t i = 0; i < n; i++) {
        size_t best = i;
        if (i > 0) {
            const gy_range *a = &g->v[g->reach[i - 1]];
            if (key_cmp(a->hi, a->hilen, g->v[i].hi, g->v[i].hilen) > 0)
                best = g->reach[i - 1];
        }
        g->reach[i] = best;
    }
    g->n = n;
    atomic_init(&g->refs, 1);
    *out = g;
    return SHALE_OK;
}

int gy_with(const gy_set *a, const gy_range *r, size_t n, gy_set **out)
{
    size_t na = a ? a->n : 0;
    if (na + n == 0) {
        *out = NULL;
        return SHALE_OK;
    }
    gy_range *all = malloc((na + n) * sizeof *all);
    if (!all)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < na; i++)
        all[i] = a->v[i];
    for (size_t i = 0; i < n; i++)
        all[na + i] = r[i];
    int rc = gy_build(all, na + n, out);
    free(all);
    return rc;
}

void gy_ref(gy_set *g)
{
    if (g)
        atomic_fetch_add(&g->refs, 1);
}

void gy_unref(gy_set *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    free(g->v);
    free(g->reach);
    free(g->keys);
    free(g);
}

/* upto_key -- the number of ranges whose lo is <= key. */
static size_t upto_key(const gy_set *g, const void *key, size_t klen)
{
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(g->v[mid].lo, g->v[mid].lolen, key, klen) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool gy_covered(const gy_set *g, const void *key, size_t klen, uint64_t after, uint64_t upto)
{
    if (!g || g->max_seq <= after)
        return false;
    for (size_t i = upto_key(g, key, klen); i-- > 0;) {
        const gy_range *far = &g->v[g->reach[i]];
        if (key_cmp(far->hi, far->hilen, key, klen) <= 0)
            return false; /* no range up to i reaches key */
        const gy_range *r = &g->v[i];
        if (r->seq > after && r->seq <= upto && key_cmp(key, klen, r->hi, r->hilen) < 0)
            return true;
    }
    return false;
}

bool gy_meets(const gy_set *g, const void *lo, size_t lolen, const void *hi, size_t hilen,
              uint64_t after)
{
    if (!g || g->max_seq <= after)
        return false;
    for (size_t i = upto_key(g, hi, hilen); i-- > 0;) { /* ranges starting at or below hi */
        const gy_range *far = &g->v[g->reach[i]];
        if (lo && key_cmp(far->hi, far->hilen, lo, lolen) <= 0)
            return false; /* none up to i reaches past lo */
        const gy_range *r = &g->v[i];
        if (r->seq <= after)
            continue;
        /* [r->lo, r->hi) meets (lo, hi] or [lo, hi]: some key above lo (or at
         * it) below r->hi; counting (lo, r->hi) as non-empty is the
         * conservative side */
        if (!lo || key_cmp(lo, lolen, r->hi, r->hilen) < 0)
            return true;
    }
    return false;
}

int gy_retire(gy_set *g, bool (*keep)(void *ctx, const gy_range *r), void *ctx, gy_set **out)
{
    *out = NULL;
    if (!g)
        return SHALE_OK;
    gy_range *k = malloc(g->n * sizeof *k);
    if (!k)
        return SHALE_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < g->n; i++)
        if (keep(ctx, &g->v[i]))
            k[n++] = g->v[i];
    int rc = SHALE_OK;
    if (n == g->n) {
        gy_ref(g);
        *out = g;
    } else {
        rc = gy_build(k, n, out);
    }
    free(k);
    return rc;
}

/* grow -- room for need more bytes at *buf + *len. */
static int grow(uint8_t **buf, size_t len, size_t *cap, size_t need)
{
    if (len + need <= *cap)
        return SHALE_OK;
    size_t ncap = MAX(len + need, 2 * *cap);
    uint8_t *nb = realloc(*buf, ncap);
    if (!nb)
        return SHALE_ENOMEM;
    *buf = nb;
    *cap = ncap;
    return SHALE_OK;
}

int gy_encode(const gy_set *g, uint8_t **buf, size_t *len, size_t *cap)
{
    size_t n = g ? g->n : 0;
    RET(grow(buf, *len, cap, VARINT_MAX));
    *len += varint_put(*buf + *len, n);
    for (size_t i = 0; i < n; i++) {
        const gy_range *r = &g->v[i];
        RET(grow(buf, *len, cap, 3 * VARINT_MAX + r->lolen + r->hilen));
        uint8_t *p = *buf + *len;
        p += varint_put(p, r->seq);
        p += varint_put(p, r->lolen);
        memcpy(p, r->lo, r->lolen);
        p += r->lolen;
        p += varint_put(p, r->hilen);
        memcpy(p, r->hi, r->hilen);
        p += r->hilen;
        *len = (size_t)(p - *buf);
    }
    return SHALE_OK;
}

int gy_decode(const uint8_t *p, size_t len, size_t *used, gy_set **out)
{
    const uint8_t *start = p, *end = p + len;
    uint64_t n;
    size_t k;
    *out = NULL;
    if (!(k = varint_get(p, end, &n)) || n > len)
        return SHALE_ECORRUPT;
    p += k;
    gy_range *r = n ? malloc(n * sizeof *r) : NULL;
    if (n && !r)
        return SHALE_ENOMEM;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t lolen, hilen;
        if (!(k = varint_get(p, end, &r[i].seq)) || r[i].seq == 0)
            goto corrupt;
        p += k;
        if (!(k = varint_get(p, end, &lolen)) || lolen > (uint64_t)(end - p - k))
            goto corrupt;
        p += k;
        r[i].lo = p;
        r[i].lolen = lolen;
        p += lolen;
        if (!(k = varint_get(p, end, &hilen)) || hilen > (uint64_t)(end - p - k))
            goto corrupt;
        p += k;
        r[i].hi = p;
        r[i].hilen = hilen;
        p += hilen;
        if (key_cmp(r[i].lo, r[i].lolen, r[i].hi, r[i].hilen) >= 0)
            goto corrupt;
    }
    int rc = gy_build(r, (size_t)n, out);
    free(r);
    if (rc == SHALE_OK)
        *used = (size_t)(p - start);
    return rc;
corrupt:
    free(r);
    return SHALE_ECORRUPT;
}
