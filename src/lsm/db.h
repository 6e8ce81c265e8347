/*
 * db.h -- the database object shared by the lsm modules (internal).
 *
 * Locks, in the order they may be taken:
 *   tree_mu   the tree table (creating a tree writes to the catalog under it);
 *   write_mu  one writer at a time: sequence numbers, log append, memtable insert,
 *             memtable switch (db->log and db->active are read under it);
 *   ckpt_mu   one checkpoint at a time (background threads, close);
 *   ver_mu    the current version pointer and the background work flags
 *             (with bg_cv / room_cv);
 *   list_mu   the tree list, for the background threads (tree_id_live); they
 *             must never wait for tree_mu, which a writer may hold while it
 *             waits for them to make room.
 * Readers take only ver_mu, briefly, to pin a version.
 *
 * Files in the database directory:
 *   data            the page file (space layer)
 *   log.<16 hex>    write-ahead log files, numbered upward; one per memtable
 *   LOCK            held with an exclusive lock while open
 */
#ifndef SHALE_DB_H
#define SHALE_DB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shale.h"
#include "../space/env.h"
#include "../space/space.h"
#include "batch.h"
#include "log.h"
#include "version.h"

#define DB_MAX_IMM 2 /* immutable memtables before writers wait */

/* A log writer shared between the db and writers syncing it. */
typedef struct db_log {
    lg_writer *lw;
    uint64_t no;
    atomic_int refs;
    struct db_log *older; /* in db->unsynced: the next older log */
} db_log;

struct shale_tree {
    shale_db *db;
    uint32_t id;
    atomic_bool dropped;
    _Atomic(struct mo_op *) merge_op; /* NULL: none; earlier ones hang off it */
    struct mo_op *merge_ops; /* every operator set, freed with the handle */
    char *name;
    struct shale_tree *next;
};

/* A merge as a test's hook sees it, before it runs (merge.c). */
typedef struct db_merge_info {
    uint32_t from_level, out_level; /* from_level 0: the young segments */
    uint64_t from_tombstones;       /* in the first merged segment */
    bool window;                    /* only the keys in (lo, hi] of from_level */
    bool has_lo, has_hi;            /* no lo: from the start; no hi: to the end */
    const uint8_t *lo, *hi;
    size_t lolen, hilen;
} db_merge_info;

struct shale_db {
    char *path;
    sp_env *env;
    shale_options opts;
    sp_lock *lock;
    sp_space *sp;
    seg_store store; /* sp, the node cache, and the compression of new segments */
    zb_set *zb;      /* zombie pages and the live versions */

    pthread_mutex_t write_mu;
    db_log *log;
    db_log *unsynced; /* earlier logs a memtable switch left unsynced, newest
                         first, each with a reference (write_mu) */
    bool dir_unsynced;       /* a log was created since the directory was last
                                synced (write_mu) */
    pthread_mutex_t sync_mu; /* one shale_flush at a time */
    mt_table *active; /* the active memtable; changes only under write_mu (the
                         current version holds its reference) */
    atomic_uint_fast64_t last_seq; /* every write <= this is visible */

    pthread_mutex_t ver_mu;
    pthread_cond_t bg_cv;   /* background threads wait for work */
    pthread_cond_t room_cv; /* writers wait for a memtable write-out */
    pthread_cond_t sync_cv; /* the periodic syncer sleeps on it (stop wakes it) */
    ver_version *current;
    bool stopping;
    bool merging;
    int bg_error;           /* sticky: first background failure */

    pthread_mutex_t ckpt_mu;
    uint64_t next_seg_id;
    uint64_t next_gen;
    uint64_t ckpt_seq;   /* last sequence number held by segments */
    _Atomic uint64_t written_seq; /* the newest write of any memtable no longer in
                                     the current version (set under ver_mu) */
    _Atomic uint64_t ckpt_log_no; /* logs below it are covered by the header */

