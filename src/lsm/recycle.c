/*
 * recycle.c -- rebuilding a segment around its untouched subtrees
 * (recycle.h has the contract).
 *
 * The walk.  rb_parent visits a destination parent's children in order and
 * compares each child's last key with the stream's next key: a child whose
 * last key is below it is untouched and joins the current run; a touched
 * child ends the run (flush_run) and is rewritten (a leaf: rb_leaf) or
 * descended into (a parent).  Since the stream is consumed in key order and
 * every stream key up to a child's last key is consumed inside that child,
 * "untouched" needs no other state.  After the root, what is left of the
 * stream goes to the end.  The destination's nodes are pinned one path at a
 * time (at most its height).
 *
 * Accounting, as the walk goes: a rewritten node's pages, a dropped or
 * superseded entry's value run and a rewritten entry's key run go to `dead`;
 * a stream value run written by reference goes to `moved`.  Keys written or
 * recycled go to the filter builder in order, and the first and last become
 * the segment's key range.
 */
#include "recycle.h"

#include <stdlib.h>
#include <string.h>

#include "../space/common.h"
#include "filter.h"

#define RB_PW_HINT 256u

typedef struct rb {
    const seg_store *st;
    sp_space *sp;
    uint32_t ps;
    const seg_segment *dest;
    pw_writer *pw;
    node_builder *nb;
    filter_builder fb;
    rc_stream *src;
    rc_entry se; /* the stream's next entry, when s_valid */
    bool s_valid;
    const rc_filter *flt;
    rc_result *res;
    uint8_t *kb; /* key scratch */
    size_t kcap;
    uint8_t *min_key, *max_key;
    size_t min_len, max_len, max_cap;
    bool have_min;
    uint64_t last_key_run; /* key run of the last key noted by hash_subtree */
    bool *spliced;         /* per stream segment */
    const seg_segment *from; /* the segment hash_subtree reads (NULL: dest) */
    /* figures of the recycled subtrees (the builder counts what it writes) */
    uint64_t leaves, compressed, parents, ovf_pages;
} rb;

/* ---- small helpers ------------------------------------------------------- */

/* dead_add -- pages [first, first + n) are no longer referenced. */
static int dead_add(rb *b, uint64_t first, uint64_t n)
{
    return n ? bl_add(&b->res->dead, first, first + n - 1) : SHALE_OK;
}

/* run_pages -- the pages of a run of len bytes. */
static uint64_t run_pages(const rb *b, uint64_t len)
{
    return pw_run_pages(b->ps, len);
}

/* s_advance -- the stream's next entry. */
static int s_advance(rb *b)
{
    int rc = b->src ? b->src->next(b->src->ctx, &b->se) : SHALE_NOTFOUND;
    b->s_valid = rc == SHALE_OK;
    return rc == SHALE_NOTFOUND ? SHALE_OK : rc;
}

/* note_key -- a key of the new tree, in order: filter and key range. */
static int note_key(rb *b, const void *key, size_t klen)
{
    RET(filter_builder_add(&b->fb, filter_hash(key, klen)));
    if (!b->have_min) {
        if (!(b->min_key = malloc(klen ? klen : 1)))
            return SHALE_ENOMEM;
        if (klen)
            memcpy(b->min_key, key, klen);
        b->min_len = klen;
        b->have_min = true;
    }
    if (klen > b->max_cap || !b->max_key) {
        size_t ncap = MAX(klen, MAX(2 * b->max_cap, (size_t)64));
        uint8_t *p = realloc(b->max_key, ncap);
        if (!p)
            return SHALE_ENOMEM;
        b->max_key = p;
        b->max_cap = ncap;
    }
    if (klen)
        memcpy(b->max_key, key, klen);
    b->max_len = klen;
    return SHALE_OK;
}

/* ---- writing entries -------------------------------------------------------- */

/* emit_stream -- write the stream's current entry (if kept) and advance;
 * merge operands are resolved first (dest: the destination's entry for the
 * key, or NULL when it has none). */
