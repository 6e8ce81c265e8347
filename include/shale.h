/*
 * shale.h -- the public interface of shale, an embedded ordered key-value store.
 *
 * shale keeps byte-string keys in sorted order (memcmp, shorter first on a tie)
 * in named trees inside one database directory.  Writes go to a write-ahead log
 * and a memtable; background threads write memtables out to immutable B+tree
 * segments in one page file and merge them.  After a crash or power loss the
 * database reopens to exactly some prefix of the acknowledged writes that holds
 * every write made durable (by shale_flush, sync_writes or flush_every_ms).
 *
 * Conventions
 *   - Every fallible call returns an int: SHALE_OK (0), SHALE_NOTFOUND (1) when a
 *     key or a next entry is absent (not an error), or a negative SHALE_E* code.
 *     shale_strerror() names each.  The library never aborts, exits or prints.
 *   - Keys are 0..SHALE_MAX_KEY_SIZE bytes, values 0..SHALE_MAX_VALUE_SIZE bytes;
 *     an empty key or value is valid and distinct from "absent".  Longer ones
 *     get SHALE_ETOOBIG.  A NULL pointer with a zero length is an empty string.
 *   - Values come back in a caller-owned shale_buf that is grown as needed and
 *     reused, so a loop of reads allocates nothing once it is large enough.
 *   - A shale_db and its shale_tree handles may be used from any number of
 *     threads at once.  An iterator, batch or buffer belongs to one thread at a
 *     time.
 */
#ifndef SHALE_H
#define SHALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHALE_VERSION_MAJOR 0
#define SHALE_VERSION_MINOR 1
#define SHALE_VERSION_PATCH 0
#define SHALE_VERSION_STRING "0.1.0"

/* Return codes.  Errors are negative and stable. */
#define SHALE_OK 0
#define SHALE_NOTFOUND 1
#define SHALE_EINVAL (-1)     /* bad argument or option, NULL where not allowed */
#define SHALE_EIO (-2)        /* the operating system failed a read, write or sync */
#define SHALE_ECORRUPT (-3)   /* a checksum or structure check failed on disk data */
#define SHALE_ENOMEM (-4)     /* an allocation failed */
#define SHALE_EBUSY (-5)      /* the database is already open (this or another process) */
#define SHALE_ETOOBIG (-6)    /* key or value longer than the documented limit */
#define SHALE_EMISMATCH (-7)  /* compare-and-swap expectation failed */
#define SHALE_ECONFLICT (-8)  /* transaction could not commit within its retries */
#define SHALE_EREADONLY (-9)  /* write to a database opened read-only */
#define SHALE_ENOSPC (-10)    /* the device is full */
#define SHALE_EEXIST (-11)    /* the object already exists */
#define SHALE_ENOENT (-12)    /* the database (or tree) does not exist */
#define SHALE_EFORMAT (-13)   /* file from an incompatible format version or settings */
#define SHALE_ENOMERGEOP (-14) /* a key holds merge operands and its tree has no
                                  merge operator registered */
#define SHALE_EOVERFLOW (-15)  /* a watcher's queue was full: events were dropped */

/* Limits. */
#define SHALE_MAX_KEY_SIZE (32u * 1024u)                  /* 32 KiB */
#define SHALE_MAX_VALUE_SIZE ((size_t)1 << 30)            /* 1 GiB */
#define SHALE_MAX_TREE_NAME 255u                          /* bytes, without the NUL */

/* Compression of segment pages (values in the log are never compressed). */
#define SHALE_COMPRESSION_NONE 0
#define SHALE_COMPRESSION_LZ4 1
#define SHALE_COMPRESSION_ZSTD 2

typedef struct shale_db shale_db;
typedef struct shale_tree shale_tree;
typedef struct shale_iter shale_iter;
typedef struct shale_batch shale_batch;
typedef struct shale_snapshot shale_snapshot;

/* A caller-owned, reusable output buffer.  The library grows data with
 * realloc() when cap is too small; len is the length of the last result.
 * Initialise with SHALE_BUF_INIT; release with shale_buf_free(). */
typedef struct shale_buf {
    void *data;
    size_t len;
    size_t cap;
} shale_buf;
#define SHALE_BUF_INIT {NULL, 0, 0}

/* shale_buf_free -- free buf->data and reset buf to SHALE_BUF_INIT.  NULL is a no-op. */
void shale_buf_free(shale_buf *buf);

/* shale_strerror -- a static, human-readable message for any return code. */
const char *shale_strerror(int rc);

/* Options.  shale_options_default() fills every field; change what you need.
 * page_size and level_factor are fixed when the database is created and are
 * read from the file on later opens (the values given then are ignored). */
