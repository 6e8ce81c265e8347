/*
 * segcursor.c -- a cursor over one segment's B+tree, movable both ways.
 *
 * The position is a path stack: for each level from the root down, the
 * pinned page and the index taken in it; the top of the stack is always a
 * leaf and its index the current entry.  Moving to a neighbour changes the
 * top index, and when it runs off the page pops levels until a parent has a
 * sibling in that direction, then descends along the near edge of that
 * sibling's subtree.  Because the stack describes the position exactly, any
 * sequence of moves (direction changes included) needs no re-seek.  A cursor
 * pins at most tree.height pages; leaves may sit at different depths (a
 * parent accepts children of any height), so the depth is the page type's
 * business, bounded by tree.height against cycles.
 *
 * The current key is materialised into a cursor-owned buffer (inline prefix
 * + suffix, or the full key from its overflow run); an inline value is
 * returned in place from the pinned leaf, an overflowed one is read into a
 * cursor buffer on the first seg_cursor_value.
 *
 * Invariants: depth == 0 means unpositioned and nothing pinned; otherwise
 * path[0..depth) are pinned, path[i].idx < path[i].count, path[depth-1] is a
 * leaf and `e`, the key buffer and the value state describe its entry idx.
 * Every move starts by unpinning the old path (or walks it) and, when it
 * fails or runs off an end, leaves the cursor unpositioned.
 */
#include <stdlib.h>
#include <string.h>

#include "segment.h"

typedef struct seg_level {
    node_ref node;
    unsigned idx;
    unsigned count;
} seg_level;

struct seg_cursor {
    seg_segment *seg;
    sp_space *sp;
    uint32_t ps;
    uint32_t maxdepth; /* tree.height */
    uint32_t depth;    /* levels on the path; 0 = unpositioned */
    node_entry e;      /* the current entry, pointing into the top page */
    uint8_t *key;      /* materialised current key */
    size_t klen, kcap;
    uint8_t *vbuf; /* an overflowed value, once read */
    size_t vcap;
    bool vloaded;
    seg_level path[]; /* maxdepth levels */
};

enum { EDGE_FIRST, EDGE_LAST };

/* sc_reset -- unpin the whole path: unpositioned. */
static void sc_reset(seg_cursor *c)
{
    while (c->depth > 0)
        node_unpin(c->sp, &c->path[--c->depth].node);
}

/* sc_top -- the deepest level on the path. */
static inline seg_level *sc_top(seg_cursor *c)
{
    return &c->path[c->depth - 1];
}

/* sc_is_leaf -- whether a level's page is a leaf. */
static inline bool sc_is_leaf(const seg_level *l)
{
    return sp_page_type(l->node.data) == SP_PT_LEAF;
}

/* sc_push -- pin page pgno as the next level down (idx 0). */
static int sc_push(seg_cursor *c, uint64_t pgno)
{
    seg_level *l;

    if (c->depth >= c->maxdepth)
        return SHALE_ECORRUPT; /* deeper than the tree: a cycle or garbage */
    l = &c->path[c->depth];
    RET(seg_node_pin(c->seg, pgno, &l->node));
    l->idx = 0;
    l->count = sp_page_count(l->node.data);
    c->depth++;
    return SHALE_OK;
}

/* sc_push_child -- push the child at the top parent's idx. */
static int sc_push_child(seg_cursor *c)
{
    seg_level *l = sc_top(c);
    node_child ch;

    RET(node_parent_child(l->node.data, l->node.size, l->idx, &ch));
    return sc_push(c, ch.pgno);
}

/* sc_descend -- from the top level (its idx set), follow the first or last
 * child down to a leaf, setting each new level's idx to that edge. */
static int sc_descend(seg_cursor *c, int edge)
{
    while (!sc_is_leaf(sc_top(c))) {
        RET(sc_push_child(c));
        if (edge == EDGE_LAST)
            sc_top(c)->idx = sc_top(c)->count - 1;
    }
    return SHALE_OK;
}