    pthread_mutex_t tree_mu; /* serialises creating and dropping trees */
    pthread_mutex_t list_mu; /* guards the list and next_tree_id for readers that
                                do not hold tree_mu; a leaf lock */
    struct shale_tree *trees;
    uint32_t next_tree_id;

    pthread_t flush_thread, merge_thread, sync_thread;
    bool threads_started, sync_started;

    bool recovered; /* the last shutdown was not clean (shale_was_recovered) */
    bool created; /* this open created the database */
    bool closing; /* shale_close is writing the final checkpoint (a clean one) */
    /* shale_generate_id (ids.c): ids below id_ceiling are leased durably */
    pthread_mutex_t id_mu;
    uint64_t next_id, id_ceiling;
    atomic_uint_fast64_t st_user_bytes, st_log_bytes, st_flushes, st_merges, st_stalls,
        st_stall_us, st_checkpoints;
    /* smooth back-pressure (write.c): young segments beyond
     * max_young_segments in the current version, and the delay owed */
    atomic_uint young_excess;
    atomic_uint_fast64_t delay_debt_ns;
    atomic_uint_fast64_t st_slowdowns, st_stall_max_us;
    atomic_uint_fast64_t st_leaves_rewritten, st_leaves_recycled, st_merge_pages,
        st_merge_keys, st_merge_parents, st_merge_us, st_merge_windows;
    atomic_uint_fast64_t st_txn_commits, st_txn_reruns, st_txn_conflicts;
    /* watch.c: subscribers (list under watch_mu, taken inside write_mu) */
    pthread_mutex_t watch_mu;
    struct shale_watcher *watchers;
    atomic_uint nwatchers;
    /* merge.c (the merger's own): the last key of each level's last rotating
     * window, where the next one starts (NULL: from the start) */
    struct {
        uint8_t *key;
        size_t len;
    } promote_at[SEG_MAX_LEVEL + 1];
    /* tests: called by the merger before each merge (set and read under ver_mu) */
    void (*merge_hook)(void *ctx, const db_merge_info *m);
    void *merge_hook_ctx;
};

/* A read view of every tree at one instant (snapshot.c). */
struct shale_snapshot {
    shale_db *db;
    ver_version *v; /* pinned */
    uint64_t seq;
};

/* Internal entry points shared by the lsm files. */
int db_open_env(const char *path, const shale_options *opts, sp_env *env, shale_db **dbp);
int db_write(shale_db *db, shale_batch *b);
/* db_apply_op -- one decoded batch op into memtable mt at seq (write, replay). */
int db_apply_op(mt_table *mt, uint64_t seq, const batch_op *op);
ver_version *db_pin(shale_db *db, uint64_t *snap);
int db_get_ikey(shale_db *db, ver_version *v, uint64_t snap, const void *ikey, size_t iklen,
                shale_buf *val);
/* db_mem_ranges -- base (may be NULL; a new reference when nothing is added)
 * plus the range tombstones with seq <= upto of the nmts memtables, as one
 * set in *out (NULL: none) (read.c). */
int db_mem_ranges(mt_table *const *mts, size_t nmts, const gy_set *base, uint64_t upto,
                  gy_set **out);
/* db_covered -- whether a range tombstone of v visible at snap deletes a
 * version of key with sequence (or segment seq) after (read.c). */
bool db_covered(const ver_version *v, const void *key, size_t klen, uint64_t after, uint64_t snap);
int db_bg_error(shale_db *db);
void db_set_bg_error(shale_db *db, int rc);
int db_start_threads(shale_db *db);
void db_stop_threads(shale_db *db);
int db_flush_memtables(shale_db *db); /* write out every memtable (close) */
int db_checkpoint(shale_db *db);
int db_switch_memtable(shale_db *db); /* with write_mu held */
/* db_set_current -- with ver_mu held: install v as the current version (the
 * old one's reference is the caller's) and update the back-pressure. */
void db_set_current(shale_db *db, ver_version *v);
int db_open_log(shale_db *db, uint64_t no, bool sync_dir, db_log **out);
int db_remove_logs_below(shale_db *db, uint64_t keep);
uint64_t db_log_bytes(shale_db *db);
/* db_build_fn -- reads v at snap and adds to b for db_write_built; returns a
 * non-negative result to hand back, or an error (then nothing is written). */
