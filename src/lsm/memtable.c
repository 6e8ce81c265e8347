/*
 * memtable.c -- the memtable: a skiplist of versions in an arena.
 *
 * Order.  Nodes are sorted by key (key_cmp, ascending), then by seq
 * descending, so the versions of one key are adjacent, newest first.  The
 * newest version of key K visible at snapshot S is therefore the first node
 * of K with seq <= S; K is invisible at S when every version has seq > S.
 *
 * Node.  One arena allocation holds the links (level h-1 down to level 0),
 * a 16-byte header, the key and the value, in that order:
 *
 *   [link h-1] ... [link 0] | seq u64 | vlen u32 | klen u16 | kind u8 | height u8 | key | value
 *                           ^ the node pointer
 *
 * so a search step at a low level reads one link, the header and the key,
 * 40 bytes for a 16-byte key, and an insert costs one bump of the arena
 * pointer.  Keys are at most UINT16_MAX bytes (internal keys are at most
 * SHALE_MAX_KEY_SIZE plus a short tree prefix).  A node too large for the
 * arena's chunks gets a block of its own (arena.c); either way it lives
 * until the table is freed.
 *
 * Skiplist.  LevelDB's: a node gets height h with probability 4^-(h-1)
 * (capped at MT_MAX_HEIGHT), drawn from a per-table xorshift generator; the
 * head node has every level.  With 4^12 = 16M the cap stays above any
 * reasonable memtable's entry count.
 *
 * Concurrency.  One writer (the caller serialises mt_add); readers take no
 * lock.  The writer fills a node completely, sets its own next pointers, and
 * only then links it into each level, bottom up, with a release store; readers
 * load next pointers with acquire, so a node reachable by a reader is fully
 * initialised.  A reader may see a node at level 0 but not yet at a higher
 * level: every level is a sorted sublist of level 0, so searches stay correct.
 * `height` (the tallest level in use) is read relaxed: a reader that sees a
 * stale value just starts lower; one that sees a new value finds the head's
 * pointer at that level NULL or set, both fine.
 *
 * Filter.  A table created with mt_create_sized also keeps a blocked Bloom
 * filter of its keys (one 64-byte block per key, 6 bits in it, about 20 bits
 * per key at typical entry sizes), so a point read of a key the table does
 * not hold -- the common case once a tree outgrows its memtable -- costs one
 * cache miss instead of a skiplist search.  The writer sets a key's bits
 * (relaxed atomic OR) before linking its node; a reader whose snapshot
 * includes the write acquired the db's last sequence after the writer
 * released it, so the bits are visible to it.
 */
#include "memtable.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "../space/common.h"
#include "arena.h"
#include "filter.h"

#define MT_MAX_HEIGHT 12
#define MT_BRANCH_BITS 2 /* a node reaches the next level with probability 1/4 */
/* next() walks this many same-key versions before it searches instead. */
#define MT_SKIP_WALK 8

typedef struct mt_node mt_node;

/* Level i's link of node n is ((mt_link *)n)[-1 - i] (see the essay). */
typedef _Atomic(mt_node *) mt_link;

struct mt_node {
    uint64_t seq;
    uint32_t vlen;
    uint16_t klen;
    uint8_t kind;
    uint8_t height;
};

struct mt_table {
    arena arena;
    mt_node *head;
    _Atomic int height; /* levels in use, 1..MT_MAX_HEIGHT */
    uint64_t rnd;       /* xorshift state; writer only */
    _Atomic uint64_t count;
    _Atomic int refs;
    _Atomic uint64_t *bloom; /* bloom_blocks blocks of 8 words, or NULL */
    uint64_t bloom_blocks;
    _Atomic(const mt_range *) ranges; /* range tombstones, newest first */
    _Atomic uint32_t nranges;
};

#define MT_BLOOM_PROBES 6

/* bloom_block -- the first word of h's block. */
static inline _Atomic uint64_t *bloom_block(const mt_table *mt, uint64_t h)
{
    uint64_t b = ((h >> 32) * mt->bloom_blocks) >> 32;
    return mt->bloom + b * 8;
}

