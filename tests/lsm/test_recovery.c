/*
 * test_recovery.c -- crash safety around recovery, on memenv: what recovery
 * replays, adopts and deletes at open must survive a crash or power loss
 * that follows the open, and a drop must not lose a tree's keys.
 *
 * Two kinds of crash are simulated:
 *   - a process death (die): from a point on, every call that would change
 *     the files fails, so what the process wrote stays as it was -- in the
 *     "page cache", synced or not -- and the dead engine is shut down with
 *     shale_close (which fails but frees everything);
 *   - a power loss (power_loss): memenv_crash, shut down, memenv_revive with a
 *     seed: unsynced writes are dropped, kept or torn.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../src/lsm/db.h"
#include "../support/memenv.h"

#define DBPATH "db"
#define VLEN 200

static void small_opts(shale_options *o)
{
    shale_options_default(o);
    o->memtable_size = 64 << 10;
    o->flush_every_ms = 0;
}

static int key_of(char *k, char prefix, int i) { return sprintf(k, "%c%06d", prefix, i); }

static void val_of(uint8_t *v, char prefix, int i)
{
    memset(v, 'a' + (prefix + i) % 26, VLEN);
    memcpy(v, &i, sizeof i);
}

static int put(shale_tree *t, char prefix, int i)
{
    char k[16];
    uint8_t v[VLEN];
    int kl = key_of(k, prefix, i);
    val_of(v, prefix, i);
    return shale_insert(t, k, (size_t)kl, v, VLEN, NULL);
}

/* count_present -- how many of keys prefix0..prefix<n-1> t holds, with the
 * right value. */
static int count_present(shale_tree *t, char prefix, int n)
{
    shale_buf b = SHALE_BUF_INIT;
    int found = 0;
    for (int i = 0; i < n; i++) {
        char k[16];
        uint8_t v[VLEN];
        int kl = key_of(k, prefix, i);
        val_of(v, prefix, i);
        int rc = shale_get(t, k, (size_t)kl, &b);
        cr_assert(rc == SHALE_OK || rc == SHALE_NOTFOUND, "get %s: rc %d", k, rc);
        if (rc == SHALE_OK) {
            cr_assert(b.len == VLEN && memcmp(b.data, v, VLEN) == 0, "%s: wrong value", k);
            found++;
        }
    }
    shale_buf_free(&b);
    return found;
}

static bool is_data(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && strcmp(path + n - 5, "/data") == 0;
}

/* die -- the process dies: nothing it does from now on changes the files. */
static void die(memenv *m)
{
    memenv_fault f = {.n = 1, .kinds = MEM_OP_MUTATING, .sticky = true};
    memenv_set_fault(m, &f);
}

/* bury -- shut the dead engine down, then let the next process at the files. */
static void bury(memenv *m, shale_db *db)
{
    shale_close(db);
    memenv_set_fault(m, NULL);
}

/* power_loss -- cut the power under db (may be NULL), shut it down, restart. */
static void power_loss(memenv *m, shale_db *db, uint64_t seed)
{
    memenv_crash(m);
    if (db)
        shale_close(db);
    cr_assert_eq(memenv_revive(m, seed), SHALE_OK);
}

/* wait_until -- poll *flag for up to 20 s. */
static bool wait_until(atomic_bool *flag)
{
    for (int i = 0; i < 20000 && !atomic_load(flag); i++)
        usleep(1000);
    return atomic_load(flag);
}

/* ---- holding the background threads' page writes ---------------------- */

/* An env over memenv whose writes from any thread but the test's wait while
 * the gate is closed: the flusher cannot write a memtable out. */
static struct {
    sp_env env;
    sp_env *base;
    pthread_t owner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;
} gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int gate_write(sp_file *f, const void *buf, size_t n, uint64_t off)
{
    if (!pthread_equal(pthread_self(), gate.owner)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20; /* never hang the test run */
        pthread_mutex_lock(&gate.mu);
        while (gate.closed && pthread_cond_timedwait(&gate.cv, &gate.mu, &until) == 0)
            ;
        pthread_mutex_unlock(&gate.mu);
    }
    return gate.base->write(f, buf, n, off);
}

