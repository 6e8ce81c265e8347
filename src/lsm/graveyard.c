/*
 * graveyard.c -- sets of range tombstones (graveyard.h has the contract).
 *
 * A set is kept as fragments: the ranges are cut at every lo and hi into
 * disjoint intervals, each with the newest seq among the ranges covering it
 * (a sweep with a heap of the ranges open at each boundary), and adjacent
 * intervals with the same seq are joined.  Since a set is only read at
 * snapshots that see all of it, the newest seq is all a lookup needs: one
 * binary search, however many ranges overlap.
 */
#include "graveyard.h"

#include <stdlib.h>

#include "../space/common.h"

/* A boundary key of the ranges being cut into fragments. */
typedef struct gy_key {
    const uint8_t *k;
    size_t len;
} gy_key;

static int key_cmp_v(const void *a, const void *b)
{
    const gy_key *x = a, *y = b;
    return key_cmp(x->k, x->len, y->k, y->len);
}

static int lo_cmp(const void *a, const void *b)
{
    const gy_range *x = a, *y = b;
    return key_cmp(x->lo, x->lolen, y->lo, y->lolen);
}

/* A max-heap of ranges by seq (indexes into the sorted input). */
typedef struct gy_heap {
    size_t *v, n;
    const gy_range *r;
} gy_heap;

static void heap_push(gy_heap *h, size_t i)
{
    size_t c = h->n++;
    h->v[c] = i;
    while (c > 0 && h->r[h->v[(c - 1) / 2]].seq < h->r[h->v[c]].seq) {
        size_t p = (c - 1) / 2, t = h->v[p];
        h->v[p] = h->v[c];
        h->v[c] = t;
        c = p;
    }
}

static void heap_pop(gy_heap *h)
{
    h->v[0] = h->v[--h->n];
    for (size_t c = 0;;) {
        size_t l = 2 * c + 1, m = c;
        if (l < h->n && h->r[h->v[l]].seq > h->r[h->v[m]].seq)
            m = l;
        if (l + 1 < h->n && h->r[h->v[l + 1]].seq > h->r[h->v[m]].seq)
            m = l + 1;
        if (m == c)
            break;
        size_t t = h->v[m];
        h->v[m] = h->v[c];
        h->v[c] = t;
        c = m;
    }
}

int gy_build(const gy_range *in, size_t n, gy_set **out)
{
    int rc = SHALE_OK;
    gy_range *r = NULL;
    gy_key *b = NULL;
    gy_heap h = {0};
    gy_set *g = NULL;
    *out = NULL;
    if (n == 0)
        return SHALE_OK;
    /* the boundaries: every lo and hi, sorted, once each */
    if (!(r = malloc(n * sizeof *r)) || !(b = malloc(2 * n * sizeof *b)) ||
        !(h.v = malloc(n * sizeof *h.v)) || !(g = calloc(1, sizeof *g)) ||
        !(g->v = malloc(2 * n * sizeof *g->v)))
        ERR_SET(SHALE_ENOMEM);
    memcpy(r, in, n * sizeof *r);
    qsort(r, n, sizeof *r, lo_cmp);
    for (size_t i = 0; i < n; i++) {
        b[2 * i] = (gy_key){r[i].lo, r[i].lolen};
        b[2 * i + 1] = (gy_key){r[i].hi, r[i].hilen};
    }
    qsort(b, 2 * n, sizeof *b, key_cmp_v);
    size_t nb = 0, kb = 0;
    for (size_t i = 0; i < 2 * n; i++)
        if (nb == 0 || key_cmp_v(&b[nb - 1], &b[i]) != 0) {
            b[nb++] = b[i];
            kb += b[i].len;
        }
    if (!(g->keys = malloc(kb ? kb : 1)))
        ERR_SET(SHALE_ENOMEM);
    /* copy the boundaries, then sweep: over [b[i], b[i+1]) the newest range
     * covering it (the heap's top, once ranges ending by b[i] are gone) */
    uint8_t *p = g->keys;
    for (size_t i = 0; i < nb; i++) {
        memcpy(p, b[i].k, b[i].len);
        b[i].k = p;
        p += b[i].len;
    }
    h.r = r;
    size_t next = 0;
    for (size_t i = 0; i + 1 < nb; i++) {
        while (next < n && key_cmp(r[next].lo, r[next].lolen, b[i].k, b[i].len) <= 0)
            heap_push(&h, next++);
        while (h.n && key_cmp(r[h.v[0]].hi, r[h.v[0]].hilen, b[i].k, b[i].len) <= 0)
            heap_pop(&h);
        if (!h.n)
            continue;
        uint64_t seq = r[h.v[0]].seq;
        gy_range *last = g->n ? &g->v[g->n - 1] : NULL;
        if (last && last->seq == seq && last->hi == b[i].k) {
            last->hi = b[i + 1].k; /* the same seq goes on: one fragment */
            last->hilen = b[i + 1].len;
            continue;
        }
        g->v[g->n++] = (gy_range){seq, b[i].k, b[i + 1].k, b[i].len, b[i + 1].len};
        g->max_seq = MAX(g->max_seq, seq);
    }
    atomic_init(&g->refs, 1);
    *out = g;
    g = NULL;
err:
    if (g) {
        free(g->v);
        free(g->keys);
        free(g);
    }
    free(r);
    free(b);
    free(h.v);
    return rc;
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
    free(g->keys);
    free(g);
}

/* first_above -- the index of the first fragment whose hi is above key. */
static size_t first_above(const gy_set *g, const void *key, size_t klen)
{
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(g->v[mid].hi, g->v[mid].hilen, key, klen) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool gy_covered(const gy_set *g, const void *key, size_t klen, uint64_t after)
{
    if (!g || g->max_seq <= after)
        return false;
    size_t i = first_above(g, key, klen);
    return i < g->n && g->v[i].seq > after &&
           key_cmp(g->v[i].lo, g->v[i].lolen, key, klen) <= 0;
}

bool gy_meets(const gy_set *g, const void *lo, size_t lolen, const void *hi, size_t hilen,
              uint64_t after)
{
    if (!g || g->max_seq <= after)
        return false;
    /* fragments that may hold a key above lo (or at it), up to hi */
    for (size_t i = lo ? first_above(g, lo, lolen) : 0;
         i < g->n && key_cmp(g->v[i].lo, g->v[i].lolen, hi, hilen) <= 0; i++)
        if (g->v[i].seq > after)
            return true;
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