/* bloom_add -- set h's bits (writer). */
static void bloom_add(mt_table *mt, uint64_t h)
{
    _Atomic uint64_t *blk = bloom_block(mt, h);
    uint32_t a = (uint32_t)h, d = (uint32_t)(h >> 17) | 1;
    for (int i = 0; i < MT_BLOOM_PROBES; i++, a += d)
        atomic_fetch_or_explicit(&blk[(a >> 6) & 7], 1ull << (a & 63), memory_order_relaxed);
}

bool mt_may_contain(const mt_table *mt, uint64_t h)
{
    if (!mt->bloom)
        return true;
    _Atomic uint64_t *blk = bloom_block(mt, h);
    uint32_t a = (uint32_t)h, d = (uint32_t)(h >> 17) | 1;
    for (int i = 0; i < MT_BLOOM_PROBES; i++, a += d)
        if (!(atomic_load_explicit(&blk[(a >> 6) & 7], memory_order_relaxed) & (1ull << (a & 63))))
            return false;
    return true;
}

/* node_link -- n's level-i link. */
static inline mt_link *node_link(const mt_node *n, int i)
{
    return (mt_link *)n - 1 - i;
}

/* node_key -- the key bytes of n. */
static inline const uint8_t *node_key(const mt_node *n)
{
    return (const uint8_t *)(n + 1);
}

/* node_val -- the value bytes of n. */
static inline const uint8_t *node_val(const mt_node *n)
{
    return node_key(n) + n->klen;
}

/* node_next -- n's successor at level i (acquire: it is fully initialised). */
static inline mt_node *node_next(const mt_node *n, int i)
{
    return atomic_load_explicit(node_link(n, i), memory_order_acquire);
}

/* node_cmp_key -- key_cmp of n's key against key. */
static inline int node_cmp_key(const mt_node *n, const void *key, size_t klen)
{
    return key_cmp(node_key(n), n->klen, key, klen);
}

/* node_before -- whether n sorts before the position (key, seq). */
static inline bool node_before(const mt_node *n, const void *key, size_t klen, uint64_t seq)
{
    int c = node_cmp_key(n, key, klen);
    return c < 0 || (c == 0 && n->seq > seq);
}

/* table_height -- the levels in use (a hint for readers; see the essay). */
static inline int table_height(const mt_table *mt)
{
    return atomic_load_explicit((_Atomic int *)&mt->height, memory_order_relaxed);
}

/* find_ge -- first node at or after (key, seq); fills prev[] when non-NULL. */
static mt_node *find_ge(mt_table *mt, const void *key, size_t klen, uint64_t seq, mt_node **prev)
{
    mt_node *x = mt->head;
    mt_node *last = NULL; /* a node already known not to be before the target */
    int level = table_height(mt) - 1;
    for (;;) {
        mt_node *next = node_next(x, level);
        if (next != NULL && next != last && node_before(next, key, klen, seq)) {
            x = next;
            continue;
        }
        if (prev != NULL)
            prev[level] = x;
        if (level == 0)
            return next;
        last = next;
        level--;
    }
}

/* find_lt_key -- last node whose key is < key, or NULL when there is none. */
static mt_node *find_lt_key(mt_table *mt, const void *key, size_t klen)
{
    mt_node *x = mt->head;
    int level = table_height(mt) - 1;
    for (;;) {
        mt_node *next = node_next(x, level);
        if (next != NULL && node_cmp_key(next, key, klen) < 0) {
            x = next;
            continue;
        }
        if (level == 0)
            return x == mt->head ? NULL : x;
        level--;
    }
}

/* find_gt_key -- first node whose key is > key, or NULL. */
static mt_node *find_gt_key(mt_table *mt, const void *key, size_t klen)
{
    mt_node *x = mt->head;
    int level = table_height(mt) - 1;
    for (;;) {
        mt_node *next = node_next(x, level);
        if (next != NULL && node_cmp_key(next, key, klen) <= 0) {
            x = next;
            continue;
        }
        if (level == 0)
            return next;
        level--;
    }
}

/* find_last -- the last node of the list, or NULL when it is empty. */
static mt_node *find_last(mt_table *mt)
{
    mt_node *x = mt->head;
    int level = table_height(mt) - 1;
    for (;;) {
        mt_node *next = node_next(x, level);
        if (next != NULL) {
            x = next;
            continue;
        }
        if (level == 0)
            return x == mt->head ? NULL : x;
        level--;
    }
}