typedef struct shale_options {
    bool create_if_missing;  /* create the directory and files; default true */
    bool read_only;          /* no writes, no background work; default false */
    bool sync_writes;        /* fsync the log before every write returns; default false */
    uint32_t flush_every_ms; /* background log fsync period; 0 = off; default 500 */
    size_t cache_size;       /* bytes of cache; default 64 MiB; minimum 256 KiB.
                                Pages are read through a memory map where the
                                platform has one, so this bounds the page
                                cache used otherwise; with compression three
                                quarters of it hold decompressed leaves */
    size_t memtable_size;    /* bytes of memtable before it is written out;
                                default 32 MiB; minimum 64 KiB; at most 1 GiB */
    uint32_t page_size;      /* power of two, 1 KiB..64 KiB; default 4096 */
    int compression;         /* SHALE_COMPRESSION_*; default NONE.  Chosen at
                                creation and kept in the file: opening an
                                existing database uses its codec whatever this
                                says.  Leaves are then filled up to 16-64 KiB
                                and stored compressed in as few pages as that
                                takes (none saved at 64 KiB pages); keys and
                                values too large for a leaf, and the log, are
                                not compressed.  Decompressed leaves are kept
                                in a cache (see cache_size). */
    int compression_level;   /* 0 = the codec's default.  LZ4: -65537..-1 fast
                                with acceleration -level, 1..12 high
                                compression; ZSTD: ZSTD_minCLevel()..
                                ZSTD_maxCLevel(); NONE: 0 only.  Applies to this
                                open; a level outside the range of an existing
                                database's codec means that codec's default */
    uint32_t level_factor;   /* size ratio between merge levels, 2..100; default
                                10: level n holds up to memtable_size *
                                level_factor^n bytes */
    uint32_t max_young_segments; /* young segments (written-out memtables) kept
                                before they are merged into level 1, 2..64;
                                default 6; writers wait when merges fall
                                twice this far behind */
} shale_options;

/* shale_options_default -- fill *opts with the defaults documented above. */
void shale_options_default(shale_options *opts);

/* shale_open -- open (or create) the database directory at path.
 * opts may be NULL for defaults.  Recovers from the log after an unclean stop.
 * Errors: SHALE_EINVAL (NULL path or dbp, bad option), SHALE_ENOENT (missing and
 * create_if_missing false), SHALE_EBUSY (open elsewhere, in this process or
 * another), SHALE_ECORRUPT (no valid header, or damaged structures),
 * SHALE_EFORMAT (unknown format version), SHALE_EIO, SHALE_ENOMEM, SHALE_ENOSPC. */
int shale_open(const char *path, const shale_options *opts, shale_db **dbp);

/* shale_close -- make every write durable, stop and join background threads,
 * close files and release the lock; db is freed even when an error is returned.
 * Tree handles and open iterators must not be used afterwards (close every
 * iterator first).  NULL is a no-op.
 * Errors: SHALE_EIO or SHALE_ENOSPC when a final write or sync failed (what was
 * durable before stays intact), or the sticky background error. */
int shale_close(shale_db *db);

/* shale_flush -- return once every write acknowledged before the call is durable.
 * Errors: SHALE_EIO, SHALE_ENOSPC, the sticky background error; SHALE_EINVAL on NULL. */
int shale_flush(shale_db *db);

/* shale_open_tree -- get the handle of tree `name`, creating it if missing.
 * NULL or "" is the default tree.  The handle is owned by db and stays valid
 * until shale_close or shale_drop_tree of that name; opening the same name
 * again returns the same handle.
 * Errors: SHALE_EINVAL (NULL db/treep, name longer than SHALE_MAX_TREE_NAME),
 * SHALE_EREADONLY (missing tree on a read-only db), SHALE_ENOENT (same, when the
 * tree is absent and cannot be created), SHALE_EIO, SHALE_ENOMEM. */
int shale_open_tree(shale_db *db, const char *name, shale_tree **treep);

/* shale_drop_tree -- remove tree `name` and every key in it: one small write
 * (a range tombstone), whatever the tree holds; the space comes back as
 * merges pass over the keys.  Handles to it become invalid.  The default
 * tree cannot be dropped (it is cleared instead).
 * Returns SHALE_NOTFOUND when no such tree exists.
 * Errors: SHALE_EINVAL, SHALE_EREADONLY, SHALE_EIO, SHALE_ENOSPC, SHALE_ENOMEM,
 * the sticky background error. */
int shale_drop_tree(shale_db *db, const char *name);

/* shale_clear_tree -- delete every key of tree t atomically, in one small
 * write (a range tombstone) whatever the tree holds; t stays open and usable.
 * Errors: SHALE_EINVAL (NULL or dropped t), SHALE_EREADONLY, SHALE_EIO,
 * SHALE_ENOSPC, SHALE_ENOMEM, the sticky background error. */
