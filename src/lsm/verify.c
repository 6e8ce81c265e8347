/*
 * verify.c -- shale_verify: a full check of a database opened read-only.
 *
 * One byte per page of the file records what claimed it: the header (slots
 * and spill run), a segment (every node, overflow run and filter run reached
 * from its root, each marked once), or the free list.  A page claimed twice
 * is a fault ("two"), a page left unclaimed is a fault ("none"); a segment's
 * blocklist must be exactly the pages reached from it.
 *
 * A segment is walked from its root with seg_node_pin (page checksums, or
 * every page of a compressed leaf's run, checked by space and cleaf_load).
 * node_*_check verify each node's own layout and key order; across nodes the
 * walk checks that a child's keys lie above its left neighbour's last key,
 * that its last key is the one its parent records, that the counts add up,
 * and that every leaf sits at the tree's height.  Overflow runs are read in
 * full (each page's checksum).  A key run is shared by a leaf entry and the
 * parent records naming that entry, so key runs are claimed from leaves only.
 * The first fault ends the walk and is described in the report.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../space/common.h"
#include "db.h"
#include "filter.h"

enum { OWN_NONE, OWN_HEADER, OWN_LIVE, OWN_FREE };
static const char *const own_name[] = {"none", "header", "live", "free"};

typedef struct vf {
    shale_db *db;
    sp_space *sp;
    uint32_t ps;
    uint64_t npages;
    uint8_t *own;
    shale_verify_report *r;
    const seg_segment *seg;
    uint8_t *kb, *prev; /* key scratch; the last key walked */
    size_t kcap, pcap, plen;
    bool have_prev;
    uint8_t *vbuf;
    size_t vcap;
} vf;

