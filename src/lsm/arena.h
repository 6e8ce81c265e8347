/*
 * arena.h -- a bump allocator for one memtable: many small allocations, all
 * freed at once.
 *
 * Memory comes in chunks of ARENA_CHUNK bytes, handed out 8-byte aligned from
 * the current chunk; the tail of a chunk too small for the next request is
 * abandoned.  A request larger than ARENA_CHUNK / 4 gets a block of its own
 * (so a large value wastes no chunk).  Nothing is freed before arena_free.
 *
 * One thread allocates at a time (the memtable's writer).  arena_bytes may be
 * read from any thread: it is an atomic counter of the bytes handed out, plus
 * abandoned chunk tails, plus per-block headers -- the memory the table really
 * holds, minus the unused rest of the current chunk.
 */
#ifndef SHALE_ARENA_H
#define SHALE_ARENA_H

#include <stdatomic.h>
#include <stddef.h>

#define ARENA_CHUNK ((size_t)1 << 20)

typedef struct arena_block arena_block;

typedef struct arena {
    unsigned char *cur;   /* next free byte of the current chunk */
    size_t left;          /* bytes left in the current chunk */
    arena_block *blocks;  /* every chunk and large block, newest first */
    _Atomic size_t bytes; /* see above */
} arena;

void arena_init(arena *a);
/* arena_alloc -- n bytes, 8-byte aligned; NULL when out of memory. */
void *arena_alloc(arena *a, size_t n);
size_t arena_bytes(const arena *a);
void arena_free(arena *a);

#endif
