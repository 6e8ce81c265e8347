/*
 * write.c -- the write path, top to bottom.
 *
 * A write (a batch; a single insert or remove is a batch of one) is, under
 * write_mu: take the next sequence numbers, append one log record to the log
 * buffer, insert every op into the active memtable, publish the new last
 * sequence (readers see the whole batch or none of it).  Then, outside the
 * lock and only when asked (sync_writes), sync the log up to the record: one
 * thread's fdatasync covers every record appended before it (group commit).
 *
 * When the active memtable is full the writer switches: the old log is synced
 * in full (so no later record can be durable while an earlier one is not:
 * recovery stays a prefix), a new log file and memtable start, and the old
 * memtable joins the immutable list for the background thread.  If
 * DB_MAX_IMM memtables are already waiting, or merges are so far behind that
 * there are more than twice max_young_segments segments, the writer waits for
 * the background threads (counted in the stall statistics).
 *
 * Smooth back-pressure.  Before that hard limit, writes are slowed in
 * proportion to how far merges are behind: with e young segments beyond
 * max_young_segments, each byte written owes e * DB_SLOW_NS_PER_BYTE ns of
 * delay (so the write rate is held near 64 MB/s / e).  The debt is shared;
 * the writer that brings it past DB_SLOW_QUANTUM_NS pays it by waiting on
 * room_cv (a version install, e.g. a finished merge, ends the wait early),
 * so most writes never wait and none waits more than a quantum at a time.
 */
#include <stdlib.h>
#include <time.h>

#include "../space/common.h"
#include "db.h"

