/*
 * node.c -- decoding, checking and searching leaf and parent pages in place.
 *
 * Leaf page (type SP_PT_LEAF; header count = entries n; aux = prefix length P;
 * used = payload bytes in use; all offsets below from the page start):
 *   32            P bytes: the prefix shared by every entry's inline key bytes
 *   32+P          n x u16 little-endian: offset of entry i; entries are in
 *                 strictly increasing key order and stored at ascending,
 *                 non-overlapping offsets after the slot array
 *   32+P+2n ..    entries, up to 32+used:
 *     u8      kind | flags: bits 0-3 NODE_KIND_*, 0x10 NODE_F_KEY_OVF,
 *             0x20 NODE_F_VAL_OVF, bits 6-7 zero
 *     varint  K, the full key length
 *     varint  S, the inline suffix length; the inline key is prefix + suffix
 *     S bytes suffix
 *     KEY_OVF: varint pgno of an SP_PT_OVERFLOW run holding the full key;
 *             then P + S == node_key_inline_max(page_size) < K
 *     else    K == P + S <= node_key_inline_max(page_size)
 *     varint  V, the value length (0 for a tombstone)
 *     VAL_OVF: varint pgno of an SP_PT_OVERFLOW run of V bytes
 *     else    V bytes of value
 * Parent page (type SP_PT_PARENT; count = children, at least one):
 *   32            n x u16 offsets of the children, in key order
 *   32+2n ..      children, up to 32+used:
 *     varint child pgno | varint entries | varint tombstones (<= entries) |
 *     u8 flags (only NODE_F_KEY_OVF) | varint K | varint S | S bytes |
 *     [KEY_OVF: varint overflow pgno]
 *   where the S bytes are the child's last key (K == S), or for a key longer
 *   than node_key_inline_max its first node_key_inline_max bytes (S) with the
 *   full key in the overflow run -- the same run the leaf entry points to.
 * Varints are LEB128 (common.h); page numbers are >= SP_FIRST_DATA_PAGE.
 *
 * Leaf images.  A compressed leaf (cleaf.h) decompresses to a leaf of up to
 * NODE_IMAGE_MAX bytes in the same format, whose header flags hold log2 of
 * the file's page size (0 in a leaf stored as one page): the inline limits
 * stay those of the page size, so parents and overflow runs are the same
 * whatever a leaf's form.  The accessors take the image's size as page_size;
 * every bound is checked against it, the flags only choose the inline limit.
 *
 * Every accessor re-validates the header (type, used, P + 2n <= used) and
 * bounds-checks every offset, varint and length it touches against the end
 * of the used payload, so arbitrary bytes give SHALE_ECORRUPT, never a read
 * outside the page.  Key order is assumed by search and verified only by
 * node_leaf_check/node_parent_check (one linear pass, inline bytes only).
 *
 * Search compares the key with the page prefix once, then binary-searches
 * the slot array comparing the key's remainder with each suffix in place;
 * an overflow run is read (page by page through the cache, pw_run_cmp) only
 * when the inline bytes of an overflowed key tie.
 */
#include "node.h"

#include <stdlib.h>
#include <string.h>

/* A page's fixed layout, validated. */
typedef struct node_view {
    const uint8_t *page;
    const uint8_t *prefix; /* P bytes (leaves) */
    uint32_t plen;
    unsigned count;
    const uint8_t *slots;
    const uint8_t *lo;  /* first byte after the slot array */
    const uint8_t *end; /* end of the used payload */
    uint32_t kimax;
} node_view;

/* A key as stored in an entry or child, before the value. */
typedef struct raw_key {
    uint8_t flags;
    const uint8_t *sfx;
    uint32_t slen;
    uint64_t klen;
    uint64_t ovf;
    const uint8_t *start; /* the entry's first byte */
    const uint8_t *next;  /* first byte after the key part */
} raw_key;

static const uint8_t empty_key[1]; /* stands in for a NULL empty key */

/* vi_get -- read a varint at *p (before end), advancing *p; false if malformed. */
static inline bool vi_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    if (LIKELY(*p < end && **p < 0x80)) {
        *v = **p;
        (*p)++;
        return true;
    }
    size_t n = varint_get(*p, end, v);
    *p += n;
    return n != 0;
}

/* view_kimax -- the inline key limit of a page of ps bytes: the page's own
 * size, or for a leaf image the page size its flags name. */
static int view_kimax(const uint8_t *page, uint32_t ps, uint8_t type, uint32_t *kimax)
{
    uint8_t shift = sp_page_flags(page);
    if (shift == 0) {
        *kimax = node_key_inline_max(ps);
        return SHALE_OK;
    }
    if (type != SP_PT_LEAF || shift < NODE_PAGE_SHIFT_MIN || shift > NODE_PAGE_SHIFT_MAX ||
        (1u << shift) >= ps)
        return SHALE_ECORRUPT;
    *kimax = node_key_inline_max(1u << shift);
    return SHALE_OK;
}

