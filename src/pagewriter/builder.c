/*
 * builder.c -- the streaming, bottom-up B+tree builder (node_builder).
 *
 * Entries arrive in strictly increasing key order.  They are staged for the
 * leaf being filled; when the next entry would not fit, the staged leaf is
 * encoded (formats in node.c), written through the page writer, and the leaf's
 * (pgno, entries, tombstones, last key) is pushed into the level-0 parent
 * builder; a parent level that fills likewise writes a page and pushes it
 * into the level above, so any number of levels grow as needed.  Finish
 * writes the partial pages bottom-up; the first level left with a single
 * child and no page written holds the root (a tree of one leaf has height 1
 * and root = that leaf).  Every leaf sits at depth height - 1.
 *
 * Leaf prefix.  A leaf's prefix P is the longest common prefix of the inline
 * key bytes of all its entries.  Keys are sorted, so that is the common prefix
 * of the first and the last entry: adding an entry costs one compare against
 * the first entry's inline bytes, and P only shrinks.  The exact encoded size
 * is kept as running sums:
 *   size = P + n*(2 slot + 1 varint S) + sum(fixed_i) + sum(inl_i) - n*P + nlong
 * where fixed_i is every byte of entry i but its suffix and S varint, inl_i
 * its inline key length, and nlong the entries whose S = inl_i - P >= 128
 * (a 2-byte varint; inl_i <= page_size/8 <= 8192 < 2^14).  nlong is recounted
 * only when P shrinks and some entry is long enough to matter.
 *
 * Staging without copying keys whole: since every staged entry shares the
 * current P bytes with the first one, entry i keeps only its inline bytes from
 * kfrom_i (P right after it was added) on; the bytes [P_final, kfrom_i) come
 * from the first entry, which keeps all of its inline bytes.  So the arena
 * holds at most one inline key plus one page of bytes, and nothing is
 * allocated per entry: the arena, the staging arrays, the page buffer and the
 * previous-key buffer are reused for the builder's whole life.
 *
 * Overflows.  A key longer than node_key_inline_max goes to an overflow run
 * (the full key) when it is added; the entry keeps its first inline-max bytes.
 * A parent whose child ends in such a key points at the same run.  A value
 * longer than node_val_inline_max goes to its own run; node_builder_add_ovf
 * takes a value already in a run by reference.
 *
 * Fit.  With kimax = page_size/8 and vimax = page_size/4, the largest entry is
 * 1 + 3 (K <= 32 KiB) + 2 + kimax + 10 + max(2 + vimax, 5 + 10) bytes plus a
 * 2-byte slot: 404 bytes for 1 KiB pages, whose payload is 992.  The largest
 * parent child is 3*10 + 1 + 3 + 2 + kimax + 10 + 2 = 176 bytes there, so a
 * parent page holds at least 5 children and the levels converge.
 *
 * Compression (node_builder_set_codec).  Leaves then fill up to
 * node_image_size(page_size) bytes.  Keys keep the page's inline limit, so
 * parents and key runs are unchanged; values are inline up to a quarter of
 * the image (node_val_inline_max(image size)), so values of a few KiB are
 * compressed with their leaf instead of going to a raw overflow run.  The fit
 * argument holds as for a page of the image's size.  A full leaf
 * that still fits one page is written as a plain leaf page; a larger one
 * becomes a compressed leaf run (cleaf.h) written in loan order.
 *
 * Fill target.  A run takes whole pages, so a leaf compressed to 2.3 pages
 * wastes most of one.  The builder keeps a running estimate of the
 * compression ratio (compressed / image bytes, from the leaves written so
 * far) and fills each leaf up to the image size that should compress to just
 * under a whole number of pages (leaf_target), at most the image size.  When
 * leaves do not compress (ratio > 0.9) it writes plain one-page leaves,
 * trying one full image every CLEAF_PROBE leaves to notice if data changes.
 *
 * Errors.  Argument errors (EINVAL, ETOOBIG) leave the builder unchanged.  Any
 * other failure is sticky; node_builder_abort then pw_abort give every page
 * back.
 */
#include "node.h"

