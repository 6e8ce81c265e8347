/*
 * test_watch.c -- prefix subscriptions (built for `make tsan` too).
 *
 * Case by case: prefix filtering, every kind of event, a batch's events
 * consecutive under one sequence number, overflow reported with its count
 * before the events after it, timeouts.  Then under concurrent writers: 4
 * threads write (single writes and batches, inserts, removes and merges)
 * while subscribers to all of them and to one thread's prefix receive every
 * event exactly once and in commit order, and another subscriber is closed
 * part way while the writers run.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

static bool ev_is(const shale_event *e, int kind, const char *k, const char *v)
{
    return e->kind == kind && e->klen == strlen(k) && memcmp(e->key, k, e->klen) == 0 &&
           (v ? e->val && e->vlen == strlen(v) && memcmp(e->val, v, e->vlen) == 0
              : e->val == NULL && e->vlen == 0);
}

Test(watch, events_prefixes_batches_overflow_and_timeouts, .timeout = 120)
{
    char dir[256];
    shale_db *db;
    shale_tree *t, *other;
    shale_watcher *w, *all, *small;
    shale_event e;
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    cr_assert_eq(shale_open(dir, NULL, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "t", &t), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "other", &other), SHALE_OK);
    cr_assert_eq(shale_insert(t, "user/0", 6, "before", 6, NULL), SHALE_OK);
    cr_assert_eq(shale_watch_prefix(t, "user/", 5, 0, &w), SHALE_OK);
    cr_assert_eq(shale_watch_prefix(t, NULL, 0, 0, &all), SHALE_OK);
    cr_assert_eq(shale_watch_next(w, &e, 0), SHALE_NOTFOUND); /* nothing from before */
    cr_assert_eq(shale_watch_next(w, &e, 30), SHALE_NOTFOUND);

    cr_assert_eq(shale_insert(t, "user/1", 6, "one", 3, NULL), SHALE_OK);
    cr_assert_eq(shale_insert(t, "other", 5, "x", 1, NULL), SHALE_OK);     /* not under it */
    cr_assert_eq(shale_insert(other, "user/1", 6, "x", 1, NULL), SHALE_OK); /* another tree */
    cr_assert_eq(shale_remove(t, "user/1", 6, NULL), SHALE_OK);
    cr_assert_eq(shale_merge(t, "user/2", 6, "op", 2), SHALE_OK);
    shale_batch *b;
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    cr_assert_eq(shale_batch_insert(b, t, "user/3", 6, "three", 5), SHALE_OK);
    cr_assert_eq(shale_batch_insert(b, t, "zzz", 3, "no", 2), SHALE_OK);
    cr_assert_eq(shale_batch_remove(b, t, "user/4", 6), SHALE_OK);
    cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
    shale_batch_free(b);
    cr_assert_eq(shale_remove_range(t, "a", 1, "user/2", 6), SHALE_OK);
    cr_assert_eq(shale_remove_range(t, "v", 1, NULL, 0), SHALE_OK); /* past the prefix */
    cr_assert_eq(shale_remove_range(t, "u", 1, NULL, 0), SHALE_OK); /* to the end */

    uint64_t last = 0;
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_INSERT, "user/1", "one"));
    last = e.seq;
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_REMOVE, "user/1", NULL));
    cr_assert_gt(e.seq, last);
    last = e.seq;
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_MERGE, "user/2", "op"));
    cr_assert_gt(e.seq, last);
    last = e.seq;
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_INSERT, "user/3", "three"));
    cr_assert_gt(e.seq, last);
    last = e.seq;
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert_eq(e.kind, SHALE_WATCH_REMOVE);
    cr_assert_eq(e.seq, last, "one batch, one sequence number");
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_REMOVE_RANGE, "a", "user/2"));
    cr_assert_eq(shale_watch_next(w, &e, -1), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_REMOVE_RANGE, "u", NULL));
    cr_assert_eq(shale_watch_next(w, &e, 0), SHALE_NOTFOUND);
    /* the unfiltered one saw "other" and "zzz" too, and the range past "user/" */
    int n = 0;
    while (shale_watch_next(all, &e, 0) == SHALE_OK)
        n++;
    cr_assert_eq(n, 10);

    /* overflow: 5 fit, the next 7 are dropped and counted, reported once
     * the 5 are read, then events flow again */
    cr_assert_eq(shale_watch_prefix(t, "o/", 2, 5, &small), SHALE_OK);
    uint64_t seqs[12];
    for (int i = 0; i < 12; i++) {
        char k[16];
        snprintf(k, sizeof k, "o/%02d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), "v", 1, NULL), SHALE_OK);
        shale_event x;
        cr_assert_eq(shale_watch_next(all, &x, 0), SHALE_OK);
        seqs[i] = x.seq;
    }
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(shale_watch_next(small, &e, 0), SHALE_OK);
        cr_assert_eq(e.seq, seqs[i]);
    }
    cr_assert_eq(shale_watch_next(small, &e, 0), SHALE_EOVERFLOW);
    cr_assert_eq(e.lost, 7);
    cr_assert_eq(e.seq, seqs[5]);
    cr_assert_eq(shale_watch_next(small, &e, 0), SHALE_NOTFOUND);
    cr_assert_eq(shale_insert(t, "o/after", 7, "v", 1, NULL), SHALE_OK);
    cr_assert_eq(shale_watch_next(small, &e, 0), SHALE_OK);
    cr_assert(ev_is(&e, SHALE_WATCH_INSERT, "o/after", "v"));

    cr_assert_eq(shale_watch_prefix(NULL, "x", 1, 0, &small), SHALE_EINVAL);
    cr_assert_eq(shale_watch_next(NULL, &e, 0), SHALE_EINVAL);
    shale_watch_close(w);
    shale_watch_close(all);
    /* small is left open: closing the db frees it */
    cr_assert_eq(shale_close(db), SHALE_OK);
    tu_rmrf(dir);
}

