/*
 * shale-demo.c -- load, read back, scan and reopen a database, timing each
 * phase; what `make demo` runs.
 *
 * Usage: shale-demo [-n KEYS] [DIR]   (DIR defaults to ./demo.db, KEYS to
 * 1,000,000).  DIR must not exist yet (`make demo` removes it first): the
 * checks assume the database holds exactly the keys loaded here.
 *
 * Phases, each timed and reported as ops/s and MB/s of key+value bytes:
 *   load      every key once, in a random order, in batches of BATCH writes
 *             through shale_batch_apply, then shale_flush (so the figure
 *             includes making the data durable);
 *   read      shale_get of every key, in another random order, checking each
 *             value;
 *   scan      one forward iterator over the default tree, checking that keys
 *             come in order, that each value is right and the count is KEYS;
 *   close     shale_close (writes out the memtable, joins background work);
 *   reopen    shale_open of the closed database;
 *   sample    shale_get of SAMPLE random keys after the reopen.
 * Then the database's own statistics: those of the loading session (taken
 * just before the close, so they show its flushes, merges and bytes written)
 * and a line from the reopened one; and the size of the directory.
 *
 * Keys are KEY_LEN-byte zero-padded decimals ("0000000000123456"); the value
 * of key i is VALUE_LEN printable bytes computed from i, so any phase can
 * check a value without keeping a copy.  Any library error or wrong answer
 * ends the demo with a message and exit status 1.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "shale.h"
#include "tool_stats.h"

#define DEFAULT_KEYS 1000000u
#define MAX_KEYS 100000000u /* keeps every key within KEY_LEN digits */
#define KEY_LEN 16
#define KEY_BUF 24 /* room for any uint64_t in decimal; keys stay below 10^16 */
#define VALUE_LEN 100
#define BATCH 1000u
#define SAMPLE 10000u
#define DEFAULT_DIR "./demo.db"

