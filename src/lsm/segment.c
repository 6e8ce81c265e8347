/*
 * segment.c -- building, describing, owning and point-reading a segment: an
 * immutable B+tree of leaf and parent pages (pagewriter/node.h) with its
 * overflow runs and a blocked Bloom filter of its keys (filter.c).  The
 * cursor over a segment is in segcursor.c.
 *
 * Building is one streaming pass: every entry of the source goes to the
 * node builder (which writes leaves as they fill and parents at the end) and
 * its key's hash to the filter builder; the filter, sized once the key count
 * is known, is written last as an SP_PT_FILTER run; pw_finish then hands back
 * the blocklist of every page written.  Until that point the pages are only
 * loaned: any failure aborts the node builder and the page writer, which
 * gives every loaned page back to space at once (no header ever named them).
 *
 * Invariants of a segment in memory (checked by seg_decode for anything read
 * from disk, true by construction for seg_build):
 *   - tree.height in 1..SEG_MAX_HEIGHT, tree.root and every page reached from
 *     it lie in `pages`; the filter run (if any) lies in `pages`;
 *   - min_key <= max_key, and every entry's key is in [min_key, max_key];
 *   - filter is NULL exactly when filter_pgno is 0, else filter_bytes bytes
 *     that passed filter_check.
 *
 * Point reads (seg_get) are the read hot path: a range check, the filter
 * (one cache line), then one pinned node per level (a page, or a compressed
 * leaf's image from the node cache), searched in place, and
 * one copy of the value into the caller's buffer.  Nothing is allocated once
 * the buffer is large enough.  Each level is checked for its page type and
 * for belonging to the segment, and the descent is bounded by tree.height, so
 * a corrupt child pointer (into garbage, another structure, or a cycle) reads
 * as SHALE_ECORRUPT.  Leaves may sit at different depths (a parent accepts
 * children of any height): the page type, not the level, says which it is.
 *
 * The descriptor format is documented in segment.h.
 */
#include "segment.h"

#include <stdlib.h>
#include <string.h>

#include "filter.h"

#define SEG_PW_HINT 256u /* pages loaned at a time while building */
#define SEG_NFIELDS 13u  /* varints before the keys in a descriptor */

/* seg_create -- a zeroed segment with one reference. */
int seg_create(const seg_store *st, seg_segment **segp)
{
    seg_segment *seg = calloc(1, sizeof *seg);

    if (seg == NULL)
        return SHALE_ENOMEM;
    bl_init(&seg->pages);
    seg->sp = st->sp;
    seg->cache = st->cache;
    atomic_init(&seg->refs, 1);
    *segp = seg;
    return SHALE_OK;
}

/* seg_free -- release the memory of a segment (its pages are not touched). */
static void seg_free(seg_segment *seg)
{
    if (seg == NULL)
        return;
    free(seg->min_key);
    free(seg->max_key);
    free(seg->filter);
    bl_free(&seg->pages);
    free(seg);
}

/* seg_key_set -- copy a key into *dst, growing it (capacity in *cap). */
static int seg_key_set(uint8_t **dst, size_t *dlen, size_t *cap, const void *key, size_t klen)
{
    if (klen > *cap || *dst == NULL) {
        size_t ncap = MAX(klen, MAX(*cap * 2, (size_t)32));
        uint8_t *p = realloc(*dst, ncap);

        if (p == NULL)
            return SHALE_ENOMEM;
        *dst = p;
        *cap = ncap;
    }
    if (klen)
        memcpy(*dst, key, klen);
    *dlen = klen;
    return SHALE_OK;
}

/* ---- building ---------------------------------------------------------- */

/* seg_build_stream -- feed every source entry to the tree and filter builders,
 * recording the first and last keys. */
static int seg_build_stream(seg_segment *seg, node_builder *nb, filter_builder *fb, seg_source *src)
{
    size_t mincap = 0, maxcap = 0;
    uint8_t kind;
    const void *key, *val;
    size_t klen, vlen;
    int rc;

    while ((rc = src->next(src->ctx, &kind, &key, &klen, &val, &vlen)) == SHALE_OK) {
        RET(node_builder_add(nb, kind, key, klen, val, vlen));
        RET(filter_builder_add(fb, filter_hash(key, klen)));
        if (fb->n == 1)
            RET(seg_key_set(&seg->min_key, &seg->min_len, &mincap, key, klen));
        RET(seg_key_set(&seg->max_key, &seg->max_len, &maxcap, key, klen));
    }
    if (rc == SHALE_NOTFOUND)
        return SHALE_OK;
    return rc < 0 ? rc : SHALE_EINVAL;
}