/* log_unref -- drop a reference on a shared log writer; the last closes it. */
static void log_unref(db_log *l)
{
    if (l && atomic_fetch_sub(&l->refs, 1) == 1) {
        lg_writer_close(l->lw, 0);
        free(l);
    }
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* note_stall -- count a writer's wait of us microseconds. */
static void note_stall(shale_db *db, uint64_t us)
{
    atomic_fetch_add(&db->st_stall_us, us);
    uint64_t max = atomic_load(&db->st_stall_max_us);
    while (us > max && !atomic_compare_exchange_weak(&db->st_stall_max_us, &max, us))
        ;
}

#define DB_SLOW_NS_PER_BYTE 16u          /* 1 / (64 MB/s), per excess young segment */
#define DB_SLOW_QUANTUM_NS 1000000u      /* debts are paid a millisecond at a time */

void db_set_current(shale_db *db, ver_version *v)
{
    db->current = v;
    size_t young = db_young_count(v), max = db->opts.max_young_segments;
    atomic_store(&db->young_excess, young > max ? (unsigned)(young - max) : 0u);
    pthread_cond_broadcast(&db->room_cv);
}

/* slow_down -- smooth back-pressure for a write of n bytes (no lock held). */
static void slow_down(shale_db *db, uint64_t n)
{
    unsigned e = atomic_load_explicit(&db->young_excess, memory_order_relaxed);
    if (e == 0)
        return;
    uint64_t debt = atomic_fetch_add(&db->delay_debt_ns, n * e * DB_SLOW_NS_PER_BYTE) +
                    n * e * DB_SLOW_NS_PER_BYTE;
    if (debt < DB_SLOW_QUANTUM_NS)
        return;
    atomic_fetch_sub(&db->delay_debt_ns, DB_SLOW_QUANTUM_NS);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += DB_SLOW_QUANTUM_NS;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    uint64_t t0 = now_us();
    pthread_mutex_lock(&db->ver_mu);
    if (atomic_load(&db->young_excess) && !db->stopping && !db->bg_error)
        pthread_cond_timedwait(&db->room_cv, &db->ver_mu, &ts);
    pthread_mutex_unlock(&db->ver_mu);
    atomic_fetch_add(&db->st_slowdowns, 1);
    note_stall(db, now_us() - t0);
}

/* no_room -- with ver_mu held: too many memtables wait for a write-out, or
 * merges have fallen so far behind that segments pile up (the hard bound on
 * the young segments a read may have to visit). */
static bool no_room(shale_db *db)
{
    return db->current->nimm >= DB_MAX_IMM ||
           db_young_count(db->current) > 2 * (size_t)db->opts.max_young_segments;
}

/* wait_for_room -- with ver_mu held: wait while there is no room (no_room). */
static int wait_for_room(shale_db *db)
{
    uint64_t t0 = 0;
    while (no_room(db) && !db->bg_error && !db->stopping) {
        if (!t0) {
            t0 = now_us();
            atomic_fetch_add(&db->st_stalls, 1);
        }
        pthread_cond_wait(&db->room_cv, &db->ver_mu);
    }
    if (t0)
        note_stall(db, now_us() - t0);
    return db->bg_error;
}

int db_switch_memtable(shale_db *db)
{
    int rc = SHALE_OK;
    db_log *nl = NULL, *old = db->log;
    mt_table *mt = NULL;
    ver_version *v = NULL;

    pthread_mutex_lock(&db->ver_mu);
    rc = wait_for_room(db);
    pthread_mutex_unlock(&db->ver_mu);
    RET(rc);
    /* With sync_writes every write waits for its own record's sync, which
     * must not be durable before the old log's last records: sync it now
     * (cheap: its writers have synced nearly all of it). */
    if (db->opts.sync_writes)
        RET(lg_sync(old->lw, UINT64_MAX));
    /* Otherwise the old log is not synced here (that would stall every writer for a
     * memtable's worth of I/O): it joins db->unsynced, which shale_flush and
     * the background threads sync before anything newer.  A power loss may
     * still keep records of the new log and lose the old one's tail: recovery
     * stops at the first gap in the sequence numbers (replay_log), so what
     * comes back is always a prefix of the writes. */
    RET(mt_create_sized(&mt, db->opts.memtable_size));
    /* (its directory entry too is synced by the next shale_flush) */
    ERR(db_open_log(db, old->no + 1, db->opts.sync_writes, &nl));

    pthread_mutex_lock(&db->ver_mu);
    ver_version *cur = db->current;
    ver_mem *imm = malloc((cur->nimm + 1) * sizeof *imm);
    if (!imm) {
        pthread_mutex_unlock(&db->ver_mu);
        ERR_SET(SHALE_ENOMEM);
    }
    imm[0] = cur->mem;
    imm[0].last_seq = atomic_load(&db->last_seq);
    if (cur->nimm)
        memcpy(imm + 1, cur->imm, cur->nimm * sizeof *imm);
    ver_mem mem = {.mt = mt, .log_no = nl->no};
    rc = ver_new(cur->zb, &mem, imm, cur->nimm + 1, cur->segs, cur->nsegs, cur->gy, &v);
    free(imm);
    if (rc == SHALE_OK) {
        db_set_current(db, v);
        pthread_cond_broadcast(&db->bg_cv);
    }
    pthread_mutex_unlock(&db->ver_mu);
    ERR(rc);
    ver_unref(cur);
    db->active = mt;
    db->log = nl;
    nl = NULL;
    db->dir_unsynced |= !db->opts.sync_writes;
    old->older = db->unsynced; /* the db's reference moves to the list */
    db->unsynced = old;
    /* logs a checkpoint has covered (and removed) need no sync: let them go */
    uint64_t covered = atomic_load(&db->ckpt_log_no);
    for (db_log **p = &db->unsynced; *p;) {
        db_log *l = *p;
        if (l->no < covered) {
            *p = l->older;
            log_unref(l);
        } else {
            p = &l->older;
        }
    }
err:
    mt_unref(mt);
    log_unref(nl);
    return rc;
}

/* write_locked -- append and apply batch b with write_mu held; *log gets a
 * reference on the log written to and *end the offset to sync up to. */
int db_apply_op(mt_table *mt, uint64_t seq, const batch_op *op)
{
    if (op->kind == BATCH_KIND_RANGE)
        return mt_add_range(mt, seq, op->ikey, op->iklen, op->val, op->vlen);
    return mt_add(mt, seq, op->kind, op->ikey, op->iklen, op->val, op->vlen);
}

static int write_locked(shale_db *db, shale_batch *b, db_log **log, uint64_t *end)
{
    const uint8_t *payload;
    size_t len;
    batch_reader br;
    batch_op op;
    int rc;

    RET(db_bg_error(db));
    if (mt_bytes(db->active) >= db->opts.memtable_size ||
        mt_range_count(db->active) >= MT_MAX_RANGES)
        RET(db_switch_memtable(db));
    RET(batch_payload(b, &payload, &len));
    if (len > LG_MAX_PAYLOAD)
        return SHALE_ETOOBIG;
    uint64_t seq = atomic_load_explicit(&db->last_seq, memory_order_relaxed) + 1;
    RET(lg_append(db->log->lw, LG_T_BATCH, seq, payload, len, end));
    /* From here the write is in the log: a failure to apply it to the memtable
     * would make memory and log disagree, so it turns the db read-only. */
    mt_table *mt = db->active;
    uint64_t s = seq;
    RET(batch_reader_init(&br, payload, len));
    while ((rc = batch_reader_next(&br, &op)) == SHALE_OK) {
        rc = db_apply_op(mt, s++, &op);
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        db_set_bg_error(db, rc);
        return rc;
    }
    atomic_store_explicit(&db->last_seq, s - 1, memory_order_release);
    atomic_fetch_add_explicit(&db->st_log_bytes, len + LG_HDR, memory_order_relaxed);
    if (atomic_load_explicit(&db->nwatchers, memory_order_relaxed))
        db_watch_publish(db, seq, payload, len);
    if (log) {
        *log = db->log;
        atomic_fetch_add(&db->log->refs, 1);
    }
    return SHALE_OK;
}

/* db_write_sync -- sync the log reference taken by write_locked, then drop it. */
static int db_write_sync(shale_db *db, db_log *log, uint64_t end)
{
    int rc = SHALE_OK;
    if (log) {
        rc = lg_sync(log->lw, end);
        log_unref(log);
        if (rc < 0)
            db_set_bg_error(db, rc);
    }
    return rc;
}

int db_write(shale_db *db, shale_batch *b)
{
    db_log *log = NULL;
    uint64_t end = 0;
    int rc;
    if (db->opts.read_only)
        return SHALE_EREADONLY;
    if (b->count == 0)
        return SHALE_OK;
    slow_down(db, b->len);
    pthread_mutex_lock(&db->write_mu);
    rc = write_locked(db, b, db->opts.sync_writes ? &log : NULL, &end);
    pthread_mutex_unlock(&db->write_mu);
    RET(rc);
    return db_write_sync(db, log, end);
}

/* db_write_built -- let build() read from a version pinned under write_mu and
 * add to b, then apply b before any other write: the read and the write are
 * one atomic step.  Returns build()'s non-negative result once b is applied
 * (an empty b is not written), or an error. */
int db_write_built(shale_db *db, shale_batch *b, db_build_fn build, void *ctx)
{
    db_log *log = NULL;
    uint64_t end = 0, snap;
    int rc, res;
    if (db->opts.read_only)
        return SHALE_EREADONLY;
    pthread_mutex_lock(&db->write_mu);
    ver_version *v = db_pin(db, &snap);
    rc = res = build(db, v, snap, b, ctx);
    ver_unref(v);
    if (res >= 0 && b->count)
        rc = write_locked(db, b, db->opts.sync_writes ? &log : NULL, &end);
    pthread_mutex_unlock(&db->write_mu);
    RET(rc);
    RET(db_write_sync(db, log, end));
    return res;
}

/* sync_logs -- shale_flush with sync_mu held: the logs a memtable switch
 * left unsynced, oldest first, the directory if a log was created since it
 * was last synced, then the current log.  Errors also become the sticky
 * background error. */
static int sync_logs(shale_db *db)
{
    pthread_mutex_lock(&db->write_mu);
    int rc = db_bg_error(db);
    db_log *old = rc == SHALE_OK ? db->unsynced : NULL, *log = NULL;
    uint64_t end = 0;
    bool dir = false;
    if (rc == SHALE_OK) {
        db->unsynced = NULL;
        dir = db->dir_unsynced;
        db->dir_unsynced = false;
        log = db->log;
        end = lg_size(log->lw);
        atomic_fetch_add(&log->refs, 1);
    }
    pthread_mutex_unlock(&db->write_mu);
    RET(rc);
    /* oldest first: reverse the newest-first list */
    db_log *order = NULL;
    while (old) {
        db_log *next = old->older;
        old->older = order;
        order = old;
        old = next;
    }
    for (db_log *l = order; l; l = order) {
        order = l->older;
        if (rc == SHALE_OK)
            rc = lg_sync(l->lw, UINT64_MAX);
        log_unref(l);
    }
    if (rc == SHALE_OK && dir) /* the newer logs' names */
        rc = db->env->sync_dir(db->env, db->path);
    if (rc < 0) {
        db_set_bg_error(db, rc);
        log_unref(log);
        return rc;
    }
    return db_write_sync(db, log, end);
}

int shale_flush(shale_db *db)
{
    if (!db)
        return SHALE_EINVAL;
    if (db->opts.read_only)
        return SHALE_OK;
    /* one at a time, so none returns while another still syncs an older log */
    pthread_mutex_lock(&db->sync_mu);
    int rc = sync_logs(db);
    pthread_mutex_unlock(&db->sync_mu);
    return rc;
}
