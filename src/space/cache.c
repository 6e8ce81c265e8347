/*
 * cache.c -- the sharded page cache.
 *
 * Layout: up to CACHE_MAX_SHARDS shards, chosen by the top bits of a
 * multiplicative hash of the page number.  Each shard has a mutex, a chained
 * hash table of entries, and a circular CLOCK ring of the same entries.  An
 * entry is one malloc: the struct followed by the page bytes.
 *
 * Invariants (under the shard mutex):
 *   - an entry is `linked` iff it is in both the table and the ring, and then
 *     it is the only linked entry for its page number;
 *   - `refs` counts pins; a pinned entry is never evicted or freed;
 *   - an unlinked entry is owned by its pinners alone and freed on the last put.
 *
 * A hit costs one shard mutex and no allocation.  A miss reads the page with
 * the mutex released, then rechecks: if a concurrent miss inserted the page
 * first, that entry is pinned and the new copy freed, so a page is never
 * cached twice.  cache_drop bumps the shard's epoch; a miss that began before
 * a drop of its shard does not insert what it read (it may be the old
 * contents of a page being rewritten) but hands it to the caller unlinked.
 *
 * Eviction: when a shard is at its budget, the CLOCK hand sweeps at most two
 * rounds, clearing reference bits of unpinned entries and evicting the first
 * unpinned one already clear.  If every entry is pinned the insert goes over
 * budget; the surplus is evicted again as pins are released.
 */
#include "cache.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common.h"

#define CACHE_MAX_SHARDS 64
#define CACHE_MIN_PER_SHARD 8 /* fewer pages per shard make CLOCK useless */

struct sp_page {
    sp_page *hnext;       /* hash chain */
    sp_page *prev, *next; /* CLOCK ring */
    uint64_t pgno;
    uint32_t refs;   /* pins */
    bool linked;     /* in the table and the ring */
    bool referenced; /* CLOCK bit */
    uint8_t data[];
};

typedef struct cache_shard {
    pthread_mutex_t mu;
    sp_page **table;
    size_t mask;    /* buckets - 1 */
    sp_page *hand;  /* CLOCK hand; NULL when the ring is empty */
    size_t count;   /* linked entries */
    size_t cap;     /* budget in entries */
    uint64_t epoch; /* bumped by every cache_drop in this shard */
} cache_shard;

struct sp_cache {
    uint32_t page_size;
    unsigned shift; /* 64 - log2(nshards) */
    unsigned nshards;
    _Atomic uint64_t hits, misses;
    cache_shard *shards;
};

/* cache_hash -- mix a page number (Fibonacci hashing). */
static inline uint64_t cache_hash(uint64_t pgno)
{
    return pgno * 0x9e3779b97f4a7c15ull;
}

/* cache_shard_of -- the shard holding pgno. */
static inline cache_shard *cache_shard_of(sp_cache *c, uint64_t pgno)
{
    return &c->shards[c->nshards > 1 ? cache_hash(pgno) >> c->shift : 0];
}

/* cache_bucket -- the table slot for pgno in shard sh. */
static inline sp_page **cache_bucket(cache_shard *sh, uint64_t pgno)
{
    return &sh->table[(cache_hash(pgno) >> 16) & sh->mask];
}

/* cache_lookup -- the linked entry for pgno, or NULL. */
static sp_page *cache_lookup(cache_shard *sh, uint64_t pgno)
{
    sp_page *e = *cache_bucket(sh, pgno);

    while (e && e->pgno != pgno)
        e = e->hnext;
    return e;
}

/* cache_shard_init -- set up a shard of cap entries. */
static int cache_shard_init(cache_shard *sh, size_t cap)
{
    size_t buckets = 16;

    while (buckets < cap * 2)
        buckets *= 2;
    sh->table = calloc(buckets, sizeof(sp_page *));
    if (sh->table == NULL)
        return SHALE_ENOMEM;
    if (pthread_mutex_init(&sh->mu, NULL) != 0) {
        free(sh->table);
        sh->table = NULL;
        return SHALE_ENOMEM;
    }
    sh->mask = buckets - 1;
    sh->cap = cap;
    return SHALE_OK;
}