/* fault -- record the first fault and return SHALE_ECORRUPT. */
static int fault(vf *v, uint64_t page, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fault(vf *v, uint64_t page, const char *fmt, ...)
{
    if (!v->r->fault[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->r->fault, sizeof v->r->fault, fmt, ap);
        va_end(ap);
        v->r->bad_page = page;
    }
    return SHALE_ECORRUPT;
}

/* claim -- pages [first, first + n) belong to `what`; each at most once. */
static int claim(vf *v, uint64_t first, uint64_t n, int what)
{
    if (first > v->npages || n > v->npages - first)
        return fault(v, first, "pages %llu..%llu lie beyond the file (%llu pages)",
                     (unsigned long long)first, (unsigned long long)(first + n - 1),
                     (unsigned long long)v->npages);
    for (uint64_t p = first; p < first + n; p++) {
        if (v->own[p] != OWN_NONE)
            return fault(v, p, "page %llu is both %s and %s", (unsigned long long)p,
                         own_name[v->own[p]], own_name[what]);
        v->own[p] = (uint8_t)what;
    }
    return SHALE_OK;
}

/* claim_list -- every block of bl. */
static int claim_list(vf *v, const sp_blocklist *bl, int what)
{
    for (size_t i = 0; i < bl->n; i++)
        RET(claim(v, bl->v[i].first, bl->v[i].last - bl->v[i].first + 1, what));
    return SHALE_OK;
}

/* in_segment -- a run the walk reached must lie in the segment's list. */
static int in_segment(vf *v, uint64_t first, uint64_t n)
{
    if (!seg_owns(v->seg, first, first + n - 1))
        return fault(v, first, "segment %llu reaches page %llu outside its page list",
                     (unsigned long long)v->seg->id, (unsigned long long)first);
    return claim(v, first, n, OWN_LIVE);
}

/* read_run -- read a whole overflow run (its checksums) and claim it. */
static int read_run(vf *v, uint64_t pgno, uint64_t len)
{
    if (len > SIZE_MAX / 2)
        return fault(v, pgno, "an overflow run of %llu bytes", (unsigned long long)len);
    if (len > v->vcap) {
        uint8_t *p = realloc(v->vbuf, (size_t)len);
        if (!p)
            return SHALE_ENOMEM;
        v->vbuf = p;
        v->vcap = (size_t)len;
    }
    int rc = pw_run_read_into(v->sp, pgno, SP_PT_OVERFLOW, v->vbuf, (size_t)len);
    if (rc == SHALE_ECORRUPT)
        return fault(v, pgno, "overflow run at page %llu is damaged", (unsigned long long)pgno);
    RET(rc);
    return in_segment(v, pgno, pw_run_pages(v->ps, len));
}

/* next_key -- key (in v->kb, klen) must follow the last key walked. */
static int next_key(vf *v, size_t klen, uint64_t page)
{
    if (v->have_prev && key_cmp(v->kb, klen, v->prev, v->plen) <= 0)
        return fault(v, page, "keys out of order at page %llu", (unsigned long long)page);
    if (klen > v->pcap || !v->prev) {
        uint8_t *p = realloc(v->prev, klen ? klen : 1);
        if (!p)
            return SHALE_ENOMEM;
        v->prev = p;
        v->pcap = klen ? klen : 1;
    }
    if (klen)
        memcpy(v->prev, v->kb, klen);
    v->plen = klen;
    v->have_prev = true;
    return SHALE_OK;
}

/* walk_leaf -- every entry: key order, runs; counts into *entries, *tombs. */
static int walk_leaf(vf *v, uint64_t pgno, const node_ref *n, uint64_t *entries, uint64_t *tombs)
{
    if (node_leaf_check(n->data, n->size) < 0)
        return fault(v, pgno, "leaf %llu is malformed or out of order", (unsigned long long)pgno);
    for (unsigned i = 0; i < sp_page_count(n->data); i++) {
        node_entry e;
        size_t klen;
        RET(node_leaf_entry(n->data, n->size, i, &e));
        int rc = node_key_copy(v->sp, &e.key, &v->kb, &v->kcap, &klen);
        if (rc == SHALE_ECORRUPT)
            return fault(v, pgno, "a key run of leaf %llu is damaged", (unsigned long long)pgno);
        RET(rc);
        RET(next_key(v, klen, pgno));
        if (e.key.ovf_pgno)
            RET(in_segment(v, e.key.ovf_pgno, pw_run_pages(v->ps, e.key.klen)));
        if (e.val_ovf_pgno)
            RET(read_run(v, e.val_ovf_pgno, e.vlen));
        *tombs += e.kind == NODE_KIND_TOMBSTONE;
        (*entries)++;
    }
    return SHALE_OK;
}

/* walk_node -- the subtree at pgno, of height h: its counts and last key
 * (left in v->prev) are returned for the parent to compare. */
static int walk_node(vf *v, uint64_t pgno, uint32_t h, uint64_t *entries, uint64_t *tombs)
{
    int rc = SHALE_OK;
    node_ref n;
    rc = seg_node_pin(v->seg, pgno, &n);
    if (rc == SHALE_ECORRUPT)
        return fault(v, pgno, "node %llu of segment %llu is damaged or misplaced",
                     (unsigned long long)pgno, (unsigned long long)v->seg->id);
    RET(rc);
    v->r->nodes++;
    ERR(in_segment(v, pgno, n.pages));
    bool leaf = sp_page_type(n.data) == SP_PT_LEAF;
    if (leaf != (h == 1))
        ERR_SET(fault(v, pgno, "node %llu is at the wrong depth", (unsigned long long)pgno));
    if (leaf) {
        ERR(walk_leaf(v, pgno, &n, entries, tombs));
        goto err;
    }
    if (node_parent_check(n.data, n.size) < 0)
        ERR_SET(fault(v, pgno, "parent %llu is malformed or out of order",
                      (unsigned long long)pgno));
    for (unsigned i = 0; i < sp_page_count(n.data); i++) {
        node_child c;
        uint64_t ce = 0, ct = 0;
        int cmp;
        ERR(node_parent_child(n.data, n.size, i, &c));
        ERR(walk_node(v, c.pgno, h - 1, &ce, &ct));
        ERR(node_key_cmp(v->sp, v->prev, v->plen, &c.last, &cmp));
        if (cmp != 0 || ce != c.entries || ct != c.tombstones)
            ERR_SET(fault(v, pgno, "parent %llu: child %u's last key or counts do not match",
                          (unsigned long long)pgno, i));
        *entries += ce;
        *tombs += ct;
    }
err:
    node_unpin(v->sp, &n);
    return rc;
}

/* walk_segment -- one segment: its tree, filter and page list. */
static int walk_segment(vf *v, const seg_segment *s)
{
    uint64_t entries = 0, tombs = 0;
    v->seg = s;
    v->have_prev = false;
    for (size_t i = 0; i < s->pages.n; i++) /* its pages must not be claimed already */
        for (uint64_t p = s->pages.v[i].first; p <= s->pages.v[i].last && p < v->npages; p++)
            if (v->own[p] != OWN_NONE)
                return fault(v, p, "page %llu is both %s and in segment %llu",
                             (unsigned long long)p, own_name[v->own[p]],
                             (unsigned long long)s->id);
    int rc = walk_node(v, s->tree.root, s->tree.height, &entries, &tombs);
    if (rc == SHALE_OK && (entries != s->tree.entries || tombs != s->tree.tombstones))
        rc = fault(v, s->tree.root, "segment %llu holds %llu entries, its descriptor says %llu",
                   (unsigned long long)s->id, (unsigned long long)entries,
                   (unsigned long long)s->tree.entries);
    if (rc == SHALE_OK && s->filter_pgno)
        rc = in_segment(v, s->filter_pgno, pw_run_pages(v->ps, s->filter_bytes));
    /* every listed page reached (they were all unclaimed before the walk) */
    for (size_t i = 0; rc == SHALE_OK && i < s->pages.n; i++)
        for (uint64_t p = s->pages.v[i].first; p <= s->pages.v[i].last; p++)
            if (p >= v->npages || v->own[p] != OWN_LIVE) {
                rc = fault(v, p, "page %llu is listed in segment %llu but not reached from it",
                           (unsigned long long)p, (unsigned long long)s->id);
                break;
            }
    v->r->entries += entries;
    return rc;
}

int shale_verify(shale_db *db, shale_verify_report *r)
{
    int rc = SHALE_OK;
    sp_blocklist hdr = BL_INIT, fr = BL_INIT;
    ver_version *ver = NULL;
    vf v = {.db = db, .r = r};

    if (!db || !r)
        return SHALE_EINVAL;
    memset(r, 0, sizeof *r);
    if (!db->opts.read_only)
        return SHALE_EINVAL;
    v.sp = db->sp;
    v.ps = sp_page_size(db->sp);
    v.npages = fs_file_pages(sp_freespace_of(db->sp));
    if (!(v.own = calloc(v.npages ? v.npages : 1, 1)))
        return SHALE_ENOMEM;
    ERR(sp_header_pages(db->sp, &hdr));
    ERR(claim_list(&v, &hdr, OWN_HEADER));
    ERR(fs_free_list(sp_freespace_of(db->sp), &fr));
    ERR(claim_list(&v, &fr, OWN_FREE));
    uint64_t snap;
    ver = db_pin(db, &snap);
    for (size_t i = 0; i < ver->nsegs; i++)
        ERR(walk_segment(&v, ver->segs[i]));
    for (uint64_t p = 0; p < v.npages; p++) {
        switch (v.own[p]) {
        case OWN_HEADER:
            r->header_pages++;
            break;
        case OWN_LIVE:
            r->live_pages++;
            break;
        case OWN_FREE:
            r->free_pages++;
            break;
        default:
            ERR_SET(fault(&v, p, "page %llu is none of header, live or free",
                          (unsigned long long)p));
        }
    }
    r->file_pages = v.npages;
err:
    if (rc == SHALE_ECORRUPT && !r->fault[0])
        snprintf(r->fault, sizeof r->fault, "a damaged structure");
    ver_unref(ver);
    bl_free(&hdr);
    bl_free(&fr);
    free(v.own);
    free(v.kb);
    free(v.prev);
    free(v.vbuf);
    return rc;
}
