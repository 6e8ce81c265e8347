/*
 * memenv.c -- the in-memory sp_env of the tests: a flat file system with a
 * durability model, power loss, fault injection and sync hooks.  The model is
 * described at the top of memenv.h; this file keeps it as follows.
 *
 * A file's contents live in a node: the current image (`cur`), the durable
 * image (`dur`), the unsynced writes in order (each with a copy of its bytes)
 * and `low`, the smallest current size since the last sync (so a sync knows
 * which tail an unsynced truncate changed without copying the whole file).
 * A name is an entry with two node pointers: `cur`, the node the name refers
 * to now, and `dur`, the node it refers to after a power loss.  Create sets
 * cur, remove clears it, sync_dir copies cur to dur for the entries of a
 * directory; an entry with neither is deleted.  Nodes are reference counted
 * by entries (cur and dur) and open handles, so a removed but open file lives
 * on.  There is no rename or link, so a node is the dur of at most one entry,
 * which is what the power loss walks.
 *
 * Handles (sp_file, sp_lock) are this file's mem_file and mem_lock, cast: the
 * engine never looks inside them.  Both stay on the env's lists until closed
 * (dead or not) so memenv_destroy can free stragglers.  A dead handle has
 * dropped its node and touches nothing but the env's mutex and lists.
 *
 * Locking: one mutex for everything.  The list callback and the sync hook run
 * without it, so they may call back into the env.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "memenv.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/space/common.h"
#include "testutil.h"

#define SECTOR 512u
/* Writes and truncates past this size fail with SHALE_ENOSPC, so a bad offset
 * in the engine becomes an error rather than a giant allocation. */
#define MEM_MAX_FILE ((uint64_t)1 << 32)
#define MEM_NKINDS 13

typedef struct mem_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
} mem_buf;

typedef struct mem_write {
    size_t off;
    size_t len;
    uint8_t *data;
} mem_write;

typedef struct mem_node {
    unsigned refs;
    mem_buf cur;
    mem_buf dur;
    mem_write *w; /* unsynced writes, oldest first */
    size_t nw;
    size_t wcap;
    size_t low; /* smallest cur.len since the last sync */
} mem_node;

typedef struct mem_entry {
    char *path;
    size_t plen;
    mem_node *cur; /* what the name refers to now (NULL: removed) */
    mem_node *dur; /* what it refers to after a power loss (NULL: absent) */
} mem_entry;

typedef struct mem_file {
    memenv *m;
    mem_node *node; /* NULL once dead */
    char *path;
    bool rdonly;
    bool dead;
    struct mem_file *prev, *next;
} mem_file;

typedef struct mem_lock {
    memenv *m;
    char *path;
    bool dead; /* released by a power loss */
    struct mem_lock *prev, *next;
} mem_lock;

struct memenv {
    sp_env env;
    pthread_mutex_t mu;
    mem_entry *files; /* sorted by path */
    size_t nfiles, fcap;
    char **dirs; /* sorted */
    size_t ndirs, dcap;
    mem_file *handles;
    mem_lock *locks;
    bool crashed;
    uint64_t counts[MEM_NKINDS];
    memenv_fault fault;
    uint64_t fault_left; /* matching calls until the fault fires; 0: not armed */
    bool fault_tripped;  /* a sticky fault has fired */
    uint64_t injected;
    tu_rng fault_rng;
    memenv_sync_hook hook;
    void *hook_ctx;
    uint64_t sync_points;
};

/* ---- buffers ---------------------------------------------------------- */

/* buf_reserve -- capacity for at least n bytes. */
static int buf_reserve(mem_buf *b, size_t n)
{
    if (n <= b->cap)
        return SHALE_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL)
        return SHALE_ENOMEM;
    b->p = p;
    b->cap = cap;
    return SHALE_OK;
}

/* buf_resize -- set the length; new bytes are zero (stale capacity is not). */
static int buf_resize(mem_buf *b, size_t n)
{
    if (n > b->len) {
        RET(buf_reserve(b, n));
        memset(b->p + b->len, 0, n - b->len);
    }
    b->len = n;
    return SHALE_OK;
}

/* buf_put -- copy n bytes to off, growing (with zeroes in any hole). */
static int buf_put(mem_buf *b, size_t off, const uint8_t *src, size_t n)
{
    if (off + n > b->len)
        RET(buf_resize(b, off + n));
    if (n > 0)
        memcpy(b->p + off, src, n);
    return SHALE_OK;
}

/* ---- nodes ------------------------------------------------------------ */

static mem_node *node_new(void)
{
    return calloc(1, sizeof(mem_node));
}

static void node_clear_writes(mem_node *nd)
{
    for (size_t i = 0; i < nd->nw; i++)
        free(nd->w[i].data);
    nd->nw = 0;
}

static void node_ref(mem_node *nd)
{
    if (nd != NULL)
        nd->refs++;
}

/* node_unref -- drop a reference; the last one frees the node. */
static void node_unref(mem_node *nd)
{
    if (nd == NULL || --nd->refs > 0)
        return;
    node_clear_writes(nd);
    free(nd->w);
    free(nd->cur.p);
    free(nd->dur.p);
    free(nd);
}

