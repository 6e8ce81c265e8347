/*
 * bg.c -- background work: writing immutable memtables out to young segments,
 * merging segments, checkpoints, and the periodic log sync.
 *
 * Three threads: the flusher writes the oldest immutable memtable to a new
 * young segment, installs a version that lists the segment instead of the
 * memtable, and checkpoints; the merger runs the merges merge.c chooses, one
 * at a time, each followed by a checkpoint; the syncer syncs the log every
 * flush_every_ms.  Installing a version is a pointer swap
 * under ver_mu; readers never wait for a write-out or a merge.
 *
 * Checkpoint (db_checkpoint): pin the current version; its segments are the
 * live pages, its oldest memtable's log is where recovery must start, the
 * sequence number its segments cover is ckpt_seq; space writes the header
 * durably (space.h states the ordering); then log files below log_no go.
 *
 * A failure in a background thread is sticky (db->bg_error): writers get it,
 * readers keep working, and nothing already acknowledged is dropped (it is
 * still in the log).
 */
#include <stdlib.h>
#include <time.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"
#include "mergeop.h"
#include "meta.h"

int db_bg_error(shale_db *db)
{
    pthread_mutex_lock(&db->ver_mu);
    int rc = db->bg_error;
    pthread_mutex_unlock(&db->ver_mu);
    return rc;
}

void db_set_bg_error(shale_db *db, int rc)
{
    pthread_mutex_lock(&db->ver_mu);
    if (!db->bg_error)
        db->bg_error = rc;
    pthread_cond_broadcast(&db->room_cv);
    pthread_cond_broadcast(&db->bg_cv);
    pthread_mutex_unlock(&db->ver_mu);
}

/* Source over a memtable: every newest version, tombstones included. */
typedef struct mem_src {
    mt_iter it;
    bool started;
    live_cache lc;
    gy_set *ranges; /* the memtable's range tombstones (NULL: none) */
    op_cache oc;
    mo_stack st; /* a key's operands, settled into out */
    shale_buf out;
} mem_src;

/* mem_operands -- the operands of the iterator's key in this memtable, down
 * to the first value, tombstone or range tombstone below them, settled into
 * s->out (mo_settle). */
static int mem_operands(mem_src *s, const void *key, size_t klen, uint8_t *kind)
{
    const gy_set *gy = s->ranges;
    mo_reset(&s->st);
    RET(mo_push_versions(&s->st, s->it, &gy, 1));
    return mo_settle(&s->st, db_merge_op(&s->oc, key, klen), key, klen, &s->out, kind);
}

static int mem_next(void *ctx, uint8_t *kind, const void **key, size_t *klen, const void **val,
                    size_t *vlen)
{
    mem_src *s = ctx;
    for (;;) {
        if (!s->started) {
            mt_iter_first(&s->it);
            s->started = true;
        } else {
            mt_iter_next(&s->it);
        }
        if (!mt_iter_valid(&s->it))
            return SHALE_NOTFOUND;
        *key = mt_iter_key(&s->it, klen);
        if (!db_key_live(&s->lc, *key, *klen))
            continue;
        /* deleted by a later range tombstone of the same memtable (which
         * moves to the graveyard with the write-out) */
        if (gy_covered(s->ranges, *key, *klen, mt_iter_seq(&s->it)))
            continue;
        *kind = mt_iter_kind(&s->it);
        if (*kind == NODE_KIND_MERGE) {
            RET(mem_operands(s, *key, *klen, kind));
            *val = s->out.data ? s->out.data : "";
            *vlen = s->out.len;
            return SHALE_OK;
        }
        *val = mt_iter_value(&s->it, vlen);
        return SHALE_OK;
    }
}

/* db_next_ids -- allocate a segment id and a write generation. */
void db_next_ids(shale_db *db, uint64_t *id, uint64_t *gen)
{
    pthread_mutex_lock(&db->ver_mu);
    *id = db->next_seg_id++;
    *gen = db->next_gen++;
    pthread_mutex_unlock(&db->ver_mu);
}