/* ---- concurrent writers ----------------------------------------------------- */

#define NWRITERS 4

typedef struct wctx {
    shale_db *db;
    shale_tree *t;
    int n; /* writes per writer */
    atomic_int failed;
} wctx;

typedef struct writer_arg {
    wctx *c;
    int id;
} writer_arg;

/* Writer id writes "w<id>/<i>" for i = 0..n-1 in order: an insert, a
 * remove every 7th, a merge every 5th, and every 3rd a batch of two (i and
 * i + 1, then i advances by 2). */
static void *writer(void *arg)
{
    writer_arg *a = arg;
    wctx *c = a->c;
    char k[32], k2[32];
    for (int i = 0; i < c->n; i++) {
        int rc;
        snprintf(k, sizeof k, "w%d/%06d", a->id, i);
        if (i % 3 == 0 && i + 1 < c->n) {
            shale_batch *b;
            snprintf(k2, sizeof k2, "w%d/%06d", a->id, i + 1);
            rc = shale_batch_new(&b);
            if (rc == SHALE_OK)
                rc = shale_batch_insert(b, c->t, k, strlen(k), "b", 1);
            if (rc == SHALE_OK)
                rc = shale_batch_insert(b, c->t, k2, strlen(k2), "b", 1);
            if (rc == SHALE_OK)
                rc = shale_batch_apply(c->db, b);
            shale_batch_free(b);
            i++;
        } else if (i % 7 == 0) {
            rc = shale_remove(c->t, k, strlen(k), NULL);
        } else if (i % 5 == 0) {
            rc = shale_merge(c->t, k, strlen(k), "m", 1);
        } else {
            rc = shale_insert(c->t, k, strlen(k), "v", 1, NULL);
        }
        if (rc != SHALE_OK) {
            atomic_store(&c->failed, rc);
            break;
        }
    }
    return NULL;
}