/* seg_release_pages -- give never-published pages back to space at once. */
static void seg_release_pages(sp_space *sp, const sp_blocklist *bl)
{
    for (size_t i = 0; i < bl->n; i++)
        (void)fs_release(sp_freespace_of(sp), bl->v[i].first, bl->v[i].last);
}

/* seg_build -- write a new segment from src (see segment.h). */
int seg_build(const seg_store *st, uint64_t id, uint64_t gen, uint32_t level, seg_source *src,
              seg_segment **segp)
{
    int rc = SHALE_OK;
    seg_segment *seg = NULL;
    pw_writer *pw = NULL;
    node_builder *nb = NULL;
    filter_builder fb = FILTER_BUILDER_INIT;
    uint8_t *filter = NULL;
    size_t flen = 0;

    *segp = NULL;
    if (st == NULL || st->sp == NULL || src == NULL || src->next == NULL)
        return SHALE_EINVAL;
    sp_space *sp = st->sp;
    ERR(seg_create(st, &seg));
    seg->id = id;
    seg->gen = gen;
    seg->level = level;
    ERR(pw_open(sp, gen, SEG_PW_HINT, &pw));
    ERR(node_builder_open(pw, &nb));
    ERR(node_builder_set_codec(nb, st->codec, st->level));
    ERR(seg_build_stream(seg, nb, &fb, src));
    if (fb.n == 0)
        ERR_SET(SHALE_NOTFOUND);
    rc = node_builder_finish(nb, &seg->tree);
    nb = NULL; /* freed by finish, also on error */
    ERR(rc);
    ERR(filter_builder_finish(&fb, FILTER_BITS_PER_KEY, &filter, &flen));
    /* in loan order: the loan's unused rest is then the file's free tail */
    ERR(pw_run_append(pw, SP_PT_FILTER, filter, flen, &seg->filter_pgno));
    /* The last fallible step: after it the pages belong to the segment. */
    ERR(pw_finish(pw, &seg->pages));
    pw_close(pw);
    pw = NULL;
    seg->filter = filter;
    seg->filter_bytes = flen;
    filter = NULL;
    *segp = seg;
    seg = NULL;
err:
    filter_builder_free(&fb);
    free(filter);
    node_builder_abort(nb);
    if (seg != NULL && seg->pages.n > 0) /* pw_finish failed past its point of no return */
        seg_release_pages(sp, &seg->pages);
    pw_abort(pw);
    seg_free(seg);
    return rc;
}

/* ---- descriptor -------------------------------------------------------- */

/* seg_fields_get -- the leading varints of the descriptor, in order. */
static void seg_fields_get(const seg_segment *seg, uint64_t f[SEG_NFIELDS])
{
    f[0] = seg->id;
    f[1] = seg->gen;
    f[2] = seg->level;
    f[3] = seg->tree.root;
    f[4] = seg->tree.height;
    f[5] = seg->tree.entries;
    f[6] = seg->tree.tombstones;
    f[7] = seg->tree.leaves;
    f[8] = seg->tree.parents;
    f[9] = seg->tree.overflow_pages;
    f[10] = seg->filter_pgno;
    f[11] = seg->filter_bytes;
    f[12] = seg->tree.compressed_leaves;
}

/* seg_fields_set -- the inverse of seg_fields_get; checks ranges first. */
static int seg_fields_set(seg_segment *seg, const uint64_t f[SEG_NFIELDS])
{
    if (f[2] > UINT32_MAX || f[4] < 1 || f[4] > SEG_MAX_HEIGHT)
        return SHALE_ECORRUPT;
    if (f[5] < 1 || f[6] > f[5] || f[7] < 1 || f[7] > f[5])
        return SHALE_ECORRUPT;
    if ((f[10] == 0) != (f[11] == 0) || f[11] > SIZE_MAX || f[12] > f[7])
        return SHALE_ECORRUPT;
    seg->id = f[0];
    seg->gen = f[1];
    seg->level = (uint32_t)f[2];
    seg->tree.root = f[3];
    seg->tree.height = (uint32_t)f[4];
    seg->tree.entries = f[5];
    seg->tree.tombstones = f[6];
    seg->tree.leaves = f[7];
    seg->tree.parents = f[8];
    seg->tree.overflow_pages = f[9];
    seg->filter_pgno = f[10];
    seg->filter_bytes = f[11];
    seg->tree.compressed_leaves = f[12];
    return SHALE_OK;
}