/* node_write -- apply a write to the current image and remember it as
 * unsynced.  On failure nothing has changed. */
static int node_write(mem_node *nd, size_t off, const uint8_t *src, size_t n)
{
    uint8_t *copy;

    if (nd->nw == nd->wcap) {
        size_t cap = nd->wcap ? nd->wcap * 2 : 8;
        mem_write *w = realloc(nd->w, cap * sizeof(*w));
        if (w == NULL)
            return SHALE_ENOMEM;
        nd->w = w;
        nd->wcap = cap;
    }
    copy = malloc(n);
    if (copy == NULL)
        return SHALE_ENOMEM;
    memcpy(copy, src, n);
    if (buf_put(&nd->cur, off, src, n) < 0) {
        free(copy);
        return SHALE_ENOMEM;
    }
    nd->w[nd->nw++] = (mem_write){off, n, copy};
    return SHALE_OK;
}

/* node_truncate -- set the current size; the durable one changes at sync. */
static int node_truncate(mem_node *nd, size_t size)
{
    RET(buf_resize(&nd->cur, size));
    nd->low = MIN(nd->low, size);
    return SHALE_OK;
}

/* node_sync -- make the current image durable.  Only what changed is copied:
 * the tail from the lowest size since the last sync (covers truncates and
 * extensions), and every unsynced write below it. */
static int node_sync(mem_node *nd)
{
    size_t from = MIN(nd->low, nd->dur.len);
    size_t len = nd->cur.len;

    from = MIN(from, len);
    RET(buf_resize(&nd->dur, len));
    if (len > from)
        memcpy(nd->dur.p + from, nd->cur.p + from, len - from);
    for (size_t i = 0; i < nd->nw; i++) {
        size_t s = nd->w[i].off, e = MIN(nd->w[i].off + nd->w[i].len, from);
        if (s < e)
            memcpy(nd->dur.p + s, nd->cur.p + s, e - s);
    }
    node_clear_writes(nd);
    nd->low = len;
    return SHALE_OK;
}

/* node_lose -- the power-loss rule for one file: on top of the durable image
 * each unsynced write, oldest first, is dropped, kept, or torn (each of its
 * sector pieces kept with probability 1/2).  The size is the durable size
 * extended by kept pieces; an unsynced truncate is rolled back.  The result
 * becomes both images. */
static int node_lose(mem_node *nd, tu_rng *rng)
{
    int rc = SHALE_OK;

    for (size_t i = 0; i < nd->nw && rc == SHALE_OK; i++) {
        const mem_write *w = &nd->w[i];
        uint64_t outcome = tu_rng_range(rng, 3); /* 0 drop, 1 keep, 2 tear */
        if (outcome == 0)
            continue;
        for (size_t s = w->off; s < w->off + w->len && rc == SHALE_OK;) {
            size_t e = MIN((s / SECTOR + 1) * SECTOR, w->off + w->len);
            if (outcome == 1 || (tu_rng_next(rng) >> 63))
                rc = buf_put(&nd->dur, s, w->data + (s - w->off), e - s);
            s = e;
        }
    }
    if (rc == SHALE_OK) {
        rc = buf_resize(&nd->cur, nd->dur.len);
        nd->cur.len = nd->dur.len;
        if (rc == SHALE_OK && nd->dur.len > 0)
            memcpy(nd->cur.p, nd->dur.p, nd->dur.len);
    }
    node_clear_writes(nd);
    nd->low = nd->dur.len;
    return rc;
}

/* node_tear -- a failing write that is torn: a random subset of its sector
 * pieces reaches the current image (as unsynced writes). */
static void node_tear(mem_node *nd, size_t off, const uint8_t *src, size_t n, tu_rng *rng)
{
    for (size_t s = off; s < off + n;) {
        size_t e = MIN((s / SECTOR + 1) * SECTOR, off + n);
        if (tu_rng_next(rng) >> 63)
            (void)node_write(nd, s, src + (s - off), e - s);
        s = e;
    }
}

/* ---- paths ------------------------------------------------------------ */

/* path_len -- the length of path without trailing slashes (keeps "/"). */
static size_t path_len(const char *path)
{
    size_t n = strlen(path);

    while (n > 1 && path[n - 1] == '/')
        n--;
    return n;
}

static bool is_root(const char *p, size_t n)
{
    return n == 0 || (n == 1 && (p[0] == '/' || p[0] == '.'));
}

static int path_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, MIN(an, bn));
    return c ? c : (an > bn) - (an < bn);
}

/* in_dir -- if path p is directly inside dir d, the entry's name, else NULL.
 * "/" holds "/x"; "" and "." hold names without a slash. */
static const char *in_dir(const char *p, size_t pn, const char *d, size_t dn)
{
    const char *name;

    if (is_root(d, dn) && d[0] != '/')
        name = p;
    else if (dn == 1 && d[0] == '/')
        name = pn > 1 && p[0] == '/' ? p + 1 : NULL;
    else
        name = pn > dn + 1 && memcmp(p, d, dn) == 0 && p[dn] == '/' ? p + dn + 1 : NULL;
    if (name == NULL || memchr(name, '/', pn - (size_t)(name - p)) != NULL)
        return NULL;
    return name;
}

