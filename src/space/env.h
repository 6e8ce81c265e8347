/*
 * env.h -- the swappable file-system interface every byte of shale's I/O goes
 * through (the page file, the log files, the lock file, directory listing).
 *
 * The default is sp_env_posix(): pread/pwrite/fdatasync/flock.  Tests install
 * their own env (tests/support/memenv.c) to fail the n-th call of any kind,
 * tear writes, or simulate power loss by dropping writes that were never
 * synced.  So the contract below is what crash safety is built on:
 *
 *   - write() of n bytes either writes all n bytes or returns an error; after an
 *     error the file contents in that range are unspecified.
 *   - Bytes written are visible to later reads at once, but durable only after
 *     sync() of that file returns SHALE_OK.  A power loss may drop, keep, or
 *     tear (at 512-byte granularity) any write not yet synced.
 *   - Creating, removing and truncating files is durable after sync_dir() (for
 *     create/remove) or sync() of the file (for truncate/extend).
 *   - read() past the end of a file returns SHALE_ECORRUPT for the missing part:
 *     callers only read what their checksummed structures say exists.
 *   - lock() takes an exclusive, non-blocking lock; a second lock of the same
 *     path, from this process or another, returns SHALE_EBUSY.
 *   - map and unmap are optional (NULL: not supported; callers then read).
 *     map() reserves `reserve` bytes of address space mapping the file
 *     read-only and shared from offset 0: bytes written by write() show
 *     through it at once, and only the part below the current end of the
 *     file may be touched (beyond it a touch faults: SIGBUS on POSIX).
 *
 * Errors map from errno: ENOSPC/EDQUOT -> SHALE_ENOSPC, ENOMEM -> SHALE_ENOMEM,
 * ENOENT -> SHALE_ENOENT, EEXIST -> SHALE_EEXIST, anything else -> SHALE_EIO.
 */
#ifndef SHALE_ENV_H
#define SHALE_ENV_H

#include <stddef.h>
#include <stdint.h>

typedef struct sp_env sp_env;
typedef struct sp_file sp_file; /* an open file; owned by the env that opened it */
typedef struct sp_lock sp_lock; /* a held lock */

/* Flags for open. */
#define SP_O_CREATE 1u   /* create if missing */
#define SP_O_EXCL 2u     /* with CREATE: fail with SHALE_EEXIST if it exists */
#define SP_O_RDONLY 4u   /* read only */

/* sp_list_fn -- called once per directory entry name ("." and ".." excluded);
 * a non-zero return stops the listing and is returned by list(). */
typedef int (*sp_list_fn)(void *ctx, const char *name);

struct sp_env {
    int (*open)(sp_env *env, const char *path, unsigned flags, sp_file **fp);
    int (*close)(sp_file *f); /* always releases f, even on error */
    int (*read)(sp_file *f, void *buf, size_t n, uint64_t off);
    int (*write)(sp_file *f, const void *buf, size_t n, uint64_t off);
    int (*sync)(sp_file *f); /* data (and size) durable: fdatasync */
    int (*truncate)(sp_file *f, uint64_t size);
    int (*size)(sp_file *f, uint64_t *size);
    int (*remove)(sp_env *env, const char *path);
    int (*mkdir)(sp_env *env, const char *path);  /* SHALE_EEXIST if present */
    int (*exists)(sp_env *env, const char *path); /* 1 yes, 0 no, <0 error */
    int (*list)(sp_env *env, const char *dir, sp_list_fn fn, void *ctx);
    int (*sync_dir)(sp_env *env, const char *dir);
    int (*lock)(sp_env *env, const char *path, sp_lock **lp);
    void (*unlock)(sp_lock *l);
    int (*map)(sp_file *f, uint64_t reserve, const void **addr);   /* optional */
    void (*unmap)(sp_file *f, const void *addr, uint64_t reserve); /* with map */
    void *ctx; /* the implementation's own state */
};

/* sp_env_posix -- the process-wide POSIX env (static; never freed). */
sp_env *sp_env_posix(void);

/* sp_errno_to_rc -- map an errno value as described above. */
int sp_errno_to_rc(int err);

#endif /* SHALE_ENV_H */