/* seg_encode -- append the descriptor to *buf (see segment.h). */
int seg_encode(const seg_segment *seg, uint8_t **buf, size_t *len, size_t *cap)
{
    uint64_t f[SEG_NFIELDS];
    size_t need = 0;
    uint8_t *p;

    seg_fields_get(seg, f);
    for (unsigned i = 0; i < SEG_NFIELDS; i++)
        need += varint_len(f[i]);
    need += varint_len(seg->min_len) + seg->min_len + varint_len(seg->max_len) + seg->max_len;
    need += bl_encoded_len(&seg->pages);
    if (*len + need > *cap || *buf == NULL) {
        size_t ncap = MAX(*len + need, *cap * 2);

        p = realloc(*buf, ncap);
        if (p == NULL)
            return SHALE_ENOMEM;
        *buf = p;
        *cap = ncap;
    }
    p = *buf + *len;
    for (unsigned i = 0; i < SEG_NFIELDS; i++)
        p += varint_put(p, f[i]);
    p += varint_put(p, seg->min_len);
    if (seg->min_len)
        memcpy(p, seg->min_key, seg->min_len);
    p += seg->min_len;
    p += varint_put(p, seg->max_len);
    if (seg->max_len)
        memcpy(p, seg->max_key, seg->max_len);
    p += seg->max_len;
    p += bl_encode(&seg->pages, p);
    *len = (size_t)(p - *buf);
    return SHALE_OK;
}

/* seg_decode_key -- a varint length and that many key bytes, copied out. */
static int seg_decode_key(const uint8_t **pp, const uint8_t *end, uint8_t **key, size_t *klen)
{
    uint64_t n;
    size_t used = varint_get(*pp, end, &n);

    if (used == 0 || n > NODE_MAX_KEY || n > (uint64_t)(end - *pp - (ptrdiff_t)used))
        return SHALE_ECORRUPT;
    *pp += used;
    *key = malloc(n ? n : 1);
    if (*key == NULL)
        return SHALE_ENOMEM;
    if (n)
        memcpy(*key, *pp, n);
    *klen = n;
    *pp += n;
    return SHALE_OK;
}

/* seg_check -- the invariants of the top of this file that a descriptor
 * alone can show (the filter contents are checked when loaded). */
static int seg_check(const seg_segment *seg)
{
    const sp_blocklist *bl = &seg->pages;
    uint64_t total = bl_pages(bl), run;
    const node_tree_info *t = &seg->tree;

    if (bl->n == 0 || bl->v[0].first < SP_FIRST_DATA_PAGE ||
        bl->v[bl->n - 1].last >= fs_file_pages(sp_freespace_of(seg->sp)))
        return SHALE_ECORRUPT;
    if (!seg_owns(seg, t->root, t->root))
        return SHALE_ECORRUPT;
    if (t->leaves > total || t->parents > total || t->overflow_pages > total ||
        t->compressed_leaves > t->leaves || t->leaves + t->parents + t->overflow_pages > total)
        return SHALE_ECORRUPT;
    if (key_cmp(seg->min_key, seg->min_len, seg->max_key, seg->max_len) > 0)
        return SHALE_ECORRUPT;
    if (seg->filter_pgno != 0) {
        run = pw_run_pages(sp_page_size(seg->sp), seg->filter_bytes);
        if (run == 0 || run > total || seg->filter_pgno > UINT64_MAX - run ||
            !seg_owns(seg, seg->filter_pgno, seg->filter_pgno + run - 1))
            return SHALE_ECORRUPT;
    }
    return SHALE_OK;
}

/* seg_load_filter -- read the filter run into memory and check it. */
static int seg_load_filter(seg_segment *seg)
{
    void *buf = NULL;
    size_t len = 0;
    int rc;

    if (seg->filter_pgno == 0)
        return SHALE_OK;
    RET(pw_run_read(seg->sp, seg->filter_pgno, SP_PT_FILTER, &buf, &len));
    rc = len == seg->filter_bytes ? filter_check(buf, len) : SHALE_ECORRUPT;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    seg->filter = buf;
    return SHALE_OK;
}