/* write_mem -- build a young segment from memtable m (*segp NULL if empty). */
static int write_mem(shale_db *db, const ver_mem *m, seg_segment **segp)
{
    mem_src s = {.lc = {.db = db}, .oc = {.db = db}};
    seg_source src = {mem_next, &s};
    uint64_t id, gen;
    RET(db_mem_ranges((mt_table *const *)&m->mt, 1, NULL, UINT64_MAX, &s.ranges));
    mt_iter_init(&s.it, m->mt, UINT64_MAX);
    db_next_ids(db, &id, &gen);
    int rc = seg_build(&db->store, id, gen, 0, &src, segp);
    gy_unref(s.ranges);
    mo_free(&s.st);
    shale_buf_free(&s.out);
    if (rc == SHALE_NOTFOUND) {
        *segp = NULL;
        rc = SHALE_OK;
    }
    if (rc == SHALE_OK && *segp)
        (*segp)->seq = m->last_seq; /* its own ranges are applied; older ones are older */
    return rc;
}

/* install_written -- replace immutable memtable mt by seg (may be NULL) in a
 * new current version; mt's range tombstones join the graveyard. */
static int install_written(shale_db *db, mt_table *mt, uint64_t last_seq, seg_segment *seg)
{
    int rc;
    ver_version *v = NULL;
    gy_set *gy = NULL, *base;
    /* The new graveyard is built outside ver_mu (readers pin versions under
     * it); only a merge retiring ranges meanwhile makes it build again. */
    pthread_mutex_lock(&db->ver_mu);
    base = db->current->gy;
    gy_ref(base);
    pthread_mutex_unlock(&db->ver_mu);
    rc = db_mem_ranges(&mt, 1, base, UINT64_MAX, &gy);
    pthread_mutex_lock(&db->ver_mu);
    ver_version *cur = db->current;
    ver_mem *imm = malloc((cur->nimm + 1) * sizeof *imm);
    size_t n = 0;
    if (!imm && rc == SHALE_OK)
        rc = SHALE_ENOMEM;
    for (size_t i = 0; imm && i < cur->nimm; i++)
        if (cur->imm[i].mt != mt)
            imm[n++] = cur->imm[i];
    if (rc == SHALE_OK && cur->gy != base) {
        gy_unref(gy);
        gy = NULL;
        rc = db_mem_ranges(&mt, 1, cur->gy, UINT64_MAX, &gy);
    }
    if (rc == SHALE_OK)
        rc = ver_new_around(cur->zb, &cur->mem, imm, n, seg, cur->segs, cur->nsegs, NULL, gy, &v);
    if (rc == SHALE_OK) {
        db_set_current(db, v);
        if (last_seq > db->ckpt_seq)
            db->ckpt_seq = last_seq;
        if (last_seq > atomic_load(&db->written_seq))
            atomic_store(&db->written_seq, last_seq);
        pthread_cond_broadcast(&db->room_cv);
        pthread_cond_broadcast(&db->bg_cv);
    }
    pthread_mutex_unlock(&db->ver_mu);
    gy_unref(gy);
    gy_unref(base);
    free(imm);
    if (rc == SHALE_OK)
        ver_unref(cur);
    return rc;
}

/* flush_one -- write out the oldest immutable memtable; SHALE_NOTFOUND if none. */
static int flush_one(shale_db *db)
{
    int rc;
    seg_segment *seg = NULL;
    pthread_mutex_lock(&db->ver_mu);
    if (db->current->nimm == 0) {
        pthread_mutex_unlock(&db->ver_mu);
        return SHALE_NOTFOUND;
    }
    ver_mem m = db->current->imm[db->current->nimm - 1];
    mt_ref(m.mt);
    pthread_mutex_unlock(&db->ver_mu);
    rc = write_mem(db, &m, &seg);
    if (rc == SHALE_OK)
        rc = install_written(db, m.mt, m.last_seq, seg);
    if (rc < 0 && seg)
        seg_discard(seg);
    seg_unref(seg);
    mt_unref(m.mt);
    if (rc == SHALE_OK)
        atomic_fetch_add(&db->st_flushes, 1);
    return rc;
}

