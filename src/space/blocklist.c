/*
 * blocklist.c -- sets of pages as sorted, consolidated lists of blocks.
 *
 * Invariant (canonical form), holding after every successful call:
 *   v[i].first <= v[i].last, and v[i].last + 1 < v[i + 1].first
 * i.e. blocks are sorted, never overlap and never touch.  Two equal sets thus
 * have equal arrays.  On SHALE_ENOMEM a list is left as it was: every
 * operation reserves or builds its result before it touches the input.
 *
 * Single-block edits (bl_add, bl_remove) find the affected range of blocks by
 * binary search and splice it in place; list operations (union, subtract,
 * intersect, complement) walk both inputs once into a fresh array, so aliasing
 * an input with the output is safe.
 *
 * On-disk encoding (bl_encode / bl_decode), all numbers LEB128 varints:
 *   count                      number of blocks
 *   per block: gap, span       first = end + gap, last = first + span, where
 *                              end = previous last + 1 (0 before the first)
 * Canonical form makes gap >= 1 for every block after the first; the decoder
 * rejects gap 0 there, arithmetic overflow, and counts the input cannot hold
 * (each block takes at least 2 bytes), so arbitrary bytes decode to an error,
 * never to a crash or a huge allocation.  Trailing bytes are left to the
 * caller, who gets the consumed length in *used.
 */
#include "blocklist.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* bl_init -- an empty list with no memory. */
void bl_init(sp_blocklist *bl)
{
    bl->v = NULL;
    bl->n = 0;
    bl->cap = 0;
}

/* bl_free -- release the array; the list becomes empty. */
void bl_free(sp_blocklist *bl)
{
    free(bl->v);
    bl_init(bl);
}

/* bl_clear -- empty the list, keeping its memory. */
void bl_clear(sp_blocklist *bl)
{
    bl->n = 0;
}

/* bl_reserve -- make room for at least `want` blocks. */
static int bl_reserve(sp_blocklist *bl, size_t want)
{
    size_t cap = bl->cap ? bl->cap : 4;
    sp_block *v;

    if (want <= bl->cap)
        return SHALE_OK;
    while (cap < want) {
        if (cap > SIZE_MAX / 2 / sizeof(sp_block))
            return SHALE_ENOMEM;
        cap *= 2;
    }
    v = realloc(bl->v, cap * sizeof(sp_block));
    if (v == NULL)
        return SHALE_ENOMEM;
    bl->v = v;
    bl->cap = cap;
    return SHALE_OK;
}

/* bl_adopt -- replace bl's array with v (n blocks, cap capacity). */
static void bl_adopt(sp_blocklist *bl, sp_block *v, size_t n, size_t cap)
{
    free(bl->v);
    bl->v = v;
    bl->n = n;
    bl->cap = cap;
}

/* bl_new_array -- an array for up to n blocks (at least one). */
static sp_block *bl_new_array(size_t n)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / sizeof(sp_block))
        return NULL;
    return malloc(n * sizeof(sp_block));
}

/* bl_append -- append {first, last} to v[0..*n), merging if it touches the tail. */
static void bl_append(sp_block *v, size_t *n, uint64_t first, uint64_t last)
{
    if (*n > 0 && v[*n - 1].last != UINT64_MAX && v[*n - 1].last + 1 >= first) {
        if (last > v[*n - 1].last)
            v[*n - 1].last = last;
        return;
    }
    v[*n].first = first;
    v[*n].last = last;
    (*n)++;
}

/* bl_copy -- dst becomes a copy of src. */
int bl_copy(sp_blocklist *dst, const sp_blocklist *src)
{
    if (dst == src)
        return SHALE_OK;
    RET(bl_reserve(dst, src->n));
    if (src->n)
        memcpy(dst->v, src->v, src->n * sizeof(sp_block));
    dst->n = src->n;
    return SHALE_OK;
}

/* bl_lower -- index of the first block whose last >= page (n if none). */
static size_t bl_lower(const sp_blocklist *bl, uint64_t page)
{
    size_t lo = 0, hi = bl->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bl->v[mid].last < page)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* bl_upper -- index of the first block whose first > page (n if none). */
static size_t bl_upper(const sp_blocklist *bl, uint64_t page)
{
    size_t lo = 0, hi = bl->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bl->v[mid].first <= page)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* bl_splice -- replace blocks [lo, hi) with the k blocks in rep (room reserved). */
static void bl_splice(sp_blocklist *bl, size_t lo, size_t hi, const sp_block *rep, size_t k)
{
    size_t tail = bl->n - hi;

    assert(lo + k + tail <= bl->cap); /* callers reserve first */
    memmove(bl->v + lo + k, bl->v + hi, tail * sizeof(sp_block));
    if (k)
        memcpy(bl->v + lo, rep, k * sizeof(sp_block));
    bl->n = lo + k + tail;
}