/* The demo's state: the open database, its default tree, the key order. */
typedef struct demo {
    const char *dir;
    uint64_t nkeys;
    uint64_t *order; /* a permutation of 0..nkeys-1 */
    uint64_t rng;
    shale_db *db;
    shale_tree *tree;
    shale_buf val;
    shale_stats before; /* the loading session's statistics, taken before close */
} demo;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* fail -- print "shale-demo: <message>" to stderr; returns -1. */
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("shale-demo: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

/* lib_fail -- report a library error from op; returns -1. */
static int lib_fail(const char *op, int rc)
{
    return fail("%s: %s", op, shale_strerror(rc));
}

/* A phase's start: wall-clock and process CPU seconds. */
typedef struct stopwatch {
    double wall, cpu;
} stopwatch;

/* clock_sec -- clock id's time in seconds. */
static double clock_sec(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* sw_start -- a stopwatch started now. */
static stopwatch sw_start(void)
{
    return (stopwatch){clock_sec(CLOCK_MONOTONIC), clock_sec(CLOCK_PROCESS_CPUTIME_ID)};
}

/* rng_next -- the next value of a xorshift64* generator. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* mix64 -- a 64-bit finaliser (splitmix64's), to derive values from keys. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* make_key -- the KEY_LEN-byte key of number i (i < 10^16), NUL-terminated. */
static void make_key(uint64_t i, char key[KEY_BUF])
{
    snprintf(key, KEY_BUF, "%016" PRIu64, i);
}

/* make_value -- the VALUE_LEN printable bytes of key number i. */
static void make_value(uint64_t i, char val[VALUE_LEN])
{
    uint64_t h = mix64(i);
    for (size_t j = 0; j < VALUE_LEN; j++) {
        if (j % 8 == 0)
            h = mix64(h + j);
        val[j] = (char)('a' + (h >> (8 * (j % 8))) % 26);
    }
}

/* shuffle -- fill d->order with a fresh random permutation of the keys. */
static void shuffle(demo *d)
{
    for (uint64_t i = 0; i < d->nkeys; i++)
        d->order[i] = i;
    for (uint64_t i = d->nkeys; i > 1; i--) {
        uint64_t j = rng_next(&d->rng) % i;
        uint64_t t = d->order[i - 1];
        d->order[i - 1] = d->order[j];
        d->order[j] = t;
    }
}

/* report -- one phase's line: elapsed and CPU seconds (all threads), ops/s
 * and MB/s of key+value bytes (by elapsed time). */
static void report(const char *phase, uint64_t ops, const stopwatch *sw)
{
    double secs = clock_sec(CLOCK_MONOTONIC) - sw->wall;
    double cpu = clock_sec(CLOCK_PROCESS_CPUTIME_ID) - sw->cpu;
    double s = secs > 1e-9 ? secs : 1e-9;
    double mb = (double)ops * (KEY_LEN + VALUE_LEN) / 1e6;
    printf("  %-8s %8.3f s  (cpu %7.3f s)", phase, secs, cpu);
    if (ops > 0)
        printf("  %10.0f ops/s  %7.1f MB/s  (%" PRIu64 " ops)", (double)ops / s, mb / s, ops);
    putchar('\n');
    fflush(stdout);
}

/* open_db -- open d->dir (creating it when create) and its default tree. */
static int open_db(demo *d, bool create)
{
    shale_options opts;
    shale_options_default(&opts);
    opts.create_if_missing = create;
    int rc = shale_open(d->dir, &opts, &d->db);
    if (rc != SHALE_OK) {
        d->db = NULL;
        if (rc == SHALE_EBUSY)
            return fail("open %s: database is open in another process", d->dir);
        return fail("open %s: %s", d->dir, shale_strerror(rc));
    }
    rc = shale_open_tree(d->db, NULL, &d->tree);
    return rc == SHALE_OK ? 0 : lib_fail("open tree", rc);
}

/* close_db -- close the database, reporting a failure. */
static int close_db(demo *d)
{
    int rc = shale_close(d->db);
    d->db = NULL;
    d->tree = NULL;
    return rc == SHALE_OK ? 0 : lib_fail("close", rc);
}

/* load_batch -- insert keys order[from..to) as one batch. */
static int load_batch(demo *d, shale_batch *b, uint64_t from, uint64_t to)
{
    char key[KEY_BUF], val[VALUE_LEN];
    shale_batch_clear(b);
    for (uint64_t i = from; i < to; i++) {
        make_key(d->order[i], key);
        make_value(d->order[i], val);
        int rc = shale_batch_insert(b, d->tree, key, KEY_LEN, val, VALUE_LEN);
        if (rc != SHALE_OK)
            return lib_fail("batch insert", rc);
    }
    int rc = shale_batch_apply(d->db, b);
    return rc == SHALE_OK ? 0 : lib_fail("batch apply", rc);
}

/* phase_load -- every key in random order, BATCH per batch, then a flush. */
static int phase_load(demo *d)
{
    shale_batch *b = NULL;
    int rc = shale_batch_new(&b);
    if (rc != SHALE_OK)
        return lib_fail("batch new", rc);
    shuffle(d);
    stopwatch t0 = sw_start();
    int err = 0;
    for (uint64_t i = 0; i < d->nkeys && !err; i += BATCH)
        err = load_batch(d, b, i, i + BATCH < d->nkeys ? i + BATCH : d->nkeys);
    shale_batch_free(b);
    if (err)
        return err;
    rc = shale_flush(d->db);
    if (rc != SHALE_OK)
        return lib_fail("flush", rc);
    report("load", d->nkeys, &t0);
    return 0;
}

/* check_get -- shale_get key number i and compare its value. */
static int check_get(demo *d, uint64_t i)
{
    char key[KEY_BUF], want[VALUE_LEN];
    make_key(i, key);
    make_value(i, want);
    int rc = shale_get(d->tree, key, KEY_LEN, &d->val);
    if (rc == SHALE_NOTFOUND)
        return fail("get %s: not found", key);
    if (rc != SHALE_OK)
        return lib_fail("get", rc);
    if (d->val.len != VALUE_LEN || memcmp(d->val.data, want, VALUE_LEN) != 0)
        return fail("get %s: wrong value (%zu bytes)", key, d->val.len);
    return 0;
}

/* phase_read -- get every key in a new random order and check it. */
static int phase_read(demo *d)
{
    shuffle(d);
    stopwatch t0 = sw_start();
    for (uint64_t i = 0; i < d->nkeys; i++)
        if (check_get(d, d->order[i]) != 0)
            return -1;
    report("read", d->nkeys, &t0);
    return 0;
}

/* check_entry -- the iterator's entry is key number i with its value. */
static int check_entry(shale_iter *it, uint64_t i)
{
    char key[KEY_BUF], want[VALUE_LEN];
    size_t kl, vl;
    const void *k = shale_iter_key(it, &kl);
    const void *v = shale_iter_value(it, &vl);
    make_key(i, key);
    make_value(i, want);
    if (kl != KEY_LEN || memcmp(k, key, KEY_LEN) != 0)
        return fail("scan: entry %" PRIu64 " has the wrong key (want %s)", i, key);
    if (vl != VALUE_LEN || memcmp(v, want, VALUE_LEN) != 0)
        return fail("scan: key %s has the wrong value", key);
    return 0;
}

/* scan_all -- walk it forward, checking each entry; *count gets the total. */
static int scan_all(shale_iter *it, uint64_t nkeys, uint64_t *count)
{
    int rc;
    uint64_t n = 0;
    for (rc = shale_iter_first(it); rc == SHALE_OK; rc = shale_iter_next(it)) {
        if (n >= nkeys)
            return fail("scan: more than %" PRIu64 " entries", nkeys);
        if (check_entry(it, n++) != 0)
            return -1;
    }
    *count = n;
    return rc == SHALE_NOTFOUND ? 0 : lib_fail("scan", rc);
}

/* phase_scan -- one forward scan of the whole tree. */
static int phase_scan(demo *d)
{
    shale_iter *it = NULL;
    uint64_t n = 0;
    stopwatch t0 = sw_start();
    int rc = shale_iter_open(d->tree, &it);
    if (rc != SHALE_OK)
        return lib_fail("iter open", rc);
    int err = scan_all(it, d->nkeys, &n);
    shale_iter_close(it);
    if (err)
        return err;
    if (n != d->nkeys)
        return fail("scan: %" PRIu64 " entries, want %" PRIu64, n, d->nkeys);
    report("scan", n, &t0);
    return 0;
}

/* phase_reopen -- keep the session's statistics, then close and reopen, timing each. */
static int phase_reopen(demo *d)
{
    int rc = shale_stats_get(d->db, &d->before);
    if (rc != SHALE_OK)
        return lib_fail("stats", rc);
    stopwatch t0 = sw_start();
    if (close_db(d) != 0)
        return -1;
    report("close", 0, &t0);
    stopwatch t1 = sw_start();
    if (open_db(d, false) != 0)
        return -1;
    report("reopen", 0, &t1);
    return 0;
}

/* phase_sample -- get SAMPLE random keys (all of them if fewer) and check them. */
static int phase_sample(demo *d)
{
    uint64_t n = d->nkeys < SAMPLE ? d->nkeys : SAMPLE;
    shuffle(d);
    stopwatch t0 = sw_start();
    for (uint64_t i = 0; i < n; i++)
        if (check_get(d, d->order[i]) != 0)
            return -1;
    report("sample", n, &t0);
    return 0;
}

/* print_stats -- the loading session's statistics, then a few of the reopened one's. */
static int print_stats(demo *d)
{
    shale_stats st;
    int rc = shale_stats_get(d->db, &st);
    if (rc != SHALE_OK)
        return lib_fail("stats", rc);
    printf("\nstatistics of the loading session (taken just before the close):\n");
    ts_print(stdout, "  ", &d->before);
    printf("\nafter the reopen: %" PRIu64 " segments (%" PRIu64 " young), %" PRIu64
           " entries, recovered: %s, cache hits %" PRIu64 ", misses %" PRIu64 "\n",
           st.segments, st.young_segments, st.entries, st.recovered ? "yes" : "no", st.cache_hits,
           st.cache_misses);
    return 0;
}

/* dir_size -- sum the sizes of the regular files in dir into *bytes. */
static int dir_size(const char *dir, uint64_t *bytes, uint64_t *files)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return fail("%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    *bytes = *files = 0;
    while ((e = readdir(dp)) != NULL) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            *bytes += (uint64_t)sb.st_size;
            (*files)++;
        }
    }
    closedir(dp);
    return 0;
}