static int emit_stream_over(rb *b, const rc_entry *dest)
{
    const rc_entry *e = &b->se;
    rc_entry r;
    if (e->kind == NODE_KIND_MERGE && b->flt->resolve) {
        RET(b->flt->resolve(b->flt->ctx, e, dest, &r));
        e = &r;
    }
    if (b->flt->keep(b->flt->ctx, e->key, e->klen, e->kind)) {
        if (e->kind != NODE_KIND_TOMBSTONE && e->val_run) {
            uint64_t n = run_pages(b, e->vlen);
            RET(node_builder_add_ovf(b->nb, e->kind, e->key, e->klen, e->val_run, e->vlen));
            RET(bl_add(&b->res->moved, e->val_run, e->val_run + n - 1));
            b->ovf_pages += n;
        } else {
            RET(node_builder_add(b->nb, e->kind, e->key, e->klen, e->val, e->vlen));
        }
        RET(note_key(b, e->key, e->klen));
        b->res->fig.entries_in++;
    }
    return s_advance(b);
}

static int emit_stream(rb *b) { return emit_stream_over(b, NULL); }

/* emit_dest -- write a destination entry again (key in b->kb), if kept. */
static int emit_dest(rb *b, const node_entry *en, size_t klen)
{
    if (en->key.ovf_pgno) /* the builder writes the key's run anew */
        RET(dead_add(b, en->key.ovf_pgno, run_pages(b, en->key.klen)));
    if (!b->flt->keep(b->flt->ctx, b->kb, klen, en->kind) ||
        gy_covered(b->flt->gy, b->kb, klen, b->dest->seq)) {
        if (en->val_ovf_pgno)
            RET(dead_add(b, en->val_ovf_pgno, run_pages(b, en->vlen)));
        return SHALE_OK;
    }
    if (en->val_ovf_pgno) {
        RET(node_builder_add_ovf(b->nb, en->kind, b->kb, klen, en->val_ovf_pgno, en->vlen));
        b->ovf_pages += run_pages(b, en->vlen);
    } else {
        RET(node_builder_add(b->nb, en->kind, b->kb, klen, en->val, en->vlen));
    }
    return note_key(b, b->kb, klen);
}

/* ---- the walk ------------------------------------------------------------- */

/* pin -- a destination node (or of b->from, when hashing a spliced segment). */
static int pin(rb *b, uint64_t pgno, node_ref *r)
{
    return seg_node_pin(b->from ? b->from : b->dest, pgno, r);
}

/* rb_leaf -- rewrite a destination leaf with the stream's entries up to its
 * last key merged in. */
static int rb_leaf(rb *b, uint64_t pgno)
{
    int rc = SHALE_OK;
    node_ref r;
    RET(pin(b, pgno, &r));
    if (sp_page_type(r.data) != SP_PT_LEAF)
        ERR_SET(SHALE_ECORRUPT);
    for (unsigned i = 0; i < sp_page_count(r.data); i++) {
        node_entry en;
        size_t klen;
        int cmp = 1;
        ERR(node_leaf_entry(r.data, r.size, i, &en));
        ERR(node_key_copy(b->sp, &en.key, &b->kb, &b->kcap, &klen));
        while (b->s_valid && (cmp = key_cmp(b->se.key, b->se.klen, b->kb, klen)) < 0)
            ERR(emit_stream(b));
        if (b->s_valid && cmp == 0) { /* the stream's entry supersedes this one */
            /* (merge operands apply to it: it is read before its pages go) */
            rc_entry d = {en.kind, b->kb, klen, en.val, (size_t)en.vlen, en.val_ovf_pgno};
            if (gy_covered(b->flt->gy, b->kb, klen, b->dest->seq))
                d = (rc_entry){NODE_KIND_TOMBSTONE, b->kb, klen, NULL, 0, 0};
            if (en.val_ovf_pgno)
                ERR(dead_add(b, en.val_ovf_pgno, run_pages(b, en.vlen)));
            if (en.key.ovf_pgno)
                ERR(dead_add(b, en.key.ovf_pgno, run_pages(b, en.key.klen)));
            ERR(emit_stream_over(b, &d));
            continue;
        }
        ERR(emit_dest(b, &en, klen));
    }
    ERR(dead_add(b, pgno, r.pages));
    b->res->fig.leaves_rewritten++;
err:
    node_unpin(b->sp, &r);
    return rc;
}

