/*
 * test_corrupt.c -- damaged files give errors, never a crash, a hang or a
 * wrong value.
 *
 * Two small databases are built on a memenv: "clean" (several segments,
 * merges, every memtable written out, closed cleanly) and "logged" (the same,
 * then more writes left in a flushed log, then a power cut).  Their files are
 * copied; then, many times over, a fresh env gets a copy with some damage --
 * bits flipped, a run of bytes zeroed or overwritten, a whole page zeroed, or
 * a file truncated -- and the database is opened, every key read, scanned in
 * both directions, written to, flushed and closed.  Each call must return
 * success, SHALE_NOTFOUND or a negative error.  Values are self-describing
 * (they encode a hash of their key and a version), so any value a call hands
 * back as valid must be a value that was really written for that key; scans
 * must be strictly ordered.  An older but well-formed value is accepted,
 * since a damaged newest header slot legitimately falls back to the older one.
 * A last test does the same with real files on disk (flips and truncations),
 * through the POSIX env.
 *
 * The same runs on a compressed database; and "forged" damage changes bytes
 * of leaf, parent and compressed leaf pages and recomputes their checksums,
 * so the damage gets past the crcs into the decoders and the decompressors.
 * Forged content cannot be told from real content, so those runs check only
 * that every call returns a proper code and nothing crashes or hangs.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/lsm/db.h"
#include "../../src/space/page.h"
#include "../support/memenv.h"
#include "../support/testutil.h"
#include "workload.h" /* WL_SANITIZED */

#define DBPATH "db"
#define NK 1200
#define MAXFILES 64

typedef struct image_file {
    char name[64];
    uint8_t *data;
    size_t len;
} image_file;