/* under_dir -- whether p is anywhere below directory d (not a root). */
static bool under_dir(const char *p, size_t pn, const char *d, size_t dn)
{
    return pn > dn + 1 && memcmp(p, d, dn) == 0 && p[dn] == '/';
}

/* file_find -- binary search; *at is the index, or where it would go. */
static mem_entry *file_find(memenv *m, const char *p, size_t n, size_t *at)
{
    size_t lo = 0, hi = m->nfiles;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = path_cmp(m->files[mid].path, m->files[mid].plen, p, n);
        if (c == 0) {
            if (at)
                *at = mid;
            return &m->files[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (at)
        *at = lo;
    return NULL;
}

/* live_node -- the node a path names now, or NULL. */
static mem_node *live_node(memenv *m, const char *p, size_t n)
{
    mem_entry *e = file_find(m, p, n, NULL);
    return e ? e->cur : NULL;
}

/* file_insert -- a new entry at index at, naming nothing yet. */
static mem_entry *file_insert(memenv *m, size_t at, const char *p, size_t n)
{
    char *copy;

    if (m->nfiles == m->fcap) {
        size_t cap = m->fcap ? m->fcap * 2 : 16;
        mem_entry *f = realloc(m->files, cap * sizeof(*f));
        if (f == NULL)
            return NULL;
        m->files = f;
        m->fcap = cap;
    }
    copy = strndup(p, n);
    if (copy == NULL)
        return NULL;
    memmove(&m->files[at + 1], &m->files[at], (m->nfiles - at) * sizeof(mem_entry));
    m->files[at] = (mem_entry){copy, n, NULL, NULL};
    m->nfiles++;
    return &m->files[at];
}

/* file_drop_if_empty -- delete the entry at index at if it names nothing in
 * either view; returns whether it did. */
static bool file_drop_if_empty(memenv *m, size_t at)
{
    mem_entry *e = &m->files[at];

    if (e->cur != NULL || e->dur != NULL)
        return false;
    free(e->path);
    memmove(e, e + 1, (m->nfiles - at - 1) * sizeof(mem_entry));
    m->nfiles--;
    return true;
}

/* dir_find -- binary search over directory names. */
static bool dir_find(memenv *m, const char *p, size_t n, size_t *at)
{
    size_t lo = 0, hi = m->ndirs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = path_cmp(m->dirs[mid], strlen(m->dirs[mid]), p, n);
        if (c == 0) {
            *at = mid;
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return false;
}

static bool dir_exists(memenv *m, const char *p, size_t n)
{
    size_t at;
    return is_root(p, n) || dir_find(m, p, n, &at);
}

/* parent_exists -- whether the directory holding p exists. */
static bool parent_exists(memenv *m, const char *p, size_t n)
{
    const char *slash = NULL;

    for (size_t i = n; i > 0; i--) {
        if (p[i - 1] == '/') {
            slash = p + i - 1;
            break;
        }
    }
    if (slash == NULL || slash == p)
        return true; /* the parent is a root */
    return dir_exists(m, p, (size_t)(slash - p));
}

/* create_file -- a new empty node named p (entry at index at, e if exists). */
static int create_file(memenv *m, mem_entry *e, size_t at, const char *p, size_t n, mem_node **out)
{
    mem_node *nd;

    if (!parent_exists(m, p, n))
        return SHALE_ENOENT;
    nd = node_new();
    if (nd == NULL)
        return SHALE_ENOMEM;
    if (e == NULL && (e = file_insert(m, at, p, n)) == NULL) {
        free(nd);
        return SHALE_ENOMEM;
    }
    nd->refs = 1;
    e->cur = nd;
    *out = nd;
    return SHALE_OK;
}

/* ---- accounting ------------------------------------------------------- */

/* op_begin -- the common start of every env call, with m locked: a frozen env
 * or a dead handle fails uncounted; otherwise count the call and apply any
 * armed fault.  Returns SHALE_OK or the error the call must return; *fault is
 * set when the error was injected. */
static int op_begin(memenv *m, unsigned kind, bool dead, bool *fault)
{
    int code = m->fault.code ? m->fault.code : SHALE_EIO;

    if (fault)
        *fault = false;
    if (m->crashed || dead)
        return SHALE_EIO;
    m->counts[__builtin_ctz(kind)]++;
    if (!(m->fault.kinds & kind))
        return SHALE_OK;
    if (!m->fault_tripped) {
        if (m->fault_left == 0 || --m->fault_left > 0)
            return SHALE_OK;
        m->fault_tripped = m->fault.sticky;
    }
    m->injected++;
    if (fault)
        *fault = true;
    return code;
}

static memenv *env_of(sp_env *env)
{
    return env->ctx;
}

/* hook_point -- count a sync point and run the hook outside the mutex; true
 * if the hook cut the power (the env is then frozen). */
static bool hook_point(memenv *m, const char *path)
{
    memenv_sync_hook fn;
    void *ctx;
    uint64_t point;

    pthread_mutex_lock(&m->mu);
    point = ++m->sync_points;
    fn = m->hook;
    ctx = m->hook_ctx;
    pthread_mutex_unlock(&m->mu);
    if (fn == NULL || fn(ctx, point, path) == 0)
        return false;
    pthread_mutex_lock(&m->mu);
    m->crashed = true;
    pthread_mutex_unlock(&m->mu);
    return true;
}

/* ---- the sp_env calls ----------------------------------------------- */

/* me_open -- open or create a file; directories cannot be opened. */
static int me_open(sp_env *env, const char *path, unsigned flags, sp_file **fp)
{
    memenv *m = env_of(env);
    mem_file *f;
    mem_entry *e;
    mem_node *nd;
    size_t n, at;
    int rc;

    if (fp == NULL)
        return SHALE_EINVAL;
    *fp = NULL;
    if (path == NULL)
        return SHALE_EINVAL;
    n = path_len(path);
    f = calloc(1, sizeof(*f));
    if (f == NULL || (f->path = strndup(path, n)) == NULL) {
        free(f);
        return SHALE_ENOMEM;
    }
    pthread_mutex_lock(&m->mu);
    ERR(op_begin(m, MEM_OP_OPEN, false, NULL));
    if (dir_exists(m, path, n))
        ERR_SET(SHALE_EIO); /* EISDIR */
    e = file_find(m, path, n, &at);
    nd = e ? e->cur : NULL;
    if (nd != NULL && (flags & SP_O_CREATE) && (flags & SP_O_EXCL))
        ERR_SET(SHALE_EEXIST);
    if (nd == NULL && !(flags & SP_O_CREATE))
        ERR_SET(SHALE_ENOENT);
    if (nd == NULL)
        ERR(create_file(m, e, at, path, n, &nd));
    node_ref(nd);
    f->m = m;
    f->node = nd;
    f->rdonly = (flags & SP_O_RDONLY) != 0;
    f->next = m->handles;
    if (m->handles)
        m->handles->prev = f;
    m->handles = f;
    pthread_mutex_unlock(&m->mu);
    *fp = (sp_file *)f;
    return SHALE_OK;
err:
    pthread_mutex_unlock(&m->mu);
    free(f->path);
    free(f);
    return rc;
}

/* me_close -- release a handle, dead or alive; always frees it. */
static int me_close(sp_file *sf)
{
    mem_file *f = (mem_file *)sf;
    memenv *m;
    int rc;

    if (f == NULL)
        return SHALE_OK;
    m = f->m;
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_CLOSE, f->dead, NULL);
    if (f->prev)
        f->prev->next = f->next;
    else
        m->handles = f->next;
    if (f->next)
        f->next->prev = f->prev;
    node_unref(f->node);
    pthread_mutex_unlock(&m->mu);
    free(f->path);
    free(f);
    return rc;
}

/* me_read -- copy out what exists; a range past the end is SHALE_ECORRUPT. */
static int me_read(sp_file *sf, void *buf, size_t n, uint64_t off)
{
    mem_file *f = (mem_file *)sf;
    memenv *m = f->m;
    int rc;

    if (buf == NULL && n > 0)
        return SHALE_EINVAL;
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_READ, f->dead, NULL);
    if (rc == SHALE_OK && n > 0) {
        const mem_buf *b = &f->node->cur;
        size_t avail = off >= b->len ? 0 : MIN(n, b->len - (size_t)off);
        if (avail > 0)
            memcpy(buf, b->p + off, avail);
        if (avail < n)
            rc = SHALE_ECORRUPT;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* me_write -- change the current image; durable only after sync.  An
 * injected failure may be torn (fault.torn). */
static int me_write(sp_file *sf, const void *buf, size_t n, uint64_t off)
{
    mem_file *f = (mem_file *)sf;
    memenv *m = f->m;
    bool fault;
    int rc;

    if (buf == NULL && n > 0)
        return SHALE_EINVAL;
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_WRITE, f->dead, &fault);
    if (rc == SHALE_OK && f->rdonly)
        rc = SHALE_EIO; /* EBADF */
    else if (rc == SHALE_OK && (off > MEM_MAX_FILE || n > MEM_MAX_FILE - off))
        rc = SHALE_ENOSPC;
    else if (fault && m->fault.torn && !f->rdonly && off <= MEM_MAX_FILE && n <= MEM_MAX_FILE - off)
        node_tear(f->node, (size_t)off, buf, n, &m->fault_rng);
    else if (rc == SHALE_OK && n > 0)
        rc = node_write(f->node, (size_t)off, buf, n);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* me_sync -- a sync point for the hook, then make the file durable. */
static int me_sync(sp_file *sf)
{
    mem_file *f = (mem_file *)sf;
    memenv *m = f->m;
    int rc;

    pthread_mutex_lock(&m->mu);
    rc = m->crashed || f->dead ? SHALE_EIO : SHALE_OK;
    pthread_mutex_unlock(&m->mu);
    if (rc < 0 || hook_point(m, f->path))
        return SHALE_EIO;
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_SYNC, f->dead, NULL);
    if (rc == SHALE_OK)
        rc = node_sync(f->node);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* me_truncate -- set the current size; durable at the next sync. */
static int me_truncate(sp_file *sf, uint64_t size)
{
    mem_file *f = (mem_file *)sf;
    memenv *m = f->m;
    int rc;

    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_TRUNCATE, f->dead, NULL);
    if (rc == SHALE_OK && f->rdonly)
        rc = SHALE_EIO;
    else if (rc == SHALE_OK && size > MEM_MAX_FILE)
        rc = SHALE_ENOSPC;
    else if (rc == SHALE_OK)
        rc = node_truncate(f->node, (size_t)size);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* me_size -- the current size. */
static int me_size(sp_file *sf, uint64_t *size)
{
    mem_file *f = (mem_file *)sf;
    memenv *m = f->m;
    int rc;

    if (size == NULL)
        return SHALE_EINVAL;
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_SIZE, f->dead, NULL);
    if (rc == SHALE_OK)
        *size = f->node->cur.len;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* remove_dir -- remove an empty directory (durable at once). */
static int remove_dir(memenv *m, const char *p, size_t n, size_t at)
{
    for (size_t i = 0; i < m->nfiles; i++)
        if (under_dir(m->files[i].path, m->files[i].plen, p, n))
            return SHALE_EIO; /* ENOTEMPTY, or a removal not yet durable */
    for (size_t i = 0; i < m->ndirs; i++)
        if (under_dir(m->dirs[i], strlen(m->dirs[i]), p, n))
            return SHALE_EIO;
    free(m->dirs[at]);
    memmove(&m->dirs[at], &m->dirs[at + 1], (m->ndirs - at - 1) * sizeof(char *));
    m->ndirs--;
    return SHALE_OK;
}

/* me_remove -- unname a file (durable after sync_dir) or remove an empty
 * directory. */
static int me_remove(sp_env *env, const char *path)
{
    memenv *m = env_of(env);
    mem_entry *e;
    size_t n, at;
    int rc;

    if (path == NULL)
        return SHALE_EINVAL;
    n = path_len(path);
    pthread_mutex_lock(&m->mu);
    ERR(op_begin(m, MEM_OP_REMOVE, false, NULL));
    if (is_root(path, n))
        ERR_SET(SHALE_EIO);
    if (dir_find(m, path, n, &at))
        ERR(remove_dir(m, path, n, at));
    else if ((e = file_find(m, path, n, &at)) != NULL && e->cur != NULL) {
        node_unref(e->cur);
        e->cur = NULL;
        (void)file_drop_if_empty(m, at);
    } else
        ERR_SET(SHALE_ENOENT);
err:
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* me_mkdir -- a directory name, durable at once. */
static int me_mkdir(sp_env *env, const char *path)
{
    memenv *m = env_of(env);
    size_t n, at;
    char *copy;
    int rc;

    if (path == NULL)
        return SHALE_EINVAL;
    n = path_len(path);
    pthread_mutex_lock(&m->mu);
    ERR(op_begin(m, MEM_OP_MKDIR, false, NULL));
    if (is_root(path, n) || dir_find(m, path, n, &at) || live_node(m, path, n) != NULL)
        ERR_SET(SHALE_EEXIST);
    if (m->ndirs == m->dcap) {
        size_t cap = m->dcap ? m->dcap * 2 : 8;
        char **d = realloc(m->dirs, cap * sizeof(*d));
        if (d == NULL)
            ERR_SET(SHALE_ENOMEM);
        m->dirs = d;
        m->dcap = cap;
    }
    if ((copy = strndup(path, n)) == NULL)
        ERR_SET(SHALE_ENOMEM);
    memmove(&m->dirs[at + 1], &m->dirs[at], (m->ndirs - at) * sizeof(char *));
    m->dirs[at] = copy;
    m->ndirs++;
err:
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* me_exists -- 1 for a file or directory named path now, else 0. */
static int me_exists(sp_env *env, const char *path)
{
    memenv *m = env_of(env);
    size_t n;
    int rc;

    if (path == NULL)
        return SHALE_EINVAL;
    n = path_len(path);
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_EXISTS, false, NULL);
    if (rc == SHALE_OK)
        rc = dir_exists(m, path, n) || live_node(m, path, n) != NULL;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* collect_names -- copies of the names of the live files and directories
 * directly inside dir, sorted. */
static int collect_names(memenv *m, const char *d, size_t dn, char ***out, size_t *count)
{
    char **names = malloc((m->nfiles + m->ndirs + 1) * sizeof(char *));
    size_t k = 0;

    if (names == NULL)
        return SHALE_ENOMEM;
    for (size_t i = 0; i < m->nfiles + m->ndirs; i++) {
        bool isfile = i < m->nfiles;
        const char *p = isfile ? m->files[i].path : m->dirs[i - m->nfiles];
        const char *name = in_dir(p, strlen(p), d, dn);
        if (name == NULL || (isfile && m->files[i].cur == NULL))
            continue;
        if ((names[k] = strdup(name)) == NULL) {
            while (k > 0)
                free(names[--k]);
            free(names);
            return SHALE_ENOMEM;
        }
        k++;
    }
    qsort(names, k, sizeof(char *), name_cmp);
    *out = names;
    *count = k;
    return SHALE_OK;
}

/* me_list -- call fn for each name in dir, without the mutex held. */
static int me_list(sp_env *env, const char *dir, sp_list_fn fn, void *ctx)
{
    memenv *m = env_of(env);
    char **names = NULL;
    size_t count = 0, i = 0, n;
    int rc;

    if (dir == NULL || fn == NULL)
        return SHALE_EINVAL;
    n = path_len(dir);
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_LIST, false, NULL);
    if (rc == SHALE_OK && !dir_exists(m, dir, n))
        rc = SHALE_ENOENT;
    if (rc == SHALE_OK)
        rc = collect_names(m, dir, n, &names, &count);
    pthread_mutex_unlock(&m->mu);
    for (; rc == 0 && i < count; i++)
        rc = fn(ctx, names[i]);
    for (i = 0; i < count; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* me_sync_dir -- a sync point for the hook, then make the creates and removes
 * of the files directly inside dir durable. */
static int me_sync_dir(sp_env *env, const char *dir)
{
    memenv *m = env_of(env);
    size_t n;
    int rc;

    if (dir == NULL)
        return SHALE_EINVAL;
    n = path_len(dir);
    pthread_mutex_lock(&m->mu);
    rc = m->crashed ? SHALE_EIO : SHALE_OK;
    pthread_mutex_unlock(&m->mu);
    if (rc < 0 || hook_point(m, dir))
        return SHALE_EIO;
    pthread_mutex_lock(&m->mu);
    rc = op_begin(m, MEM_OP_SYNC_DIR, false, NULL);
    if (rc == SHALE_OK && !dir_exists(m, dir, n))
        rc = SHALE_ENOENT;
    for (size_t i = 0; rc == SHALE_OK && i < m->nfiles;) {
        mem_entry *e = &m->files[i];
        if (in_dir(e->path, e->plen, dir, n) != NULL && e->dur != e->cur) {
            node_ref(e->cur);
            node_unref(e->dur);
            e->dur = e->cur;
            if (file_drop_if_empty(m, i))
                continue;
        }
        i++;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* lock_held -- whether a live lock holds path. */
static bool lock_held(memenv *m, const char *p)
{
    for (mem_lock *l = m->locks; l != NULL; l = l->next)
        if (!l->dead && strcmp(l->path, p) == 0)
            return true;
    return false;
}

/* me_lock -- exclusive per path; creates the (empty) lock file like POSIX. */
static int me_lock(sp_env *env, const char *path, sp_lock **lp)
{
    memenv *m = env_of(env);
    mem_lock *l;
    mem_entry *e;
    mem_node *nd;
    size_t n, at;
    int rc;

    if (lp == NULL)
        return SHALE_EINVAL;
    *lp = NULL;
    if (path == NULL)
        return SHALE_EINVAL;
    n = path_len(path);
    l = calloc(1, sizeof(*l));
    if (l == NULL || (l->path = strndup(path, n)) == NULL) {
        free(l);
        return SHALE_ENOMEM;
    }
    pthread_mutex_lock(&m->mu);
    ERR(op_begin(m, MEM_OP_LOCK, false, NULL));
    if (dir_exists(m, path, n))
        ERR_SET(SHALE_EIO);
    if (lock_held(m, l->path))
        ERR_SET(SHALE_EBUSY);
    e = file_find(m, path, n, &at);
    if (e == NULL || e->cur == NULL)
        ERR(create_file(m, e, at, path, n, &nd));
    l->m = m;
    l->next = m->locks;
    if (m->locks)
        m->locks->prev = l;
    m->locks = l;
    pthread_mutex_unlock(&m->mu);
    *lp = (sp_lock *)l;
    return SHALE_OK;
err:
    pthread_mutex_unlock(&m->mu);
    free(l->path);
    free(l);
    return rc;
}

/* me_unlock -- release and free a lock (a dead one was released already). */
static void me_unlock(sp_lock *sl)
{
    mem_lock *l = (mem_lock *)sl;
    memenv *m;

    if (l == NULL)
        return;
    m = l->m;
    pthread_mutex_lock(&m->mu);
    if (l->prev)
        l->prev->next = l->next;
    else
        m->locks = l->next;
    if (l->next)
        l->next->prev = l->prev;
    pthread_mutex_unlock(&m->mu);
    free(l->path);
    free(l);
}

/* ---- the test interface ---------------------------------------------- */

/* memenv_create -- an empty env with the sp_env table filled in. */
memenv *memenv_create(void)
{
    memenv *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    m->env = (sp_env){
        .open = me_open,
        .close = me_close,
        .read = me_read,
        .write = me_write,
        .sync = me_sync,
        .truncate = me_truncate,
        .size = me_size,
        .remove = me_remove,
        .mkdir = me_mkdir,
        .exists = me_exists,
        .list = me_list,
        .sync_dir = me_sync_dir,
        .lock = me_lock,
        .unlock = me_unlock,
        .ctx = m,
    };
    tu_rng_seed(&m->fault_rng, 0);
    return m;
}

/* memenv_destroy -- free handles, locks, names and nodes. */
void memenv_destroy(memenv *m)
{
    if (m == NULL)
        return;
    while (m->handles != NULL) {
        mem_file *f = m->handles;
        m->handles = f->next;
        node_unref(f->node);
        free(f->path);
        free(f);
    }
    while (m->locks != NULL) {
        mem_lock *l = m->locks;
        m->locks = l->next;
        free(l->path);
        free(l);
    }
    for (size_t i = 0; i < m->nfiles; i++) {
        node_unref(m->files[i].cur);
        node_unref(m->files[i].dur);
        free(m->files[i].path);
    }
    for (size_t i = 0; i < m->ndirs; i++)
        free(m->dirs[i]);
    free(m->files);
    free(m->dirs);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

sp_env *memenv_env(memenv *m)
{
    return &m->env;
}

/* memenv_power_loss -- see memenv.h: lose unsynced state, kill handles and
 * locks, unfreeze. */
int memenv_power_loss(memenv *m, uint64_t seed)
{
    tu_rng rng;
    int rc = SHALE_OK;

    tu_rng_seed(&rng, seed);
    pthread_mutex_lock(&m->mu);
    /* First every durable node's new image (entries in path order, so a seed
     * reproduces the loss), then the names, then the handles. */
    for (size_t i = 0; i < m->nfiles; i++) {
        if (m->files[i].dur != NULL) {
            int r = node_lose(m->files[i].dur, &rng);
            rc = rc < 0 ? rc : r;
        }
    }
    for (size_t i = 0; i < m->nfiles;) {
        mem_entry *e = &m->files[i];
        if (e->cur != e->dur) {
            node_ref(e->dur);
            node_unref(e->cur);
            e->cur = e->dur;
            if (file_drop_if_empty(m, i))
                continue;
        }
        i++;
    }
    for (mem_file *f = m->handles; f != NULL; f = f->next) {
        if (!f->dead) {
            f->dead = true;
            node_unref(f->node);
            f->node = NULL;
        }
    }
    for (mem_lock *l = m->locks; l != NULL; l = l->next)
        l->dead = true;
    m->crashed = false;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void memenv_crash(memenv *m)
{
    pthread_mutex_lock(&m->mu);
    m->crashed = true;
    pthread_mutex_unlock(&m->mu);
}

bool memenv_crashed(memenv *m)
{
    pthread_mutex_lock(&m->mu);
    bool c = m->crashed;
    pthread_mutex_unlock(&m->mu);
    return c;
}

int memenv_revive(memenv *m, uint64_t seed)
{
    return memenv_power_loss(m, seed);
}

/* memenv_sync_all -- sync every named file and every directory. */
int memenv_sync_all(memenv *m)
{
    int rc = SHALE_OK;

    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfiles && rc == SHALE_OK;) {
        mem_entry *e = &m->files[i];
        if (e->cur != NULL)
            rc = node_sync(e->cur);
        if (e->dur != e->cur) {
            node_ref(e->cur);
            node_unref(e->dur);
            e->dur = e->cur;
            if (file_drop_if_empty(m, i))
                continue;
        }
        i++;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void memenv_fail_after(memenv *m, uint64_t n, unsigned kinds)
{
    memenv_fault f = {.n = n, .kinds = kinds, .code = SHALE_EIO};
    memenv_set_fault(m, &f);
}

void memenv_set_fault(memenv *m, const memenv_fault *f)
{
    pthread_mutex_lock(&m->mu);
    if (f == NULL || f->n == 0 || f->kinds == 0) {
        memset(&m->fault, 0, sizeof(m->fault));
        m->fault_left = 0;
    } else {
        m->fault = *f;
        m->fault_left = f->n;
        tu_rng_seed(&m->fault_rng, f->seed);
    }
    m->fault_tripped = false;
    pthread_mutex_unlock(&m->mu);
}

uint64_t memenv_faults_injected(memenv *m)
{
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->injected;
    pthread_mutex_unlock(&m->mu);
    return n;
}

uint64_t memenv_op_count(memenv *m, unsigned kinds)
{
    uint64_t n = 0;

    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < MEM_NKINDS; i++)
        if (kinds & (1u << i))
            n += m->counts[i];
    pthread_mutex_unlock(&m->mu);
    return n;
}

void memenv_reset_counts(memenv *m)
{
    pthread_mutex_lock(&m->mu);
    memset(m->counts, 0, sizeof(m->counts));
    pthread_mutex_unlock(&m->mu);
}

void memenv_set_sync_hook(memenv *m, memenv_sync_hook fn, void *ctx)
{
    pthread_mutex_lock(&m->mu);
    m->hook = fn;
    m->hook_ctx = fn ? ctx : NULL;
    pthread_mutex_unlock(&m->mu);
}

uint64_t memenv_sync_points(memenv *m)
{
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->sync_points;
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* locked_node -- with m locked, the node path names now, or NULL. */
static mem_node *locked_node(memenv *m, const char *path)
{
    return path ? live_node(m, path, path_len(path)) : NULL;
}

int memenv_file_bytes(memenv *m, const char *path, uint8_t **data, size_t *len)
{
    mem_node *nd;
    int rc = SHALE_OK;

    *data = NULL;
    *len = 0;
    pthread_mutex_lock(&m->mu);
    nd = locked_node(m, path);
    if (nd == NULL)
        rc = SHALE_ENOENT;
    else if (nd->cur.len > 0) {
        *data = malloc(nd->cur.len);
        if (*data == NULL)
            rc = SHALE_ENOMEM;
        else {
            memcpy(*data, nd->cur.p, nd->cur.len);
            *len = nd->cur.len;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int memenv_durable_size(memenv *m, const char *path, uint64_t *size)
{
    mem_node *nd;

    pthread_mutex_lock(&m->mu);
    nd = locked_node(m, path);
    if (nd != NULL)
        *size = nd->dur.len;
    pthread_mutex_unlock(&m->mu);
    return nd ? SHALE_OK : SHALE_ENOENT;
}

/* patch_writes -- patch the bytes [off, off + n) in every unsynced write
 * covering them: set them from src, or xor them with x when src is NULL. */
static void patch_writes(mem_node *nd, size_t off, const uint8_t *src, uint8_t x, size_t n)
{
    for (size_t i = 0; i < nd->nw; i++) {
        mem_write *w = &nd->w[i];
        size_t s = MAX(w->off, off), e = MIN(w->off + w->len, off + n);
        for (size_t k = s; k < e; k++)
            w->data[k - w->off] = src ? src[k - off] : (uint8_t)(w->data[k - w->off] ^ x);
    }
}

int memenv_corrupt(memenv *m, const char *path, uint64_t off, uint8_t x)
{
    mem_node *nd;
    int rc = SHALE_OK;

    pthread_mutex_lock(&m->mu);
    nd = locked_node(m, path);
    if (nd == NULL)
        rc = SHALE_ENOENT;
    else if (off >= nd->cur.len)
        rc = SHALE_EINVAL;
    else {
        nd->cur.p[off] ^= x;
        if (off < nd->dur.len)
            nd->dur.p[off] ^= x;
        patch_writes(nd, (size_t)off, NULL, x, 1);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int memenv_set_bytes(memenv *m, const char *path, uint64_t off, const void *data, size_t n)
{
    mem_node *nd;
    int rc = SHALE_OK;

    if (off > MEM_MAX_FILE || n > MEM_MAX_FILE - off || (data == NULL && n > 0))
        return SHALE_EINVAL;
    pthread_mutex_lock(&m->mu);
    nd = locked_node(m, path);
    if (nd == NULL)
        rc = SHALE_ENOENT;
    else if ((rc = buf_put(&nd->cur, (size_t)off, data, n)) == SHALE_OK &&
             (rc = buf_put(&nd->dur, (size_t)off, data, n)) == SHALE_OK)
        patch_writes(nd, (size_t)off, data, 0, n);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int memenv_set_size(memenv *m, const char *path, uint64_t size)
{
    mem_node *nd;
    int rc = SHALE_OK;

    if (size > MEM_MAX_FILE)
        return SHALE_EINVAL;
    pthread_mutex_lock(&m->mu);
    nd = locked_node(m, path);
    if (nd == NULL)
        rc = SHALE_ENOENT;
    else if ((rc = buf_resize(&nd->cur, (size_t)size)) == SHALE_OK &&
             (rc = buf_resize(&nd->dur, (size_t)size)) == SHALE_OK)
        nd->low = MIN(nd->low, (size_t)size);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void memenv_list_all(memenv *m, FILE *out)
{
    pthread_mutex_lock(&m->mu);
    fprintf(out, "memenv: %zu dirs, %zu names%s\n", m->ndirs, m->nfiles,
            m->crashed ? " (crashed)" : "");
    for (size_t i = 0; i < m->ndirs; i++)
        fprintf(out, "  dir  %s\n", m->dirs[i]);
    for (size_t i = 0; i < m->nfiles; i++) {
        const mem_entry *e = &m->files[i];
        fprintf(out, "  file %s", e->path);
        if (e->cur != NULL)
            fprintf(out, " size %zu durable %zu unsynced-writes %zu", e->cur->cur.len,
                    e->cur->dur.len, e->cur->nw);
        else
            fprintf(out, " (removed)");
        if (e->dur == NULL)
            fprintf(out, " [name not durable]");
        else if (e->dur != e->cur)
            fprintf(out, " [durable name: other contents, durable size %zu]", e->dur->dur.len);
        fputc('\n', out);
    }
    pthread_mutex_unlock(&m->mu);
}