/* bl_add -- union with the block {first, last}. */
int bl_add(sp_blocklist *bl, uint64_t first, uint64_t last)
{
    sp_block b = {first, last};
    size_t lo, hi;

    if (first > last)
        return SHALE_EINVAL;
    /* Blocks that overlap or touch [first, last] merge with it. */
    lo = first == 0 ? 0 : bl_lower(bl, first - 1);
    hi = last == UINT64_MAX ? bl->n : bl_upper(bl, last + 1);
    if (lo == hi)
        RET(bl_reserve(bl, bl->n + 1));
    else {
        b.first = MIN(first, bl->v[lo].first);
        b.last = MAX(last, bl->v[hi - 1].last);
    }
    bl_splice(bl, lo, hi, &b, 1);
    return SHALE_OK;
}

/* bl_remove -- subtract the block {first, last}; may split one block in two. */
int bl_remove(sp_blocklist *bl, uint64_t first, uint64_t last)
{
    sp_block rep[2];
    size_t lo, hi, k = 0;

    if (first > last)
        return SHALE_EINVAL;
    lo = bl_lower(bl, first);
    hi = bl_upper(bl, last);
    if (lo >= hi)
        return SHALE_OK;
    if (bl->v[lo].first < first)
        rep[k++] = (sp_block){bl->v[lo].first, first - 1};
    if (bl->v[hi - 1].last > last)
        rep[k++] = (sp_block){last + 1, bl->v[hi - 1].last};
    if (k > hi - lo)
        RET(bl_reserve(bl, bl->n + 1));
    bl_splice(bl, lo, hi, rep, k);
    return SHALE_OK;
}

/* bl_add_list -- bl = bl union other. */
int bl_add_list(sp_blocklist *bl, const sp_blocklist *other)
{
    size_t i = 0, j = 0, n = 0, cap = bl->n + other->n;
    sp_block *v;

    if (other->n == 0 || bl == other)
        return SHALE_OK;
    v = bl_new_array(cap);
    if (v == NULL)
        return SHALE_ENOMEM;
    while (i < bl->n || j < other->n) {
        const sp_block *b;
        if (j >= other->n || (i < bl->n && bl->v[i].first <= other->v[j].first))
            b = &bl->v[i++];
        else
            b = &other->v[j++];
        bl_append(v, &n, b->first, b->last);
    }
    bl_adopt(bl, v, n, cap ? cap : 1);
    return SHALE_OK;
}

/* bl_subtract -- bl = bl minus other. */
int bl_subtract(sp_blocklist *bl, const sp_blocklist *other)
{
    size_t i, j = 0, n = 0, cap = bl->n + other->n;
    sp_block *v;

    if (bl->n == 0 || other->n == 0)
        return SHALE_OK;
    v = bl_new_array(cap);
    if (v == NULL)
        return SHALE_ENOMEM;
    for (i = 0; i < bl->n; i++) {
        uint64_t cur = bl->v[i].first, end = bl->v[i].last;
        bool done = false;
        while (j < other->n && other->v[j].last < cur)
            j++;
        for (size_t k = j; k < other->n && other->v[k].first <= end; k++) {
            if (other->v[k].first > cur)
                bl_append(v, &n, cur, other->v[k].first - 1);
            if (other->v[k].last >= end) {
                done = true;
                break;
            }
            cur = other->v[k].last + 1;
        }
        if (!done)
            bl_append(v, &n, cur, end);
    }
    bl_adopt(bl, v, n, cap);
    return SHALE_OK;
}

/* bl_intersect -- out = a intersect b (out may alias a or b). */
int bl_intersect(const sp_blocklist *a, const sp_blocklist *b, sp_blocklist *out)
{
    size_t i = 0, j = 0, n = 0, cap = a->n + b->n;
    sp_block *v = bl_new_array(cap);

    if (v == NULL)
        return SHALE_ENOMEM;
    while (i < a->n && j < b->n) {
        uint64_t lo = MAX(a->v[i].first, b->v[j].first);
        uint64_t hi = MIN(a->v[i].last, b->v[j].last);
        if (lo <= hi)
            bl_append(v, &n, lo, hi);
        if (a->v[i].last < b->v[j].last)
            i++;
        else
            j++;
    }
    bl_adopt(out, v, n, cap ? cap : 1);
    return SHALE_OK;
}