/* node_new -- allocate and fill a node of height h (links not yet set). */
static mt_node *node_new(mt_table *mt, int h, uint64_t seq, uint8_t kind, const void *key,
                         size_t klen, const void *val, size_t vlen)
{
    size_t links = (size_t)h * sizeof(mt_link);
    uint8_t *p = arena_alloc(&mt->arena, links + sizeof(mt_node) + klen + vlen);
    if (p == NULL)
        return NULL;
    mt_node *n = (mt_node *)(p + links);
    n->seq = seq;
    n->klen = (uint16_t)klen;
    n->vlen = (uint32_t)vlen;
    n->kind = kind;
    n->height = (uint8_t)h;
    uint8_t *k = (uint8_t *)(n + 1);
    if (klen)
        memcpy(k, key, klen);
    if (vlen)
        memcpy(k + klen, val, vlen);
    return n;
}

/* random_height -- 1 + the number of leading 1-in-4 successes, capped. */
static int random_height(mt_table *mt)
{
    uint64_t x = mt->rnd;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    mt->rnd = x;
    int h = 1;
    while (h < MT_MAX_HEIGHT && (x & ((1u << MT_BRANCH_BITS) - 1)) == 0) {
        h++;
        x >>= MT_BRANCH_BITS;
    }
    return h;
}

/* mt_create -- an empty table holding one reference. */
int mt_create(mt_table **mtp) { return mt_create_sized(mtp, 0); }

/* mt_create_sized -- an empty table with a filter sized for expect_bytes. */
int mt_create_sized(mt_table **mtp, size_t expect_bytes)
{
    mt_table *mt = calloc(1, sizeof(*mt));
    if (mt == NULL)
        return SHALE_ENOMEM;
    if (expect_bytes) {
        /* ~10 bits per 64 bytes of memtable: entries are rarely smaller. */
        mt->bloom_blocks = expect_bytes / 64 * 10 / 512 + 1;
        mt->bloom = calloc(mt->bloom_blocks * 8, sizeof *mt->bloom);
        if (!mt->bloom) {
            free(mt);
            return SHALE_ENOMEM;
        }
    }
    arena_init(&mt->arena);
    mt->head = node_new(mt, MT_MAX_HEIGHT, 0, 0, NULL, 0, NULL, 0);
    if (mt->head == NULL) {
        free(mt->bloom);
        free(mt);
        return SHALE_ENOMEM;
    }
    for (int i = 0; i < MT_MAX_HEIGHT; i++)
        atomic_init(node_link(mt->head, i), NULL);
    atomic_init(&mt->height, 1);
    atomic_init(&mt->count, 0);
    atomic_init(&mt->ranges, NULL);
    atomic_init(&mt->nranges, 0);
    atomic_init(&mt->refs, 1);
    mt->rnd = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)mt;
    *mtp = mt;
    return SHALE_OK;
}

/* mt_ref -- take one more reference. */
void mt_ref(mt_table *mt)
{
    atomic_fetch_add_explicit(&mt->refs, 1, memory_order_relaxed);
}

/* mt_unref -- drop a reference; the last one frees the table.  NULL ok. */
void mt_unref(mt_table *mt)
{
    if (mt == NULL || atomic_fetch_sub_explicit(&mt->refs, 1, memory_order_acq_rel) != 1)
        return;
    arena_free(&mt->arena);
    free(mt->bloom);
    free(mt);
}