/* print_dir_size -- the directory's total size and the space amplification. */
static int print_dir_size(const demo *d)
{
    uint64_t bytes = 0, files = 0;
    char human[32];
    if (dir_size(d->dir, &bytes, &files) != 0)
        return -1;
    ts_human(human, sizeof human, bytes);
    printf("\n%s: %" PRIu64 " bytes (%s) in %" PRIu64 " files; %.2fx the %" PRIu64
           " bytes of keys and values\n",
           d->dir, bytes, human, files, (double)bytes / (double)(d->nkeys * (KEY_LEN + VALUE_LEN)),
           d->nkeys * (KEY_LEN + VALUE_LEN));
    return 0;
}

/* run -- every phase in order; stops at the first failure. */
static int run(demo *d)
{
    struct stat sb;
    if (stat(d->dir, &sb) == 0)
        return fail("%s already exists; remove it first (the demo needs a fresh database)", d->dir);
    printf("shale %s demo: %" PRIu64 " keys of %d bytes, values of %d bytes, in %s\n\n",
           SHALE_VERSION_STRING, d->nkeys, KEY_LEN, VALUE_LEN, d->dir);
    stopwatch t0 = sw_start();
    if (open_db(d, true) != 0)
        return -1;
    report("create", 0, &t0);
    if (phase_load(d) || phase_read(d) || phase_scan(d) || phase_reopen(d) || phase_sample(d) ||
        print_stats(d))
        return -1;
    if (close_db(d) != 0)
        return -1;
    if (print_dir_size(d) != 0)
        return -1;
    printf("\nall %" PRIu64 " keys verified; total %.1f s\n", d->nkeys,
           clock_sec(CLOCK_MONOTONIC) - t0.wall);
    return 0;
}

