/*
 * arena.c -- the memtable's bump allocator (see arena.h).
 *
 * Every chunk and every large block starts with an arena_block header that
 * links it into one list, so arena_free walks one list.  The counter is
 * updated with relaxed load + store rather than an atomic add: only the one
 * allocating thread writes it, readers only need a recent value.
 */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

struct arena_block {
    arena_block *next;
    size_t pad; /* keeps the data after the header 16-byte aligned */
};

#define ARENA_ALIGN 8u
#define ARENA_BIG (ARENA_CHUNK / 4)

/* arena_add -- count n more bytes as used. */
static void arena_add(arena *a, size_t n)
{
    size_t b = atomic_load_explicit(&a->bytes, memory_order_relaxed);
    atomic_store_explicit(&a->bytes, b + n, memory_order_relaxed);
}

/* arena_init -- an empty arena; the first chunk is allocated on first use. */
void arena_init(arena *a)
{
    a->cur = NULL;
    a->left = 0;
    a->blocks = NULL;
    atomic_init(&a->bytes, 0);
}

/* arena_block_new -- malloc a block of n data bytes and link it in. */
static unsigned char *arena_block_new(arena *a, size_t n)
{
    if (n > SIZE_MAX - sizeof(arena_block))
        return NULL;
    arena_block *b = malloc(sizeof(arena_block) + n);
    if (b == NULL)
        return NULL;
    b->next = a->blocks;
    a->blocks = b;
    arena_add(a, sizeof(arena_block));
    return (unsigned char *)(b + 1);
}

/* arena_alloc_slow -- a large block of its own, or a fresh chunk. */
static void *arena_alloc_slow(arena *a, size_t n)
{
    if (n > ARENA_BIG) {
        void *p = arena_block_new(a, n);
        if (p != NULL)
            arena_add(a, n);
        return p;
    }
    unsigned char *c = arena_block_new(a, ARENA_CHUNK);
    if (c == NULL)
        return NULL;
    arena_add(a, a->left + n); /* the abandoned tail of the old chunk, and n */
    a->cur = c + n;
    a->left = ARENA_CHUNK - n;
    return c;
}

/* arena_alloc -- n bytes, 8-byte aligned; NULL when out of memory. */
void *arena_alloc(arena *a, size_t n)
{
    if (n > SIZE_MAX - ARENA_ALIGN)
        return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (n <= a->left) {
        void *p = a->cur;
        a->cur += n;
        a->left -= n;
        arena_add(a, n);
        return p;
    }
    return arena_alloc_slow(a, n);
}

/* arena_bytes -- memory held, as described in arena.h. */
size_t arena_bytes(const arena *a)
{
    return atomic_load_explicit((_Atomic size_t *)&a->bytes, memory_order_relaxed);
}

/* arena_free -- release every chunk and block; the arena is empty after. */
void arena_free(arena *a)
{
    arena_block *b = a->blocks;
    while (b != NULL) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    arena_init(a);
}
