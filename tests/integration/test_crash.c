/*
 * test_crash.c -- crash recovery with fork + SIGKILL on a real on-disk database.
 *
 * Each round a forked child opens the database and applies the generation
 * batches of workload.h across two trees, from where the previous round's
 * recovered state left off, calling shale_flush now and then and writing the
 * number of each batch whose flush returned to a pipe.  The parent kills it
 * with SIGKILL after a random 1..200 ms, reopens the database and checks the
 * recovered state is exactly batches 1..G for some G no smaller than the last
 * flushed batch reported.  The database carries over from round to round, so
 * later rounds recover databases with many segments, merges in flight and
 * logs left by earlier recoveries.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../support/testutil.h"
#include "workload.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* log_bytes -- the total size of the log files in dir. */
static uint64_t log_bytes(const char *dir)
{
    uint64_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    struct stat sb;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "log", 3) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &sb) == 0)
            total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

/* write_all -- write to the pipe; the child dies silently if the parent is gone. */
static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(3);
        c += w;
        n -= (size_t)w;
    }
}

typedef struct crash_cfg {
    uint64_t seed;      /* workload seed */
    uint64_t rng_seed;  /* the child's own choices */
    uint64_t first_gen; /* first batch to apply */
    shale_options opts;
} crash_cfg;

/* child_run -- apply batches until killed; never returns.  Exit codes other
 * than by SIGKILL mean an API call failed (reported on stderr). */
static void child_run(const char *dir, const crash_cfg *c, int wfd)
{
    shale_db *db = NULL;
    shale_tree *trees[WL_TREES];
    shale_batch *b = NULL;
    tu_rng rng;
    int rc;

    tu_rng_seed(&rng, c->rng_seed);
    rc = shale_open(dir, &c->opts, &db);
    if (rc != SHALE_OK) {
        fprintf(stderr, "crash child: open: %s\n", shale_strerror(rc));
        _exit(10);
    }
    if ((rc = wl_open_trees(db, trees)) != SHALE_OK || (rc = shale_batch_new(&b)) != SHALE_OK) {
        fprintf(stderr, "crash child: setup: %s\n", shale_strerror(rc));
        _exit(11);
    }
    uint64_t flush_every = 1 + tu_rng_range(&rng, 20);
    for (uint64_t g = c->first_gen;; g++) {
        if ((rc = wl_fill(b, trees, c->seed, g)) != SHALE_OK ||
            (rc = shale_batch_apply(db, b)) != SHALE_OK) {
            fprintf(stderr, "crash child: batch %" PRIu64 ": %s\n", g, shale_strerror(rc));
            _exit(12);
        }
        if (c->opts.sync_writes) {
            write_all(wfd, &g, sizeof g);
        } else if (tu_rng_range(&rng, flush_every) == 0) {
            if ((rc = shale_flush(db)) != SHALE_OK) {
                fprintf(stderr, "crash child: flush: %s\n", shale_strerror(rc));
                _exit(13);
            }
            write_all(wfd, &g, sizeof g);
        }
    }
}

/* read_flushed -- drain the pipe (the child is dead, so it ends); the last
 * flushed batch number, or 0. */
static uint64_t read_flushed(int rfd, uint64_t *count)
{
    uint64_t last = 0, g;
    size_t have = 0;
    char buf[sizeof g];
    *count = 0;
    for (;;) {
        ssize_t r = read(rfd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        if (have == sizeof buf) {
            memcpy(&g, buf, sizeof g);
            cr_assert(g > last,
                      "flushed batch numbers must increase (%" PRIu64 " after %" PRIu64 ")", g,
                      last);
            last = g;
            (*count)++;
            have = 0;
        }
    }
    return last;
}

/* verify -- reopen dir and check the state is a prefix in [lo, hi]; returns G. */
static uint64_t verify(const char *dir, const shale_options *opts, wl_model *m, uint64_t lo,
                       uint64_t hi, int round, double *open_s)
{
    shale_db *db = NULL;
    char err[512];
    double t0 = now_s();
    int rc = shale_open(dir, opts, &db);
    if (open_s)
        *open_s = now_s() - t0;
    cr_assert_eq(rc, SHALE_OK, "round %d: reopen after SIGKILL failed: %s", round,
                 shale_strerror(rc));
    int64_t G = wl_check(db, m, lo, hi, err, sizeof err);
    cr_assert(G >= 0, "round %d: %s", round, err);
    rc = shale_close(db);
    cr_assert_eq(rc, SHALE_OK, "round %d: close after recovery: %s", round, shale_strerror(rc));
    return (uint64_t)G;
}

/* run_round -- fork a child that writes from first_gen, kill it after delay_ms. */
static uint64_t run_round(const char *dir, crash_cfg *c, unsigned delay_ms, uint64_t *nflushes)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        child_run(dir, c, fds[1]);
        _exit(1);
    }
    close(fds[1]);
    sleep_ms(delay_ms);
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    uint64_t last = read_flushed(fds[0], nflushes);
    close(fds[0]);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the child died on its own (exit %d): see its message above",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return last;
}