/* sc_load -- decode the top leaf's entry idx and materialise its key. */
static int sc_load(seg_cursor *c)
{
    seg_level *l = sc_top(c);
    node_entry *e = &c->e;
    size_t n;

    RET(node_leaf_entry(l->node.data, l->node.size, l->idx, e));
    c->vloaded = false;
    if (e->key.ovf_pgno != 0) {
        if (e->key.klen > NODE_MAX_KEY ||
            !seg_owns(c->seg, e->key.ovf_pgno,
                      e->key.ovf_pgno + pw_run_pages(c->ps, e->key.klen) - 1))
            return SHALE_ECORRUPT;
        return node_key_copy(c->sp, &e->key, &c->key, &c->kcap, &c->klen);
    }
    n = (size_t)e->key.plen + e->key.slen;
    if (n > c->kcap || c->key == NULL) {
        size_t ncap = MAX(n, MAX(c->kcap * 2, (size_t)64));
        uint8_t *p = realloc(c->key, ncap);

        if (p == NULL)
            return SHALE_ENOMEM;
        c->key = p;
        c->kcap = ncap;
    }
    if (e->key.plen)
        memcpy(c->key, e->key.prefix, e->key.plen);
    if (e->key.slen)
        memcpy(c->key + e->key.plen, e->key.suffix, e->key.slen);
    c->klen = n;
    return SHALE_OK;
}

/* sc_step -- move to the next (dir > 0) or previous entry from a valid
 * path; SHALE_NOTFOUND past either end. */
static int sc_step(seg_cursor *c, int dir)
{
    seg_level *l;

    for (;;) {
        l = sc_top(c);
        if (dir > 0 ? l->idx + 1 < l->count : l->idx > 0)
            break;
        node_unpin(c->sp, &l->node);
        if (--c->depth == 0)
            return SHALE_NOTFOUND;
    }
    l->idx = dir > 0 ? l->idx + 1 : l->idx - 1;
    RET(sc_descend(c, dir > 0 ? EDGE_FIRST : EDGE_LAST));
    return sc_load(c);
}

/* sc_done -- finish a move: anything but SHALE_OK leaves it unpositioned. */
static int sc_done(seg_cursor *c, int rc)
{
    if (rc != SHALE_OK)
        sc_reset(c);
    return rc;
}

/* sc_edge -- position on the first or last entry. */
static int sc_edge(seg_cursor *c, int edge)
{
    sc_reset(c);
    RET(sc_push(c, c->seg->tree.root));
    if (edge == EDGE_LAST)
        sc_top(c)->idx = sc_top(c)->count - 1;
    RET(sc_descend(c, edge));
    return sc_load(c);
}

/* sc_seek -- descend towards key: ge positions on the first entry >= key,
 * otherwise on the last entry <= key. */
static int sc_seek(seg_cursor *c, const void *key, size_t klen, bool ge)
{
    seg_level *l;
    unsigned idx;
    bool exact;

    sc_reset(c);
    RET(sc_push(c, c->seg->tree.root));
    for (l = sc_top(c); !sc_is_leaf(l); l = sc_top(c)) {
        RET(node_parent_search(c->sp, l->node.data, l->node.size, key, klen, &idx));
        if (idx == l->count) { /* key above this subtree's last key */
            if (ge && c->depth == 1)
                return SHALE_NOTFOUND;
            l->idx = l->count - 1;
            RET(sc_descend(c, EDGE_LAST));
            return ge ? sc_step(c, 1) : sc_load(c);
        }
        l->idx = idx;
        RET(sc_push_child(c));
    }
    RET(node_leaf_search(c->sp, l->node.data, l->node.size, key, klen, &idx, &exact));
    if (ge) {
        if (idx < l->count) {
            l->idx = idx;
            return sc_load(c);
        }
        l->idx = l->count - 1;
        return sc_step(c, 1);
    }
    if (exact || idx > 0) {
        l->idx = exact ? idx : idx - 1;
        return sc_load(c);
    }
    l->idx = 0;
    return sc_step(c, -1);
}

/* seg_cursor_open -- an unpositioned cursor holding a reference on seg. */
int seg_cursor_open(seg_segment *seg, seg_cursor **cp)
{
    uint32_t h = seg->tree.height;
    seg_cursor *c;

    *cp = NULL;
    if (h < 1 || h > SEG_MAX_HEIGHT)
        return SHALE_ECORRUPT;
    c = calloc(1, sizeof *c + h * sizeof(seg_level));
    if (c == NULL)
        return SHALE_ENOMEM;
    seg_ref(seg);
    c->seg = seg;
    c->sp = seg->sp;
    c->ps = sp_page_size(seg->sp);
    c->maxdepth = h;
    *cp = c;
    return SHALE_OK;
}

/* seg_cursor_close -- unpin, drop the reference, free. */
void seg_cursor_close(seg_cursor *c)
{
    if (c == NULL)
        return;
    sc_reset(c);
    seg_unref(c->seg);
    free(c->key);
    free(c->vbuf);
    free(c);
}