#include <stdlib.h>
#include <string.h>

#include "cleaf.h"

#define B_MAX_LEVELS 48u /* > log5(2^64): fan-out is at least 5 */
#define B_SLOT 2u        /* the u16 slot of an entry or child */
#define CLEAF_PROBE 16u  /* plain leaves between two compression probes */
#define CLEAF_SLACK 0.96 /* aim this far under a whole number of pages */
#define CLEAF_OVERHEAD 16u /* run length (8) and preamble (<= 6), rounded up */

/* An entry staged for the current leaf. */
typedef struct stage_ent {
    uint64_t klen, kovf, vlen, vovf;
    uint32_t koff;  /* arena offset of the inline key bytes from kfrom */
    uint32_t kfrom; /* first inline key byte kept (0 for the leaf's first entry) */
    uint32_t inl;   /* inline key length: min(klen, kimax) */
    uint32_t voff;  /* arena offset of an inline value */
    uint32_t fixed; /* encoded bytes except the suffix, its varint and the slot */
    uint8_t flags;  /* kind | NODE_F_* */
} stage_ent;

/* A child staged for a parent page. */
typedef struct stage_child {
    uint64_t pgno, entries, tombs, klen, kovf;
    uint32_t koff, inl; /* inline bytes of the last key in the level's arena */
} stage_child;

/* One level of parent pages being filled (level 0 holds the leaves). */
typedef struct level {
    stage_child *v;
    unsigned n, cap;
    uint8_t *arena;
    uint32_t alen;
    uint64_t used; /* payload bytes the staged children take, slots included */
    uint64_t entries, tombs;
    uint64_t written;
} level;

struct node_builder {
    pw_writer *pw;
    uint32_t ps, pl, kimax, vimax;
    uint32_t lps, lpl; /* a leaf's largest size and payload: a page, or an image */
    uint32_t ltarget;  /* the payload this leaf is filled to (<= lpl) */
    double ratio;      /* estimated compressed / image bytes */
    unsigned plain_run; /* plain leaves since the last probe */
    codec_ctx *codec;  /* NULL: leaves are single pages */
    uint8_t *scratch;  /* compressed leaf output */
    size_t scratch_cap;
    uint64_t gen;
    int err;       /* sticky */
    uint8_t *page; /* encoding buffer */
    /* the leaf being filled */
    stage_ent *ents;
    unsigned n, cap;
    uint8_t *arena;
    uint32_t alen, acap;
    uint32_t plen, max_inl;
    uint64_t fixed, inl_sum, nlong, tombs;
    /* the previous key: order check, and the last key of the leaf */
    uint8_t *prev;
    size_t prevlen, prevcap;
    bool have_prev;
    level lv[B_MAX_LEVELS];
    unsigned nlv;
    node_tree_info info;
};

static uint32_t leaf_target(node_builder *b);

/* node_builder_open -- a builder writing through pw. */
int node_builder_open(pw_writer *pw, node_builder **bp)
{
    if (!pw || !bp)
        return SHALE_EINVAL;
    node_builder *b = calloc(1, sizeof(*b));
    if (!b)
        return SHALE_ENOMEM;
    b->pw = pw;
    b->ps = sp_page_size(pw_space(pw));
    b->pl = b->ps - SP_PAGE_HDR;
    b->lps = b->ps;
    b->lpl = b->ltarget = b->pl;
    b->kimax = node_key_inline_max(b->ps);
    b->vimax = node_val_inline_max(b->ps);
    b->gen = pw_gen(pw);
    b->acap = b->ps + b->kimax;
    b->page = malloc(b->ps);
    b->arena = malloc(b->acap);
    if (!b->page || !b->arena) {
        node_builder_abort(b);
        return SHALE_ENOMEM;
    }
    *bp = b;
    return SHALE_OK;
}

/* node_builder_abort -- free without finishing. */
void node_builder_abort(node_builder *b)
{
    if (!b)
        return;
    for (unsigned i = 0; i < B_MAX_LEVELS; i++) {
        free(b->lv[i].v);
        free(b->lv[i].arena);
    }
    free(b->ents);
    free(b->arena);
    free(b->page);
    free(b->prev);
    free(b->scratch);
    codec_ctx_close(b->codec);
    free(b);
}