typedef struct image {
    image_file f[MAXFILES];
    size_t n;
} image;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t key_hash(const void *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *p = k;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

/* make_key -- key i: some short, some with a long shared prefix, some > 512 bytes. */
static size_t make_key(unsigned i, char *buf)
{
    int n = sprintf(buf, "c%06u", i);
    if (i % 7 == 3) {
        memset(buf + n, 'L', 600);
        n += 600;
    } else if (i % 5 == 1) {
        n = sprintf(buf, "common/prefix/%040u/%06u", 0u, i);
    }
    return (size_t)n;
}

/* make_value -- the value of (key hash kh, version v); some overflow (> 2 KiB). */
static size_t make_value(uint32_t kh, uint32_t v, uint8_t *buf)
{
    uint64_t h = mix(((uint64_t)kh << 32) | v);
    size_t fill = (h % 16) == 0 ? 2500 + (size_t)(h >> 8) % 3000 : (size_t)(h >> 8) % 200;
    buf[0] = 'V';
    memcpy(buf + 1, &kh, 4);
    memcpy(buf + 5, &v, 4);
    uint64_t x = h | 1;
    for (size_t i = 0; i < fill; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[9 + i] = (uint8_t)x;
    }
    return 9 + fill;
}

/* value_ok -- whether val is a value really written for key (any version). */
static bool value_ok(const void *key, size_t klen, const void *val, size_t vlen)
{
    static _Thread_local uint8_t want[6000];
    uint32_t kh, v;
    if (vlen < 9 || ((const uint8_t *)val)[0] != 'V')
        return false;
    memcpy(&kh, (const uint8_t *)val + 1, 4);
    memcpy(&v, (const uint8_t *)val + 5, 4);
    if (kh != key_hash(key, klen) || v == 0 || v > 4)
        return false;
    size_t n = make_value(kh, v, want);
    return n == vlen && memcmp(want, val, n) == 0;
}

static int test_codec; /* SHALE_COMPRESSION_* of the databases built */
static bool forged;    /* damage passes the crcs: values cannot be checked */

static void db_opts(shale_options *o)
{
    shale_options_default(o);
    o->compression = test_codec;
    o->memtable_size = 64u << 10;
    o->page_size = 1024;
    o->cache_size = 256u << 10;
    o->max_young_segments = 3;
    o->flush_every_ms = 0;
}

/* version_of -- which version key i holds after writing round r (0 = removed). */
static uint32_t version_of(unsigned i, unsigned r)
{
    uint32_t v = 0;
    for (unsigned x = 1; x <= r; x++) {
        if (x == 4 && i % 8 != 0)
            continue;
        if (x == 1 || mix(i * 31u + x) % 3 == 0)
            v = x;
        else if (mix(i * 37u + x) % 11 == 0)
            v = 0;
    }
    return v;
}

/* write_rounds -- rounds from..to of the writes (round 4 touches a few keys
 * only); the first error, or SHALE_OK. */
static int write_rounds(shale_tree *t, unsigned from, unsigned to)
{
    char key[700];
    uint8_t val[6000];
    int rc = SHALE_OK;
    for (unsigned r = from; r <= to; r++) {
        for (unsigned i = 0; i < NK && rc == SHALE_OK; i++) {
            uint32_t before = version_of(i, r - 1), after = version_of(i, r);
            if (after == before && r > 1)
                continue;
            size_t kl = make_key(i, key);
            if (after == 0) {
                rc = shale_remove(t, key, kl, NULL);
            } else {
                size_t vl = make_value(key_hash(key, kl), after, val);
                rc = shale_insert(t, key, kl, val, vl, NULL);
            }
        }
    }
    return rc;
}

static int collect_name(void *ctx, const char *name)
{
    image *im = ctx;
    if (im->n < MAXFILES && strcmp(name, "LOCK") != 0)
        snprintf(im->f[im->n++].name, sizeof im->f[0].name, "%s", name);
    return 0;
}

/* take_image -- copy every file of the db directory out of m. */
static void take_image(memenv *m, image *im)
{
    sp_env *env = memenv_env(m);
    char path[128];
    im->n = 0;
    cr_assert_eq(env->list(env, DBPATH, collect_name, im), SHALE_OK);
    for (size_t i = 0; i < im->n; i++) {
        snprintf(path, sizeof path, DBPATH "/%s", im->f[i].name);
        cr_assert_eq(memenv_file_bytes(m, path, &im->f[i].data, &im->f[i].len), SHALE_OK);
    }
}

static void free_image(image *im)
{
    for (size_t i = 0; i < im->n; i++)
        free(im->f[i].data);
    im->n = 0;
}

/* restore -- a fresh env holding the image, all durable. */
static memenv *restore(const image *im)
{
    memenv *m = memenv_create();
    sp_env *env = memenv_env(m);
    char path[128];
    cr_assert_not_null(m);
    cr_assert_eq(env->mkdir(env, DBPATH), SHALE_OK);
    for (size_t i = 0; i < im->n; i++) {
        sp_file *f;
        snprintf(path, sizeof path, DBPATH "/%s", im->f[i].name);
        cr_assert_eq(env->open(env, path, SP_O_CREATE, &f), SHALE_OK);
        if (im->f[i].len)
            cr_assert_eq(env->write(f, im->f[i].data, im->f[i].len, 0), SHALE_OK);
        cr_assert_eq(env->close(f), SHALE_OK);
    }
    cr_assert_eq(memenv_sync_all(m), SHALE_OK);
    return m;
}

/* build -- the clean image (closed) and the logged one (log left after a cut). */
static void build(image *clean, image *logged)
{
    memenv *m = memenv_create();
    shale_options o;
    shale_db *db;
    shale_tree *t;

    db_opts(&o);
    cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "t", &t), SHALE_OK);
    cr_assert_eq(write_rounds(t, 1, 3), SHALE_OK);
    cr_assert_eq(shale_close(db), SHALE_OK);
    take_image(m, clean);

    cr_assert_eq(db_open_env(DBPATH, &o, memenv_env(m), &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "t", &t), SHALE_OK);
    cr_assert_eq(write_rounds(t, 4, 4), SHALE_OK);
    cr_assert_eq(shale_flush(db), SHALE_OK);
    memenv_crash(m);
    shale_close(db);
    cr_assert_eq(memenv_revive(m, 1), SHALE_OK);
    take_image(m, logged);
    memenv_destroy(m);
    bool has_log = false;
    for (size_t i = 0; i < logged->n; i++)
        has_log |= strncmp(logged->f[i].name, "log", 3) == 0 && logged->f[i].len > 0;
    cr_assert(has_log, "the logged image has no non-empty log file");
}

