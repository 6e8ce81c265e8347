/*
 * testutil.c -- scratch directories, the test PRNG, the seed and the scale.
 * See testutil.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include "shale.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* tu_tmpdir -- mkdtemp a fresh directory under /tmp. */
int tu_tmpdir(char *buf, size_t n)
{
    static const char tmpl[] = "/tmp/shale-test-XXXXXX";

    if (buf == NULL || n < sizeof(tmpl)) {
        errno = EINVAL;
        return -1;
    }
    memcpy(buf, tmpl, sizeof(tmpl));
    return mkdtemp(buf) == NULL ? -1 : 0;
}

/* rm_one -- nftw callback: remove one entry (children come first). */
static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type == FTW_DP || type == FTW_D)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* tu_rmrf -- depth-first removal, not following symbolic links. */
int tu_rmrf(const char *path)
{
    struct stat st;

    if (path == NULL)
        return -1;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

/* splitmix64 -- expands a seed into well-mixed state words. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* tu_rng_seed -- fill the state from seed with splitmix64 (never all zero). */
void tu_rng_seed(tu_rng *r, uint64_t seed)
{
    uint64_t x = seed;

    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* tu_rng_next -- xoshiro256** (Blackman and Vigna). */
uint64_t tu_rng_next(tu_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* tu_rng_range -- rejection sampling over the largest multiple of n. */
uint64_t tu_rng_range(tu_rng *r, uint64_t n)
{
    uint64_t limit, v;

    if (n == 0)
        return 0;
    limit = UINT64_MAX - UINT64_MAX % n; /* values >= limit would bias */
    do
        v = tu_rng_next(r);
    while (v >= limit);
    return v % n;
}

/* tu_rng_bytes -- 8 bytes per step, little-endian order. */
void tu_rng_bytes(tu_rng *r, void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n > 0) {
        uint64_t v = tu_rng_next(r);
        size_t k = n < 8 ? n : 8;
        for (size_t i = 0; i < k; i++)
            p[i] = (uint8_t)(v >> (8 * i));
        p += k;
        n -= k;
    }
}

static pthread_once_t seed_once = PTHREAD_ONCE_INIT;
static uint64_t seed_value;

/* seed_init -- read SHALE_TEST_SEED or take one from the clock; print it. */
static void seed_init(void)
{
    const char *s = getenv("SHALE_TEST_SEED");
    char *end = NULL;

    if (s != NULL && *s != '\0') {
        errno = 0;
        seed_value = strtoull(s, &end, 0);
        if (errno == 0 && end != NULL && *end == '\0') {
            fprintf(stderr, "shale test seed: %" PRIu64 " (from SHALE_TEST_SEED)\n", seed_value);
            return;
        }
        fprintf(stderr, "shale test: ignoring malformed SHALE_TEST_SEED=%s\n", s);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    x ^= (uint64_t)getpid() << 32;
    seed_value = splitmix64(&x);
    fprintf(stderr, "shale test seed: %" PRIu64 " (repeat with SHALE_TEST_SEED=%" PRIu64 ")\n",
            seed_value, seed_value);
}

/* tu_seed -- the process's seed, computed once. */
uint64_t tu_seed(void)
{
    pthread_once(&seed_once, seed_init);
    return seed_value;
}

/* tu_scale -- SHALE_TEST_SCALE, or 1.0 if unset or not a positive number. */
double tu_scale(void)
{
    const char *s = getenv("SHALE_TEST_SCALE");
    char *end = NULL;
    double v;

    if (s == NULL || *s == '\0')
        return 1.0;
    v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0.0) || v > 1e9)
        return 1.0;
    return v;
}

/* tu_scaled -- n scaled, never below 1. */
uint64_t tu_scaled(uint64_t n)
{
    double v = (double)n * tu_scale();

    if (v < 1.0)
        return 1;
    if (v >= 1.8e19)
        return UINT64_MAX;
    return (uint64_t)v;
}

/* tu_verify -- a read-only open, shale_verify, close. */
int tu_verify(const char *dir, char *fault, size_t n)
{
    shale_options o;
    shale_db *db;
    shale_verify_report r;
    shale_options_default(&o);
    o.read_only = true;
    o.create_if_missing = false;
    if (n)
        fault[0] = 0;
    int rc = shale_open(dir, &o, &db);
    if (rc != SHALE_OK) {
        snprintf(fault, n, "open: %s", shale_strerror(rc));
        return rc;
    }
    rc = shale_verify(db, &r);
    if (rc != SHALE_OK)
        snprintf(fault, n, "%s", r.fault[0] ? r.fault : shale_strerror(rc));
    int crc = shale_close(db);
    return rc != SHALE_OK ? rc : crc;
}