int shale_clear_tree(shale_tree *t);

/* shale_get -- copy the value of key into *val.
 * Returns SHALE_OK, or SHALE_NOTFOUND (val->len set to 0).
 * Errors: SHALE_EINVAL (NULL tree or val, NULL key with klen > 0),
 * SHALE_ETOOBIG (klen over the limit), SHALE_ENOMERGEOP (the key holds merge
 * operands and t has no operator), the operator's own error, SHALE_ECORRUPT,
 * SHALE_EIO, SHALE_ENOMEM. */
int shale_get(shale_tree *t, const void *key, size_t klen, shale_buf *val);

/* shale_insert -- set key to val.  With old == NULL the write is blind and
 * returns SHALE_OK.  With old != NULL it is atomic read-modify-write: the
 * previous value goes to *old and SHALE_NOTFOUND is returned when there was
 * none (the write still happens).
 * Errors: SHALE_EINVAL, SHALE_ETOOBIG, SHALE_EREADONLY, SHALE_EIO, SHALE_ENOSPC,
 * SHALE_ENOMEM, the sticky background error; with old, also the errors of
 * reading it (SHALE_ENOMERGEOP ...: then nothing is written). */
int shale_insert(shale_tree *t, const void *key, size_t klen, const void *val, size_t vlen,
                 shale_buf *old);

/* shale_remove -- delete key.  Blind with old == NULL (SHALE_OK whether or not
 * the key existed); otherwise returns the removed value in *old, or
 * SHALE_NOTFOUND when there was none.  Errors: as shale_insert. */
int shale_remove(shale_tree *t, const void *key, size_t klen, shale_buf *old);

/* shale_remove_range -- delete every key k of t with lo <= k < hi, in one
 * small write (a range tombstone) however many keys that is.  hi NULL (with
 * hilen 0) means to the end of the tree; lo may be empty (the start).
 * Errors: SHALE_EINVAL (NULL t, hi given and not above lo), SHALE_ETOOBIG (a
 * bound over SHALE_MAX_KEY_SIZE), and as shale_insert. */
int shale_remove_range(shale_tree *t, const void *lo, size_t lolen, const void *hi, size_t hilen);

/* shale_cas -- compare-and-swap, atomic and linearizable: when key's value
 * is expected (elen bytes; expected NULL: the key must be absent), set it to
 * desired (dlen bytes; desired NULL: delete the key) and return SHALE_OK.
 * Otherwise write nothing and return SHALE_EMISMATCH with the current value
 * in *actual (if not NULL); a key that is absent is reported with
 * actual->data NULL and len 0 (its memory freed), an empty value with data
 * not NULL.
 * Errors: SHALE_EINVAL (NULL t, NULL value pointer with a length),
 * SHALE_ETOOBIG, SHALE_ENOMERGEOP (as shale_get), SHALE_EREADONLY, SHALE_EIO,
 * SHALE_ENOSPC, SHALE_ENOMEM, the sticky background error. */
int shale_cas(shale_tree *t, const void *key, size_t klen, const void *expected, size_t elen,
              const void *desired, size_t dlen, shale_buf *actual);

/* shale_update_fn -- computes a key's new value from its old one (old NULL:
 * the key is absent).  Set *newval and *newlen to the new value, or *newval to
 * NULL to delete the key; the memory must stay valid until shale_update
 * returns or calls fn again.  Return 0 to write it; any other value aborts
 * the update with nothing written, and shale_update returns that value as
 * it is.  fn may be called more than once (when another write changes the
 * key meanwhile, fn runs again on the new value); it must not write to the
 * database itself. */
typedef int (*shale_update_fn)(void *ctx, const void *old, size_t oldlen, const void **newval,
                               size_t *newlen);

#define SHALE_UPDATE_RETURN_OLD 0 /* fetch-and-update: *out gets the value before */
#define SHALE_UPDATE_RETURN_NEW 1 /* update-and-fetch: *out gets the value after */

/* shale_update -- atomically replace key's value by fn(old).  *out (if not
 * NULL) gets the old or the new value as mode says; SHALE_NOTFOUND is
 * returned when that value is absent (reported as for shale_cas), SHALE_OK
 * otherwise.  A non-zero return of fn comes back unchanged.
 * Errors: SHALE_EINVAL (NULL t or fn, a bad mode, fn returning a NULL value
 * with a length), SHALE_ETOOBIG (fn's value over SHALE_MAX_VALUE_SIZE), and
 * as shale_cas. */
int shale_update(shale_tree *t, const void *key, size_t klen, shale_update_fn fn, void *ctx,
                 int mode, shale_buf *out);