/* seg_cursor_first -- the smallest key. */
int seg_cursor_first(seg_cursor *c)
{
    return sc_done(c, sc_edge(c, EDGE_FIRST));
}

/* seg_cursor_last -- the largest key. */
int seg_cursor_last(seg_cursor *c)
{
    return sc_done(c, sc_edge(c, EDGE_LAST));
}

/* seg_cursor_seek_ge -- the first key >= key. */
int seg_cursor_seek_ge(seg_cursor *c, const void *key, size_t klen)
{
    const seg_segment *s = c->seg;

    if (key_cmp(key, klen, s->max_key, s->max_len) > 0) {
        sc_reset(c);
        return SHALE_NOTFOUND;
    }
    if (key_cmp(key, klen, s->min_key, s->min_len) <= 0)
        return seg_cursor_first(c);
    return sc_done(c, sc_seek(c, key, klen, true));
}

/* seg_cursor_seek_le -- the last key <= key. */
int seg_cursor_seek_le(seg_cursor *c, const void *key, size_t klen)
{
    const seg_segment *s = c->seg;

    if (key_cmp(key, klen, s->min_key, s->min_len) < 0) {
        sc_reset(c);
        return SHALE_NOTFOUND;
    }
    if (key_cmp(key, klen, s->max_key, s->max_len) >= 0)
        return seg_cursor_last(c);
    return sc_done(c, sc_seek(c, key, klen, false));
}

/* seg_cursor_next -- the following key. */
int seg_cursor_next(seg_cursor *c)
{
    if (c->depth == 0)
        return SHALE_EINVAL;
    return sc_done(c, sc_step(c, 1));
}

/* seg_cursor_prev -- the preceding key. */
int seg_cursor_prev(seg_cursor *c)
{
    if (c->depth == 0)
        return SHALE_EINVAL;
    return sc_done(c, sc_step(c, -1));
}

/* seg_cursor_valid -- whether the cursor is on an entry. */
bool seg_cursor_valid(const seg_cursor *c)
{
    return c->depth > 0;
}

/* seg_cursor_key -- the current key (NULL when unpositioned). */
const void *seg_cursor_key(const seg_cursor *c, size_t *klen)
{
    if (c->depth == 0) {
        *klen = 0;
        return NULL;
    }
    *klen = c->klen;
    return c->key ? (const void *)c->key : (const void *)"";
}

/* seg_cursor_kind -- the current entry's NODE_KIND_* (0 when unpositioned). */
uint8_t seg_cursor_kind(const seg_cursor *c)
{
    return c->depth ? c->e.kind : 0;
}

/* seg_cursor_value_run -- the current value's overflow run, if it has one. */
bool seg_cursor_value_run(const seg_cursor *c, uint64_t *pgno, uint64_t *vlen)
{
    if (c->depth == 0 || c->e.kind == NODE_KIND_TOMBSTONE || c->e.val_ovf_pgno == 0)
        return false;
    *pgno = c->e.val_ovf_pgno;
    *vlen = c->e.vlen;
    return true;
}

/* seg_cursor_value -- the current value: in place, or from its overflow run. */
int seg_cursor_value(seg_cursor *c, const void **val, size_t *vlen)
{
    const node_entry *e = &c->e;
    uint64_t ovf = e->val_ovf_pgno;

    if (c->depth == 0)
        return SHALE_EINVAL;
    if (e->kind == NODE_KIND_TOMBSTONE || e->vlen == 0) {
        *val = "";
        *vlen = 0;
        return SHALE_OK;
    }
    if (ovf == 0) {
        *val = e->val;
        *vlen = (size_t)e->vlen;
        return SHALE_OK;
    }
    if (!c->vloaded) {
        if (e->vlen > SHALE_MAX_VALUE_SIZE)
            return SHALE_ECORRUPT;
        if (e->vlen > c->vcap) {
            uint8_t *p = realloc(c->vbuf, (size_t)e->vlen);

            if (p == NULL)
                return SHALE_ENOMEM;
            c->vbuf = p;
            c->vcap = (size_t)e->vlen;
        }
        RET(seg_read_value(c->seg, ovf, e->vlen, c->vbuf));
        c->vloaded = true;
    }
    *val = c->vbuf;
    *vlen = (size_t)e->vlen;
    return SHALE_OK;
}