typedef struct outcome {
    uint64_t opened, open_errors, read_errors, reads_ok;
} outcome;

static void check_rc(int rc, const char *what, const char *ctx)
{
    cr_assert(rc == SHALE_OK || rc == SHALE_NOTFOUND || (rc < 0 && rc >= SHALE_EFORMAT),
              "%s: %s returned %d", ctx, what, rc);
}

/* scan_all -- a full scan in one direction: ordered, values valid. */
static void scan_all(shale_tree *t, bool backward, const char *ctx, outcome *out)
{
    shale_iter *it;
    uint8_t *prev = malloc(SHALE_MAX_KEY_SIZE);
    size_t plen = 0, steps = 0;
    bool have = false;
    int rc = shale_iter_open(t, &it);
    check_rc(rc, "iter_open", ctx);
    if (rc < 0) {
        free(prev);
        return;
    }
    rc = backward ? shale_iter_last(it) : shale_iter_first(it);
    while (rc == SHALE_OK) {
        size_t kl, vl;
        const void *k = shale_iter_key(it, &kl);
        const void *v = shale_iter_value(it, &vl);
        cr_assert(forged || value_ok(k, kl, v, vl), "%s: scan returned a wrong value for a key",
                  ctx);
        if (have && !forged) {
            int c = memcmp(prev, k, plen < kl ? plen : kl);
            c = c ? c : (plen > kl) - (plen < kl);
            cr_assert(backward ? c > 0 : c < 0, "%s: scan out of order", ctx);
        }
        cr_assert(kl <= SHALE_MAX_KEY_SIZE);
        memcpy(prev, k, kl);
        plen = kl;
        have = true;
        cr_assert(++steps <= (forged ? 64 : 4) * NK, "%s: scan does not end", ctx);
        rc = backward ? shale_iter_prev(it) : shale_iter_next(it);
    }
    check_rc(rc, backward ? "iter_prev" : "iter_next", ctx);
    if (rc < 0)
        out->read_errors++;
    shale_iter_close(it);
    free(prev);
}