typedef struct reader_arg {
    wctx *c;
    shale_watcher *w;
    int only;      /* -1: every writer's events, else only this writer's */
    int close_at;  /* > 0: close the watcher after this many events */
    int got;
    const char *err;
} reader_arg;

static void *reader(void *arg)
{
    reader_arg *r = arg;
    int next[NWRITERS] = {0};
    int want = r->only < 0 ? NWRITERS * r->c->n : r->c->n;
    uint64_t last_seq = 0;
    shale_event e;
    while (r->got < want) {
        if (r->close_at && r->got == r->close_at) {
            shale_watch_close(r->w);
            r->w = NULL;
            return NULL;
        }
        int rc = shale_watch_next(r->w, &e, 10000);
        if (rc != SHALE_OK) {
            r->err = rc == SHALE_EOVERFLOW ? "overflow" : "no event in 10 s";
            return NULL;
        }
        int id, i;
        char kb[40];
        if (e.klen >= sizeof kb) {
            r->err = "long key";
            return NULL;
        }
        memcpy(kb, e.key, e.klen);
        kb[e.klen] = 0;
        if (sscanf(kb, "w%d/%d", &id, &i) != 2 || id < 0 || id >= NWRITERS ||
            (r->only >= 0 && id != r->only)) {
            r->err = "unexpected key";
            return NULL;
        }
        if (i != next[id]) { /* each writer's events exactly once, in its order */
            r->err = "lost, repeated or out of order";
            return NULL;
        }
        next[id]++;
        if (e.seq < last_seq) {
            r->err = "sequence numbers went back";
            return NULL;
        }
        last_seq = e.seq;
        r->got++;
    }
    return NULL;
}

Test(watch, concurrent_writers_every_event_once_in_commit_order, .timeout = 600)
{
    char dir[256];
    shale_options o;
    wctx c = {.n = (int)tu_scaled(3000)};
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64u << 10;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &c.db), SHALE_OK);
    cr_assert_eq(shale_open_tree(c.db, "w", &c.t), SHALE_OK);
    reader_arg rs[3] = {{&c, NULL, -1, 0, 0, NULL},
                        {&c, NULL, 2, 0, 0, NULL},
                        {&c, NULL, -1, 500, 0, NULL}};
    size_t cap = (size_t)NWRITERS * (size_t)c.n; /* room for all: no overflow */
    cr_assert_eq(shale_watch_prefix(c.t, "w", 1, cap, &rs[0].w), SHALE_OK);
    cr_assert_eq(shale_watch_prefix(c.t, "w2/", 3, cap, &rs[1].w), SHALE_OK);
    cr_assert_eq(shale_watch_prefix(c.t, NULL, 0, cap, &rs[2].w), SHALE_OK);
    pthread_t wt[NWRITERS], rt[3];
    writer_arg wa[NWRITERS];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&rt[i], NULL, reader, &rs[i]), 0);
    for (int i = 0; i < NWRITERS; i++) {
        wa[i] = (writer_arg){&c, i};
        cr_assert_eq(pthread_create(&wt[i], NULL, writer, &wa[i]), 0);
    }
    for (int i = 0; i < NWRITERS; i++)
        pthread_join(wt[i], NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(rt[i], NULL);
    cr_assert_eq(atomic_load(&c.failed), 0, "a writer failed: %d", atomic_load(&c.failed));
    for (int i = 0; i < 3; i++) {
        cr_assert_null(rs[i].err, "reader %d: %s after %d events", i, rs[i].err, rs[i].got);
        shale_watch_close(rs[i].w); /* the third closed its own, part way */
    }
    cr_assert_eq(rs[2].got, 500);
    fprintf(stderr, "watch: %d writers x %d writes, readers got %d, %d, %d (closed at 500)\n",
            NWRITERS, c.n, rs[0].got, rs[1].got, rs[2].got);
    cr_assert_eq(shale_close(c.db), SHALE_OK);
    tu_rmrf(dir);
}
