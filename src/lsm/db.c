/*
 * db.c -- opening a database (options, lock, page file, recovery) and closing it.
 *
 * Recovery: the newest valid header slot gives the segments and the first log
 * file to replay (log_no).  Log files below it are leftovers of a checkpoint
 * that did not get to delete them and are removed.  The rest are replayed in
 * order into one memtable; the first torn or CRC-failing record ends the
 * replay: its file is truncated there (and synced), and every later log file
 * is removed, so the recovered state is a prefix of the acknowledged writes.
 * The replayed memtable becomes an immutable memtable tied to the last
 * replayed log, written out by the background thread like any other; new
 * writes go to a fresh log file.  So recovery time is bounded by what was not
 * yet checkpointed (a memtable or two), never by the database size.
 */
#include "db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "../space/common.h"
#include "meta.h"

#define LOG_BUF_BYTES (1u << 20)

/* db_log_name -- path of log file no. */
int db_log_name(const shale_db *db, uint64_t no, char *buf, size_t n)
{
    int len = snprintf(buf, n, "%s/log.%016" PRIx64, db->path, no);
    return (len < 0 || (size_t)len >= n) ? SHALE_EINVAL : SHALE_OK;
}

/* validate_options -- SHALE_EINVAL for any out-of-range option. */
static int validate_options(const shale_options *o)
{
    if (o->page_size < SP_MIN_PAGE_SIZE || o->page_size > SP_MAX_PAGE_SIZE ||
        (o->page_size & (o->page_size - 1)))
        return SHALE_EINVAL;
    if (o->memtable_size < (64u << 10) || o->memtable_size > (1u << 30))
        return SHALE_EINVAL;
    if (o->cache_size < (256u << 10))
        return SHALE_EINVAL;
    if (codec_check(o->compression, o->compression_level) < 0)
        return SHALE_EINVAL;
    if (o->level_factor < 2 || o->level_factor > 100)
        return SHALE_EINVAL;
    if (o->max_young_segments < 2 || o->max_young_segments > 64)
        return SHALE_EINVAL;
    return SHALE_OK;
}

/* join_path -- malloc'd dir + "/" + name. */
static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

/* A sorted list of log file numbers found in the directory. */
typedef struct log_list {
    uint64_t *no;
    size_t n, cap;
} log_list;

/* collect_log -- sp_list_fn adding "log.<hex>" names to a log_list. */
static int collect_log(void *ctx, const char *name)
{
    log_list *l = ctx;
    char *end;
    if (strncmp(name, "log.", 4) != 0 || strlen(name) != 20)
        return 0;
    uint64_t no = strtoull(name + 4, &end, 16);
    if (*end)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        uint64_t *nv = realloc(l->no, cap * sizeof *nv);
        if (!nv)
            return SHALE_ENOMEM;
        l->no = nv;
        l->cap = cap;
    }
    l->no[l->n++] = no;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* remove_log -- delete log file no. */
static int remove_log(shale_db *db, uint64_t no)
{
    char name[4096];
    RET(db_log_name(db, no, name, sizeof name));
    int rc = db->env->remove(db->env, name);
    return rc == SHALE_ENOENT ? SHALE_OK : rc;
}

/* replay_log -- apply every valid record of log file no to mt; *torn is set
 * when the file ends in a torn record, or a record's sequence number does
 * not follow the last one's (the records before it, in an older log, were
 * lost: a memtable switch does not sync the old log, so a power loss may
 * keep newer records without older ones).  Either way replay ends there:
 * the file is truncated (unless read-only) and later logs are dropped, so
 * what is recovered is a prefix of the writes. */
static int replay_log(shale_db *db, uint64_t no, mt_table *mt, uint64_t *last_seq, bool *torn,
                      uint64_t *records)
{
    int rc = SHALE_OK;
    char name[4096];
    lg_reader *lr = NULL;
    uint8_t type;
    uint64_t seq;
    const void *payload;
    size_t len;
    bool gap = false;
    uint64_t end;

    ERR(db_log_name(db, no, name, sizeof name));
    ERR(lg_reader_open(db->env, name, &lr));
    for (;;) {
        end = lg_reader_valid_end(lr);
        if ((rc = lg_reader_next(lr, &type, &seq, &payload, &len)) != SHALE_OK)
            break;
        batch_reader br;
        batch_op op;
        if (type != LG_T_BATCH || seq <= *last_seq) {
            /* An unknown record type or a sequence going backwards cannot be a
             * torn write: the log is damaged. */
            ERR_SET(SHALE_ECORRUPT);
        }
        if (seq != *last_seq + 1) {
            gap = true;
            break;
        }
        ERR(batch_reader_init(&br, payload, len));
        uint64_t s = seq;
        while ((rc = batch_reader_next(&br, &op)) == SHALE_OK)
            ERR(db_apply_op(mt, s++, &op));
        ERR(rc == SHALE_NOTFOUND ? SHALE_OK : rc);
        if (s > seq)
            *last_seq = s - 1;
        (*records)++;
    }
    if (!gap) {
        ERR(rc == SHALE_NOTFOUND ? SHALE_OK : rc);
        end = lg_reader_valid_end(lr);
    }
    rc = SHALE_OK;
    *torn = gap || end < lg_reader_file_size(lr);
    if (!db->opts.read_only) {
        /* What was replayed may never have been synced (the process died
         * before it could be): make it durable before writes that follow it
         * are, or a power loss could keep the later writes and not these. */
        sp_file *f = NULL;
        ERR(db->env->open(db->env, name, 0, &f));
        rc = *torn ? db->env->truncate(f, end) : SHALE_OK;
        if (rc == SHALE_OK)
            rc = db->env->sync(f);
        int crc = db->env->close(f);
        ERR(rc);
        ERR(crc);
    }
err:
    lg_reader_close(lr);
    return rc;
}