/* mt_add -- link a new version in (one writer at a time). */
int mt_add(mt_table *mt, uint64_t seq, uint8_t kind, const void *key, size_t klen, const void *val,
           size_t vlen)
{
    mt_node *prev[MT_MAX_HEIGHT];

    if (klen > UINT16_MAX || vlen > UINT32_MAX)
        return SHALE_ETOOBIG;
    int h = random_height(mt);
    int cur = table_height(mt);
    find_ge(mt, key, klen, seq, prev);
    mt_node *n = node_new(mt, h, seq, kind, key, klen, val, vlen);
    if (n == NULL)
        return SHALE_ENOMEM;
    if (mt->bloom)
        bloom_add(mt, filter_hash(key, klen));
    for (int i = cur; i < h; i++)
        prev[i] = mt->head;
    if (h > cur)
        atomic_store_explicit(&mt->height, h, memory_order_relaxed);
    for (int i = 0; i < h; i++) {
        mt_node *next = atomic_load_explicit(node_link(prev[i], i), memory_order_relaxed);
        atomic_store_explicit(node_link(n, i), next, memory_order_relaxed);
        atomic_store_explicit(node_link(prev[i], i), n, memory_order_release);
    }
    uint64_t c = atomic_load_explicit(&mt->count, memory_order_relaxed);
    atomic_store_explicit(&mt->count, c + 1, memory_order_relaxed);
    return SHALE_OK;
}

/* mt_get -- the newest version of key with seq <= snap. */
int mt_get(mt_table *mt, const void *key, size_t klen, uint64_t snap, uint8_t *kind,
           const void **val, size_t *vlen, uint64_t *seq)
{
    mt_node *n = find_ge(mt, key, klen, snap, NULL);
    if (n == NULL || node_cmp_key(n, key, klen) != 0)
        return SHALE_NOTFOUND;
    if (seq)
        *seq = n->seq;
    *kind = n->kind;
    *val = node_val(n);
    *vlen = n->vlen;
    return SHALE_OK;
}

int mt_add_range(mt_table *mt, uint64_t seq, const void *lo, size_t lolen, const void *hi,
                 size_t hilen)
{
    mt_range *r = arena_alloc(&mt->arena, sizeof *r + lolen + hilen);
    if (!r)
        return SHALE_ENOMEM;
    uint8_t *k = (uint8_t *)(r + 1);
    memcpy(k, lo, lolen);
    memcpy(k + lolen, hi, hilen);
    *r = (mt_range){seq, k, k + lolen, lolen, hilen,
                    atomic_load_explicit(&mt->ranges, memory_order_relaxed)};
    atomic_store_explicit(&mt->ranges, r, memory_order_release);
    atomic_fetch_add_explicit(&mt->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&mt->nranges, 1, memory_order_relaxed);
    return SHALE_OK;
}

uint32_t mt_range_count(const mt_table *mt)
{
    return atomic_load_explicit(&((mt_table *)mt)->nranges, memory_order_relaxed);
}

const mt_range *mt_ranges(const mt_table *mt)
{
    return atomic_load_explicit(&((mt_table *)mt)->ranges, memory_order_acquire);
}

bool mt_range_covers(const mt_table *mt, const void *key, size_t klen, uint64_t after,
                     uint64_t upto)
{
    for (const mt_range *r = mt_ranges(mt); r; r = r->next)
        if (r->seq > after && r->seq <= upto && key_cmp(r->lo, r->lolen, key, klen) <= 0 &&
            key_cmp(key, klen, r->hi, r->hilen) < 0)
            return true;
    return false;
}

/* mt_bytes -- memory held by the table (arena chunks used, large values). */
size_t mt_bytes(const mt_table *mt)
{
    return arena_bytes(&mt->arena);
}

/* mt_count -- versions added so far. */
uint64_t mt_count(const mt_table *mt)
{
    return atomic_load_explicit((_Atomic uint64_t *)&mt->count, memory_order_relaxed);
}

/* --- iterator -------------------------------------------------------------- */

/* iter_settle -- from n on, the first node visible at the snapshot.  n must be
 * the first node of its key, or preceded only by invisible versions of it. */
static void iter_settle(mt_iter *it, mt_node *n)
{
    while (n != NULL && n->seq > it->snap)
        n = node_next(n, 0);
    it->node = n;
}

/* iter_back -- position on the last key < key that has a visible version. */
static void iter_back(mt_iter *it, const void *key, size_t klen)
{
    for (;;) {
        mt_node *p = find_lt_key(it->mt, key, klen);
        if (p == NULL) {
            it->node = NULL;
            return;
        }
        key = node_key(p);
        klen = p->klen;
        mt_node *n = find_ge(it->mt, key, klen, it->snap, NULL);
        if (n != NULL && node_cmp_key(n, key, klen) == 0) {
            it->node = n;
            return;
        }
        /* every version of p's key is newer than the snapshot: go further back */
    }
}