int db_checkpoint(shale_db *db)
{
    int rc = SHALE_OK;
    uint8_t *body = NULL;
    size_t len;
    sp_blocklist live = BL_INIT;
    pthread_mutex_lock(&db->ckpt_mu);
    pthread_mutex_lock(&db->ver_mu);
    ver_version *v = db->current;
    ver_ref(v);
    meta_body m = {
        .ckpt_seq = db->ckpt_seq,
        .log_no = v->nimm ? v->imm[v->nimm - 1].log_no : v->mem.log_no,
        .next_seg_id = db->next_seg_id,
        .next_gen = db->next_gen,
        .level_factor = db->opts.level_factor,
        .compression = (uint64_t)db->opts.compression,
        .segs = v->segs,
        .nsegs = v->nsegs,
        .gy = v->gy,
        .flags = db->closing ? META_CLEAN : 0,
    };
    pthread_mutex_unlock(&db->ver_mu);
    for (size_t i = 0; i < v->nsegs; i++)
        ERR(bl_add_list(&live, &v->segs[i]->pages));
    ERR(meta_encode(&m, &body, &len));
    ERR(sp_checkpoint(db->sp, &live, body, len));
    atomic_store(&db->ckpt_log_no, m.log_no);
    atomic_fetch_add(&db->st_checkpoints, 1);
    ERR(db_remove_logs_below(db, m.log_no));
err:
    pthread_mutex_unlock(&db->ckpt_mu);
    free(body);
    bl_free(&live);
    ver_unref(v);
    return rc;
}

/* flush_main -- the flusher thread. */
static void *flush_main(void *arg)
{
    shale_db *db = arg;
    for (;;) {
        pthread_mutex_lock(&db->ver_mu);
        while (!db->stopping && !db->bg_error && db->current->nimm == 0)
            pthread_cond_wait(&db->bg_cv, &db->ver_mu);
        bool stop = db->stopping || db->bg_error;
        pthread_mutex_unlock(&db->ver_mu);
        if (stop)
            break;
        int rc = flush_one(db);
        if (rc == SHALE_OK)
            rc = db_checkpoint(db);
        if (rc < 0 && rc != SHALE_NOTFOUND)
            db_set_bg_error(db, rc);
    }
    return NULL;
}

/* merge_main -- the merger thread. */
static void *merge_main(void *arg)
{
    shale_db *db = arg;
    for (;;) {
        pthread_mutex_lock(&db->ver_mu);
        while (!db->stopping && !db->bg_error && !db_merge_due(db))
            pthread_cond_wait(&db->bg_cv, &db->ver_mu);
        bool stop = db->stopping || db->bg_error;
        db->merging = !stop;
        pthread_mutex_unlock(&db->ver_mu);
        if (stop)
            break;
        int rc = db_merge_one(db);
        if (rc == SHALE_OK)
            rc = db_checkpoint(db);
        else if (rc == SHALE_NOTFOUND)
            rc = SHALE_OK;
        pthread_mutex_lock(&db->ver_mu);
        db->merging = false;
        pthread_mutex_unlock(&db->ver_mu);
        if (rc < 0)
            db_set_bg_error(db, rc);
    }
    return NULL;
}

/* sync_main -- the periodic log sync (flush_every_ms). */
static void *sync_main(void *arg)
{
    shale_db *db = arg;
    pthread_mutex_lock(&db->ver_mu);
    while (!db->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)db->opts.flush_every_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&db->sync_cv, &db->ver_mu, &ts);
        if (db->stopping)
            break;
        pthread_mutex_unlock(&db->ver_mu);
        int rc = shale_flush(db);
        if (rc < 0)
            db_set_bg_error(db, rc);
        pthread_mutex_lock(&db->ver_mu);
    }
    pthread_mutex_unlock(&db->ver_mu);
    return NULL;
}