/* recover -- replay the logs from log_no on; the result goes into *rec (NULL
 * when nothing was replayed) and *next_log is the number for the new log. */
static int recover(shale_db *db, uint64_t log_no, uint64_t *last_seq, ver_mem *rec,
                   uint64_t *next_log)
{
    int rc = SHALE_OK;
    log_list l = {0};
    mt_table *mt = NULL;
    uint64_t records = 0;
    bool torn = false;
    size_t i;

    *next_log = log_no;
    rec->mt = NULL;
    rec->log_no = 0;
    ERR(db->env->list(db->env, db->path, collect_log, &l));
    if (l.n)
        qsort(l.no, l.n, sizeof *l.no, cmp_u64);
    ERR(mt_create(&mt));
    for (i = 0; i < l.n; i++) {
        if (l.no[i] < log_no) {
            if (!db->opts.read_only)
                ERR(remove_log(db, l.no[i]));
            continue;
        }
        if (torn) {
            if (!db->opts.read_only)
                ERR(remove_log(db, l.no[i]));
            continue;
        }
        ERR(replay_log(db, l.no[i], mt, last_seq, &torn, &records));
        *next_log = l.no[i] + 1;
        /* The memtable holds every replayed log: a checkpoint taken before it
         * is written out must keep all of them, so it is tied to the first. */
        if (!rec->log_no)
            rec->log_no = l.no[i];
    }
    if (!db->opts.read_only)
        ERR(db->env->sync_dir(db->env, db->path));
    if (records) {
        rec->mt = mt;
        rec->last_seq = *last_seq;
        mt = NULL;
        db->recovered = true;
    }
err:
    mt_unref(mt);
    free(l.no);
    return rc;
}

/* db_open_log -- create log file no as the db's current log (its directory
 * entry synced when sync_dir is set). */
int db_open_log(shale_db *db, uint64_t no, bool sync_dir, db_log **out)
{
    int rc = SHALE_OK;
    char name[4096];
    db_log *l = calloc(1, sizeof *l);
    if (!l)
        return SHALE_ENOMEM;
    ERR(db_log_name(db, no, name, sizeof name));
    ERR(lg_writer_open(db->env, name, LOG_BUF_BYTES, &l->lw));
    rc = sync_dir ? db->env->sync_dir(db->env, db->path) : SHALE_OK;
    if (rc < 0) {
        lg_writer_close(l->lw, 0);
        goto err;
    }
    l->no = no;
    atomic_init(&l->refs, 1);
    *out = l;
    return SHALE_OK;
err:
    free(l);
    return rc;
}

/* db_free -- release everything the db holds (no I/O beyond closing). */
static void db_free(shale_db *db)
{
    db_watch_free_all(db);
    tree_free_all(db);
    for (size_t i = 0; i <= SEG_MAX_LEVEL; i++)
        free(db->promote_at[i].key);
    ver_unref(db->current);
    zb_close(db->zb); /* the last version has ended: every zombie goes back */
    if (db->log) {
        lg_writer_close(db->log->lw, 0);
        free(db->log);
    }
    while (db->unsynced) { /* close without a sync: nothing is lost that a
                              crash here would not lose */
        db_log *l = db->unsynced;
        db->unsynced = l->older;
        lg_writer_close(l->lw, 0);
        free(l);
    }
    sp_close(db->sp);
    node_cache_close(db->store.cache);
    if (db->lock)
        db->env->unlock(db->lock);
    pthread_mutex_destroy(&db->write_mu);
    pthread_mutex_destroy(&db->ver_mu);
    pthread_mutex_destroy(&db->ckpt_mu);
    pthread_mutex_destroy(&db->tree_mu);
    pthread_mutex_destroy(&db->list_mu);
    pthread_mutex_destroy(&db->sync_mu);
    pthread_mutex_destroy(&db->id_mu);
    pthread_mutex_destroy(&db->watch_mu);
    pthread_cond_destroy(&db->bg_cv);
    pthread_cond_destroy(&db->room_cv);
    pthread_cond_destroy(&db->sync_cv);
    free(db->path);
    free(db);
}