/* bl_complement -- out = [lo, hi) minus bl (out may alias bl). */
int bl_complement(const sp_blocklist *bl, uint64_t lo, uint64_t hi, sp_blocklist *out)
{
    size_t n = 0, cap = bl->n + 1;
    uint64_t cur = lo;
    sp_block *v = bl_new_array(cap);

    if (v == NULL)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < bl->n && cur < hi; i++) {
        if (bl->v[i].last < cur)
            continue;
        if (bl->v[i].first >= hi)
            break;
        if (bl->v[i].first > cur)
            bl_append(v, &n, cur, bl->v[i].first - 1);
        if (bl->v[i].last == UINT64_MAX) {
            cur = hi;
            break;
        }
        cur = bl->v[i].last + 1;
    }
    if (cur < hi)
        bl_append(v, &n, cur, hi - 1);
    bl_adopt(out, v, n, cap);
    return SHALE_OK;
}

/* bl_contains -- whether page is in the list. */
bool bl_contains(const sp_blocklist *bl, uint64_t page)
{
    size_t i = bl_lower(bl, page);
    return i < bl->n && bl->v[i].first <= page;
}

/* bl_overlaps -- whether any page of {first, last} is in the list. */
bool bl_overlaps(const sp_blocklist *bl, uint64_t first, uint64_t last)
{
    size_t i = bl_lower(bl, first);
    return i < bl->n && bl->v[i].first <= last;
}

/* bl_overlaps_list -- whether a and b share any page. */
bool bl_overlaps_list(const sp_blocklist *a, const sp_blocklist *b)
{
    size_t i = 0, j = 0;

    while (i < a->n && j < b->n) {
        if (a->v[i].last < b->v[j].first)
            i++;
        else if (b->v[j].last < a->v[i].first)
            j++;
        else
            return true;
    }
    return false;
}

/* bl_pages -- the number of pages in the list. */
uint64_t bl_pages(const sp_blocklist *bl)
{
    uint64_t total = 0;

    for (size_t i = 0; i < bl->n; i++)
        total += bl->v[i].last - bl->v[i].first + 1;
    return total;
}

/* bl_equal -- same set of pages (canonical form makes this a memcmp). */
bool bl_equal(const sp_blocklist *a, const sp_blocklist *b)
{
    if (a->n != b->n)
        return false;
    return a->n == 0 || memcmp(a->v, b->v, a->n * sizeof(sp_block)) == 0;
}

/* bl_encoded_len -- bytes bl_encode will write. */
size_t bl_encoded_len(const sp_blocklist *bl)
{
    size_t len = varint_len(bl->n);
    uint64_t end = 0;

    for (size_t i = 0; i < bl->n; i++) {
        len += varint_len(bl->v[i].first - end);
        len += varint_len(bl->v[i].last - bl->v[i].first);
        end = bl->v[i].last + 1;
    }
    return len;
}

/* bl_encode -- write the encoding at out; returns the bytes written. */
size_t bl_encode(const sp_blocklist *bl, uint8_t *out)
{
    size_t len = varint_put(out, bl->n);
    uint64_t end = 0;

    for (size_t i = 0; i < bl->n; i++) {
        len += varint_put(out + len, bl->v[i].first - end);
        len += varint_put(out + len, bl->v[i].last - bl->v[i].first);
        end = bl->v[i].last + 1;
    }
    return len;
}

/* bl_decode_block -- decode one block after `end` (the previous last + 1). */
static size_t bl_decode_block(const uint8_t *p, const uint8_t *lim, uint64_t end, bool first_block,
                              sp_block *b)
{
    uint64_t gap, span;
    size_t a, c;

    a = varint_get(p, lim, &gap);
    if (a == 0)
        return 0;
    c = varint_get(p + a, lim, &span);
    if (c == 0)
        return 0;
    if ((!first_block && gap == 0) || gap > UINT64_MAX - end)
        return 0;
    b->first = end + gap;
    if (span > UINT64_MAX - b->first)
        return 0;
    b->last = b->first + span;
    return a + c;
}

/* bl_decode -- parse an encoding from [p, p + len) into bl. */
int bl_decode(sp_blocklist *bl, const uint8_t *p, size_t len, size_t *used)
{
    const uint8_t *lim = p + len;
    uint64_t count, end = 0;
    size_t off;
    int rc = SHALE_OK;

    bl_clear(bl);
    *used = 0;
    off = varint_get(p, lim, &count);
    if (off == 0 || count > (len - off) / 2)
        return SHALE_ECORRUPT;
    RET(bl_reserve(bl, (size_t)count));
    for (uint64_t i = 0; i < count; i++) {
        sp_block b;
        size_t k;
        /* A block ending at UINT64_MAX leaves no room for another after it. */
        if (i > 0 && end == 0)
            ERR_SET(SHALE_ECORRUPT);
        k = bl_decode_block(p + off, lim, end, i == 0, &b);
        if (k == 0)
            ERR_SET(SHALE_ECORRUPT);
        bl->v[bl->n++] = b;
        off += k;
        end = b.last + 1;
    }
    *used = off;
    return SHALE_OK;
err:
    bl_clear(bl);
    return rc;
}