/* cache_create -- a cache of about cache_bytes of page_size pages. */
int cache_create(size_t cache_bytes, uint32_t page_size, sp_cache **cp)
{
    size_t pages = page_size ? cache_bytes / page_size : 0;
    unsigned n = CACHE_MAX_SHARDS, log2n = 6;
    sp_cache *c;

    *cp = NULL;
    while (n > 1 && pages / n < CACHE_MIN_PER_SHARD) {
        n /= 2;
        log2n--;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return SHALE_ENOMEM;
    c->shards = calloc(n, sizeof(cache_shard));
    if (c->shards == NULL) {
        free(c);
        return SHALE_ENOMEM;
    }
    c->page_size = page_size;
    c->nshards = n;
    c->shift = 64 - log2n;
    for (unsigned i = 0; i < n; i++) {
        if (cache_shard_init(&c->shards[i], pages / n) < 0) {
            c->nshards = i;
            cache_destroy(c);
            return SHALE_ENOMEM;
        }
    }
    *cp = c;
    return SHALE_OK;
}

/* cache_destroy -- free every linked entry, the shards and the cache. */
void cache_destroy(sp_cache *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->nshards; i++) {
        cache_shard *sh = &c->shards[i];
        for (size_t b = 0; b <= sh->mask; b++) {
            sp_page *e = sh->table[b];
            while (e) {
                sp_page *next = e->hnext;
                free(e);
                e = next;
            }
        }
        free(sh->table);
        pthread_mutex_destroy(&sh->mu);
    }
    free(c->shards);
    free(c);
}

/* cache_link -- add e to the table and the ring (just behind the hand). */
static void cache_link(cache_shard *sh, sp_page *e)
{
    sp_page **b = cache_bucket(sh, e->pgno);

    e->hnext = *b;
    *b = e;
    if (sh->hand == NULL) {
        e->prev = e->next = e;
        sh->hand = e;
    } else {
        e->next = sh->hand;
        e->prev = sh->hand->prev;
        e->prev->next = e;
        sh->hand->prev = e;
    }
    e->linked = true;
    sh->count++;
}

/* cache_unlink -- remove e from the table and the ring. */
static void cache_unlink(cache_shard *sh, sp_page *e)
{
    sp_page **b = cache_bucket(sh, e->pgno);

    while (*b != e)
        b = &(*b)->hnext;
    *b = e->hnext;
    if (e->next == e)
        sh->hand = NULL;
    else {
        e->prev->next = e->next;
        e->next->prev = e->prev;
        if (sh->hand == e)
            sh->hand = e->next;
    }
    e->hnext = e->prev = e->next = NULL;
    e->linked = false;
    sh->count--;
}

/* cache_evict_one -- evict one unpinned entry by CLOCK; false if none. */
static bool cache_evict_one(cache_shard *sh)
{
    for (size_t steps = 2 * sh->count; steps > 0 && sh->hand; steps--) {
        sp_page *e = sh->hand;
        sh->hand = e->next;
        if (e->refs > 0)
            continue;
        if (e->referenced) {
            e->referenced = false;
            continue;
        }
        cache_unlink(sh, e);
        free(e);
        return true;
    }
    return false;
}

/* cache_shrink -- evict unpinned entries while the shard is over budget. */
static void cache_shrink(cache_shard *sh, size_t room)
{
    while (sh->count + room > sh->cap && cache_evict_one(sh))
        ;
}

/* cache_set_budget -- a new byte budget (the shards keep their count); a
 * shard over it sheds unpinned entries now, the rest as pins go. */
