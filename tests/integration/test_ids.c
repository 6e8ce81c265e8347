/*
 * test_ids.c -- shale_generate_id across restarts and SIGKILL, and what a
 * database tells about itself: shale_was_recovered after clean and unclean
 * stops, shale_checksum over contents (not layout), shale_size_on_disk.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/testutil.h"
#include "shale.h"

static char dir[256];
static void setup(void) { cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0); }
static void teardown(void) { tu_rmrf(dir); }

static void opts(shale_options *o)
{
    shale_options_default(o);
    o->memtable_size = 64 << 10;
    o->page_size = 1024;
    o->flush_every_ms = 0;
}

Test(ids, strictly_increase_across_restarts_and_kills, .init = setup, .fini = teardown,
     .timeout = 300)
{
    shale_options o;
    shale_db *db;
    uint64_t last = 0, id;
    bool any = false;
    opts(&o);
    /* 60 sessions: 10 clean, 50 killed at varying points */
    int kills = 0;
    for (int round = 0; round < 60; round++) {
        if (round % 6 == 0) { /* a clean session */
            cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
            for (int i = 0; i < 5000; i++) {
                cr_assert_eq(shale_generate_id(db, &id), SHALE_OK);
                cr_assert(!any || id > last, "round %d: id %llu after %llu", round,
                          (unsigned long long)id, (unsigned long long)last);
                last = id;
                any = true;
            }
            cr_assert_eq(shale_close(db), SHALE_OK);
            continue;
        }
        /* a child hands out ids, reporting each through a pipe, until killed */
        int fd[2];
        cr_assert_eq(pipe(fd), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(fd[0]);
            if (shale_open(dir, &o, &db))
                _exit(2);
            for (;;) {
                if (shale_generate_id(db, &id))
                    _exit(3);
                if (write(fd[1], &id, sizeof id) != sizeof id)
                    _exit(4);
            }
        }
        close(fd[1]);
        uint64_t got, n = 0;
        uint64_t want = 200 + (uint64_t)(round * 7919 % 13) * 600; /* 200 .. 7400 */
        while (n < want && read(fd[0], &got, sizeof got) == sizeof got) {
            cr_assert(!any || got > last, "round %d: id %llu after %llu", round,
                      (unsigned long long)got, (unsigned long long)last);
            last = got;
            any = true;
            n++;
        }
        kill(pid, SIGKILL);
        while (read(fd[0], &got, sizeof got) == sizeof got) { /* ids sent before the kill */
            cr_assert(got > last);
            last = got;
        }
        close(fd[0]);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status), "round %d: the child stopped by itself (%d)", round,
                  status);
        kills++;
    }
    cr_assert_eq(kills, 50);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_generate_id(db, &id), SHALE_OK);
    cr_assert_gt(id, last, "after the last kill too");
    cr_assert_eq(shale_close(db), SHALE_OK);
    o.read_only = true;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_generate_id(db, &id), SHALE_EREADONLY);
    cr_assert_eq(shale_generate_id(NULL, &id), SHALE_EINVAL);
    cr_assert_eq(shale_close(db), SHALE_OK);
}

Test(ids, was_recovered_tells_an_unclean_stop, .init = setup, .fini = teardown)
{
    shale_options o;
    shale_db *db;
    shale_tree *t;
    opts(&o);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_not(shale_was_recovered(db), "a new database");
    cr_assert_eq(shale_close(db), SHALE_OK);
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_not(shale_was_recovered(db), "after a clean close");
    cr_assert_eq(shale_close(db), SHALE_OK);
    for (int writes = 0; writes <= 1; writes++) {
        /* a process that stops without closing, with or without writes */
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            if (shale_open(dir, &o, &db) || shale_open_tree(db, NULL, &t))
                _exit(2);
            if (writes && (shale_insert(t, "k", 1, "v", 1, NULL) || shale_flush(db)))
                _exit(3);
            _exit(0);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
        cr_assert(shale_was_recovered(db), "after a stop without close (writes: %d)", writes);
        cr_assert_eq(shale_close(db), SHALE_OK);
        cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
        cr_assert_not(shale_was_recovered(db), "and clean again after a close");
        cr_assert_eq(shale_close(db), SHALE_OK);
    }
    cr_assert_not(shale_was_recovered(NULL));
}

static void fill(shale_db *db, const char *tree, int from, int to, int step)
{
    shale_tree *t;
    cr_assert_eq(shale_open_tree(db, tree, &t), SHALE_OK);
    for (int i = from; i != to; i += step) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key%06d", i), vl = snprintf(v, sizeof v, "v%d", i * 7);
        cr_assert_eq(shale_insert(t, k, (size_t)kl, v, (size_t)vl, NULL), SHALE_OK);
    }
}

Test(ids, checksum_follows_contents_not_layout, .init = setup, .fini = teardown,
     .timeout = 300)
{
    shale_options o;
    shale_db *a, *b;
    char dir2[300];
    uint64_t ca, cb, size;
    opts(&o);
    snprintf(dir2, sizeof dir2, "%s/b", dir);
    cr_assert_eq(shale_open(dir, &o, &a), SHALE_OK);
    o.memtable_size = 1 << 20; /* the other written differently: other segments */
    cr_assert_eq(shale_open(dir2, &o, &b), SHALE_OK);
    fill(a, "x", 0, 20000, 1);
    fill(a, "y", 0, 500, 1);
    fill(b, "y", 499, -1, -1); /* trees created in the other order, keys backwards */
    fill(b, "x", 19999, -1, -1);
    cr_assert_eq(shale_checksum(a, &ca), SHALE_OK);
    cr_assert_eq(shale_checksum(b, &cb), SHALE_OK);
    cr_assert_eq(ca, cb, "same trees, keys and values");
    shale_tree *t;
    cr_assert_eq(shale_open_tree(b, "x", &t), SHALE_OK);
    cr_assert_eq(shale_insert(t, "key000100", 9, "changed", 7, NULL), SHALE_OK);
    cr_assert_eq(shale_checksum(b, &cb), SHALE_OK);
    cr_assert_neq(ca, cb, "a changed value");
    cr_assert_eq(shale_insert(t, "key000100", 9, "v700", 4, NULL), SHALE_OK);
    cr_assert_eq(shale_checksum(b, &cb), SHALE_OK);
    cr_assert_eq(ca, cb, "changed back");
    cr_assert_eq(shale_open_tree(b, "z", &t), SHALE_OK);
    cr_assert_eq(shale_checksum(b, &cb), SHALE_OK);
    cr_assert_neq(ca, cb, "an extra (empty) tree");
    cr_assert_eq(shale_drop_tree(b, "z"), SHALE_OK);
    cr_assert_eq(shale_checksum(b, &cb), SHALE_OK);
    cr_assert_eq(ca, cb, "dropped again");
    cr_assert_eq(shale_size_on_disk(a, &size), SHALE_OK);
    shale_stats st;
    cr_assert_eq(shale_stats_get(a, &st), SHALE_OK);
    cr_assert_geq(size, st.file_bytes);
    cr_assert_gt(size, 20000u * 10, "at least the data");
    cr_assert_eq(shale_checksum(NULL, &ca), SHALE_EINVAL);
    cr_assert_eq(shale_size_on_disk(a, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_close(a), SHALE_OK);
    cr_assert_eq(shale_close(b), SHALE_OK);
}