/* mt_iter_init -- an unpositioned cursor over mt at snapshot snap. */
void mt_iter_init(mt_iter *it, mt_table *mt, uint64_t snap)
{
    it->mt = mt;
    it->snap = snap;
    it->node = NULL;
}

/* mt_iter_valid -- whether the cursor is on an entry. */
bool mt_iter_valid(const mt_iter *it)
{
    return it->node != NULL;
}

/* mt_iter_first -- to the smallest visible key. */
void mt_iter_first(mt_iter *it)
{
    iter_settle(it, node_next(it->mt->head, 0));
}

/* mt_iter_last -- to the largest visible key. */
void mt_iter_last(mt_iter *it)
{
    mt_node *n = find_last(it->mt);
    if (n == NULL) {
        it->node = NULL;
        return;
    }
    /* n is the oldest version of the last key: look for a visible one of it,
     * else fall back to smaller keys. */
    mt_node *v = find_ge(it->mt, node_key(n), n->klen, it->snap, NULL);
    if (v != NULL && node_cmp_key(v, node_key(n), n->klen) == 0) {
        it->node = v;
        return;
    }
    iter_back(it, node_key(n), n->klen);
}

/* mt_iter_seek_ge -- to the first visible key >= key. */
void mt_iter_seek_ge(mt_iter *it, const void *key, size_t klen)
{
    iter_settle(it, find_ge(it->mt, key, klen, it->snap, NULL));
}

/* mt_iter_seek_le -- to the last visible key <= key. */
void mt_iter_seek_le(mt_iter *it, const void *key, size_t klen)
{
    mt_node *n = find_ge(it->mt, key, klen, it->snap, NULL);
    if (n != NULL && node_cmp_key(n, key, klen) == 0) {
        it->node = n;
        return;
    }
    iter_back(it, key, klen);
}

/* mt_iter_next -- to the next larger visible key. */
void mt_iter_next(mt_iter *it)
{
    mt_node *cur = it->node;
    if (cur == NULL)
        return;
    mt_node *n = node_next(cur, 0);
    for (int i = 0; n != NULL && node_cmp_key(n, node_key(cur), cur->klen) == 0; i++) {
        if (i == MT_SKIP_WALK) {
            n = find_gt_key(it->mt, node_key(cur), cur->klen);
            break;
        }
        n = node_next(n, 0);
    }
    iter_settle(it, n);
}

/* mt_iter_prev -- to the next smaller visible key. */
void mt_iter_prev(mt_iter *it)
{
    mt_node *cur = it->node;
    if (cur != NULL)
        iter_back(it, node_key(cur), cur->klen);
}

bool mt_iter_at(mt_iter *it, const void *key, size_t klen)
{
    mt_node *n = find_ge(it->mt, key, klen, it->snap, NULL);
    it->node = (n && node_cmp_key(n, key, klen) == 0) ? n : NULL;
    return it->node != NULL;
}

bool mt_iter_older(mt_iter *it)
{
    const mt_node *cur = it->node;
    mt_node *n = cur ? node_next(cur, 0) : NULL;
    if (!n || node_cmp_key(n, node_key(cur), cur->klen) != 0)
        return false;
    it->node = n; /* older than a visible version: visible too */
    return true;
}

/* mt_iter_key -- the current key. */
const void *mt_iter_key(const mt_iter *it, size_t *klen)
{
    const mt_node *n = it->node;
    *klen = n->klen;
    return node_key(n);
}

/* mt_iter_kind -- the current entry's NODE_KIND_*. */
uint8_t mt_iter_kind(const mt_iter *it)
{
    return ((const mt_node *)it->node)->kind;
}

/* mt_iter_value -- the current value. */
const void *mt_iter_value(const mt_iter *it, size_t *vlen)
{
    const mt_node *n = it->node;
    *vlen = n->vlen;
    return node_val(n);
}

/* mt_iter_seq -- the current entry's sequence number. */
uint64_t mt_iter_seq(const mt_iter *it)
{
    return ((const mt_node *)it->node)->seq;
}