int db_start_threads(shale_db *db)
{
    if (pthread_create(&db->flush_thread, NULL, flush_main, db) != 0)
        return SHALE_ENOMEM;
    if (pthread_create(&db->merge_thread, NULL, merge_main, db) != 0) {
        db_stop_threads(db);
        return SHALE_ENOMEM;
    }
    db->threads_started = true;
    if (db->opts.flush_every_ms) {
        if (pthread_create(&db->sync_thread, NULL, sync_main, db) != 0) {
            db_stop_threads(db);
            return SHALE_ENOMEM;
        }
        db->sync_started = true;
    }
    /* Work left by recovery (a replayed memtable) starts at once. */
    pthread_mutex_lock(&db->ver_mu);
    pthread_cond_broadcast(&db->bg_cv);
    pthread_mutex_unlock(&db->ver_mu);
    return SHALE_OK;
}

void db_stop_threads(shale_db *db)
{
    pthread_mutex_lock(&db->ver_mu);
    db->stopping = true;
    pthread_cond_broadcast(&db->bg_cv);
    pthread_cond_broadcast(&db->sync_cv);
    pthread_cond_broadcast(&db->room_cv);
    pthread_mutex_unlock(&db->ver_mu);
    if (db->threads_started) {
        pthread_join(db->flush_thread, NULL);
        pthread_join(db->merge_thread, NULL);
    } else if (db->flush_thread) {
        pthread_join(db->flush_thread, NULL);
    }
    if (db->sync_started)
        pthread_join(db->sync_thread, NULL);
    db->threads_started = db->sync_started = false;
}

/* install_fresh_active -- a version whose active memtable is a new, empty
 * one tied to log log_no, with seg (written from the old one; may be NULL)
 * added: the old active memtable's writes, up to last, are now in segments. */
static int install_fresh_active(shale_db *db, uint64_t log_no, uint64_t last, mt_table *old,
                                seg_segment *seg)
{
    int rc;
    ver_version *v = NULL;
    gy_set *gy = NULL;
    ver_mem fresh = {.log_no = log_no};
    RET(mt_create_sized(&fresh.mt, db->opts.memtable_size));
    pthread_mutex_lock(&db->write_mu);
    pthread_mutex_lock(&db->ver_mu);
    ver_version *cur = db->current;
    rc = db_mem_ranges(&old, 1, cur->gy, UINT64_MAX, &gy);
    if (rc == SHALE_OK)
        rc = ver_new_around(cur->zb, &fresh, cur->imm, cur->nimm, seg, cur->segs, cur->nsegs,
                            NULL, gy, &v);
    gy_unref(gy);
    if (rc == SHALE_OK) {
        db_set_current(db, v);
        db->active = fresh.mt;
        db->ckpt_seq = last;
        ver_unref(cur);
    }
    pthread_mutex_unlock(&db->ver_mu);
    pthread_mutex_unlock(&db->write_mu);
    mt_unref(fresh.mt);
    return rc;
}

int db_flush_memtables(shale_db *db)
{
    int rc;
    seg_segment *seg = NULL;
    while ((rc = flush_one(db)) == SHALE_OK)
        ;
    RET(rc == SHALE_NOTFOUND ? SHALE_OK : rc);
    /* The active memtable: written out, and replaced by an empty one tied to
     * the next log number, so the checkpoint releases every log file.  Close
     * is the only caller and no writer runs concurrently, so the write-out
     * itself needs no lock (and must not hold write_mu: it takes tree_mu). */
    pthread_mutex_lock(&db->write_mu);
    ver_mem m = {.mt = db->active};
    mt_ref(m.mt);
    uint64_t last = atomic_load(&db->last_seq);
    m.last_seq = last;
    pthread_mutex_unlock(&db->write_mu);
    pthread_mutex_lock(&db->ver_mu);
    m.log_no = db->current->mem.log_no;
    pthread_mutex_unlock(&db->ver_mu);
    rc = mt_count(m.mt) ? write_mem(db, &m, &seg) : SHALE_OK;
    if (rc == SHALE_OK)
        rc = install_fresh_active(db, m.log_no + 1, last, m.mt, seg);
    if (rc < 0 && seg)
        seg_discard(seg);
    seg_unref(seg);
    mt_unref(m.mt);
    RET(rc);
    return db_checkpoint(db);
}