/* db_alloc -- a zeroed db with its locks initialised. */
static shale_db *db_alloc(const char *path, const shale_options *opts, sp_env *env)
{
    shale_db *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    if (!(db->path = strdup(path))) {
        free(db);
        return NULL;
    }
    db->env = env;
    db->opts = *opts;
    /* most writes hold write_mu for a microsecond or two: spinning briefly
     * (glibc's adaptive mutex) beats a sleep and a wake-up per write when
     * several threads write */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
#ifdef __GLIBC__
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init(&db->write_mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_init(&db->ver_mu, NULL);
    pthread_mutex_init(&db->ckpt_mu, NULL);
    pthread_mutex_init(&db->tree_mu, NULL);
    pthread_mutex_init(&db->list_mu, NULL);
    pthread_mutex_init(&db->sync_mu, NULL);
    pthread_mutex_init(&db->id_mu, NULL);
    pthread_mutex_init(&db->watch_mu, NULL);
    pthread_cond_init(&db->bg_cv, NULL);
    pthread_cond_init(&db->room_cv, NULL);
    pthread_cond_init(&db->sync_cv, NULL);
    db->next_tree_id = TREE_ID_DEFAULT + 1;
    return db;
}

/* open_dir -- create the directory if allowed, and take the lock. */
static int open_dir(shale_db *db)
{
    int rc = db->env->exists(db->env, db->path);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (!db->opts.create_if_missing || db->opts.read_only)
            return SHALE_ENOENT;
        rc = db->env->mkdir(db->env, db->path);
        if (rc < 0 && rc != SHALE_EEXIST)
            return rc;
    }
    char *lock = join_path(db->path, "LOCK");
    if (!lock)
        return SHALE_ENOMEM;
    rc = db->env->lock(db->env, lock, &db->lock);
    free(lock);
    return rc;
}

/* open_space -- open the page file and decode the checkpoint body. */
static int open_space(shale_db *db, meta_body *m)
{
    int rc = SHALE_OK;
    void *body = NULL;
    size_t len = 0;
    bool created = false;
    char *data = join_path(db->path, "data");
    sp_config cfg = {
        .env = db->env,
        .path = data,
        .page_size = db->opts.page_size,
        .cache_bytes = db->opts.cache_size,
        .create = db->opts.create_if_missing && !db->opts.read_only,
        .read_only = db->opts.read_only,
    };
    if (!data)
        return SHALE_ENOMEM;
    ERR(node_cache_open(db->opts.cache_size, &db->store.cache));
    ERR(sp_open(&cfg, &db->sp, &body, &len, &created));
    db->created = created;
    db->store.sp = db->sp;
    if (created || len == 0) {
        memset(m, 0, sizeof *m);
        m->log_no = 1;
        m->next_seg_id = 1;
        m->next_gen = 1;
        m->level_factor = db->opts.level_factor;
        m->compression = (uint64_t)db->opts.compression;
    } else {
        ERR(meta_decode(&db->store, body, len, m));
    }
    /* Compression is the database's, fixed at creation like the page size. */
    db->opts.compression = (int)m->compression;
    if (codec_check(db->opts.compression, db->opts.compression_level) < 0)
        db->opts.compression_level = 0;
    db->store.codec = db->opts.compression;
    db->store.level = db->opts.compression_level;
    /* One budget for both caches: with compression most reads are of
     * decompressed leaves, so they get three quarters of it. */
    size_t leaf_bytes = db->store.codec == CODEC_NONE ? 0 : db->opts.cache_size / 4 * 3;
    sp_set_cache_bytes(db->sp, db->opts.cache_size - leaf_bytes);
    node_cache_set_budget(db->store.cache, leaf_bytes);
    db->opts.page_size = sp_page_size(db->sp);
    db->opts.level_factor = (uint32_t)m->level_factor;
err:
    free(body);
    free(data);
    return rc;
}