/* seg_decode -- parse and check a descriptor, then load the filter. */
int seg_decode(const seg_store *st, const uint8_t *p, size_t len, size_t *used,
               seg_segment **segp)
{
    int rc = SHALE_OK;
    const uint8_t *q = p, *end;
    uint64_t f[SEG_NFIELDS];
    seg_segment *seg = NULL;
    size_t n;

    *segp = NULL;
    if (p == NULL || len == 0)
        return SHALE_ECORRUPT;
    end = p + len;
    for (unsigned i = 0; i < SEG_NFIELDS; i++) {
        n = varint_get(q, end, &f[i]);
        if (n == 0)
            return SHALE_ECORRUPT;
        q += n;
    }
    ERR(seg_create(st, &seg));
    ERR(seg_fields_set(seg, f));
    ERR(seg_decode_key(&q, end, &seg->min_key, &seg->min_len));
    ERR(seg_decode_key(&q, end, &seg->max_key, &seg->max_len));
    if (q == end)
        ERR_SET(SHALE_ECORRUPT);
    ERR(bl_decode(&seg->pages, q, (size_t)(end - q), &n));
    q += n;
    ERR(seg_check(seg));
    ERR(seg_load_filter(seg));
    *used = (size_t)(q - p);
    *segp = seg;
    seg = NULL;
err:
    seg_free(seg);
    return rc;
}

/* ---- lifetime ---------------------------------------------------------- */

/* seg_ref -- take one more reference. */
void seg_ref(seg_segment *seg)
{
    atomic_fetch_add_explicit(&seg->refs, 1, memory_order_relaxed);
}

/* seg_unref -- drop a reference; the last one frees the segment's memory. */
void seg_unref(seg_segment *seg)
{
    if (seg == NULL || atomic_fetch_sub_explicit(&seg->refs, 1, memory_order_acq_rel) != 1)
        return;
    seg_free(seg);
}

/* seg_clone_level -- the same segment (pages, filter, keys) at another level. */
int seg_clone_level(const seg_segment *seg, uint32_t level, seg_segment **out)
{
    int rc = SHALE_OK;
    seg_segment *c = NULL;
    seg_store st = {.sp = seg->sp, .cache = seg->cache};
    size_t cap = 0;

    ERR(seg_create(&st, &c));
    c->id = seg->id;
    c->gen = seg->gen;
    c->level = level;
    c->seq = seg->seq;
    c->tree = seg->tree;
    c->filter_pgno = seg->filter_pgno;
    c->filter_bytes = seg->filter_bytes;
    ERR(seg_key_set(&c->min_key, &c->min_len, &cap, seg->min_key, seg->min_len));
    cap = 0;
    ERR(seg_key_set(&c->max_key, &c->max_len, &cap, seg->max_key, seg->max_len));
    ERR(bl_copy(&c->pages, &seg->pages));
    if (seg->filter) {
        if (!(c->filter = malloc(seg->filter_bytes)))
            ERR_SET(SHALE_ENOMEM);
        memcpy(c->filter, seg->filter, seg->filter_bytes);
    }
    *out = c;
    c = NULL;
err:
    seg_free(c);
    return rc;
}

/* seg_discard -- pages of a segment never listed in a version go back. */
int seg_discard(seg_segment *seg)
{
    return fs_retire(sp_freespace_of(seg->sp), &seg->pages);
}

/* ---- point reads ------------------------------------------------------- */

int seg_read_value(const seg_segment *seg, uint64_t pgno, uint64_t vlen, void *buf)
{
    if (vlen > SHALE_MAX_VALUE_SIZE ||
        !seg_owns(seg, pgno, pgno + pw_run_pages(sp_page_size(seg->sp), vlen) - 1))
        return SHALE_ECORRUPT;
    return pw_run_read_into(seg->sp, pgno, SP_PT_OVERFLOW, buf, (size_t)vlen);
}