/* node_builder_set_codec -- compress leaves from now on (before any add). */
int node_builder_set_codec(node_builder *b, int codec, int clevel)
{
    if (!b || b->info.entries > 0 || b->n > 0 || b->codec)
        return SHALE_EINVAL;
    RET(codec_check(codec, clevel));
    if (codec == CODEC_NONE)
        return SHALE_OK;
    uint32_t lps = node_image_size(b->ps);
    size_t cap = cleaf_scratch_size(codec, lps);
    uint8_t *page = malloc(lps), *arena = malloc(lps + b->kimax), *scratch = malloc(cap);
    codec_ctx *c = NULL;
    int rc = page && arena && scratch ? codec_ctx_open(codec, clevel, &c) : SHALE_ENOMEM;
    if (rc < 0) {
        free(page);
        free(arena);
        free(scratch);
        return rc;
    }
    free(b->page);
    free(b->arena);
    b->page = page;
    b->arena = arena;
    b->acap = lps + b->kimax;
    b->scratch = scratch;
    b->scratch_cap = cap;
    b->codec = c;
    b->lps = lps;
    b->lpl = lps - SP_PAGE_HDR;
    b->vimax = node_val_inline_max(lps);
    b->ratio = 0.5;
    b->ltarget = leaf_target(b);
    return SHALE_OK;
}

/* grow -- make room for at least `want` elements of size sz in *v. */
static int grow(void **v, unsigned *cap, unsigned want, size_t sz)
{
    if (want <= *cap)
        return SHALE_OK;
    unsigned ncap = MAX(want, *cap ? *cap * 2 : 64u);
    void *nv = realloc(*v, (size_t)ncap * sz);
    if (!nv)
        return SHALE_ENOMEM;
    *v = nv;
    *cap = ncap;
    return SHALE_OK;
}

/* ---- parent levels ------------------------------------------------------ */

/* child_size -- encoded bytes of a child, slot included. */
static uint64_t child_size(const stage_child *c)
{
    return varint_len(c->pgno) + varint_len(c->entries) + varint_len(c->tombs) + 1 +
           varint_len(c->klen) + varint_len(c->inl) + c->inl + (c->kovf ? varint_len(c->kovf) : 0) +
           B_SLOT;
}

/* parent_encode -- encode level l's staged children as parent page pgno. */
static void parent_encode(node_builder *b, const level *l, uint64_t pgno)
{
    uint8_t *pg = b->page;
    sp_page_init(pg, b->ps, SP_PT_PARENT, pgno, b->gen);
    sp_page_set_count(pg, (uint16_t)l->n);
    uint8_t *slots = pg + SP_PAGE_HDR;
    uint8_t *q = slots + B_SLOT * l->n;
    for (unsigned i = 0; i < l->n; i++) {
        const stage_child *c = &l->v[i];
        put_u16(slots + B_SLOT * i, (uint16_t)(q - pg));
        q += varint_put(q, c->pgno);
        q += varint_put(q, c->entries);
        q += varint_put(q, c->tombs);
        *q++ = c->kovf ? NODE_F_KEY_OVF : 0;
        q += varint_put(q, c->klen);
        q += varint_put(q, c->inl);
        memcpy(q, l->arena + c->koff, c->inl);
        q += c->inl;
        if (c->kovf)
            q += varint_put(q, c->kovf);
    }
    sp_page_set_used(pg, (uint32_t)(q - slots));
}

static int level_push(node_builder *b, unsigned li, const stage_child *c, const uint8_t *key);

/* level_flush -- write level li's staged children as a page; push it up. */
static int level_flush(node_builder *b, unsigned li)
{
    level *l = &b->lv[li];
    uint64_t pgno;

    RET(pw_page_alloc(b->pw, &pgno));
    parent_encode(b, l, pgno);
    RET(pw_page_write(b->pw, pgno, b->page));
    const stage_child *last = &l->v[l->n - 1];
    stage_child up = {.pgno = pgno,
                      .entries = l->entries,
                      .tombs = l->tombs,
                      .klen = last->klen,
                      .kovf = last->kovf,
                      .inl = last->inl};
    RET(level_push(b, li + 1, &up, l->arena + last->koff));
    l->written++;
    l->n = 0;
    l->alen = 0;
    l->used = l->entries = l->tombs = 0;
    b->info.parents++;
    return SHALE_OK;
}