/* usage -- print the usage line to f. */
static void usage(FILE *f)
{
    fprintf(f, "usage: shale-demo [-n KEYS] [DIR]   (default: %u keys in %s)\n", DEFAULT_KEYS,
            DEFAULT_DIR);
}

/* parse_args -- [-n KEYS] [DIR]; returns 0, 1 after --help, or 2 on a usage error. */
static int parse_args(demo *d, int argc, char **argv)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        char *end;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(argv[i], "-n") != 0 || i + 1 >= argc)
            break;
        d->nkeys = strtoull(argv[++i], &end, 10);
        if (*end || d->nkeys == 0 || d->nkeys > MAX_KEYS) {
            fail("-n wants a count from 1 to %u", MAX_KEYS);
            return 2;
        }
    }
    if (i < argc && argv[i][0] != '-')
        d->dir = argv[i++];
    if (i < argc) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* main -- parse arguments, run the demo, clean up. */
int main(int argc, char **argv)
{
    demo d = {.dir = DEFAULT_DIR,
              .nkeys = DEFAULT_KEYS,
              .rng = 0x5ca1ab1e12345678ull,
              .val = SHALE_BUF_INIT};
    int st = parse_args(&d, argc, argv);
    if (st != 0)
        return st == 1 ? 0 : 2;
    d.order = malloc(d.nkeys * sizeof *d.order);
    if (!d.order) {
        fail("out of memory");
        return 1;
    }
    st = run(&d);
    if (d.db)
        shale_close(d.db);
    shale_buf_free(&d.val);
    free(d.order);
    if (st != 0)
        fprintf(stderr, "shale-demo: FAILED\n");
    return st == 0 ? 0 : 1;
}