/* seg_owns -- binary search for the block holding first; it must hold last. */
bool seg_owns(const seg_segment *seg, uint64_t first, uint64_t last)
{
    const sp_block *v = seg->pages.v;
    size_t lo = 0, hi = seg->pages.n;

    while (lo < hi) { /* first block with v.first > first */
        size_t mid = lo + (hi - lo) / 2;

        if (v[mid].first <= first)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && first <= last && last <= v[lo - 1].last;
}

/* seg_node_pin -- pin a node of the segment's tree, checking it is the segment's. */
int seg_node_pin(const seg_segment *seg, uint64_t pgno, node_ref *r)
{
    if (UNLIKELY(!seg_owns(seg, pgno, pgno)))
        return SHALE_ECORRUPT;
    RET(node_pin(seg->sp, seg->cache, pgno, r));
    if (UNLIKELY(r->pages > 1 && !seg_owns(seg, pgno, pgno + r->pages - 1))) {
        node_unpin(seg->sp, r);
        return SHALE_ECORRUPT;
    }
    return SHALE_OK;
}

/* seg_may_contain -- the key range, then the filter. */
bool seg_may_contain(const seg_segment *seg, const void *key, size_t klen)
{
    return seg_may_contain_hashed(seg, key, klen, filter_hash(key, klen));
}

/* seg_may_contain_hashed -- the same with the key's filter_hash given. */
bool seg_may_contain_hashed(const seg_segment *seg, const void *key, size_t klen, uint64_t h)
{
    if (key_cmp(key, klen, seg->min_key, seg->min_len) < 0 ||
        key_cmp(key, klen, seg->max_key, seg->max_len) > 0)
        return false;
    return seg->filter == NULL || filter_may_contain(seg->filter, seg->filter_bytes, h);
}

/* seg_find_leaf -- pin the leaf whose range holds key; SHALE_NOTFOUND when
 * key is above the last key. */
static int seg_find_leaf(const seg_segment *seg, const void *key, size_t klen, node_ref *leaf)
{
    sp_space *sp = seg->sp;
    uint64_t pgno = seg->tree.root;
    node_ref r;
    node_child c;
    unsigned idx;
    int rc;

    for (uint32_t depth = 0; depth < seg->tree.height; depth++) {
        RET(seg_node_pin(seg, pgno, &r));
        if (sp_page_type(r.data) == SP_PT_LEAF) {
            *leaf = r;
            return SHALE_OK;
        }
        rc = node_parent_search(sp, r.data, r.size, key, klen, &idx);
        if (rc == SHALE_OK)
            rc = idx < sp_page_count(r.data) ? node_parent_child(r.data, r.size, idx, &c)
                                             : SHALE_NOTFOUND;
        node_unpin(sp, &r);
        if (rc != SHALE_OK)
            return rc;
        pgno = c.pgno;
    }
    return SHALE_ECORRUPT; /* deeper than the tree's height: a cycle or garbage */
}

/* seg_buf_reserve -- make buf hold n bytes (realloc growth, at least doubling). */
static int seg_buf_reserve(shale_buf *buf, size_t n)
{
    size_t ncap;
    void *p;

    if (LIKELY(n <= buf->cap && (buf->data != NULL || n == 0)))
        return SHALE_OK;
    ncap = MAX(n, MAX(buf->cap <= SIZE_MAX / 2 ? buf->cap * 2 : n, (size_t)64));
    p = realloc(buf->data, ncap);
    if (p == NULL)
        return SHALE_ENOMEM;
    buf->data = p;
    buf->cap = ncap;
    return SHALE_OK;
}

/* seg_get -- look key up and copy its value out (see segment.h). */
int seg_get(seg_segment *seg, const void *key, size_t klen, uint8_t *kind, shale_buf *val)
{
    return seg_get_hashed(seg, key, klen, filter_hash(key, klen), kind, val);
}

/* seg_get_hashed -- seg_get with the key's filter_hash given. */
int seg_get_hashed(seg_segment *seg, const void *key, size_t klen, uint64_t h, uint8_t *kind,
                   shale_buf *val)
{
    int rc = SHALE_OK;
    sp_space *sp = seg->sp;
    node_ref leaf = {0};
    node_entry e;
    unsigned idx;
    bool exact;
    uint64_t ovf;

    if (!seg_may_contain_hashed(seg, key, klen, h))
        return SHALE_NOTFOUND;
    ERR(seg_find_leaf(seg, key, klen, &leaf));
    if (rc == SHALE_NOTFOUND)
        goto err;
    ERR(node_leaf_search(sp, leaf.data, leaf.size, key, klen, &idx, &exact));
    if (!exact)
        ERR_SET(SHALE_NOTFOUND);
    ERR(node_leaf_entry(leaf.data, leaf.size, idx, &e));
    if (e.kind == NODE_KIND_TOMBSTONE) {
        val->len = 0;
    } else if (e.val_ovf_pgno == 0) {
        ERR(seg_buf_reserve(val, (size_t)e.vlen));
        if (e.vlen)
            memcpy(val->data, e.val, (size_t)e.vlen);
        val->len = (size_t)e.vlen;
    } else {
        ovf = e.val_ovf_pgno;
        node_unpin(sp, &leaf); /* the value is read straight from its run */
        if (e.vlen > SHALE_MAX_VALUE_SIZE)
            ERR_SET(SHALE_ECORRUPT);
        ERR(seg_buf_reserve(val, (size_t)e.vlen));
        ERR(seg_read_value(seg, ovf, e.vlen, val->data));
        val->len = (size_t)e.vlen;
    }
    *kind = e.kind;
err:
    node_unpin(sp, &leaf);
    return rc;
}