/* view_init -- validate the header of a page of `type` and describe it. */
static int view_init(const uint8_t *page, uint32_t ps, uint8_t type, node_view *v)
{
    if (!page || ps < SP_MIN_PAGE_SIZE || ps > NODE_IMAGE_MAX)
        return SHALE_EINVAL;
    uint32_t used = sp_page_used(page);
    uint32_t plen = type == SP_PT_LEAF ? sp_page_aux(page) : 0;
    v->count = sp_page_count(page);
    RET(view_kimax(page, ps, type, &v->kimax));
    if (sp_page_type(page) != type || used > ps - SP_PAGE_HDR || plen > v->kimax ||
        (uint64_t)plen + 2u * v->count > used)
        return SHALE_ECORRUPT;
    v->page = page;
    v->prefix = page + SP_PAGE_HDR;
    v->plen = plen;
    v->slots = v->prefix + plen;
    v->lo = v->slots + 2u * v->count;
    v->end = page + SP_PAGE_HDR + used;
    return SHALE_OK;
}

/* entry_start -- the first byte of entry i, checked to lie in the entry area. */
static inline const uint8_t *entry_start(const node_view *v, unsigned i)
{
    const uint8_t *p = v->page + get_u16(v->slots + 2u * i);
    return (p < v->lo || p >= v->end) ? NULL : p;
}

/* key_tail -- decode S, the suffix and the overflow pgno, and check the lengths. */
static int key_tail(const node_view *v, const uint8_t *p, raw_key *k)
{
    uint64_t s;
    if (!vi_get(&p, v->end, &s) || s > (uint64_t)(v->end - p))
        return SHALE_ECORRUPT;
    k->sfx = p;
    k->slen = (uint32_t)s;
    p += s;
    k->ovf = 0;
    if (k->flags & NODE_F_KEY_OVF) {
        if (!vi_get(&p, v->end, &k->ovf) || k->ovf < SP_FIRST_DATA_PAGE ||
            v->plen + s != v->kimax || k->klen <= v->kimax || k->klen > NODE_MAX_KEY)
            return SHALE_ECORRUPT;
    } else if (k->klen != v->plen + s || k->klen > v->kimax) {
        return SHALE_ECORRUPT;
    }
    k->next = p;
    return SHALE_OK;
}

/* leaf_key -- decode the key part of leaf entry i. */
static int leaf_key(const node_view *v, unsigned i, raw_key *k)
{
    const uint8_t *p = entry_start(v, i);
    if (!p)
        return SHALE_ECORRUPT;
    k->start = p;
    k->flags = *p++;
    if ((k->flags & 0xc0) || (k->flags & NODE_KIND_MASK) > NODE_KIND_MERGE ||
        !vi_get(&p, v->end, &k->klen))
        return SHALE_ECORRUPT;
    return key_tail(v, p, k);
}

/* leaf_value -- decode the value part after k into e; *next gets the entry's end. */
static int leaf_value(const node_view *v, const raw_key *k, node_entry *e, const uint8_t **next)
{
    const uint8_t *p = k->next;
    if (!vi_get(&p, v->end, &e->vlen))
        return SHALE_ECORRUPT;
    e->val_ovf_pgno = 0;
    e->val = NULL;
    if (k->flags & NODE_F_VAL_OVF) {
        if (!vi_get(&p, v->end, &e->val_ovf_pgno) || e->val_ovf_pgno < SP_FIRST_DATA_PAGE ||
            e->vlen > SHALE_MAX_VALUE_SIZE)
            return SHALE_ECORRUPT;
    } else {
        if (e->vlen > (uint64_t)(v->end - p))
            return SHALE_ECORRUPT;
        e->val = p;
        p += e->vlen;
    }
    *next = p;
    return SHALE_OK;
}

/* make_key -- the public form of a raw key. */
static void make_key(const node_view *v, const raw_key *k, node_key *nk)
{
    nk->prefix = v->prefix;
    nk->plen = v->plen;
    nk->suffix = k->sfx;
    nk->slen = k->slen;
    nk->klen = k->klen;
    nk->ovf_pgno = k->ovf;
}

/* node_leaf_entry -- decode entry i of a leaf. */
int node_leaf_entry(const uint8_t *page, uint32_t page_size, unsigned i, node_entry *e)
{
    node_view v;
    raw_key k;
    const uint8_t *next;

    if (!e)
        return SHALE_EINVAL;
    RET(view_init(page, page_size, SP_PT_LEAF, &v));
    if (i >= v.count)
        return SHALE_EINVAL;
    RET(leaf_key(&v, i, &k));
    RET(leaf_value(&v, &k, e, &next));
    e->kind = k.flags & NODE_KIND_MASK;
    make_key(&v, &k, &e->key);
    return SHALE_OK;
}