/* level_push -- stage child c (last key's inline bytes at key) at level li. */
static int level_push(node_builder *b, unsigned li, const stage_child *c, const uint8_t *key)
{
    if (li >= B_MAX_LEVELS)
        return SHALE_ETOOBIG;
    level *l = &b->lv[li];
    if (!l->arena) {
        l->arena = malloc(b->ps);
        if (!l->arena)
            return SHALE_ENOMEM;
    }
    b->nlv = MAX(b->nlv, li + 1);
    uint64_t sz = child_size(c);
    if (l->n > 0 && l->used + sz > b->pl)
        RET(level_flush(b, li));
    if (l->used + sz > b->pl || l->alen + c->inl > b->ps)
        return SHALE_EINVAL; /* cannot happen: see "Fit" above */
    RET(grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v)));
    stage_child *d = &l->v[l->n++];
    *d = *c;
    d->koff = l->alen;
    if (c->inl)
        memcpy(l->arena + l->alen, key, c->inl);
    l->alen += c->inl;
    l->used += sz;
    l->entries += c->entries;
    l->tombs += c->tombs;
    return SHALE_OK;
}

/* ---- leaves ------------------------------------------------------------- */

/* leaf_size -- encoded payload bytes of a leaf from its running sums. */
static uint64_t leaf_size(uint64_t n, uint32_t plen, uint64_t fixed, uint64_t inl_sum,
                          uint64_t nlong)
{
    return plen + n * (B_SLOT + 1) + fixed + (inl_sum - n * plen) + nlong;
}

/* count_long -- staged entries whose suffix needs a 2-byte varint under plen. */
static uint64_t count_long(const node_builder *b, uint32_t plen)
{
    uint64_t nl = 0;
    if (b->max_inl < 128 + plen)
        return 0;
    for (unsigned i = 0; i < b->n; i++)
        nl += b->ents[i].inl - plen >= 128;
    return nl;
}