/* exercise -- open, read everything, scan, write, flush, close: never a crash. */
static void exercise(sp_env *env, const char *path, const char *ctx, outcome *out, bool exact,
                     unsigned rounds_written)
{
    shale_options o;
    shale_db *db = NULL;
    shale_tree *t;
    shale_buf b = SHALE_BUF_INIT;
    char key[700];
    int rc;

    db_opts(&o);
    rc = db_open_env(path, &o, env, &db);
    check_rc(rc, "open", ctx);
    if (rc != SHALE_OK) {
        cr_assert(!exact, "%s: the undamaged copy does not open: %s", ctx, shale_strerror(rc));
        cr_assert_null(db);
        out->open_errors++;
        return;
    }
    out->opened++;
    rc = shale_open_tree(db, "t", &t);
    check_rc(rc, "open_tree", ctx);
    if (rc == SHALE_OK) {
        for (unsigned i = 0; i < NK; i++) {
            size_t kl = make_key(i, key);
            rc = shale_get(t, key, kl, &b);
            check_rc(rc, "get", ctx);
            if (rc == SHALE_OK) {
                cr_assert(forged || value_ok(key, kl, b.data, b.len),
                          "%s: get of key %u returned a wrong value", ctx, i);
                out->reads_ok++;
            } else if (rc < 0) {
                out->read_errors++;
            }
            if (exact) {
                uint32_t v = version_of(i, rounds_written);
                uint32_t got = 0;
                if (rc == SHALE_OK)
                    memcpy(&got, (uint8_t *)b.data + 5, 4);
                cr_assert_eq(got, v, "%s: key %u holds version %u, expected %u", ctx, i, got, v);
            }
        }
        scan_all(t, false, ctx, out);
        scan_all(t, true, ctx, out);
        for (unsigned i = 0; i < 50; i++) {
            size_t kl = make_key(NK + i, key);
            uint8_t val[6000];
            size_t vl = make_value(key_hash(key, kl), 1, val);
            rc = shale_insert(t, key, kl, val, vl, NULL);
            check_rc(rc, "insert", ctx);
            if (rc < 0)
                break;
        }
        check_rc(shale_flush(db), "flush", ctx);
    }
    rc = shale_close(db);
    check_rc(rc, "close", ctx);
    if (exact)
        cr_assert_eq(rc, SHALE_OK, "%s: close: %s", ctx, shale_strerror(rc));
    shale_buf_free(&b);
}

/* damage -- one random kind of damage to one random file of the copy. */
static void damage(memenv *m, const image *im, tu_rng *rng, bool log_only, char *desc, size_t dn)
{
    size_t cand[MAXFILES], nc = 0;
    char path[128];
    for (size_t i = 0; i < im->n; i++) {
        bool is_log = strncmp(im->f[i].name, "log", 3) == 0;
        if (im->f[i].len > 0 && (!log_only || is_log))
            cand[nc++] = i;
    }
    cr_assert(nc > 0);
    const image_file *f = &im->f[cand[tu_rng_range(rng, nc)]];
    snprintf(path, sizeof path, DBPATH "/%s", f->name);
    /* Half the time hit the first pages (headers, early records) harder. */
    uint64_t span = tu_rng_range(rng, 2) ? f->len : (f->len < 8192 ? f->len : 8192);
    uint64_t off = tu_rng_range(rng, span);
    uint8_t junk[1024];
    switch (tu_rng_range(rng, 5)) {
    case 0:
    case 1: {
        unsigned nflip = 1 + (unsigned)tu_rng_range(rng, 4);
        for (unsigned j = 0; j < nflip; j++) {
            uint64_t o = off + tu_rng_range(rng, 16);
            if (o >= f->len)
                o = f->len - 1;
            cr_assert_eq(memenv_corrupt(m, path, o, (uint8_t)(1 + tu_rng_range(rng, 255))),
                         SHALE_OK);
        }
        snprintf(desc, dn, "%u bit flips at %s+%" PRIu64, nflip, f->name, off);
        break;
    }
    case 2: {
        size_t n = 1 + (size_t)tu_rng_range(rng, 64);
        memset(junk, 0, n);
        cr_assert_eq(memenv_set_bytes(m, path, off, junk, n), SHALE_OK);
        snprintf(desc, dn, "%zu zero bytes at %s+%" PRIu64, n, f->name, off);
        break;
    }
    case 3: {
        size_t n = 1 + (size_t)tu_rng_range(rng, sizeof junk);
        tu_rng_bytes(rng, junk, n);
        cr_assert_eq(memenv_set_bytes(m, path, off, junk, n), SHALE_OK);
        snprintf(desc, dn, "%zu random bytes at %s+%" PRIu64, n, f->name, off);
        break;
    }
    default: {
        /* A whole 1 KiB page (the page size) zeroed. */
        off &= ~(uint64_t)1023;
        memset(junk, 0, sizeof junk);
        cr_assert_eq(memenv_set_bytes(m, path, off, junk, sizeof junk), SHALE_OK);
        snprintf(desc, dn, "page zeroed at %s+%" PRIu64, f->name, off);
        break;
    }
    }
}