static sp_env *gate_env(memenv *m)
{
    gate.base = memenv_env(m);
    gate.env = *gate.base;
    gate.env.write = gate_write;
    gate.owner = pthread_self();
    gate.closed = true;
    return &gate.env;
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.closed = false;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

/* ---- 1. the replayed memtable and the checkpoint ----------------------- */

/* Several logs are replayed into one memtable; a checkpoint taken before that
 * memtable is written out (the merger's, or another write-out's) must keep
 * every one of those logs, not only the last. */
Test(recovery, checkpoint_before_replayed_memtable_writeout_keeps_its_logs)
{
    const int n = 3000; /* about ten 64 KiB memtables */
    memenv *m = memenv_create();
    shale_options o;
    shale_db *db;
    shale_tree *t;
    small_opts(&o);

    /* Writes that stay in the logs: nothing is written out. */
    cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
    db_stop_threads(db);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    for (int i = 0; i < n; i++)
        cr_assert_eq(put(t, 'k', i), SHALE_OK);
    cr_assert_eq(shale_flush(db), SHALE_OK);
    cr_assert_gt(db->log->no, 3, "the writes should span several logs");
    power_loss(m, db, 1); /* every write was durable: nothing is lost */

    /* Reopen: every log is replayed into one memtable, which the flusher is
     * kept from writing out; a checkpoint runs meanwhile. */
    cr_assert_eq(db_open_env(DBPATH, &o, gate_env(m), &db), SHALE_OK);
    cr_assert_eq(db->current->nimm, 1, "the replayed memtable");
    cr_assert_eq(db_checkpoint(db), SHALE_OK);
    /* The process dies before the write-out: all it did reaches the disk. */
    cr_assert_eq(memenv_sync_all(m), SHALE_OK);
    memenv_crash(m);
    gate_open();
    shale_close(db);
    cr_assert_eq(memenv_revive(m, 1), SHALE_OK);

    cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    int found = count_present(t, 'k', n);
    cr_assert_eq(found, n, "durable writes %d, recovered %d", n, found);
    cr_assert_eq(shale_close(db), SHALE_OK);
    memenv_destroy(m);
}

/* ---- 2. replayed logs are synced before later writes are durable ------- */

/* A process dies with a log written but not synced; the next process replays
 * it and makes new writes durable (shale_flush) in a newer log.  A power loss
 * then must not lose those: the replayed log has to be durable before them,
 * or it tears and recovery stops there, discarding the newer log. */
Test(recovery, replayed_log_is_synced_before_later_writes_become_durable)
{
    const int na = 2000, nb = 100;
    char log1[64];
    int lost = 0;
    for (uint64_t seed = 1; seed <= 24; seed++) {
        memenv *m = memenv_create();
        shale_options o;
        shale_db *db;
        shale_tree *t;
        shale_options_default(&o);
        o.flush_every_ms = 0; /* one memtable, one log, never synced */

        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        cr_assert_eq(db_log_name(db, db->log->no, log1, sizeof log1), SHALE_OK);
        cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
        for (int i = 0; i < na; i++)
            cr_assert_eq(put(t, 'a', i), SHALE_OK);
        cr_assert_eq(lg_write_out(db->log->lw), SHALE_OK); /* in the file, not synced */
        die(m);
        bury(m, db);

        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        /* What was replayed is durable (unless already written out and gone). */
        uint64_t dur;
        uint8_t *bytes = NULL;
        size_t len = 0;
        int rc = memenv_durable_size(m, log1, &dur);
        if (rc == SHALE_OK && memenv_file_bytes(m, log1, &bytes, &len) == SHALE_OK)
            cr_assert_eq(dur, len, "seed %llu: replayed log durable up to %llu of %zu",
                         (unsigned long long)seed, (unsigned long long)dur, len);
        free(bytes);
        cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
        for (int i = 0; i < nb; i++)
            cr_assert_eq(put(t, 'b', i), SHALE_OK);
        cr_assert_eq(shale_flush(db), SHALE_OK); /* the b keys are durable */
        power_loss(m, db, seed);

        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
        int fa = count_present(t, 'a', na), fb = count_present(t, 'b', nb);
        if (fb != nb || fa != na) {
            fprintf(stderr, "seed %llu: a keys %d/%d, flushed b keys %d/%d\n",
                    (unsigned long long)seed, fa, na, fb, nb);
            lost++;
        }
        cr_assert_eq(shale_close(db), SHALE_OK);
        memenv_destroy(m);
    }
    cr_assert_eq(lost, 0, "%d of 24 power losses lost writes", lost);
}

/* ---- 3. the header adopted at open is durable before logs go ----------- */

typedef struct kill_ctx {
    memenv *m;
    unsigned kill_at; /* the page-file sync the process dies at */
    atomic_uint data_syncs;
    atomic_bool killed;
} kill_ctx;

/* kill_hook -- the process dies at the kill_at-th page-file sync: the sync
 * itself fails, so what it was to make durable (a header slot) is not. */
static int kill_hook(void *ctx, uint64_t point, const char *path)
{
    kill_ctx *k = ctx;
    (void)point;
    if (is_data(path) && atomic_fetch_add(&k->data_syncs, 1) + 1 == k->kill_at) {
        die(k->m);
        atomic_store(&k->killed, true);
    }
    return 0;
}

/* cut_data_hook -- power cut at the first page-file sync. */
static int cut_data_hook(void *ctx, uint64_t point, const char *path)
{
    (void)ctx;
    (void)point;
    return is_data(path);
}

/* A process dies between a checkpoint's header-slot write and its sync.  The
 * next open reads the unsynced slot and, recovering from it, deletes the log
 * files below its log number; if the power then fails before anything syncs
 * the page file, the slot may be lost and the older header comes back --
 * needing logs that are gone. */
Test(recovery, header_adopted_at_open_is_durable_before_logs_are_deleted)
{
    int lost = 0, runs = 0;
    for (unsigned kill_at = 2; kill_at <= 4; kill_at += 2)
        for (uint64_t seed = 1; seed <= 16; seed++) {
            memenv *m = memenv_create();
            shale_options o;
            shale_db *db;
            shale_tree *t;
            kill_ctx k = {.m = m, .kill_at = kill_at};
            small_opts(&o);

            cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
            cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
            memenv_set_sync_hook(m, kill_hook, &k);
            int durable = 0;
            for (int i = 0; i < 3000 && !atomic_load(&k.killed); i++) {
                if (put(t, 'k', i) != SHALE_OK)
                    break;
                if (i % 50 == 49 && shale_flush(db) == SHALE_OK)
                    durable = i + 1;
            }
            cr_assert(wait_until(&k.killed), "the process should have died");
            memenv_set_sync_hook(m, NULL, NULL);
            bury(m, db);

            /* Restart; the power fails at its first page-file sync, or right
             * after the open if there is none before. */
            memenv_set_sync_hook(m, cut_data_hook, NULL);
            int rc = db_open_env(DBPATH, &o, memenv_env(m), &db);
            if (rc != SHALE_OK) {
                cr_assert(memenv_crashed(m), "open: rc %d", rc);
                db = NULL;
            }
            memenv_set_sync_hook(m, NULL, NULL);
            power_loss(m, db, seed);

            rc = db_open_env(DBPATH, &o, memenv_env(m), &db);
            cr_assert_eq(rc, SHALE_OK, "kill_at %u seed %llu: reopen rc %d", kill_at,
                         (unsigned long long)seed, rc);
            cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
            int found = count_present(t, 'k', durable);
            if (found < durable) {
                fprintf(stderr, "kill_at %u seed %llu: durable writes %d, recovered %d\n",
                        kill_at, (unsigned long long)seed, durable, found);
                lost++;
            }
            runs++;
            cr_assert_eq(shale_close(db), SHALE_OK);
            memenv_destroy(m);
        }
    cr_assert_eq(lost, 0, "%d of %d runs lost durable writes", lost, runs);
}

/* ---- 4. a memtable switch does not sync the old log --------------------- */

/* Keys are written one by one with no flush across several memtable switches
 * (the old log is left unsynced at each), then the power fails: each unsynced
 * write of each log file is dropped, kept or torn on its own, so a newer log
 * may keep records an older one lost.  What comes back must be a prefix of
 * the writes: recovery stops at the first gap in the sequence numbers. */
Test(recovery, power_loss_after_unsynced_switches_recovers_a_prefix)
{
    int gaps = 0;
    for (uint64_t seed = 1; seed <= 30; seed++) {
        memenv *m = memenv_create();
        shale_options o;
        shale_db *db;
        shale_tree *t;
        small_opts(&o);
        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        cr_assert_eq(shale_open_tree(db, "P", &t), SHALE_OK);
        cr_assert_eq(shale_flush(db), SHALE_OK); /* the tree's catalog entry */
        /* The flusher waits on list_mu at P's first key (tree_id_live), so
         * nothing is written out or checkpointed: the three logs stay. */
        pthread_mutex_lock(&db->list_mu);
        int n = 0;
        for (size_t nimm = 0; nimm < DB_MAX_IMM; n++) {
            cr_assert_eq(put(t, 'p', n), SHALE_OK);
            pthread_mutex_lock(&db->ver_mu);
            nimm = db->current->nimm;
            pthread_mutex_unlock(&db->ver_mu);
        }
        for (int i = 0; i < 50; i++, n++) /* and some in the third log */
            cr_assert_eq(put(t, 'p', n), SHALE_OK);
        cr_assert_eq(lg_write_out(db->log->lw), SHALE_OK);
        memenv_crash(m);
        pthread_mutex_unlock(&db->list_mu);
        shale_close(db);
        cr_assert_eq(memenv_revive(m, seed), SHALE_OK);

        cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
        cr_assert_eq(shale_open_tree(db, "P", &t), SHALE_OK);
        shale_buf b = SHALE_BUF_INIT;
        int first_missing = -1, after = 0;
        for (int i = 0; i < n; i++) {
            char k[16];
            int kl = key_of(k, 'p', i);
            int rc = shale_get(t, k, (size_t)kl, &b);
            cr_assert(rc == SHALE_OK || rc == SHALE_NOTFOUND, "seed %llu: get: %d",
                      (unsigned long long)seed, rc);
            if (rc == SHALE_NOTFOUND && first_missing < 0)
                first_missing = i;
            else if (rc == SHALE_OK && first_missing >= 0)
                after++;
        }
        shale_buf_free(&b);
        cr_assert_eq(after, 0, "seed %llu: %d keys written after key %d came back without it",
                     (unsigned long long)seed, after, first_missing);
        gaps += first_missing >= 0;
        cr_assert_eq(shale_close(db), SHALE_OK);
        memenv_destroy(m);
    }
    cr_log_info("%d of 30 power losses cut the writes short", gaps);
}

/* ---- 5. dropping a tree ------------------------------------------------ */

/* tree_exists -- whether db has a live tree named name (without creating it). */
static bool tree_exists(shale_db *db, const char *name)
{
    bool found = false;
    pthread_mutex_lock(&db->tree_mu);
    for (struct shale_tree *t = db->trees; t; t = t->next)
        if (!t->dropped && strcmp(t->name, name) == 0)
            found = true;
    pthread_mutex_unlock(&db->tree_mu);
    return found;
}

/* A tree's keys are durable in a log; the tree is dropped and a write-out,
 * which skips a dropped tree's keys, is checkpointed before the drop record
 * is synced.  After a power loss the tree must be gone, or still have its
 * keys -- never come back empty. */
Test(recovery, dropped_tree_never_comes_back_without_its_keys)
{
    memenv *m = memenv_create();
    shale_options o;
    shale_db *db;
    shale_tree *x;
    small_opts(&o);

    cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "X", &x), SHALE_OK);
    /* The flusher waits on list_mu at X's first key (tree_id_live) until the
     * drop is done. */
    pthread_mutex_lock(&db->list_mu);
    int n = 0;
    for (size_t nimm = 0; nimm == 0; n++) {
        cr_assert_eq(put(x, 'k', n), SHALE_OK);
        pthread_mutex_lock(&db->ver_mu);
        nimm = db->current->nimm;
        pthread_mutex_unlock(&db->ver_mu);
    }
    /* The drop's flush syncs the first log (the catalog entry and X's keys)
     * before its own record. */
    cr_assert_eq(shale_drop_tree(db, "X"), SHALE_OK);
    uint64_t c0 = atomic_load(&db->st_checkpoints);
    pthread_mutex_unlock(&db->list_mu);
    for (int i = 0; i < 20000 && atomic_load(&db->st_checkpoints) == c0; i++)
        usleep(1000);
    cr_assert_neq(atomic_load(&db->st_checkpoints), c0, "the write-out should checkpoint");
    power_loss(m, db, 1);

    cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
    if (tree_exists(db, "X")) {
        cr_assert_eq(shale_open_tree(db, "X", &x), SHALE_OK);
        shale_iter *it;
        int cnt = 0;
        cr_assert_eq(shale_iter_open(x, &it), SHALE_OK);
        for (int rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it))
            cnt++;
        shale_iter_close(it);
        cr_assert_eq(cnt, n, "tree X came back with %d of its %d keys", cnt, n);
        cr_assert_eq(count_present(x, 'k', n), n);
    }
    cr_assert_eq(shale_close(db), SHALE_OK);
    memenv_destroy(m);
}