/* Merge operators: blind read-modify-write.  shale_merge records an operand
 * for a key without reading it; reads (gets, iterators, snapshots, CAS and
 * update) apply the key's operands, oldest first, to its value with the
 * tree's operator, and merges in the background fold them into a plain value
 * once they meet the value (or its absence) they apply to.
 *
 * shale_merge_fn -- the operator: from the current value (old NULL: the key
 * is absent) and one operand, put the new value in *out (shale_buf_set) and
 * return SHALE_OK, or return SHALE_NOTFOUND to delete the key, or a negative
 * error.  It must be a pure function of its arguments: it is called from any
 * thread (background merges included), any number of times, possibly long
 * after the operand was written, and is never given the database.  An error
 * it returns is handed to the reader; background merges keep the operands
 * instead. */
typedef int (*shale_merge_fn)(void *ctx, const void *key, size_t klen, const void *old,
                              size_t oldlen, const void *operand, size_t oplen, shale_buf *out);

/* shale_buf_set -- copy len bytes of data into buf (growing it).
 * Errors: SHALE_EINVAL (NULL buf, NULL data with a length), SHALE_ENOMEM. */
int shale_buf_set(shale_buf *buf, const void *data, size_t len);

/* shale_set_merge_operator -- register fn (with ctx) as t's operator, or
 * remove it (fn NULL).  The operator is not stored in the database: register
 * it after every open, before reading keys that hold operands.  Changing it
 * while other threads read or merge is safe; each fold uses one operator.
 * ctx must stay valid until the db is closed (a background fold may still
 * be using an operator that was replaced).
 * Reading a key that holds operands while t has none fails with
 * SHALE_ENOMERGEOP (the operands are kept; nothing is lost).
 * Errors: SHALE_EINVAL (NULL t, a dropped tree), SHALE_ENOMEM. */
int shale_set_merge_operator(shale_tree *t, shale_merge_fn fn, void *ctx);

/* shale_merge -- record operand (oplen bytes) for key, without reading it.
 * Limit: a key's value and the operands not yet folded into it must stay
 * under SHALE_MAX_VALUE_SIZE together; an operator that keeps failing (or
 * none at all) lets them pile up, and a write-out that cannot store them
 * fails (SHALE_ETOOBIG, sticky, nothing lost: the log keeps them).
 * Errors: as shale_insert (with the operand as the value). */
int shale_merge(shale_tree *t, const void *key, size_t klen, const void *operand, size_t oplen);

/* Transactions: serializable, over any array of trees of one db, run
 * concurrently (optimistically: nothing is locked while fn runs).
 *
 * shale_transaction runs fn(txn, ctx).  Reads inside (shale_txn_get,
 * shale_txn_scan) see the trees as of the transaction's start plus its own
 * writes; writes (shale_txn_insert, _remove, _merge) are buffered.  When fn
 * returns 0 the transaction commits: if nothing it read (keys, and the ranges
 * it scanned, so a key that appeared in a scanned range counts) was written
 * by others since it started, its writes are applied as one atomic batch;
 * otherwise fn runs again from the start on a fresh view, up to
 * SHALE_TXN_RETRIES runs, then SHALE_ECONFLICT.  fn must therefore have no
 * effects outside the transaction that a re-run would repeat.  (Validation
 * looks at the writes still in memory: a run that lasts while more than a
 * memtable's worth of other writes goes by also counts as a conflict.)
 *
 * A non-zero return from fn aborts with nothing written and is returned
 * unchanged (any code of yours; a payload can go through ctx).  Errors from the txn calls are
 * returned to fn; fn decides (returning them aborts).  A txn handle is valid
 * only inside fn, on fn's thread.  On a database opened read-only,
 * transactions that only read work; one that writes fails at commit with
 * SHALE_EREADONLY.  Returns SHALE_OK when committed.
 * Errors: SHALE_EINVAL (NULL db or fn, a NULL tree, trees of another db),
 * SHALE_ECONFLICT, fn's own code, and as shale_batch_apply. */
typedef struct shale_txn shale_txn;
typedef int (*shale_txn_fn)(shale_txn *txn, void *ctx);
#define SHALE_TXN_RETRIES 100

int shale_transaction(shale_db *db, shale_tree *const *trees, size_t ntrees, shale_txn_fn fn,
                      void *ctx);

/* Reads and writes inside a transaction; t must be one of its trees
 * (SHALE_EINVAL otherwise).  shale_txn_get returns SHALE_OK or
 * SHALE_NOTFOUND as shale_get.  Errors: SHALE_EINVAL, SHALE_ETOOBIG,
 * SHALE_ENOMERGEOP, SHALE_ECORRUPT, SHALE_EIO, SHALE_ENOMEM. */
int shale_txn_get(shale_txn *txn, shale_tree *t, const void *key, size_t klen, shale_buf *val);
int shale_txn_insert(shale_txn *txn, shale_tree *t, const void *key, size_t klen, const void *val,
                     size_t vlen);
