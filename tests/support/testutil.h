/*
 * testutil.h -- small helpers shared by every test binary.
 *
 *   - Scratch directories: tu_tmpdir makes a fresh one under /tmp, tu_rmrf
 *     removes a tree.
 *   - A seeded PRNG (xoshiro256**, state expanded from the seed by
 *     splitmix64), so a failing randomized test can be replayed exactly.
 *   - tu_seed: the run's seed, from SHALE_TEST_SEED (decimal or 0x hex) or else
 *     from the clock; printed once per process to stderr so a failure can be
 *     repeated with SHALE_TEST_SEED=<seed>.
 *   - tu_scale: SHALE_TEST_SCALE (default 1.0) multiplies the length of the
 *     randomized tests.
 */
#ifndef SHALE_TEST_TESTUTIL_H
#define SHALE_TEST_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* A xoshiro256** generator.  Not thread-safe: one per thread. */
typedef struct tu_rng {
    uint64_t s[4];
} tu_rng;

/* tu_tmpdir -- create a fresh directory /tmp/shale-test-XXXXXX and write its
 * path to buf (n bytes).  Returns 0, or -1 (errno set) on failure. */
int tu_tmpdir(char *buf, size_t n);

/* tu_rmrf -- remove path and everything under it (no error if absent).
 * Returns 0, or -1 on failure. */
int tu_rmrf(const char *path);

/* tu_rng_seed -- (re)start r from seed; every seed gives a usable state. */
void tu_rng_seed(tu_rng *r, uint64_t seed);

/* tu_rng_next -- the next 64 random bits. */
uint64_t tu_rng_next(tu_rng *r);

/* tu_rng_range -- a uniform value in [0, n) (0 when n is 0), without bias. */
uint64_t tu_rng_range(tu_rng *r, uint64_t n);

/* tu_rng_bytes -- fill buf with n random bytes. */
void tu_rng_bytes(tu_rng *r, void *buf, size_t n);

/* tu_seed -- the process's test seed: SHALE_TEST_SEED if set, else from the
 * clock and pid.  Computed and printed (to stderr) on the first call only. */
uint64_t tu_seed(void);

/* tu_scale -- SHALE_TEST_SCALE as a positive double (default 1.0). */
double tu_scale(void);

/* tu_scaled -- n * tu_scale(), at least 1. */
uint64_t tu_scaled(uint64_t n);

/* tu_verify -- open the database at dir read-only and shale_verify it:
 * returns its result (or the open's error); the fault, if any, in fault. */
int tu_verify(const char *dir, char *fault, size_t n);

#endif /* SHALE_TEST_TESTUTIL_H */