int db_open_env(const char *path, const shale_options *opts, sp_env *env, shale_db **dbp)
{
    int rc = SHALE_OK;
    shale_options defaults;
    meta_body m = {0};
    ver_mem mem = {0}, rec = {0};
    uint64_t last_seq, next_log;
    shale_db *db;

    if (!path || !*path || !dbp)
        return SHALE_EINVAL;
    *dbp = NULL;
    if (!opts) {
        shale_options_default(&defaults);
        opts = &defaults;
    }
    RET(validate_options(opts));
    if (!(db = db_alloc(path, opts, env)))
        return SHALE_ENOMEM;
    ERR(open_dir(db));
    ERR(open_space(db, &m));
    /* The header chosen may have been written but never synced before a
     * crash; recovery is about to delete logs below its log_no, so it must be
     * durable first (else a power loss could bring back the older header
     * whose logs are gone). */
    if (!db->opts.read_only)
        ERR(sp_sync(db->sp));
    db->next_seg_id = m.next_seg_id;
    db->next_gen = m.next_gen;
    db->ckpt_seq = m.ckpt_seq;
    last_seq = m.ckpt_seq;
    ERR(recover(db, m.log_no, &last_seq, &rec, &next_log));
    atomic_store(&db->ckpt_log_no, m.log_no);
    atomic_store(&db->last_seq, last_seq);
    ERR(mt_create_sized(&mem.mt, db->opts.memtable_size));
    mem.log_no = next_log;
    if (!db->opts.read_only)
        ERR(db_open_log(db, next_log, true, &db->log));
    ERR(zb_open(sp_freespace_of(db->sp), &db->zb));
    ERR(ver_new(db->zb, &mem, rec.mt ? &rec : NULL, rec.mt ? 1 : 0, m.segs, m.nsegs, m.gy,
                &db->current));
    db->active = mem.mt;
    ERR(tree_load_catalog(db));
    /* A header written by a clean close says so; any other means the last
     * process stopped without closing (bodies without flags: only a replayed
     * log tells).  Opened for writing, a clean header is replaced at once by
     * one that is not, so a crash from here on is known next time. */
    bool clean = db->created || !m.has_flags || (m.flags & META_CLEAN);
    if (!clean)
        db->recovered = true;
    if (!db->opts.read_only && !db->created && m.has_flags && (m.flags & META_CLEAN))
        ERR(db_checkpoint(db));
    if (!db->opts.read_only)
        ERR(db_start_threads(db));
    mt_unref(mem.mt);
    mt_unref(rec.mt);
    meta_free_segs(&m);
    *dbp = db;
    return SHALE_OK;
err:
    mt_unref(mem.mt);
    mt_unref(rec.mt);
    meta_free_segs(&m);
    db_free(db);
    return rc;
}

/* db_remove_logs_below -- delete every log file numbered below keep. */
int db_remove_logs_below(shale_db *db, uint64_t keep)
{
    int rc = SHALE_OK;
    log_list l = {0};
    ERR(db->env->list(db->env, db->path, collect_log, &l));
    for (size_t i = 0; i < l.n; i++)
        if (l.no[i] < keep)
            ERR(remove_log(db, l.no[i]));
err:
    free(l.no);
    return rc;
}

/* Summing the sizes of the log files for the statistics. */
typedef struct log_sum {
    shale_db *db;
    const char *skip; /* the current log: its size is taken from the writer */
    uint64_t bytes;
} log_sum;

/* add_log_size -- sp_list_fn adding one log file's size. */
static int add_log_size(void *ctx, const char *name)
{
    log_sum *ls = ctx;
    sp_file *f;
    uint64_t sz = 0;
    if (strncmp(name, "log.", 4) != 0 || (ls->skip && strcmp(name, ls->skip) == 0))
        return 0;
    char *path = join_path(ls->db->path, name);
    if (path && ls->db->env->open(ls->db->env, path, SP_O_RDONLY, &f) == SHALE_OK) {
        if (ls->db->env->size(f, &sz) == SHALE_OK)
            ls->bytes += sz;
        ls->db->env->close(f);
    }
    free(path);
    return 0;
}

/* db_log_bytes -- bytes in the log files, counting the current log's buffer. */
uint64_t db_log_bytes(shale_db *db)
{
    char cur[32] = "";
    log_sum ls = {db, cur, 0};
    uint64_t current = 0;
    pthread_mutex_lock(&db->write_mu);
    if (db->log) {
        current = lg_size(db->log->lw);
        snprintf(cur, sizeof cur, "log.%016" PRIx64, db->log->no);
    }
    pthread_mutex_unlock(&db->write_mu);
    db->env->list(db->env, db->path, add_log_size, &ls);
    return ls.bytes + current;
}

int shale_close(shale_db *db)
{
    int rc = SHALE_OK;
    if (!db)
        return SHALE_OK;
    if (!db->opts.read_only) {
        db_stop_threads(db);
        rc = db_bg_error(db);
        db->closing = true; /* the final checkpoint is a clean one */
        if (rc == SHALE_OK)
            rc = db_flush_memtables(db);
        if (rc < 0) {
            /* Whatever could not be written out stays in the log: make it durable. */
            pthread_mutex_lock(&db->write_mu);
            if (db->log)
                lg_sync(db->log->lw, UINT64_MAX);
            pthread_mutex_unlock(&db->write_mu);
        }
    }
    db_free(db);
    return rc;
}