int shale_txn_remove(shale_txn *txn, shale_tree *t, const void *key, size_t klen);
int shale_txn_merge(shale_txn *txn, shale_tree *t, const void *key, size_t klen,
                    const void *operand, size_t oplen);

/* shale_txn_scan -- fn(ctx, key, value) on every key of t in [lo, hi) (a
 * NULL bound is open) in the transaction's view, ascending (or descending
 * with reverse).  A non-zero return from fn stops the scan and is returned;
 * only the part of the range scanned so far counts as read (all of it when
 * the scan fails).  fn may write in the transaction: keys it writes ahead
 * of the scan show as written, keys behind it do not come back.  Returns
 * SHALE_OK at the end of the range.  Errors: as shale_txn_get. */
typedef int (*shale_scan_fn)(void *ctx, const void *key, size_t klen, const void *val,
                             size_t vlen);
int shale_txn_scan(shale_txn *txn, shale_tree *t, const void *lo, size_t lolen, const void *hi,
                   size_t hilen, bool reverse, shale_scan_fn fn, void *ctx);

/* Watching: a subscriber receives every write committed under a prefix of
 * one tree after it subscribed, in commit order.  Each event carries the
 * sequence number of its batch (a batch's events are consecutive and share
 * it; later batches have larger ones).  Events are queued per subscriber
 * and copied by the writer; a writer never waits for a subscriber.  When
 * the queue is full, later events are dropped until the subscriber has read
 * the queue empty, and then it gets SHALE_EOVERFLOW (with the count and the
 * first lost sequence number) before any later event: a loss is never
 * silent.  Writes recovered from the log at open are not reported.  An
 * event is published when its write is applied in memory: with sync_writes,
 * before the fsync whose failure the writer would still be told. */
typedef struct shale_watcher shale_watcher;

#define SHALE_WATCH_INSERT 0       /* key set to val */
#define SHALE_WATCH_REMOVE 1       /* key removed (val NULL) */
#define SHALE_WATCH_MERGE 2        /* merge operand val recorded for key */
#define SHALE_WATCH_REMOVE_RANGE 3 /* keys in [key, val) removed; val NULL (vlen
                                      0): to the tree's end.  Reported when the
                                      range meets the prefix; it may reach
                                      past it */

typedef struct shale_event {
    uint64_t seq;    /* the batch's sequence number */
    int kind;        /* SHALE_WATCH_* */
    const void *key; /* valid until the next shale_watch_next or close */
    size_t klen;
    const void *val;
    size_t vlen;
    uint64_t lost; /* SHALE_EOVERFLOW: the events dropped (seq: the first's batch) */
} shale_event;

/* shale_watch_prefix -- subscribe to t's keys starting with prefix (plen 0:
 * every key).  capacity: events queued before overflow (0: 4096).
 * Errors: SHALE_EINVAL (NULL t or wp, a dropped tree), SHALE_ETOOBIG (a
 * prefix over the key limit), SHALE_ENOMEM. */
int shale_watch_prefix(shale_tree *t, const void *prefix, size_t plen, size_t capacity,
                       shale_watcher **wp);

/* shale_watch_next -- the next event into *ev, waiting up to timeout_ms
 * milliseconds for one (0: do not wait; negative: wait without limit).
 * Returns SHALE_OK with an event, SHALE_NOTFOUND when none came in time,
 * SHALE_EOVERFLOW as above (then the events after the loss follow), or
 * SHALE_EINVAL. */
int shale_watch_next(shale_watcher *w, shale_event *ev, int timeout_ms);

/* shale_watch_close -- unsubscribe and free w; safe while other threads
 * write.  A watcher belongs to one thread (do not close it while another
 * waits in shale_watch_next).  Watchers still open when their db is closed
 * are freed with it (their handles are then invalid: close watchers first).
 * NULL is a no-op. */
void shale_watch_close(shale_watcher *w);

/* shale_iter_open -- an iterator over a consistent snapshot of tree t, taken
 * now; it is unpositioned until a first/last/seek call.  The snapshot keeps
 * the data it sees alive until shale_iter_close.
 * Errors: SHALE_EINVAL, SHALE_ENOMEM. */
int shale_iter_open(shale_tree *t, shale_iter **itp);

/* shale_iter_set_bounds -- restrict the iterator to [lo, hi); a NULL bound is
 * open.  Unpositions the iterator.  Errors: SHALE_EINVAL (NULL it),
 * SHALE_ETOOBIG (a bound over the key limit), SHALE_ENOMEM. */
int shale_iter_set_bounds(shale_iter *it, const void *lo, size_t lolen, const void *hi,
                          size_t hilen);