/* forge -- change 1 to 4 bytes of a random leaf, parent or compressed leaf
 * page of the data file (not its page number) and recompute its crc. */
static void forge(memenv *m, const image *im, tu_rng *rng, char *desc, size_t dn)
{
    const image_file *f = NULL;
    for (size_t i = 0; i < im->n; i++)
        if (strcmp(im->f[i].name, "data") == 0)
            f = &im->f[i];
    cr_assert_not_null(f);
    const uint32_t ps = 1024;
    size_t np = f->len / ps, pg = 0;
    uint8_t page[1024];
    for (int tries = 0; tries < 10000; tries++) {
        pg = SP_FIRST_DATA_PAGE + (size_t)tu_rng_range(rng, np - SP_FIRST_DATA_PAGE);
        uint8_t t = sp_page_type(f->data + pg * ps);
        if (t == SP_PT_LEAF || t == SP_PT_PARENT || t == SP_PT_CLEAF)
            break;
    }
    memcpy(page, f->data + pg * ps, ps);
    unsigned n = 1 + (unsigned)tu_rng_range(rng, 4);
    for (unsigned j = 0; j < n; j++) {
        size_t off;
        switch (tu_rng_range(rng, 3)) {
        case 0: /* the header, but not the crc or the page number */
            off = 4 + (size_t)tu_rng_range(rng, SP_PAGE_HDR - 4);
            if (off >= 8 && off < 16)
                off += 8;
            break;
        case 1: /* the start of the payload: slots, a run's length and codec */
            off = SP_PAGE_HDR + (size_t)tu_rng_range(rng, 24);
            break;
        default:
            off = SP_PAGE_HDR + (size_t)tu_rng_range(rng, ps - SP_PAGE_HDR);
        }
        page[off] = tu_rng_range(rng, 2) ? (uint8_t)tu_rng_next(rng)
                                         : (uint8_t)(page[off] ^ (1u << tu_rng_range(rng, 8)));
    }
    sp_page_seal(page, ps);
    cr_assert_eq(memenv_set_bytes(m, DBPATH "/data", pg * ps, page, ps), SHALE_OK);
    snprintf(desc, dn, "%u bytes forged in page %zu (type %u)", n, pg, sp_page_type(page));
}

static void run_damage(bool use_logged, bool log_only, uint64_t iters, const char *label)
{
    image clean, logged;
    uint64_t seed = tu_seed();
    tu_rng rng;
    outcome out = {0};
    char desc[160], ctx[256];

    tu_rng_seed(&rng, seed ^ (use_logged ? 0x10 : 0x20) ^ (log_only ? 0x300 : 0));
    build(&clean, &logged);
    const image *im = use_logged ? &logged : &clean;
    /* The undamaged copy must read back exactly. */
    memenv *m = restore(im);
    exercise(memenv_env(m), DBPATH, "undamaged copy", &out, true, use_logged ? 4 : 3);
    memenv_destroy(m);
    for (uint64_t i = 0; i < iters; i++) {
        m = restore(im);
        if (forged)
            forge(m, im, &rng, desc, sizeof desc);
        else
            damage(m, im, &rng, log_only, desc, sizeof desc);
        snprintf(ctx, sizeof ctx, "%s #%" PRIu64 " (%s; seed %" PRIu64 ")", label, i, desc, seed);
        exercise(memenv_env(m), DBPATH, ctx, &out, false, 0);
        memenv_destroy(m);
    }
    fprintf(stderr,
            "corrupt/%s: %" PRIu64 " damaged copies: %" PRIu64 " opened, %" PRIu64
            " open errors, %" PRIu64 " read errors, %" PRIu64 " good reads\n",
            label, iters, out.opened, out.open_errors, out.read_errors, out.reads_ok);
    free_image(&clean);
    free_image(&logged);
}

