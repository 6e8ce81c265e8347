/*
 * env_posix.c -- the default env: POSIX files with pread/pwrite/fdatasync and
 * flock locks.
 *
 * Every call maps errno to a SHALE_E* code through sp_errno_to_rc and never
 * prints or aborts.  Reads and writes loop until the whole range is done,
 * retrying EINTR; a read that hits end of file returns SHALE_ECORRUPT, since
 * callers only read what a checksummed structure says exists.
 *
 * Locks are flock(LOCK_EX | LOCK_NB) on a file of their own.  flock locks
 * belong to the open file description, so a second open + flock of the same
 * path conflicts even inside one process: a second opener of a database in
 * the same process gets SHALE_EBUSY, as it must.  Closing the descriptor
 * releases the lock.
 *
 * map is mmap(PROT_READ, MAP_SHARED) of the whole reservation: the kernel
 * maps file pages into it lazily and the same page cache serves pwrite, so
 * writes show through at once.  Reserving beyond the end of the file costs
 * address space only (a shared read-only file mapping commits no memory).
 *
 * The env itself is a static object with no state (ctx is NULL).
 */
#include "env.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common.h"

struct sp_file {
    int fd;
};

struct sp_lock {
    int fd;
};

/* sp_errno_to_rc -- map an errno value to a SHALE_E* code. */
int sp_errno_to_rc(int err)
{
    switch (err) {
    case ENOSPC:
    case EDQUOT:
        return SHALE_ENOSPC;
    case ENOMEM:
        return SHALE_ENOMEM;
    case ENOENT:
        return SHALE_ENOENT;
    case EEXIST:
        return SHALE_EEXIST;
    default:
        return SHALE_EIO;
    }
}

/* px_open -- open (or create) a file with O_CLOEXEC. */
static int px_open(sp_env *env, const char *path, unsigned flags, sp_file **fp)
{
    int oflags = O_CLOEXEC | ((flags & SP_O_RDONLY) ? O_RDONLY : O_RDWR);
    sp_file *f;
    int fd;

    (void)env;
    *fp = NULL;
    if (path == NULL)
        return SHALE_EINVAL;
    if (flags & SP_O_CREATE)
        oflags |= O_CREAT;
    if ((flags & SP_O_CREATE) && (flags & SP_O_EXCL))
        oflags |= O_EXCL;
    f = malloc(sizeof(*f));
    if (f == NULL)
        return SHALE_ENOMEM;
    do
        fd = open(path, oflags, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int rc = sp_errno_to_rc(errno);
        free(f);
        return rc;
    }
    f->fd = fd;
    *fp = f;
    return SHALE_OK;
}

/* px_close -- close and free f; errors are reported but f is gone either way. */
static int px_close(sp_file *f)
{
    int rc = SHALE_OK;

    if (f == NULL)
        return SHALE_OK;
    /* Linux closes the descriptor even when close() fails: never retry. */
    if (close(f->fd) < 0 && errno != EINTR)
        rc = sp_errno_to_rc(errno);
    free(f);
    return rc;
}

/* px_read -- read exactly n bytes at off; end of file is SHALE_ECORRUPT. */
static int px_read(sp_file *f, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t r = pread(f->fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return sp_errno_to_rc(errno);
        }
        if (r == 0)
            return SHALE_ECORRUPT;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return SHALE_OK;
}