/* Moves.  Each returns SHALE_OK when positioned on an entry, SHALE_NOTFOUND when
 * it ran off either end (or the iterator is unpositioned, for next/prev), or an
 * error (SHALE_EINVAL, SHALE_ETOOBIG for a seek key over the limit,
 * SHALE_ENOMERGEOP and the operator's errors as for shale_get,
 * SHALE_ECORRUPT, SHALE_EIO, SHALE_ENOMEM) after which the iterator is
 * unpositioned. */
int shale_iter_first(shale_iter *it);                                 /* smallest key */
int shale_iter_last(shale_iter *it);                                  /* largest key */
int shale_iter_seek(shale_iter *it, const void *key, size_t klen);      /* first >= key */
int shale_iter_seek_prev(shale_iter *it, const void *key, size_t klen); /* last <= key */
int shale_iter_next(shale_iter *it);
int shale_iter_prev(shale_iter *it);

/* shale_iter_key / shale_iter_value -- the current entry; valid until the next
 * move or close.  NULL (and *len 0) when unpositioned. */
const void *shale_iter_key(const shale_iter *it, size_t *klen);
const void *shale_iter_value(const shale_iter *it, size_t *vlen);

/* shale_iter_close -- release the iterator and its snapshot.  NULL is a no-op. */
void shale_iter_close(shale_iter *it);

/* Snapshots: a read view of every tree of a db at one instant.  Gets and
 * iterators through a snapshot see exactly the writes acknowledged before it
 * was opened, whatever happens after.  A snapshot keeps the data it sees
 * alive (memory and pages): close it when done.  Close it before its db. */

/* shale_snapshot_open -- a snapshot of db now.  Errors: SHALE_EINVAL,
 * SHALE_ENOMEM. */
int shale_snapshot_open(shale_db *db, shale_snapshot **sp);

/* shale_snapshot_get -- shale_get as of snapshot s.  Errors: SHALE_EINVAL
 * (NULL arguments, t of another db or dropped), SHALE_ETOOBIG,
 * SHALE_ENOMERGEOP and the operator's errors (as shale_get), SHALE_ECORRUPT,
 * SHALE_EIO, SHALE_ENOMEM. */
int shale_snapshot_get(shale_snapshot *s, shale_tree *t, const void *key, size_t klen,
                       shale_buf *val);

/* shale_iter_open_at -- shale_iter_open over snapshot s rather than now (the
 * iterator keeps the snapshot's view even after s is closed).
 * Errors: SHALE_EINVAL (NULL arguments, t of another db or dropped),
 * SHALE_ENOMEM, SHALE_EIO. */
int shale_iter_open_at(shale_tree *t, shale_snapshot *s, shale_iter **itp);

/* shale_snapshot_close -- release s.  NULL is a no-op. */
void shale_snapshot_close(shale_snapshot *s);

/* Batches: a list of writes across any trees of one db, applied atomically
 * (after any crash, all of it or none of it), in order (a later write to the
 * same key wins). */

/* shale_batch_new -- an empty batch.  Errors: SHALE_EINVAL, SHALE_ENOMEM. */
int shale_batch_new(shale_batch **bp);

/* shale_batch_insert / shale_batch_remove -- append a write; the key and value
 * are copied.  Errors: SHALE_EINVAL (NULL b or t, trees of two dbs),
 * SHALE_ETOOBIG, SHALE_ENOMEM. */
int shale_batch_insert(shale_batch *b, shale_tree *t, const void *key, size_t klen,
                       const void *val, size_t vlen);
int shale_batch_remove(shale_batch *b, shale_tree *t, const void *key, size_t klen);

/* shale_batch_merge -- add a merge operand (see shale_merge).  Errors: as
 * shale_batch_insert. */
int shale_batch_merge(shale_batch *b, shale_tree *t, const void *key, size_t klen,
                      const void *operand, size_t oplen);

/* shale_batch_remove_range -- append shale_remove_range(t, lo, lolen, hi,
 * hilen); it applies after the batch's earlier writes and before its later
 * ones.  Errors: as shale_batch_insert, SHALE_EINVAL for hi not above lo. */
int shale_batch_remove_range(shale_batch *b, shale_tree *t, const void *lo, size_t lolen,
                             const void *hi, size_t hilen);

/* shale_batch_apply -- apply b atomically; b is left as it was (clear it to
 * reuse).  An empty batch is a no-op.  Errors: SHALE_EINVAL (NULL, or a batch
 * built with another db's trees), SHALE_ETOOBIG (the batch exceeds 1 GiB
 * encoded), SHALE_EREADONLY, SHALE_EIO, SHALE_ENOSPC, SHALE_ENOMEM, the sticky
 * background error. */
int shale_batch_apply(shale_db *db, shale_batch *b);

/* shale_batch_count -- number of writes in b (0 for NULL). */
size_t shale_batch_count(const shale_batch *b);

