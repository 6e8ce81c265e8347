/*
 * memenv.h -- an in-memory sp_env for crash, power-loss and fault tests.
 *
 * The file system
 *   A flat map of path -> file, plus a set of directory names made by mkdir.
 *   Paths are plain strings: no "." / ".." resolution, trailing slashes are
 *   ignored.  The parent of "a/b/c" is "a/b"; "", ".", "/" and the parent of a
 *   path without an inner slash ("x", "/x") are roots, which always exist.
 *   Creating a file (open with SP_O_CREATE, lock) needs its parent directory
 *   to exist (SHALE_ENOENT otherwise); mkdir does not check its parent.
 *   list(dir) reports the files and directories whose path is dir + "/" + name
 *   (sorted; the callback runs without the env's mutex held, so it may call
 *   the env).  exists() is true for files and directories.  Every call is
 *   thread-safe (one mutex).
 *
 * The durability model
 *   Each file has its current contents (what reads see), its durable contents
 *   and durable size (what survives a power loss), and the ordered list of
 *   writes made since its last sync (offset and bytes).
 *     - write and truncate change the current contents only.
 *     - sync(file) makes the current contents and size durable.
 *     - A create or a remove changes the current name space only; sync_dir of
 *       the parent makes it durable.  So, at a power loss, a file created and
 *       never dir-synced is gone (even if the file itself was synced: a strict
 *       file system may do that), and a file removed and not dir-synced comes
 *       back with its durable contents.
 *     - mkdir and the removal of an (empty) directory are durable at once.
 *   A power loss (memenv_power_loss, or memenv_crash + memenv_revive) turns
 *   every file's durable image plus its unsynced writes into its new state:
 *   each unsynced write, in order, is independently dropped, kept, or torn --
 *   of its 512-byte-aligned sectors (pieces of the write inside one file
 *   sector) a random subset is kept, the rest keep whatever was there.  An
 *   unsynced truncate is rolled back: the size after the loss is the durable
 *   size, extended by any kept piece of a write that lies past it (a hole in
 *   between reads as zeroes).  The choices come from a PRNG seeded with the
 *   seed given, visiting files in path order, so a seed reproduces a loss.
 *   After the loss, current = durable, every open sp_file and sp_lock is dead
 *   (every call on a dead file returns SHALE_EIO; close and unlock still free
 *   it, so an abandoned engine can still be shut down with shale_close, which
 *   then fails but frees its memory), and all locks are released.
 *
 * Crashing a live engine
 *   Background threads keep calling the env, so a power cut under a running
 *   engine is two steps: memenv_crash (or a sync hook returning non-zero)
 *   freezes the env -- every later call fails with SHALE_EIO and nothing
 *   changes any more -- then the test shuts the old engine down (shale_close
 *   fails with SHALE_EIO but frees everything), then memenv_revive(seed)
 *   applies the power-loss rule to the frozen state and the env is usable for
 *   a reopen.  memenv_power_loss is the same as memenv_crash + memenv_revive in
 *   one step, for tests where nothing else is running.
 *
 * Fault injection
 *   Every env call has a kind (MEM_OP_*).  The env counts calls per kind
 *   (memenv_op_count).  memenv_fail_after / memenv_set_fault make the n-th
 *   following call of the chosen kinds fail (counting from 1) with a chosen
 *   code, once or -- sticky, a dead disk -- on every matching call from then
 *   on.  A failing write may be torn: a random subset of its sectors is
 *   written before it reports the error.  An injected failure changes nothing
 *   else (a failed create creates nothing, a failed sync makes nothing
 *   durable, a failed close still frees the handle).  Calls on a frozen env or
 *   a dead handle fail with SHALE_EIO before they are counted.
 *
 * Deliberate simplifications: no rename/link, no permissions, no capacity
 * limit (inject SHALE_ENOSPC instead; only offsets past 4 GiB get it), a
 * failed sync loses nothing, a read-only handle's write or truncate is
 * SHALE_EIO (as EBADF would be).
 */
#ifndef SHALE_TEST_MEMENV_H
#define SHALE_TEST_MEMENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../src/space/env.h"

typedef struct memenv memenv;

/* Kinds of env calls, for counting and fault injection (a bit mask). */
#define MEM_OP_OPEN 0x0001u
#define MEM_OP_CLOSE 0x0002u
#define MEM_OP_READ 0x0004u
#define MEM_OP_WRITE 0x0008u
#define MEM_OP_SYNC 0x0010u
#define MEM_OP_TRUNCATE 0x0020u
#define MEM_OP_SIZE 0x0040u
#define MEM_OP_REMOVE 0x0080u
#define MEM_OP_MKDIR 0x0100u
#define MEM_OP_EXISTS 0x0200u
#define MEM_OP_LIST 0x0400u
#define MEM_OP_SYNC_DIR 0x0800u
#define MEM_OP_LOCK 0x1000u
#define MEM_OP_ALL 0x1fffu
/* The calls that change what is (or will be) on disk. */
#define MEM_OP_MUTATING                                                                            \
    (MEM_OP_OPEN | MEM_OP_WRITE | MEM_OP_SYNC | MEM_OP_TRUNCATE | MEM_OP_REMOVE | MEM_OP_MKDIR |   \
     MEM_OP_SYNC_DIR | MEM_OP_LOCK)