/* lcp -- length of the common prefix of a and b, at most n. */
static uint32_t lcp(const uint8_t *a, const uint8_t *b, uint32_t n)
{
    uint32_t i = 0;
    while (i + 8 <= n && get_u64(a + i) == get_u64(b + i))
        i += 8;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* leaf_fit -- the leaf's size with e (inline key bytes at key) added; the new
 * prefix length and long-suffix count in *plen, *nlong. */
static uint64_t leaf_fit(const node_builder *b, const stage_ent *e, const uint8_t *key,
                         uint32_t *plen, uint64_t *nlong)
{
    if (b->n == 0) {
        *plen = e->inl;
        *nlong = 0;
    } else {
        *plen = lcp(b->arena + b->ents[0].koff, key, MIN(b->plen, e->inl));
        *nlong = (*plen == b->plen ? b->nlong : count_long(b, *plen)) + (e->inl - *plen >= 128);
    }
    return leaf_size(b->n + 1, *plen, b->fixed + e->fixed, b->inl_sum + e->inl, *nlong);
}

/* leaf_target -- the payload to fill the next leaf to (see "Fill target"). */
static uint32_t leaf_target(node_builder *b)
{
    if (b->ratio > 0.9 && b->plain_run++ % CLEAF_PROBE != 0)
        return b->pl;
    double run_pl = b->ps - SP_PAGE_HDR;
    double fit = b->lps * b->ratio + CLEAF_OVERHEAD; /* run bytes of a full image */
    unsigned pages = (unsigned)(fit / run_pl);       /* whole pages below that */
    if (pages == 0)
        return b->lpl; /* a full image fits in one page */
    double image = (pages * run_pl - CLEAF_OVERHEAD) / b->ratio * CLEAF_SLACK;
    uint32_t payload = image > SP_PAGE_HDR ? (uint32_t)image - SP_PAGE_HDR : 0;
    return MIN(b->lpl, MAX(payload, b->pl));
}

/* leaf_encode -- encode the staged entries as a leaf (pgno left 0); returns
 * its size, header included. */
static uint32_t leaf_encode(node_builder *b)
{
    uint8_t *pg = b->page;
    const uint8_t *first = b->arena + b->ents[0].koff;
    uint32_t P = b->plen;

    sp_page_init(pg, b->lps, SP_PT_LEAF, 0, b->gen);
    sp_page_set_count(pg, (uint16_t)b->n);
    sp_page_set_aux(pg, P);
    uint8_t *pay = pg + SP_PAGE_HDR;
    if (P)
        memcpy(pay, first, P);
    uint8_t *slots = pay + P;
    uint8_t *q = slots + B_SLOT * b->n;
    for (unsigned i = 0; i < b->n; i++) {
        const stage_ent *e = &b->ents[i];
        uint32_t from = MAX(P, e->kfrom);
        put_u16(slots + B_SLOT * i, (uint16_t)(q - pg));
        *q++ = e->flags;
        q += varint_put(q, e->klen);
        q += varint_put(q, e->inl - P);
        if (e->kfrom > P) { /* bytes this entry shares with the first one */
            memcpy(q, first + P, e->kfrom - P);
            q += e->kfrom - P;
        }
        memcpy(q, b->arena + e->koff + (from - e->kfrom), e->inl - from);
        q += e->inl - from;
        if (e->kovf)
            q += varint_put(q, e->kovf);
        q += varint_put(q, e->vlen);
        if (e->vovf) {
            q += varint_put(q, e->vovf);
        } else {
            memcpy(q, b->arena + e->voff, e->vlen);
            q += e->vlen;
        }
    }
    sp_page_set_used(pg, (uint32_t)(q - pay));
    return (uint32_t)(q - pg);
}

/* leaf_write -- write the encoded leaf as a page, or as a compressed leaf
 * (updating the ratio estimate and the next leaf's target). */
static int leaf_write(node_builder *b, uint32_t size, uint64_t *pgno)
{
    size_t stored;

    if (size <= b->ps) {
        RET(pw_page_alloc(b->pw, pgno));
        sp_page_set_pgno(b->page, *pgno);
        RET(pw_page_write(b->pw, *pgno, b->page));
        if (b->codec)
            b->ltarget = leaf_target(b);
        return SHALE_OK;
    }
    sp_page_set_flags(b->page, node_page_shift(b->ps));
    b->info.compressed_leaves++;
    RET(cleaf_write(b->pw, b->codec, b->page, size, b->scratch, b->scratch_cap, pgno, &stored));
    b->ratio = 0.75 * b->ratio + 0.25 * ((double)stored / size);
    b->ltarget = leaf_target(b);
    return SHALE_OK;
}

/* leaf_flush -- write the staged leaf and push it into level 0. */
static int leaf_flush(node_builder *b)
{
    uint64_t pgno;

    RET(leaf_write(b, leaf_encode(b), &pgno));
    const stage_ent *last = &b->ents[b->n - 1];
    stage_child c = {.pgno = pgno,
                     .entries = b->n,
                     .tombs = b->tombs,
                     .klen = last->klen,
                     .kovf = last->kovf,
                     .inl = last->inl};
    RET(level_push(b, 0, &c, b->prev)); /* prev is the leaf's last key */
    b->info.leaves++;
    b->n = 0;
    b->alen = 0;
    b->plen = b->max_inl = 0;
    b->fixed = b->inl_sum = b->nlong = b->tombs = 0;
    return SHALE_OK;
}

/* leaf_add -- stage e, writing the current leaf first if e does not fit. */
static int leaf_add(node_builder *b, stage_ent *e, const uint8_t *key, const uint8_t *val)
{
    uint32_t plen;
    uint64_t nlong;
    uint64_t size = leaf_fit(b, e, key, &plen, &nlong);

    if (size > b->ltarget && b->n > 0) {
        RET(leaf_flush(b));
        size = leaf_fit(b, e, key, &plen, &nlong);
    }
    uint32_t kfrom = b->n ? plen : 0;
    uint64_t vbytes = e->vovf ? 0 : e->vlen;
    if (size > b->lpl || b->n >= UINT16_MAX || b->alen + (e->inl - kfrom) + vbytes > b->acap)
        return SHALE_EINVAL; /* cannot happen: see "Fit" above */
    e->kfrom = kfrom;
    e->koff = b->alen;
    if (e->inl > kfrom)
        memcpy(b->arena + b->alen, key + kfrom, e->inl - kfrom);
    b->alen += e->inl - kfrom;
    e->voff = b->alen;
    if (vbytes)
        memcpy(b->arena + b->alen, val, vbytes);
    b->alen += (uint32_t)vbytes;
    b->ents[b->n++] = *e;
    b->plen = plen;
    b->nlong = nlong;
    b->max_inl = MAX(b->max_inl, e->inl);
    b->fixed += e->fixed;
    b->inl_sum += e->inl;
    b->tombs += (e->flags & NODE_KIND_MASK) == NODE_KIND_TOMBSTONE;
    return SHALE_OK;
}

/* ---- adding entries ----------------------------------------------------- */

/* add_prepare -- argument checks and every allocation an add may need, so that
 * a failure here leaves the builder unchanged. */
static int add_prepare(node_builder *b, const void *key, size_t klen, uint64_t vlen)
{
    if (b->err)
        return b->err;
    if (klen > NODE_MAX_KEY || vlen > SHALE_MAX_VALUE_SIZE)
        return SHALE_ETOOBIG;
    if (b->have_prev && key_cmp(key, klen, b->prev, b->prevlen) <= 0)
        return SHALE_EINVAL;
    if (b->prevcap < klen || !b->prev) {
        size_t ncap = MAX(klen, MAX(2 * b->prevcap, (size_t)64));
        uint8_t *np = realloc(b->prev, ncap);
        if (!np)
            return SHALE_ENOMEM;
        b->prev = np;
        b->prevcap = ncap;
    }
    return grow((void **)&b->ents, &b->cap, b->n + 1, sizeof(*b->ents));
}

/* run_write -- write an overflow run, counting its pages. */
static int run_write(node_builder *b, const void *data, size_t len, uint64_t *pgno)
{
    RET(pw_run_write(b->pw, SP_PT_OVERFLOW, data, len, pgno));
    b->info.overflow_pages += pw_run_pages(b->ps, len);
    return SHALE_OK;
}

/* add_entry -- write the key's run if it needs one, stage, remember the key. */
static int add_entry(node_builder *b, uint8_t kind, const uint8_t *key, size_t klen,
                     const uint8_t *val, uint64_t vlen, uint64_t vovf)
{
    stage_ent e = {.klen = klen, .vlen = vlen, .vovf = vovf};

    if (klen > b->kimax)
        RET(run_write(b, key, klen, &e.kovf));
    e.inl = (uint32_t)MIN(klen, (size_t)b->kimax);
    e.flags = kind | (e.kovf ? NODE_F_KEY_OVF : 0) | (vovf ? NODE_F_VAL_OVF : 0);
    e.fixed = (uint32_t)(1 + varint_len(klen) + (e.kovf ? varint_len(e.kovf) : 0) +
                         varint_len(vlen) + (vovf ? varint_len(vovf) : vlen));
    RET(leaf_add(b, &e, key, val));
    if (klen)
        memcpy(b->prev, key, klen);
    b->prevlen = klen;
    b->have_prev = true;
    b->info.entries++;
    b->info.tombstones += kind == NODE_KIND_TOMBSTONE;
    return SHALE_OK;
}

/* sticky -- remember an I/O or allocation failure after the builder changed. */
static int sticky(node_builder *b, int rc)
{
    if (rc < 0)
        b->err = rc;
    return rc;
}

/* node_builder_add -- append an entry, its value inline or in a new run. */
int node_builder_add(node_builder *b, uint8_t kind, const void *key, size_t klen, const void *val,
                     size_t vlen)
{
    uint64_t vovf = 0;

    if (!b || kind > NODE_KIND_MERGE || (!key && klen))
        return SHALE_EINVAL;
    if (kind == NODE_KIND_TOMBSTONE) {
        val = NULL;
        vlen = 0;
    } else if (!val && vlen) {
        return SHALE_EINVAL;
    }
    RET(add_prepare(b, key, klen, vlen));
    if (vlen > b->vimax)
        RET(sticky(b, run_write(b, val, vlen, &vovf)));
    return sticky(b, add_entry(b, kind, key, klen, vovf ? NULL : val, vlen, vovf));
}

/* node_builder_add_ovf -- append an entry whose value is already a run. */
int node_builder_add_ovf(node_builder *b, uint8_t kind, const void *key, size_t klen,
                         uint64_t val_pgno, uint64_t vlen)
{
    if (!b || (kind != NODE_KIND_VALUE && kind != NODE_KIND_MERGE) || (!key && klen) ||
        val_pgno < SP_FIRST_DATA_PAGE)
        return SHALE_EINVAL;
    RET(add_prepare(b, key, klen, vlen));
    return sticky(b, add_entry(b, kind, key, klen, NULL, vlen, val_pgno));
}

/* staged_above -- whether a level above li holds staged children. */
static bool staged_above(const node_builder *b, unsigned li)
{
    for (unsigned lj = li + 1; lj < b->nlv; lj++)
        if (b->lv[lj].n)
            return true;
    return false;
}

/* node_builder_add_child -- append a whole subtree by reference (see node.h). */
int node_builder_add_child(node_builder *b, const node_child *c, uint32_t height,
                           const void *last, size_t lastlen)
{
    if (!b || !c || height == 0 || height > B_MAX_LEVELS || !last || c->entries == 0 ||
        c->tombstones > c->entries || c->pgno < SP_FIRST_DATA_PAGE || lastlen != c->last.klen)
        return SHALE_EINVAL;
    RET(add_prepare(b, last, lastlen, 0));
    /* Everything staged below the child's level goes out first, so the
     * subtree lands after it in key order, at its own height. */
    if (b->n)
        RET(sticky(b, leaf_flush(b)));
    for (unsigned li = 0; li + 1 < height; li++)
        if (b->lv[li].n)
            RET(sticky(b, level_flush(b, li)));
    stage_child sc = {.pgno = c->pgno,
                      .entries = c->entries,
                      .tombs = c->tombstones,
                      .klen = lastlen,
                      .kovf = c->last.ovf_pgno,
                      .inl = (uint32_t)MIN(lastlen, (size_t)b->kimax)};
    RET(sticky(b, level_push(b, height - 1, &sc, last)));
    if (lastlen)
        memcpy(b->prev, last, lastlen);
    b->prevlen = lastlen;
    b->have_prev = true;
    b->info.entries += c->entries;
    b->info.tombstones += c->tombstones;
    b->info.recycled++;
    return SHALE_OK;
}

/* builder_close -- write the partial pages bottom-up and find the root: the
 * lowest level holding a single child, nothing written from it and nothing
 * staged above it (a recycled subtree may sit higher up). */
static int builder_close(node_builder *b)
{
    if (b->n)
        RET(leaf_flush(b));
    for (unsigned li = 0; li < b->nlv; li++) {
        const level *l = &b->lv[li];
        if (l->n == 0)
            continue;
        if (l->written == 0 && l->n == 1 && !staged_above(b, li)) {
            b->info.root = l->v[0].pgno;
            b->info.height = li + 1;
            return SHALE_OK;
        }
        RET(level_flush(b, li));
    }
    return SHALE_EINVAL; /* cannot happen: the top level always ends with one child */
}

/* node_builder_finish -- flush partial pages, write parents up to one root. */
int node_builder_finish(node_builder *b, node_tree_info *info)
{
    int rc = SHALE_OK;

    if (!b)
        return SHALE_EINVAL;
    if (!info)
        ERR_SET(SHALE_EINVAL);
    ERR(b->err);
    if (b->info.entries > 0)
        ERR(builder_close(b));
    *info = b->info;
err:
    node_builder_abort(b);
    return rc;
}