/* hash_subtree -- note every key of a recycled subtree and count its nodes. */
static int hash_subtree(rb *b, uint64_t pgno, uint32_t h)
{
    int rc = SHALE_OK;
    node_ref r;
    RET(pin(b, pgno, &r));
    bool leaf = sp_page_type(r.data) == SP_PT_LEAF;
    if (leaf != (h == 1))
        ERR_SET(SHALE_ECORRUPT);
    for (unsigned i = 0; i < sp_page_count(r.data); i++) {
        if (leaf) {
            node_entry en;
            size_t klen;
            ERR(node_leaf_entry(r.data, r.size, i, &en));
            ERR(node_key_copy(b->sp, &en.key, &b->kb, &b->kcap, &klen));
            ERR(note_key(b, b->kb, klen));
            b->last_key_run = en.key.ovf_pgno;
            if (en.key.ovf_pgno)
                b->ovf_pages += run_pages(b, en.key.klen);
            if (en.val_ovf_pgno)
                b->ovf_pages += run_pages(b, en.vlen);
        } else {
            node_child c;
            ERR(node_parent_child(r.data, r.size, i, &c));
            ERR(hash_subtree(b, c.pgno, h - 1));
        }
    }
    if (leaf) {
        b->leaves++;
        b->compressed += r.img != NULL;
        b->res->fig.leaves_recycled++;
    } else {
        b->parents++;
    }
err:
    node_unpin(b->sp, &r);
    return rc;
}

static int rb_parent(rb *b, uint64_t pgno, uint32_t h);

/* leaf_thin -- whether a leaf is less than half full: of a page, or for a
 * compressed leaf of two pages (images are filled to compress into whole
 * pages, so their size varies with the data; under two pages' worth is a
 * leaf recycling cut short).  Such a leaf is rewritten even when untouched,
 * so the partial leaves recycling leaves behind are merged into their
 * neighbours by the next merge that passes. */
static int leaf_thin(rb *b, uint64_t pgno, bool *thin)
{
    node_ref r;
    RET(pin(b, pgno, &r));
    uint32_t full = r.img ? 4 * b->ps : b->ps;
    *thin = SP_PAGE_HDR + sp_page_used(r.data) < full / 2;
    node_unpin(b->sp, &r);
    return SHALE_OK;
}

/* flush_run -- children [from, to) of parent p (their height h), untouched:
 * reused whole when the run is long enough, else rewritten or descended. */
static int flush_run(rb *b, const node_ref *p, unsigned from, unsigned to, uint32_t h)
{
    bool whole = to - from >= RC_MIN_RUN;
    for (unsigned i = from; i < to; i++) {
        node_child c;
        RET(node_parent_child(p->data, p->size, i, &c));
        if (!whole) {
            RET(h == 1 ? rb_leaf(b, c.pgno) : rb_parent(b, c.pgno, h - 1));
            continue;
        }
        size_t klen;
        RET(hash_subtree(b, c.pgno, h)); /* (uses kb) */
        RET(node_key_copy(b->sp, &c.last, &b->kb, &b->kcap, &klen));
        RET(node_builder_add_child(b->nb, &c, h, b->kb, klen));
        b->res->fig.subtrees_recycled++;
    }
    return SHALE_OK;
}

/* rb_parent -- rebuild a destination parent's subtree (its children have
 * height h). */
static int rb_parent(rb *b, uint64_t pgno, uint32_t h)
{
    int rc = SHALE_OK;
    node_ref r;
    RET(pin(b, pgno, &r));
    if (sp_page_type(r.data) != SP_PT_PARENT || h == 0)
        ERR_SET(SHALE_ECORRUPT);
    unsigned n = sp_page_count(r.data), run = 0;
    for (unsigned i = 0; i < n; i++) {
        node_child c;
        int cmp = 1;
        ERR(node_parent_child(r.data, r.size, i, &c));
        if (b->s_valid)
            ERR(node_key_cmp(b->sp, b->se.key, b->se.klen, &c.last, &cmp));
        bool redo = false; /* rewrite it although untouched */
        if (cmp > 0) {
            size_t klen;
            ERR(node_key_copy(b->sp, &c.last, &b->kb, &b->kcap, &klen));
            /* keys of a dropped tree may lie in it: rewrite to drop them */
            const void *lo = b->have_min ? b->max_key : NULL;
            redo = !b->flt->span_live(b->flt->ctx, lo, b->max_len, b->kb, klen) ||
                   gy_meets(b->flt->gy, lo, b->max_len, b->kb, klen, b->dest->seq);
            if (!redo && h == 1)
                ERR(leaf_thin(b, c.pgno, &redo));
        }
        if (cmp > 0 && !redo) /* no stream key up to this child's last key: untouched */
            continue;
        ERR(flush_run(b, &r, run, i, h));
        ERR(h == 1 ? rb_leaf(b, c.pgno) : rb_parent(b, c.pgno, h - 1));
        run = i + 1;
    }
    ERR(flush_run(b, &r, run, n, h));
    ERR(dead_add(b, pgno, r.pages));
err:
    node_unpin(b->sp, &r);
    return rc;
}