Test(corrupt, damaged_clean_database_gives_errors_not_crashes, .timeout = 600)
{
    run_damage(false, false, tu_scaled(WL_SANITIZED ? 120 : 300), "clean");
}

Test(corrupt, damaged_database_with_log_gives_errors_not_crashes, .timeout = 600)
{
    run_damage(true, false, tu_scaled(WL_SANITIZED ? 100 : 200), "logged");
}

Test(corrupt, damaged_log_gives_errors_not_crashes, .timeout = 600)
{
    run_damage(true, true, tu_scaled(WL_SANITIZED ? 60 : 150), "log");
}

Test(corrupt, damaged_compressed_database_gives_errors_not_crashes, .timeout = 600)
{
    test_codec = SHALE_COMPRESSION_ZSTD;
    run_damage(false, false, tu_scaled(WL_SANITIZED ? 80 : 200), "zstd");
    test_codec = SHALE_COMPRESSION_NONE;
}

Test(corrupt, forged_pages_reach_the_decoders_and_give_errors_not_crashes, .timeout = 600)
{
    forged = true;
    for (int codec = SHALE_COMPRESSION_NONE; codec <= SHALE_COMPRESSION_ZSTD; codec++) {
        static const char *const label[] = {"forged", "forged-lz4", "forged-zstd"};
        test_codec = codec;
        run_damage(false, false, tu_scaled(WL_SANITIZED ? 80 : 200), label[codec]);
    }
    test_codec = SHALE_COMPRESSION_NONE;
    forged = false;
}

Test(corrupt, truncated_files_give_errors_not_crashes, .timeout = 600)
{
    image clean, logged;
    uint64_t seed = tu_seed();
    tu_rng rng;
    outcome out = {0};
    char path[128], ctx[256];

    tu_rng_seed(&rng, seed ^ 0x7c);
    build(&clean, &logged);
    uint64_t iters = tu_scaled(WL_SANITIZED ? 60 : 100);
    for (uint64_t i = 0; i < iters; i++) {
        const image *im = (i & 1) ? &logged : &clean;
        memenv *m = restore(im);
        const image_file *f = &im->f[tu_rng_range(&rng, im->n)];
        uint64_t size;
        switch (tu_rng_range(&rng, 4)) {
        case 0:
            size = 0;
            break;
        case 1:
            size = tu_rng_range(&rng, f->len < 4096 ? f->len + 1 : 4096);
            break;
        default:
            size = tu_rng_range(&rng, f->len + 1);
            break;
        }
        snprintf(path, sizeof path, DBPATH "/%s", f->name);
        cr_assert_eq(memenv_set_size(m, path, size), SHALE_OK);
        snprintf(ctx, sizeof ctx,
                 "truncate #%" PRIu64 " (%s image, %s %zu -> %" PRIu64 "; seed %" PRIu64 ")", i,
                 (i & 1) ? "logged" : "clean", f->name, f->len, size, seed);
        exercise(memenv_env(m), DBPATH, ctx, &out, false, 0);
        memenv_destroy(m);
    }
    fprintf(stderr,
            "corrupt/truncate: %" PRIu64 " truncated copies: %" PRIu64 " opened, %" PRIu64
            " open errors, %" PRIu64 " read errors\n",
            iters, out.opened, out.open_errors, out.read_errors);
    free_image(&clean);
    free_image(&logged);
}

/* ---- on disk, through the POSIX env -------------------------------------- */

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    cr_assert(a && b, "copy %s -> %s", from, to);
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

/* copy_dir -- copy every file of a flat directory (not LOCK). */
static void copy_dir(const char *from, const char *to, char names[][256], size_t *nn)
{
    DIR *d = opendir(from);
    struct dirent *e;
    char a[512], b[512];
    *nn = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "LOCK") == 0)
            continue;
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        copy_file(a, b);
        if (*nn < MAXFILES)
            snprintf(names[(*nn)++], 256, "%s", e->d_name);
    }
    closedir(d);
}