void cache_set_budget(sp_cache *c, size_t cache_bytes)
{
    size_t pages = c->page_size ? cache_bytes / c->page_size : 0;
    for (unsigned i = 0; i < c->nshards; i++) {
        cache_shard *sh = &c->shards[i];
        pthread_mutex_lock(&sh->mu);
        sh->cap = MAX(pages / c->nshards, (size_t)1);
        cache_shrink(sh, 0);
        pthread_mutex_unlock(&sh->mu);
    }
}

/* cache_pin -- pin an entry found under the shard mutex. */
static sp_page *cache_pin(sp_page *e)
{
    e->refs++;
    e->referenced = true;
    return e;
}

/* cache_insert -- pin the loaded entry e, or a concurrent twin, and link it. */
static sp_page *cache_insert(cache_shard *sh, sp_page *e, uint64_t epoch)
{
    sp_page *twin;

    pthread_mutex_lock(&sh->mu);
    twin = cache_lookup(sh, e->pgno);
    if (twin) {
        cache_pin(twin);
        pthread_mutex_unlock(&sh->mu);
        free(e);
        return twin;
    }
    e->refs = 1;
    e->referenced = false;
    e->linked = false;
    if (sh->epoch == epoch) {
        cache_shrink(sh, 1);
        cache_link(sh, e);
    }
    pthread_mutex_unlock(&sh->mu);
    return e;
}

/* cache_get -- pin pgno, loading it on a miss. */
int cache_get(sp_cache *c, uint64_t pgno, cache_load_fn load, void *ctx, sp_page **pgp)
{
    cache_shard *sh = cache_shard_of(c, pgno);
    sp_page *e;
    uint64_t epoch;
    int rc;

    *pgp = NULL;
    pthread_mutex_lock(&sh->mu);
    e = cache_lookup(sh, pgno);
    if (e) {
        *pgp = cache_pin(e);
        pthread_mutex_unlock(&sh->mu);
        atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
        return SHALE_OK;
    }
    epoch = sh->epoch;
    pthread_mutex_unlock(&sh->mu);
    atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
    e = malloc(sizeof(*e) + c->page_size);
    if (e == NULL)
        return SHALE_ENOMEM;
    e->pgno = pgno;
    rc = load(ctx, pgno, e->data);
    if (rc < 0) {
        free(e);
        return rc;
    }
    *pgp = cache_insert(sh, e, epoch);
    return SHALE_OK;
}

/* cache_put -- unpin; free an unlinked entry on its last put. */
void cache_put(sp_cache *c, sp_page *pg)
{
    cache_shard *sh;
    bool dead;

    if (pg == NULL)
        return;
    sh = cache_shard_of(c, pg->pgno);
    pthread_mutex_lock(&sh->mu);
    assert(pg->refs > 0);
    pg->refs--;
    dead = pg->refs == 0 && !pg->linked;
    if (!dead && sh->count > sh->cap)
        cache_shrink(sh, 0);
    pthread_mutex_unlock(&sh->mu);
    if (dead)
        free(pg);
}

/* cache_drop -- forget pages [first, first + n). */
void cache_drop(sp_cache *c, uint64_t first, uint64_t n)
{
    for (uint64_t p = first; p - first < n; p++) {
        cache_shard *sh = cache_shard_of(c, p);
        sp_page *e, *dead = NULL;

        pthread_mutex_lock(&sh->mu);
        sh->epoch++;
        e = cache_lookup(sh, p);
        if (e) {
            cache_unlink(sh, e);
            if (e->refs == 0)
                dead = e;
        }
        pthread_mutex_unlock(&sh->mu);
        free(dead);
    }
}

/* cache_counts -- hits and misses so far. */
void cache_counts(sp_cache *c, uint64_t *hits, uint64_t *misses)
{
    if (hits)
        *hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
    if (misses)
        *misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
}

/* sp_page_data -- the bytes of a pinned page or of a mapped one (space.h). */
const uint8_t *sp_page_data(const sp_page *pg)
{
    if (cache_is_mapped(pg))
        return (const uint8_t *)((uintptr_t)pg & ~CACHE_MAPPED_TAG);
    return pg->data;
}