/* shale_batch_clear -- empty b, keeping its memory.  NULL is a no-op. */
void shale_batch_clear(shale_batch *b);

/* shale_batch_free -- free b.  NULL is a no-op. */
void shale_batch_free(shale_batch *b);

/* Statistics: a snapshot of counters and structure sizes. */
#define SHALE_STATS_LEVELS 16

typedef struct shale_stats {
    uint64_t page_size;
    uint64_t file_pages;       /* pages in the page file (incl. the two header slots) */
    uint64_t live_pages;       /* pages referenced by segments and the header */
    uint64_t free_pages;       /* reusable now */
    uint64_t pending_pages;    /* freed, reusable after the next durable checkpoint */
    uint64_t zombie_pages;     /* the rest: retired segments a reader still pins,
                                  segments being written, the header's spill pages */
    uint64_t file_bytes;       /* size of the page file */
    uint64_t log_bytes;        /* size of the live log files */
    uint64_t segments;         /* segments in the current version */
    uint64_t young_segments;
    uint64_t segment_blocks;   /* blocks over all segment blocklists */
    uint64_t entries;          /* entries in segments (incl. tombstones) */
    uint64_t tombstones;
    uint64_t memtable_bytes;   /* active + immutable memtables */
    uint64_t memtables;
    uint64_t last_sequence;
    uint64_t checkpoints;
    uint64_t flushes;          /* memtables written out */
    uint64_t merges;
    uint64_t bytes_written_user;    /* key+value bytes written by callers */
    uint64_t bytes_written_log;
    uint64_t bytes_written_pages;   /* segment and header bytes written */
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t write_stalls;     /* times a writer waited for a memtable write-out */
    uint64_t stall_micros;     /* time writers waited, stalls and slowdowns */
    bool recovered;            /* the last open replayed a log after an unclean stop */
    int compression;           /* the database's SHALE_COMPRESSION_* (fixed at creation) */
    uint64_t leaves;           /* leaves of all segments */
    uint64_t compressed_leaves; /* of them, stored as compressed runs */
    uint64_t leaf_cache_hits;  /* compressed leaves found decompressed in the cache */
    uint64_t leaf_cache_misses; /* ... and decompressed on a read */
    uint64_t leaf_cache_bytes; /* decompressed leaves held now */
    uint64_t merge_leaves_rewritten; /* since open: leaves merges rewrote */
    uint64_t merge_leaves_recycled;  /* ... and reused by page reference */
    uint64_t merge_bytes_written;    /* ... and bytes of pages merges wrote */
    uint64_t merge_keys_promoted;    /* ... entries merged down into a level */
    uint64_t merge_parents_written;  /* ... parent pages merges wrote */
    uint64_t merge_micros;           /* ... time spent merging */
    uint64_t write_slowdowns;  /* times a writer was slowed (a millisecond at most)
                                  because merges were behind */
    uint64_t stall_max_micros; /* the longest single wait of a writer */
    uint64_t levels;           /* regular levels holding a segment */
    uint64_t level_bytes[SHALE_STATS_LEVELS]; /* [0] young segments, [n] level n
                                  (levels beyond the array add to its last) */
    /* added later, kept last so the fields above keep their offsets */
    uint64_t merge_windows;    /* since open: merges that promoted a window of a
                                  level's keys rather than all of it */
    uint64_t range_tombstones; /* held now: in memtables, and in the graveyard until
                                  merges have applied them to every older segment */
    uint64_t level_blocks[SHALE_STATS_LEVELS]; /* as level_bytes: the blocks (runs
                                  of adjacent pages) their blocklists hold */
    uint64_t txn_commits;   /* since open: transactions that committed writes */
    uint64_t txn_reruns;    /* ... runs of a transaction's function whose commit
                               found a conflict */
    uint64_t txn_conflicts; /* ... transactions that gave up (SHALE_ECONFLICT) */
} shale_stats;

/* The result of shale_verify. */
typedef struct shale_verify_report {
    uint64_t file_pages;   /* pages in the page file */
    uint64_t header_pages; /* the header slots and their spill pages */
    uint64_t live_pages;   /* pages of segments */
    uint64_t free_pages;
    uint64_t nodes;        /* leaves and parents checked */
    uint64_t entries;      /* entries checked (tombstones included) */
    uint64_t bad_page;     /* the page of the first fault (0: none, or not one page) */
    char fault[160];       /* the first fault in words; empty when none */
} shale_verify_report;

/* shale_verify -- check a database opened read-only: every page of every
 * segment is read and its checksum verified (leaves, parents, compressed
 * leaves, overflow and filter runs); keys are in order within and across
 * pages and each parent's counts and last keys match its children; and
 * every page of the page file is exactly one of header, live (one segment's)
 * or free.  The first fault is described in r.
 * Errors: SHALE_ECORRUPT (a fault; r says which), SHALE_EINVAL (NULL
 * arguments, or a database not opened read-only), SHALE_EIO, SHALE_ENOMEM. */