Test(corrupt, damaged_files_on_disk_give_errors_not_crashes, .timeout = 600)
{
    char src[256], dst[256], path[600], ctx[700];
    char names[MAXFILES][256];
    size_t nn;
    uint64_t seed = tu_seed();
    tu_rng rng;
    outcome out = {0};
    shale_options o;
    shale_db *db;
    shale_tree *t;

    tu_rng_seed(&rng, seed ^ 0xd15c);
    cr_assert_eq(tu_tmpdir(src, sizeof src), 0);
    db_opts(&o);
    cr_assert_eq(shale_open(src, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "t", &t), SHALE_OK);
    cr_assert_eq(write_rounds(t, 1, 3), SHALE_OK);
    cr_assert_eq(shale_close(db), SHALE_OK);
    /* Round 4 in a child killed after its flush: src is a crash image with a
     * flushed log (and maybe a write-out cut short). */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char ok = 1;
        close(fds[0]);
        if (shale_open(src, &o, &db) != SHALE_OK || shale_open_tree(db, "t", &t) != SHALE_OK ||
            write_rounds(t, 4, 4) != SHALE_OK || shale_flush(db) != SHALE_OK)
            _exit(1);
        if (write(fds[1], &ok, 1) != 1)
            _exit(2);
        for (;;)
            pause();
    }
    close(fds[1]);
    char ok = 0;
    ssize_t got = read(fds[0], &ok, 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    cr_assert_eq(got, 1, "the child failed to write round 4");
    cr_assert_eq(tu_tmpdir(dst, sizeof dst), 0);
    copy_dir(src, dst, names, &nn);
    /* The undamaged crash image reads back exactly. */
    exercise(sp_env_posix(), dst, "on-disk undamaged copy", &out, true, 4);
    tu_rmrf(dst);

    uint64_t iters = tu_scaled(WL_SANITIZED ? 30 : 60);
    for (uint64_t i = 0; i < iters; i++) {
        cr_assert_eq(tu_tmpdir(dst, sizeof dst), 0);
        copy_dir(src, dst, names, &nn);
        cr_assert(nn > 0);
        const char *name = names[tu_rng_range(&rng, nn)];
        snprintf(path, sizeof path, "%s/%s", dst, name);
        struct stat sb;
        cr_assert_eq(stat(path, &sb), 0);
        uint64_t len = (uint64_t)sb.st_size;
        if (len == 0 || tu_rng_range(&rng, 3) == 0) {
            uint64_t size = tu_rng_range(&rng, len + 1);
            cr_assert_eq(truncate(path, (off_t)size), 0);
            snprintf(ctx, sizeof ctx,
                     "on disk #%" PRIu64 " (%s truncated to %" PRIu64 "; seed %" PRIu64 ")", i,
                     name, size, seed);
        } else {
            int fd = open(path, O_RDWR);
            cr_assert(fd >= 0);
            uint64_t off = tu_rng_range(&rng, len);
            uint8_t x = 0;
            cr_assert_eq(pread(fd, &x, 1, (off_t)off), 1);
            x ^= (uint8_t)(1 + tu_rng_range(&rng, 255));
            cr_assert_eq(pwrite(fd, &x, 1, (off_t)off), 1);
            close(fd);
            snprintf(ctx, sizeof ctx,
                     "on disk #%" PRIu64 " (%s byte %" PRIu64 " flipped; seed %" PRIu64 ")", i,
                     name, off, seed);
        }
        exercise(sp_env_posix(), dst, ctx, &out, false, 0);
        tu_rmrf(dst);
    }
    fprintf(stderr,
            "corrupt/disk: %" PRIu64 " damaged copies: %" PRIu64 " opened, %" PRIu64
            " open errors\n",
            iters, out.opened, out.open_errors);
    tu_rmrf(src);
}