/* px_write -- write exactly n bytes at off. */
static int px_write(sp_file *f, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;

    while (n > 0) {
        ssize_t r = pwrite(f->fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return sp_errno_to_rc(errno);
        }
        if (r == 0)
            return SHALE_EIO;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return SHALE_OK;
}

/* px_sync -- fdatasync: data and the size needed to read it back are durable. */
static int px_sync(sp_file *f)
{
    int r;

    do
        r = fdatasync(f->fd);
    while (r < 0 && errno == EINTR);
    return r < 0 ? sp_errno_to_rc(errno) : SHALE_OK;
}

/* px_truncate -- set the file size (shrink or extend with zeroes). */
static int px_truncate(sp_file *f, uint64_t size)
{
    int r;

    do
        r = ftruncate(f->fd, (off_t)size);
    while (r < 0 && errno == EINTR);
    return r < 0 ? sp_errno_to_rc(errno) : SHALE_OK;
}

/* px_size -- the file's current size in bytes. */
static int px_size(sp_file *f, uint64_t *size)
{
    struct stat st;

    if (fstat(f->fd, &st) < 0)
        return sp_errno_to_rc(errno);
    *size = (uint64_t)st.st_size;
    return SHALE_OK;
}

/* px_remove -- unlink a file. */
static int px_remove(sp_env *env, const char *path)
{
    (void)env;
    return unlink(path) < 0 ? sp_errno_to_rc(errno) : SHALE_OK;
}

/* px_mkdir -- create a directory (0755); SHALE_EEXIST if something is there. */
static int px_mkdir(sp_env *env, const char *path)
{
    (void)env;
    return mkdir(path, 0755) < 0 ? sp_errno_to_rc(errno) : SHALE_OK;
}

/* px_exists -- 1 if path exists, 0 if not, <0 on another error. */
static int px_exists(sp_env *env, const char *path)
{
    struct stat st;

    (void)env;
    if (stat(path, &st) == 0)
        return 1;
    if (errno == ENOENT || errno == ENOTDIR)
        return 0;
    return sp_errno_to_rc(errno);
}

/* px_list -- call fn for each entry of dir except "." and "..". */
static int px_list(sp_env *env, const char *dir, sp_list_fn fn, void *ctx)
{
    DIR *d;
    struct dirent *de;
    int rc = SHALE_OK;

    (void)env;
    d = opendir(dir);
    if (d == NULL)
        return sp_errno_to_rc(errno);
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0)
                rc = sp_errno_to_rc(errno);
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = fn(ctx, de->d_name);
        if (rc != 0)
            break;
    }
    closedir(d);
    return rc;
}

/* px_sync_dir -- fsync a directory so creates and removes in it are durable. */
static int px_sync_dir(sp_env *env, const char *dir)
{
    int fd, r, rc = SHALE_OK;

    (void)env;
    fd = open(dir, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
    if (fd < 0)
        return sp_errno_to_rc(errno);
    do
        r = fsync(fd);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        rc = sp_errno_to_rc(errno);
    close(fd);
    return rc;
}

/* px_lock -- create/open path and take an exclusive, non-blocking flock. */
static int px_lock(sp_env *env, const char *path, sp_lock **lp)
{
    sp_lock *l;
    int fd, r;

    (void)env;
    *lp = NULL;
    l = malloc(sizeof(*l));
    if (l == NULL)
        return SHALE_ENOMEM;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = sp_errno_to_rc(errno);
        free(l);
        return rc;
    }
    do
        r = flock(fd, LOCK_EX | LOCK_NB);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int rc = errno == EWOULDBLOCK ? SHALE_EBUSY : sp_errno_to_rc(errno);
        close(fd);
        free(l);
        return rc;
    }
    l->fd = fd;
    *lp = l;
    return SHALE_OK;
}

/* px_unlock -- release a lock (closing its descriptor drops the flock). */
static void px_unlock(sp_lock *l)
{
    if (l == NULL)
        return;
    close(l->fd);
    free(l);
}

/* px_map -- map reserve bytes of f read-only and shared from offset 0. */
static int px_map(sp_file *f, uint64_t reserve, const void **addr)
{
    void *p;

    *addr = NULL;
    if (reserve == 0 || reserve > SIZE_MAX)
        return SHALE_EINVAL;
    p = mmap(NULL, (size_t)reserve, PROT_READ, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED)
        return sp_errno_to_rc(errno);
    *addr = p;
    return SHALE_OK;
}

/* px_unmap -- undo px_map. */
static void px_unmap(sp_file *f, const void *addr, uint64_t reserve)
{
    (void)f;
    if (addr != NULL)
        munmap((void *)(uintptr_t)addr, (size_t)reserve);
}

static sp_env posix_env = {
    .open = px_open,
    .close = px_close,
    .read = px_read,
    .write = px_write,
    .sync = px_sync,
    .truncate = px_truncate,
    .size = px_size,
    .remove = px_remove,
    .mkdir = px_mkdir,
    .exists = px_exists,
    .list = px_list,
    .sync_dir = px_sync_dir,
    .lock = px_lock,
    .unlock = px_unlock,
    .map = px_map,
    .unmap = px_unmap,
    .ctx = NULL,
};

/* sp_env_posix -- the process-wide POSIX env. */
sp_env *sp_env_posix(void)
{
    return &posix_env;
}