/* ---- splicing stream segments ------------------------------------------------ */

/* lone -- whether stream segment i may be spliced: no tombstone, and no
 * other stream segment's key range touches its own. */
static bool lone(const rb *b, size_t i)
{
    const seg_segment *s = b->src->segs[i];
    if (s->tree.tombstones || b->spliced[i])
        return false;
    for (size_t k = 0; k < b->src->nsegs; k++) {
        const seg_segment *t = b->src->segs[k];
        if (k != i && key_cmp(t->max_key, t->max_len, s->min_key, s->min_len) >= 0 &&
            key_cmp(t->min_key, t->min_len, s->max_key, s->max_len) <= 0)
            return false;
    }
    return true;
}

/* splice -- add stream segment i whole; *done tells whether it was. */
static int splice(rb *b, size_t i, bool *done)
{
    const seg_segment *s = b->src->segs[i];
    *done = false;
    if (!b->flt->span_live(b->flt->ctx, s->min_key, s->min_len, s->max_key, s->max_len) ||
        !b->flt->keep(b->flt->ctx, s->min_key, s->min_len, NODE_KIND_VALUE) ||
        gy_meets(b->flt->gy, s->min_key, s->min_len, s->max_key, s->max_len, s->seq))
        return SHALE_OK; /* a dropped tree's or deleted range's keys: let them be filtered */
    b->from = s;
    int rc = hash_subtree(b, s->tree.root, s->tree.height);
    b->from = NULL;
    RET(rc);
    node_child c = {.pgno = s->tree.root, .entries = s->tree.entries, .tombstones = 0};
    c.last.klen = s->max_len;
    c.last.ovf_pgno = b->last_key_run;
    RET(node_builder_add_child(b->nb, &c, s->tree.height, s->max_key, s->max_len));
    sp_blocklist own = BL_INIT;
    rc = bl_copy(&own, &s->pages);
    if (rc == SHALE_OK && s->filter_pgno)
        rc = bl_remove(&own, s->filter_pgno, s->filter_pgno + run_pages(b, s->filter_bytes) - 1);
    if (rc == SHALE_OK)
        rc = bl_add_list(&b->res->moved, &own);
    bl_free(&own);
    RET(rc);
    b->spliced[i] = true;
    b->res->fig.segs_spliced++;
    b->res->fig.entries_in += s->tree.entries;
    /* the stream goes on after the segment */
    rc = b->src->skip_past(b->src->ctx, s->max_key, s->max_len, &b->se);
    b->s_valid = rc == SHALE_OK;
    *done = true;
    return rc == SHALE_NOTFOUND ? SHALE_OK : rc;
}

/* drain -- the stream past the destination: spliced or written. */
static int drain(rb *b)
{
    while (b->s_valid) {
        bool done = false;
        for (size_t i = 0; i < b->src->nsegs && b->src->skip_past && !done; i++) {
            const seg_segment *s = b->src->segs[i];
            if (key_cmp(b->se.key, b->se.klen, s->min_key, s->min_len) == 0 && lone(b, i))
                RET(splice(b, i, &done));
        }
        if (!done)
            RET(emit_stream(b));
    }
    return SHALE_OK;
}

/* ---- the segment ---------------------------------------------------------- */