/* A fault: the n-th matching call from now fails. */
typedef struct memenv_fault {
    uint64_t n;     /* which matching call fails, counting from 1; 0 disarms */
    unsigned kinds; /* MEM_OP_* mask of the calls counted */
    int code;       /* the error returned; 0 means SHALE_EIO */
    bool sticky;    /* every matching call after the n-th fails too (dead disk) */
    bool torn;      /* a failing write first writes a random subset of its sectors */
    uint64_t seed;  /* seeds the choice of torn sectors */
} memenv_fault;

/* memenv_sync_hook -- called before every sync and sync_dir, with point the
 * running count of such calls (from 1) and the file or directory path.  A
 * non-zero return cuts the power there: that call returns SHALE_EIO without
 * syncing and the env is frozen as by memenv_crash.  Called without the env's
 * mutex held (it may call memenv_* functions) and possibly from several
 * threads at once. */
typedef int (*memenv_sync_hook)(void *ctx, uint64_t point, const char *path);

/* memenv_create -- a new, empty env; NULL if out of memory. */
memenv *memenv_create(void);

/* memenv_destroy -- free the env and every file.  Open files and locks should
 * be closed first; any left are freed here and must not be used afterwards. */
void memenv_destroy(memenv *m);

/* memenv_env -- the sp_env to hand to the engine (lives as long as m). */
sp_env *memenv_env(memenv *m);

/* memenv_power_loss -- cut the power and restart at once: apply the
 * power-loss rule (see the top of this file) with the PRNG seeded by seed,
 * kill every open file and lock, unfreeze.  SHALE_ENOMEM if out of memory. */
int memenv_power_loss(memenv *m, uint64_t seed);

/* memenv_crash -- freeze the env: every later call fails with SHALE_EIO (close
 * and unlock still free their handle) until memenv_revive. */
void memenv_crash(memenv *m);

/* memenv_crashed -- whether the env is frozen (by memenv_crash or a hook). */
bool memenv_crashed(memenv *m);

/* memenv_revive -- after memenv_crash or a hook's power cut: apply the power
 * loss with seed and unfreeze (the same as memenv_power_loss). */
int memenv_revive(memenv *m, uint64_t seed);

/* memenv_sync_all -- make everything durable, as if every file and directory
 * had been synced (sets up a clean starting state). */
int memenv_sync_all(memenv *m);

/* memenv_fail_after -- the n-th following call of the given kinds fails once
 * with SHALE_EIO (n = 0 disarms).  Replaces any earlier fault. */
void memenv_fail_after(memenv *m, uint64_t n, unsigned kinds);

/* memenv_set_fault -- arm a fault with every option (NULL disarms). */
void memenv_set_fault(memenv *m, const memenv_fault *f);

/* memenv_faults_injected -- how many calls have failed by injection so far. */
uint64_t memenv_faults_injected(memenv *m);

/* memenv_op_count -- how many calls of the given kinds were made (since
 * memenv_create or memenv_reset_counts); frozen-env and dead-handle calls
 * are not counted. */
uint64_t memenv_op_count(memenv *m, unsigned kinds);

/* memenv_reset_counts -- zero the per-kind call counts. */
void memenv_reset_counts(memenv *m);

/* memenv_set_sync_hook -- install (fn != NULL) or remove the sync hook. */
void memenv_set_sync_hook(memenv *m, memenv_sync_hook fn, void *ctx);

/* memenv_sync_points -- how many sync and sync_dir calls the hook has seen. */
uint64_t memenv_sync_points(memenv *m);

/* memenv_file_bytes -- a malloc'ed copy of the current contents of a file
 * (caller frees *data; *data is NULL for an empty file).  SHALE_ENOENT if
 * there is no such file, SHALE_ENOMEM. */
int memenv_file_bytes(memenv *m, const char *path, uint8_t **data, size_t *len);

/* memenv_durable_size -- the durable size of the contents of the file path
 * names now (whether the name itself is durable is separate), or
 * SHALE_ENOENT. */
int memenv_durable_size(memenv *m, const char *path, uint64_t *size);

/* memenv_corrupt -- flip bits at rest: xor the byte at off with x in the
 * current and durable contents and in any unsynced write covering it.
 * SHALE_ENOENT if no file, SHALE_EINVAL if off is past the current end. */
int memenv_corrupt(memenv *m, const char *path, uint64_t off, uint8_t x);

/* memenv_set_bytes -- overwrite n bytes at off, at rest (current, durable and
 * unsynced writes), extending the file with zeroes if needed. */
int memenv_set_bytes(memenv *m, const char *path, uint64_t off, const void *data, size_t n);

/* memenv_set_size -- truncate or extend a file at rest (current and durable). */
int memenv_set_size(memenv *m, const char *path, uint64_t size);

/* memenv_list_all -- print every directory and file (current size, durable
 * size, unsynced writes, whether the name is durable) to out. */
void memenv_list_all(memenv *m, FILE *out);

#endif /* SHALE_TEST_MEMENV_H */