int shale_verify(shale_db *db, shale_verify_report *r);

/* shale_progress_fn -- called now and then by long operations with the
 * work done and the work in all (both in entries; total may be an estimate). */
typedef void (*shale_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* shale_compact -- write the database at src (which must not be open) into
 * a new database at dst: every live key of every tree in one freshly written
 * segment, with the same page size, level factor and compression, and no
 * free blocks.  Merge operands are copied as they are (no operator is
 * needed).  src is opened read-only and left as it was; progress (may be
 * NULL) is called every 65536 entries and at the end.
 * Errors: SHALE_EINVAL (NULL paths), SHALE_EEXIST (dst already holds a
 * database; it is left alone), SHALE_ENOENT (no database at src),
 * SHALE_EBUSY (src or dst open elsewhere), SHALE_ECORRUPT, SHALE_EIO,
 * SHALE_ENOSPC, SHALE_ENOMEM.  On error dst may hold a partial database. */
int shale_compact(const char *src, const char *dst, shale_progress_fn progress, void *ctx);

/* shale_generate_id -- a new id into *id: unique and strictly increasing
 * across restarts, crashes and power loss (ids are leased in blocks made
 * durable before use; a crash skips the rest of a block, never repeats one).
 * Errors: SHALE_EINVAL, SHALE_EREADONLY, SHALE_ENOSPC (ids exhausted, or the
 * device is full), SHALE_EIO, SHALE_ENOMEM, the sticky background error. */
int shale_generate_id(shale_db *db, uint64_t *id);

/* shale_checksum -- a 64-bit checksum of the contents of every tree (names,
 * keys and values, in order; introspect.c has the exact definition) at one
 * instant: databases holding the same trees and keys agree, however their
 * files were written.  Reads everything (merge operands folded: a tree with
 * operands needs its operator).
 * Errors: SHALE_EINVAL, SHALE_ENOMERGEOP, SHALE_ECORRUPT, SHALE_EIO,
 * SHALE_ENOMEM. */
int shale_checksum(shale_db *db, uint64_t *sum);

/* shale_size_on_disk -- bytes of the database's files (page file and logs)
 * into *bytes.  Errors: SHALE_EINVAL. */
int shale_size_on_disk(shale_db *db, uint64_t *bytes);

/* shale_was_recovered -- true when this open found the database not closed
 * cleanly (a crash, a kill, a power loss) and recovered it; false after a
 * clean shale_close, for a new database, and for NULL. */
bool shale_was_recovered(shale_db *db);

/* shale_export -- write every tree of db (names, keys, values) into a new
 * file at path, as of one instant: the documented, versioned, checksummed
 * format of src/lsm/dump.c.  progress (may be NULL) gets entries done and an
 * estimate of all.  Values are exported folded: a tree holding merge
 * operands needs its operator registered.  A failed export leaves no file.
 * Errors: SHALE_EINVAL, SHALE_EEXIST (path exists), SHALE_ENOENT (no such
 * directory), SHALE_ENOMERGEOP, SHALE_EIO, SHALE_ENOSPC, SHALE_ECORRUPT,
 * SHALE_ENOMEM. */
int shale_export(shale_db *db, const char *path, shale_progress_fn progress, void *ctx);

#define SHALE_IMPORT_OVERWRITE 1 /* keys that exist already get the dump's values */

/* shale_import -- add the trees and keys of the dump at path to db,
 * creating trees as needed.  The whole dump is checked first (structure,
 * counts and checksum), and unless flags has SHALE_IMPORT_OVERWRITE so is
 * every key against db: a key that exists already fails the import with
 * SHALE_EEXIST, naming it in *conflict (if not NULL: the tree name, a zero
 * byte, then the key; len covers both), and a truncated or damaged dump
 * fails with SHALE_ECORRUPT -- in both cases with nothing written.  The
 * keys are then written in batches (a crash part way leaves a prefix of
 * them).  progress as for shale_export.
 * Errors: SHALE_EINVAL, SHALE_EREADONLY, SHALE_ENOENT (no file), SHALE_EEXIST,
 * SHALE_ECORRUPT, SHALE_EFORMAT (a dump version this library does not read),
 * SHALE_EIO, SHALE_ENOSPC, SHALE_ENOMEM. */
int shale_import(shale_db *db, const char *path, int flags, shale_buf *conflict,
                 shale_progress_fn progress, void *ctx);

/* shale_stats_get -- fill *st.  Errors: SHALE_EINVAL. */
int shale_stats_get(shale_db *db, shale_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* SHALE_H */