typedef int (*db_build_fn)(shale_db *db, ver_version *v, uint64_t snap, shale_batch *b,
                           void *ctx);
int db_write_built(shale_db *db, shale_batch *b, db_build_fn build, void *ctx);
int db_log_name(const shale_db *db, uint64_t no, char *buf, size_t n);
int tree_load_catalog(shale_db *db);
/* tree_lookup -- the open handle of tree name, or NULL when there is no such
 * tree (never creates one). */
struct shale_tree *tree_lookup(shale_db *db, const char *name);
/* tree_scan -- fn on every live entry of tree id at (v, snap), in key order
 * (keys without the tree prefix); an error from fn stops the scan and is
 * returned (tree.c).  Tree TREE_ID_CATALOG is the catalog.  Merge operands
 * are folded with db's operators (db NULL: none). */
typedef int (*tree_entry_fn)(void *ctx, const uint8_t *k, size_t kl, const void *v, size_t vl);
int tree_scan(shale_db *db, ver_version *v, uint64_t snap, uint32_t id, tree_entry_fn fn,
              void *ctx);
/* tree_names -- the named trees at (v, snap) in name order (the default
 * tree is not among them); free with tree_names_free. */
typedef struct tree_name {
    uint32_t id;
    char *name; /* zero-terminated */
    size_t nlen;
} tree_name;
int tree_names(ver_version *v, uint64_t snap, tree_name **out, size_t *n);
void tree_names_free(tree_name *v, size_t n);
/* ids.c: ids_load -- a catalog entry for the id lease (SHALE_NOTFOUND: not one). */
int ids_load(shale_db *db, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl);
void tree_free_all(shale_db *db);
bool tree_id_live(shale_db *db, uint32_t id);
/* Dropped trees' keys are left out when writing segments; live_cache
 * remembers the last tree id's answer. */
typedef struct live_cache {
    shale_db *db;
    uint32_t id;
    bool valid, live;
} live_cache;
bool db_key_live(live_cache *lc, const uint8_t *ikey, size_t iklen);
/* The merge operator of a key's tree, the last tree's handle cached (tree.c).
 * The operator is read anew on every call (it may change any time). */
typedef struct op_cache {
    shale_db *db;
    uint32_t id;
    struct shale_tree *t; /* NULL: no handle for id */
    bool valid;
} op_cache;
const struct mo_op *db_merge_op(op_cache *oc, const uint8_t *ikey, size_t iklen);
bool db_dead_tree_between(shale_db *db, uint32_t a, uint32_t b);
void db_next_ids(shale_db *db, uint64_t *id, uint64_t *gen);
/* merge.c: db_merge_due (ver_mu held) -- whether a merge is due;
 * db_merge_one -- run one (SHALE_NOTFOUND: none due). */
bool db_merge_due(shale_db *db);
int db_merge_one(shale_db *db);
size_t db_young_count(const ver_version *v);
uint64_t db_level_cap(const shale_db *db, uint32_t level); /* bytes level n may hold */
/* db_window_densest -- of the runs of k consecutive subtrees (their entries
 * and tombstones), the first with the most tombstones: true with *start when
 * its tombstones are at least 1/16 of its entries (merge.c). */
bool db_window_densest(const uint64_t *entries, const uint64_t *tombstones, size_t n, size_t k,
                       size_t *start);
int tree_check_key(shale_tree *t, const void *key, size_t klen);
/* watch.c: db_watch_publish -- a batch committed at seq to the subscribers
 * (write_mu held); db_watch_free_all -- free the watchers left at close. */
void db_watch_publish(shale_db *db, uint64_t seq, const void *payload, size_t len);
void db_watch_free_all(shale_db *db);
int buf_set(shale_buf *b, const void *p, size_t n);
int buf_reserve(shale_buf *b, size_t n); /* room for n bytes (len unchanged) */

#endif