/* rb_segment -- the new segment from the finished tree and its filter. */
static int rb_segment(rb *b, uint64_t id, uint64_t gen, uint32_t level, const node_tree_info *t,
                      seg_segment **out)
{
    int rc = SHALE_OK;
    seg_segment *s = NULL;
    uint8_t *filter = NULL;
    size_t flen = 0;
    sp_blocklist written = BL_INIT;

    ERR(filter_builder_finish(&b->fb, FILTER_BITS_PER_KEY, &filter, &flen));
    ERR(seg_create(b->st, &s));
    ERR(pw_run_append(b->pw, SP_PT_FILTER, filter, flen, &s->filter_pgno));
    ERR(pw_finish(b->pw, &written));
    /* From here on the written pages are the segment's. */
    if (b->dest) {
        ERR(bl_copy(&s->pages, &b->dest->pages));
        ERR(bl_subtract(&s->pages, &b->res->dead));
    }
    ERR(bl_add_list(&s->pages, &written));
    ERR(bl_add_list(&s->pages, &b->res->moved));
    s->id = id;
    s->gen = gen;
    s->level = level;
    s->tree = *t;
    s->tree.leaves += b->leaves;
    s->tree.compressed_leaves += b->compressed;
    s->tree.parents += b->parents;
    s->tree.overflow_pages += b->ovf_pages;
    s->filter = filter;
    s->filter_bytes = flen;
    filter = NULL;
    s->min_key = b->min_key;
    s->min_len = b->min_len;
    s->max_key = b->max_key;
    s->max_len = b->max_len;
    b->min_key = b->max_key = NULL;
    b->res->fig.pages_written = bl_pages(&written);
    b->res->fig.parents_written = t->parents;
    *out = s;
    s = NULL;
err:
    if (s && written.n) /* failed after pw_finish: give the written pages back */
        for (size_t i = 0; i < written.n; i++)
            (void)fs_release(sp_freespace_of(b->sp), written.v[i].first, written.v[i].last);
    bl_free(&written);
    free(filter);
    seg_unref(s);
    return rc;
}

int seg_rebuild(const seg_store *st, uint64_t id, uint64_t gen, uint32_t level,
                const seg_segment *dest, rc_stream *src, const rc_filter *keep, rc_result *res)
{
    int rc = SHALE_OK;
    node_tree_info t;
    rb b = {.st = st, .sp = st->sp, .ps = sp_page_size(st->sp), .dest = dest, .src = src,
            .flt = keep, .res = res};

    memset(res, 0, sizeof *res);
    bl_init(&res->dead);
    bl_init(&res->moved);
    filter_builder_init(&b.fb);
    ERR(pw_open(b.sp, gen, RB_PW_HINT, &b.pw));
    ERR(node_builder_open(b.pw, &b.nb));
    ERR(node_builder_set_codec(b.nb, st->codec, st->level));
    ERR(s_advance(&b));
    if (dest && dest->tree.height == 1) {
        ERR(rb_leaf(&b, dest->tree.root));
    } else if (dest) {
        ERR(rb_parent(&b, dest->tree.root, dest->tree.height - 1));
    }
    if (src && src->nsegs && !(b.spliced = calloc(src->nsegs, sizeof *b.spliced)))
        ERR_SET(SHALE_ENOMEM);
    ERR(src ? drain(&b) : SHALE_OK);
    if (dest) { /* the old filter goes; a new one is written */
        if (dest->filter_pgno)
            ERR(dead_add(&b, dest->filter_pgno, run_pages(&b, dest->filter_bytes)));
    }
    rc = node_builder_finish(b.nb, &t);
    b.nb = NULL;
    ERR(rc);
    if (t.entries == 0) { /* nothing left: every page of dest is dead */
        bl_clear(&res->dead);
        if (dest)
            ERR(bl_copy(&res->dead, &dest->pages));
        bl_clear(&res->moved);
        goto err; /* rc is SHALE_OK: pw_abort gives the loans back */
    }
    ERR(rb_segment(&b, id, gen, level, &t, &res->seg));
    pw_close(b.pw);
    b.pw = NULL;
err:
    node_builder_abort(b.nb);
    pw_abort(b.pw);
    filter_builder_free(&b.fb);
    free(b.kb);
    free(b.spliced);
    free(b.min_key);
    free(b.max_key);
    if (rc < 0) {
        bl_free(&res->dead);
        bl_free(&res->moved);
    }
    return rc;
}