/* child_key -- decode child i of a parent up to its key; counts into c. */
static int child_key(const node_view *v, unsigned i, node_child *c, raw_key *k)
{
    const uint8_t *p = entry_start(v, i);
    if (!p)
        return SHALE_ECORRUPT;
    k->start = p;
    if (!vi_get(&p, v->end, &c->pgno) || !vi_get(&p, v->end, &c->entries) ||
        !vi_get(&p, v->end, &c->tombstones) || p >= v->end)
        return SHALE_ECORRUPT;
    k->flags = *p++;
    if (c->pgno < SP_FIRST_DATA_PAGE || c->tombstones > c->entries ||
        (k->flags & ~NODE_F_KEY_OVF) || !vi_get(&p, v->end, &k->klen))
        return SHALE_ECORRUPT;
    return key_tail(v, p, k);
}

/* node_parent_child -- decode child i of a parent. */
int node_parent_child(const uint8_t *page, uint32_t page_size, unsigned i, node_child *c)
{
    node_view v;
    raw_key k;

    if (!c)
        return SHALE_EINVAL;
    RET(view_init(page, page_size, SP_PT_PARENT, &v));
    if (i >= v.count)
        return SHALE_EINVAL;
    RET(child_key(&v, i, c, &k));
    make_key(&v, &k, &c->last);
    return SHALE_OK;
}

/* inline_order -- order of two stored keys sharing a prefix from their suffixes:
 * <0, >0, 0 (equal), or 2 when only the overflow runs could tell. */
static int inline_order(const raw_key *a, const raw_key *b)
{
    uint32_t n = MIN(a->slen, b->slen);
    int c = n ? memcmp(a->sfx, b->sfx, n) : 0;
    if (c)
        return c;
    if (a->slen == b->slen) {
        if (!a->ovf == !b->ovf)
            return a->ovf ? 2 : 0;
        return a->ovf ? 1 : -1;
    }
    const raw_key *shorter = a->slen < b->slen ? a : b;
    if (shorter->ovf)
        return 2;
    return a->slen < b->slen ? -1 : 1;
}

/* check_order -- SHALE_ECORRUPT unless key a sorts strictly before key b. */
static inline int check_order(const raw_key *a, const raw_key *b)
{
    int o = inline_order(a, b);
    return (o < 0 || o == 2) ? SHALE_OK : SHALE_ECORRUPT;
}

/* node_leaf_check -- decode every entry: bounds, lengths, layout and key order. */
int node_leaf_check(const uint8_t *page, uint32_t page_size)
{
    node_view v;
    raw_key k, prev = {0};
    node_entry e;
    const uint8_t *next = NULL;

    RET(view_init(page, page_size, SP_PT_LEAF, &v));
    for (unsigned i = 0; i < v.count; i++) {
        RET(leaf_key(&v, i, &k));
        if (i > 0 && (k.start < next || check_order(&prev, &k) < 0))
            return SHALE_ECORRUPT;
        RET(leaf_value(&v, &k, &e, &next));
        prev = k;
    }
    return SHALE_OK;
}

/* node_parent_check -- decode every child: bounds, lengths, layout and key order. */
int node_parent_check(const uint8_t *page, uint32_t page_size)
{
    node_view v;
    raw_key k, prev = {0};
    node_child c;

    RET(view_init(page, page_size, SP_PT_PARENT, &v));
    if (v.count == 0)
        return SHALE_ECORRUPT;
    for (unsigned i = 0; i < v.count; i++) {
        RET(child_key(&v, i, &c, &k));
        if (c.entries == 0)
            return SHALE_ECORRUPT;
        if (i > 0 && (k.start < prev.next || check_order(&prev, &k) < 0))
            return SHALE_ECORRUPT;
        prev = k;
    }
    return SHALE_OK;
}

/* sfx_cmp -- compare key, whose first `from` bytes equal the stored key's,
 * with the stored key k whose inline bytes after `from` are its suffix. */
static int sfx_cmp(sp_space *sp, const uint8_t *key, size_t klen, size_t from, const raw_key *k,
                   int *cmp)
{
    const uint8_t *rest = key + from;
    size_t rlen = klen - from;
    size_t n = MIN(rlen, (size_t)k->slen);
    int c = n ? memcmp(rest, k->sfx, n) : 0;

    if (c)
        *cmp = c;
    else if (!k->ovf)
        *cmp = (rlen > k->slen) - (rlen < k->slen);
    else if (rlen <= k->slen)
        *cmp = -1; /* the stored key goes on past its inline bytes */
    else
        return pw_run_cmp(sp, k->ovf, SP_PT_OVERFLOW, k->klen, from + k->slen, rest + k->slen,
                          rlen - k->slen, cmp);
    return SHALE_OK;
}