Test(crash, recovered_state_is_a_prefix_with_every_flushed_batch, .timeout = 900)
{
    uint64_t seed = tu_seed();
    tu_rng rng;
    tu_rng_seed(&rng, seed ^ 0xc4a5);
    int rounds = (int)tu_scaled(50);
    char dir[256] = "";
    wl_model m;
    uint64_t G = 0, total_flushes = 0;
    crash_cfg c;

    fprintf(stderr, "crash: seed %" PRIu64 ", %d rounds\n", seed, rounds);
    for (int r = 0; r < rounds; r++) {
        if (r % 25 == 0) {
            /* A fresh database every 25 rounds, alternating page sizes. */
            if (dir[0])
                tu_rmrf(dir);
            cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
            wl_model_init(&m, seed + (uint64_t)r);
            G = 0;
            shale_options_default(&c.opts);
            c.opts.page_size = (r / 25) % 2 ? 1024 : 4096;
            c.opts.compression = (r / 25) % 2 ? SHALE_COMPRESSION_ZSTD : SHALE_COMPRESSION_NONE;
            c.opts.level_factor = (r / 25) % 2 ? 10 : 2;
        }
        c.seed = m.seed;
        c.rng_seed = tu_rng_next(&rng);
        c.first_gen = G + 1;
        c.opts.memtable_size = (size_t)(64 + 64 * tu_rng_range(&rng, 3)) << 10;
        c.opts.max_young_segments = 2 + (uint32_t)tu_rng_range(&rng, 2);
        c.opts.sync_writes = tu_rng_range(&rng, 8) == 0;
        c.opts.flush_every_ms = tu_rng_range(&rng, 2) ? 0 : 1 + (uint32_t)tu_rng_range(&rng, 50);
        unsigned delay = 1 + (unsigned)tu_rng_range(&rng, 200);

        uint64_t nfl;
        uint64_t flushed = run_round(dir, &c, delay, &nfl);
        total_flushes += nfl;
        cr_assert(flushed == 0 || flushed >= c.first_gen);
        uint64_t lo = flushed > G ? flushed : G;
        G = verify(dir, &c.opts, &m, lo, UINT64_MAX, r, NULL);
        char fault[200];
        cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "round %d: check: %s", r,
                     fault);
    }
    fprintf(stderr, "crash: %d rounds, %" PRIu64 " flushes reported, last generation %" PRIu64 "\n",
            rounds, total_flushes, G);
    tu_rmrf(dir);
}

/* The recovery time after a kill with a full memtable: printed, not gated. */
Test(crash, reopen_time_after_kill_with_full_memtable_is_reported, .timeout = 600)
{
    char dir[256];
    int fds[2];
    size_t target = (size_t)(28 * tu_scale()) << 20;
    if (target < (1u << 20))
        target = 1u << 20;
    const size_t vlen = 1000;

    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    cr_assert_eq(pipe(fds), 0);
    shale_options o;
    shale_options_default(&o);
    o.memtable_size = (size_t)32 << 20;
    o.flush_every_ms = 0;
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        shale_db *db;
        shale_tree *t;
        char key[32];
        uint8_t *val = malloc(vlen);
        close(fds[0]);
        if (!val || shale_open(dir, &o, &db) != SHALE_OK || shale_open_tree(db, NULL, &t))
            _exit(10);
        uint64_t n = 0;
        for (size_t done = 0; done < target; done += vlen + 16, n++) {
            int kl = snprintf(key, sizeof key, "key%012" PRIu64, wl_mix(n));
            memset(val, (int)(n & 0xff), vlen);
            memcpy(val, &n, sizeof n);
            if (shale_insert(t, key, (size_t)kl, val, vlen, NULL) != SHALE_OK)
                _exit(11);
        }
        if (shale_flush(db) != SHALE_OK)
            _exit(12);
        write_all(fds[1], &n, sizeof n);
        for (;;)
            pause();
    }
    close(fds[1]);
    uint64_t n = 0;
    ssize_t got = read(fds[0], &n, sizeof n);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    cr_assert_eq(got, (ssize_t)sizeof n, "the child failed before filling the memtable (status %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    shale_db *db;
    shale_tree *t;
    uint64_t logsz = log_bytes(dir);
    double t0 = now_s();
    int rc = shale_open(dir, &o, &db);
    double dt = now_s() - t0;
    cr_assert_eq(rc, SHALE_OK, "reopen: %s", shale_strerror(rc));
    fprintf(stderr,
            "crash: reopen after SIGKILL with %.1f MiB of flushed, unwritten-out data "
            "(%" PRIu64 " keys, log %.1f MiB): %.3f s\n",
            (double)target / (1 << 20), n, (double)logsz / (1 << 20), dt);
    /* Every key was flushed: all must be there, with its value. */
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    shale_buf b = SHALE_BUF_INIT;
    for (uint64_t i = 0; i < n; i += 1 + i / 64) {
        char key[32];
        int kl = snprintf(key, sizeof key, "key%012" PRIu64, wl_mix(i));
        rc = shale_get(t, key, (size_t)kl, &b);
        cr_assert_eq(rc, SHALE_OK, "key %" PRIu64 " of %" PRIu64 " lost: %s", i, n,
                     shale_strerror(rc));
        uint64_t v;
        memcpy(&v, b.data, sizeof v);
        cr_assert(b.len == vlen && v == i, "key %" PRIu64 ": wrong value", i);
    }
    shale_buf_free(&b);
    cr_assert_eq(shale_close(db), SHALE_OK);
    tu_rmrf(dir);
}