/* node_key_cmp -- compare a key with a stored key, prefix, suffix, then run. */
int node_key_cmp(sp_space *sp, const void *key, size_t klen, const node_key *nk, int *cmp)
{
    if ((!key && klen) || !nk || !cmp)
        return SHALE_EINVAL;
    if (!key)
        key = empty_key;
    size_t n = MIN(klen, (size_t)nk->plen);
    int c = n ? memcmp(key, nk->prefix, n) : 0;
    if (c || klen < nk->plen) {
        *cmp = c ? c : -1;
        return SHALE_OK;
    }
    raw_key k = {.sfx = nk->suffix, .slen = nk->slen, .klen = nk->klen, .ovf = nk->ovf_pgno};
    return sfx_cmp(sp, key, klen, nk->plen, &k, cmp);
}

/* node_key_copy -- the full key into *buf, grown as needed. */
int node_key_copy(sp_space *sp, const node_key *nk, uint8_t **buf, size_t *cap, size_t *len)
{
    if (!nk || !buf || !cap || !len)
        return SHALE_EINVAL;
    if (nk->klen > NODE_MAX_KEY || (!nk->ovf_pgno && nk->klen != nk->plen + nk->slen))
        return SHALE_ECORRUPT;
    size_t klen = (size_t)nk->klen;
    if (*cap < klen || !*buf) {
        uint8_t *nb = realloc(*buf, klen ? klen : 1);
        if (!nb)
            return SHALE_ENOMEM;
        *buf = nb;
        *cap = klen ? klen : 1;
    }
    if (nk->ovf_pgno) {
        RET(pw_run_read_into(sp, nk->ovf_pgno, SP_PT_OVERFLOW, *buf, klen));
    } else {
        if (nk->plen)
            memcpy(*buf, nk->prefix, nk->plen);
        if (nk->slen)
            memcpy(*buf + nk->plen, nk->suffix, nk->slen);
    }
    *len = klen;
    return SHALE_OK;
}

/* probe_key -- decode the key of entry or child i. */
static inline int probe_key(const node_view *v, bool leaf, unsigned i, raw_key *k)
{
    node_child c;
    return leaf ? leaf_key(v, i, k) : child_key(v, i, &c, k);
}

/* bsearch_keys -- the first index whose key >= key, comparing from byte `from`
 * (the bytes before it are known equal); *exact when equal. */
static inline int bsearch_keys(sp_space *sp, const node_view *v, bool leaf, const uint8_t *key,
                               size_t klen, size_t from, unsigned *idx, bool *exact)
{
    unsigned lo = 0, hi = v->count;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        raw_key k;
        int c;
        RET(probe_key(v, leaf, mid, &k));
        RET(sfx_cmp(sp, key, klen, from, &k, &c));
        if (c > 0) {
            lo = mid + 1;
        } else if (c < 0) {
            hi = mid;
        } else {
            *exact = true;
            *idx = mid;
            return SHALE_OK;
        }
    }
    *idx = lo;
    return SHALE_OK;
}

/* node_leaf_search -- binary search for the first entry >= key, in place. */
int node_leaf_search(sp_space *sp, const uint8_t *page, uint32_t page_size, const void *key,
                     size_t klen, unsigned *idx, bool *exact)
{
    node_view v;
    bool ex = false;

    if ((!key && klen) || !idx)
        return SHALE_EINVAL;
    if (!key)
        key = empty_key;
    RET(view_init(page, page_size, SP_PT_LEAF, &v));
    /* Every entry's key starts with the prefix: one compare settles keys outside it. */
    size_t n = MIN(klen, (size_t)v.plen);
    int c = n ? memcmp(key, v.prefix, n) : 0;
    if (c || klen < v.plen) {
        *idx = (c > 0) ? v.count : 0;
    } else {
        RET(bsearch_keys(sp, &v, true, key, klen, v.plen, idx, &ex));
    }
    if (exact)
        *exact = ex;
    return SHALE_OK;
}

/* node_parent_search -- binary search for the first child whose last key >= key. */
int node_parent_search(sp_space *sp, const uint8_t *page, uint32_t page_size, const void *key,
                       size_t klen, unsigned *idx)
{
    node_view v;
    bool ex = false;

    if ((!key && klen) || !idx)
        return SHALE_EINVAL;
    if (!key)
        key = empty_key;
    RET(view_init(page, page_size, SP_PT_PARENT, &v));
    return bsearch_keys(sp, &v, false, key, klen, 0, idx, &ex);
}
