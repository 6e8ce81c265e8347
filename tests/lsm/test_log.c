/*
 * test_log.c -- the write-ahead log: round trips through the POSIX env, torn
 * and damaged tails through the in-memory env, sticky errors, and group
 * commit from several threads.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lsm/log.h"
#include "../../src/space/common.h"
#include "../../src/space/crc32c.h"
#include "../support/memenv.h"
#include "../support/testutil.h"

#define LOG_PATH "log"

/* rec_byte -- the payload byte at i of record r (so payloads need no storage). */
static uint8_t rec_byte(uint64_t r, size_t i)
{
    return (uint8_t)(r * 131 + i * 7 + (i >> 9));
}

static uint8_t *rec_payload(uint64_t r, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = rec_byte(r, i);
    return p;
}

/* append_rec -- append record r (type 1 + r % 3, seq 1000 + r) of len bytes. */
static uint64_t append_rec(lg_writer *lw, uint64_t r, size_t len)
{
    uint8_t *p = rec_payload(r, len);
    uint64_t end = 0;
    cr_assert_eq(lg_append(lw, (uint8_t)(1 + r % 3), 1000 + r, p, len, &end), SHALE_OK);
    free(p);
    return end;
}

/* expect_rec -- the reader's next record is record r of len bytes. */
static void expect_rec(lg_reader *lr, uint64_t r, size_t len)
{
    uint8_t type;
    uint64_t seq;
    const uint8_t *p;
    size_t n;
    cr_assert_eq(lg_reader_next(lr, &type, &seq, (const void **)&p, &n), SHALE_OK, "record %llu",
                 (unsigned long long)r);
    cr_assert_eq(type, 1 + r % 3);
    cr_assert_eq(seq, 1000 + r);
    cr_assert_eq(n, len);
    for (size_t i = 0; i < len; i++)
        if (p[i] != rec_byte(r, i))
            cr_assert_fail("record %llu byte %zu differs", (unsigned long long)r, i);
}

static void expect_end(lg_reader *lr)
{
    uint8_t type;
    uint64_t seq;
    const void *p;
    size_t n;
    cr_assert_eq(lg_reader_next(lr, &type, &seq, &p, &n), SHALE_NOTFOUND);
    cr_assert_eq(lg_reader_next(lr, &type, &seq, &p, &n), SHALE_NOTFOUND);
}

/* random_len -- mostly small, some empty, some tens of KiB, a few MiB. */
static size_t random_len(tu_rng *g)
{
    uint64_t c = tu_rng_range(g, 1000);
    if (c < 100)
        return 0;
    if (c < 900)
        return (size_t)tu_rng_range(g, 300);
    if (c < 995)
        return (size_t)tu_rng_range(g, 100000);
    return (size_t)(1 << 20) + (size_t)tu_rng_range(g, 4 << 20);
}

/* round_trip -- write n random records with a buffer of buf bytes to a real
 * file, read them back. */
static void round_trip(size_t buf, int n, uint64_t seed)
{
    char dir[256], path[300];
    tu_rng g;
    size_t *lens = malloc((size_t)n * sizeof(size_t));
    sp_env *env = sp_env_posix();
    lg_writer *lw;
    lg_reader *lr;

    cr_assert_eq(tu_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/log", dir);
    tu_rng_seed(&g, seed);
    cr_assert_eq(lg_writer_open(env, path, buf, &lw), SHALE_OK);
    uint64_t total = 0;
    for (int r = 0; r < n; r++) {
        lens[r] = r == 0 ? (size_t)(3 << 20) : random_len(&g);
        total += LG_HDR + lens[r];
        cr_assert_eq(append_rec(lw, (uint64_t)r, lens[r]), total);
        cr_assert_eq(lg_size(lw), total);
        if (tu_rng_range(&g, 50) == 0)
            cr_assert_eq(lg_write_out(lw), SHALE_OK);
    }
    cr_assert_eq(lg_writer_close(lw, 1), SHALE_OK);

    cr_assert_eq(lg_reader_open(env, path, &lr), SHALE_OK);
    cr_assert_eq(lg_reader_file_size(lr), total);
    for (int r = 0; r < n; r++)
        expect_rec(lr, (uint64_t)r, lens[r]);
    expect_end(lr);
    cr_assert_eq(lg_reader_valid_end(lr), total);
    lg_reader_close(lr);
    free(lens);
    tu_rmrf(dir);
}

Test(log, round_trip_of_random_records)
{
    round_trip(1 << 20, 3000, tu_seed());
}

Test(log, round_trip_with_tiny_and_no_buffer)
{
    round_trip(100, 500, tu_seed() + 1);
    round_trip(0, 300, tu_seed() + 2);
}

Test(log, open_empties_an_existing_file)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    lg_reader *lr;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 4096, &lw), SHALE_OK);
    append_rec(lw, 1, 50);
    cr_assert_eq(lg_writer_close(lw, 1), SHALE_OK);
    cr_assert_eq(memenv_sync_all(m), SHALE_OK);
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 4096, &lw), SHALE_OK);
    cr_assert_eq(lg_size(lw), 0);
    /* the emptying is durable by itself: the old record never comes back */
    cr_assert_eq(memenv_power_loss(m, 1), SHALE_OK);
    lg_writer_close(lw, 0);
    cr_assert_eq(lg_reader_open(memenv_env(m), LOG_PATH, &lr), SHALE_OK);
    expect_end(lr);
    cr_assert_eq(lg_reader_valid_end(lr), 0);
    lg_reader_close(lr);
    memenv_destroy(m);
}

Test(log, record_layout_is_exactly_the_documented_one)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    uint8_t *data;
    size_t len;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 4096, &lw), SHALE_OK);
    cr_assert_eq(lg_append(lw, LG_T_BATCH, 0x0102030405060708ull, "abc", 3, NULL), SHALE_OK);
    cr_assert_eq(lg_writer_close(lw, 1), SHALE_OK);
    cr_assert_eq(memenv_file_bytes(m, LOG_PATH, &data, &len), SHALE_OK);
    cr_assert_eq(len, 20);
    cr_assert_eq(get_u32(data + 4), 3);
    cr_assert_eq(data[8], LG_T_BATCH);
    cr_assert_eq(get_u64(data + 9), 0x0102030405060708ull);
    cr_assert_eq(memcmp(data + 17, "abc", 3), 0);
    cr_assert_eq(get_u32(data), crc32c_mask(crc32c(data + 4, 16)));
    free(data);
    memenv_destroy(m);
}

Test(log, payload_over_the_limit_is_too_big)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 4096, &lw), SHALE_OK);
    cr_assert_eq(lg_append(lw, 1, 1, "", (size_t)LG_MAX_PAYLOAD + 1, NULL), SHALE_ETOOBIG);
    cr_assert_eq(lg_size(lw), 0);
    cr_assert_eq(lg_writer_close(lw, 0), SHALE_OK);
    memenv_destroy(m);
}

/* --- torn and damaged logs ------------------------------------------------- */

#define SMALL_N 12

/* small_log -- SMALL_N records of sizes 0..~60 in memenv; ends[i] = offset
 * after record i. */
static memenv *small_log(uint64_t *ends)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 64, &lw), SHALE_OK);
    for (uint64_t r = 0; r < SMALL_N; r++)
        ends[r] = append_rec(lw, r, (size_t)(r * 37 % 61));
    cr_assert_eq(lg_writer_close(lw, 1), SHALE_OK);
    return m;
}

/* read_all -- read records 0.. until the end; returns how many were good. */
static int read_all(memenv *m, uint64_t *valid_end)
{
    lg_reader *lr;
    int n = 0;
    cr_assert_eq(lg_reader_open(memenv_env(m), LOG_PATH, &lr), SHALE_OK);
    for (;;) {
        uint8_t type;
        uint64_t seq;
        const void *p;
        size_t len;
        int rc = lg_reader_next(lr, &type, &seq, &p, &len);
        if (rc == SHALE_NOTFOUND)
            break;
        cr_assert_eq(rc, SHALE_OK);
        cr_assert_eq(seq, 1000 + (uint64_t)n);
        n++;
    }
    *valid_end = lg_reader_valid_end(lr);
    lg_reader_close(lr);
    return n;
}

Test(log, torn_tail_at_every_truncation_point)
{
    uint64_t ends[SMALL_N];
    memenv *m = small_log(ends);
    uint8_t *data;
    size_t size;
    cr_assert_eq(memenv_file_bytes(m, LOG_PATH, &data, &size), SHALE_OK);
    cr_assert_eq(size, ends[SMALL_N - 1]);
    for (uint64_t cut = 0; cut <= size; cut++) {
        /* (cutting and then extending would leave zeroes: rewrite the prefix) */
        cr_assert_eq(memenv_set_size(m, LOG_PATH, 0), SHALE_OK);
        if (cut)
            cr_assert_eq(memenv_set_bytes(m, LOG_PATH, 0, data, cut), SHALE_OK);
        int want = 0;
        while (want < SMALL_N && ends[want] <= cut)
            want++;
        uint64_t end;
        cr_assert_eq(read_all(m, &end), want, "cut at %llu", (unsigned long long)cut);
        cr_assert_eq(end, want ? ends[want - 1] : 0);
    }
    free(data);
    memenv_destroy(m);
}

Test(log, flipped_byte_stops_iteration_at_its_record)
{
    uint64_t ends[SMALL_N];
    memenv *m = small_log(ends);
    int rec = 0;
    for (uint64_t off = 0; off < ends[SMALL_N - 1]; off++) {
        while (ends[rec] <= off)
            rec++;
        uint8_t x = (uint8_t)(1u << (off % 8));
        cr_assert_eq(memenv_corrupt(m, LOG_PATH, off, x), SHALE_OK);
        uint64_t end;
        cr_assert_eq(read_all(m, &end), rec, "flip at %llu", (unsigned long long)off);
        cr_assert_eq(end, rec ? ends[rec - 1] : 0);
        cr_assert_eq(memenv_corrupt(m, LOG_PATH, off, x), SHALE_OK);
    }
    uint64_t end;
    cr_assert_eq(read_all(m, &end), SMALL_N);
    memenv_destroy(m);
}

Test(log, zero_filled_tail_ends_the_log)
{
    uint64_t ends[SMALL_N];
    memenv *m = small_log(ends);
    uint64_t size = ends[SMALL_N - 1];
    cr_assert_eq(memenv_set_size(m, LOG_PATH, size + 4096), SHALE_OK);
    uint64_t end;
    cr_assert_eq(read_all(m, &end), SMALL_N);
    cr_assert_eq(end, size);
    memenv_destroy(m);
}

Test(log, huge_length_in_a_small_file_is_a_torn_tail)
{
    uint64_t ends[SMALL_N];
    memenv *m = small_log(ends);
    uint8_t hdr[LG_HDR] = {0};
    put_u32(hdr, 0x12345678);
    put_u32(hdr + 4, LG_MAX_PAYLOAD);
    cr_assert_eq(memenv_set_bytes(m, LOG_PATH, ends[3], hdr, sizeof(hdr)), SHALE_OK);
    uint64_t end;
    cr_assert_eq(read_all(m, &end), 4);
    cr_assert_eq(end, ends[3]);
    put_u32(hdr + 4, 0xffffffffu);
    cr_assert_eq(memenv_set_bytes(m, LOG_PATH, 0, hdr, sizeof(hdr)), SHALE_OK);
    cr_assert_eq(read_all(m, &end), 0);
    cr_assert_eq(end, 0);
    memenv_destroy(m);
}

Test(log, random_garbage_never_crashes_the_reader)
{
    tu_rng g;
    tu_rng_seed(&g, tu_seed());
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 64, &lw), SHALE_OK);
    cr_assert_eq(lg_writer_close(lw, 0), SHALE_OK);
    uint8_t buf[4096];
    for (int t = 0; t < 2000; t++) {
        size_t n = (size_t)tu_rng_range(&g, sizeof(buf));
        tu_rng_bytes(&g, buf, n);
        /* sometimes plausible lengths, to reach the crc check */
        for (size_t o = 0; o + 8 <= n; o += 1 + tu_rng_range(&g, 200))
            if (tu_rng_range(&g, 2))
                put_u32(buf + o + 4, (uint32_t)tu_rng_range(&g, n + 1));
        cr_assert_eq(memenv_set_size(m, LOG_PATH, 0), SHALE_OK);
        if (n)
            cr_assert_eq(memenv_set_bytes(m, LOG_PATH, 0, buf, n), SHALE_OK);
        uint64_t end;
        read_all(m, &end);
        cr_assert_leq(end, n);
    }
    memenv_destroy(m);
}

/* --- errors ---------------------------------------------------------------- */

Test(log, write_error_is_returned_and_sticky)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 4096, &lw), SHALE_OK);
    append_rec(lw, 0, 10);
    cr_assert_eq(lg_sync(lw, UINT64_MAX), SHALE_OK);
    uint64_t synced = lg_synced(lw);
    append_rec(lw, 1, 10);
    memenv_fail_after(m, 1, MEM_OP_WRITE);
    cr_assert_eq(lg_write_out(lw), SHALE_EIO);
    cr_assert_eq(lg_append(lw, 1, 1, "x", 1, NULL), SHALE_EIO);
    cr_assert_eq(lg_write_out(lw), SHALE_EIO);
    cr_assert_eq(lg_sync(lw, UINT64_MAX), SHALE_EIO);
    cr_assert_eq(lg_sync(lw, synced), SHALE_OK); /* those bytes are durable */
    cr_assert_eq(lg_synced(lw), synced);
    cr_assert_eq(lg_writer_close(lw, 1), SHALE_EIO);
    memenv_destroy(m);
}

Test(log, big_record_write_error_is_sticky)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 64, &lw), SHALE_OK);
    memenv_fail_after(m, 1, MEM_OP_WRITE);
    uint8_t *p = rec_payload(0, 1000);
    cr_assert_eq(lg_append(lw, 1, 1, p, 1000, NULL), SHALE_EIO);
    cr_assert_eq(lg_append(lw, 1, 2, p, 10, NULL), SHALE_EIO);
    free(p);
    cr_assert_eq(lg_writer_close(lw, 0), SHALE_EIO);
    memenv_destroy(m);
}

Test(log, sync_error_is_sticky)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 4096, &lw), SHALE_OK);
    uint64_t end = append_rec(lw, 0, 10);
    memenv_fail_after(m, 1, MEM_OP_SYNC);
    cr_assert_eq(lg_sync(lw, end), SHALE_EIO);
    cr_assert_eq(lg_synced(lw), 0);
    cr_assert_eq(lg_sync(lw, end), SHALE_EIO);
    cr_assert_eq(lg_append(lw, 1, 1, "x", 1, NULL), SHALE_EIO);
    cr_assert_eq(lg_writer_close(lw, 0), SHALE_EIO);
    memenv_destroy(m);
}

Test(log, synced_bytes_survive_power_loss)
{
    memenv *m = memenv_create();
    lg_writer *lw;
    cr_assert_eq(memenv_sync_all(m), SHALE_OK);
    cr_assert_eq(lg_writer_open(memenv_env(m), LOG_PATH, 256, &lw), SHALE_OK);
    cr_assert_eq(memenv_env(m)->sync_dir(memenv_env(m), ""), SHALE_OK);
    uint64_t end = 0;
    for (uint64_t r = 0; r < 20; r++)
        end = append_rec(lw, r, 100);
    cr_assert_eq(lg_sync(lw, end), SHALE_OK);
    for (uint64_t r = 20; r < 40; r++)
        append_rec(lw, r, 100);
    cr_assert_eq(lg_write_out(lw), SHALE_OK);
    cr_assert_eq(memenv_power_loss(m, 7), SHALE_OK);
    lg_writer_close(lw, 0); /* dead handle: fails, but frees */
    uint64_t vend;
    int n = read_all(m, &vend);
    cr_assert_geq(n, 20);
    cr_assert_geq(vend, end);
    memenv_destroy(m);
}

/* --- group commit and concurrent appends ---------------------------------- */

#define GC_THREADS 4
#define GC_RECS 300

typedef struct gc_ctx {
    lg_writer *lw;
    int id;
    bool sync;
    _Atomic int *bad;
} gc_ctx;

/* gc_len -- the payload length of a thread's i-th record (some exceed a small
 * buffer, so they take the direct path). */
static size_t gc_len(int i)
{
    return i % 37 == 5 ? 1000 : (size_t)(i * 13 % 200);
}

static void *gc_thread(void *arg)
{
    gc_ctx *c = arg;
    uint8_t p[1000];
    for (int i = 0; i < GC_RECS; i++) {
        size_t len = gc_len(i);
        memset(p, c->id, len);
        uint64_t end;
        uint64_t seq = (uint64_t)c->id << 32 | (uint64_t)i;
        if (lg_append(c->lw, 1, seq, p, len, &end) != SHALE_OK)
            atomic_fetch_add(c->bad, 1);
        else if (c->sync && (lg_sync(c->lw, end) != SHALE_OK || lg_synced(c->lw) < end))
            atomic_fetch_add(c->bad, 1);
    }
    return NULL;
}

/* concurrent_appends -- GC_THREADS threads append (and maybe sync) at once;
 * every record must be in the file once, each thread's in its own order. */
static void concurrent_appends(size_t buf, bool sync)
{
    char dir[256], path[300];
    sp_env *env = sp_env_posix();
    lg_writer *lw;
    lg_reader *lr;
    _Atomic int bad = 0;
    gc_ctx c[GC_THREADS];
    pthread_t t[GC_THREADS];

    cr_assert_eq(tu_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/log", dir);
    cr_assert_eq(lg_writer_open(env, path, buf, &lw), SHALE_OK);
    for (int i = 0; i < GC_THREADS; i++) {
        c[i] = (gc_ctx){lw, i, sync, &bad};
        cr_assert_eq(pthread_create(&t[i], NULL, gc_thread, &c[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&bad), 0);
    if (sync)
        cr_assert_eq(lg_synced(lw), lg_size(lw));
    cr_assert_eq(lg_writer_close(lw, 0), SHALE_OK);

    int next[GC_THREADS] = {0};
    cr_assert_eq(lg_reader_open(env, path, &lr), SHALE_OK);
    for (int r = 0; r < GC_THREADS * GC_RECS; r++) {
        uint8_t type;
        uint64_t seq;
        const uint8_t *p;
        size_t len;
        cr_assert_eq(lg_reader_next(lr, &type, &seq, (const void **)&p, &len), SHALE_OK);
        int id = (int)(seq >> 32), i = (int)(uint32_t)seq;
        cr_assert(id >= 0 && id < GC_THREADS);
        cr_assert_eq(i, next[id]++);
        cr_assert_eq(len, gc_len(i));
        for (size_t k = 0; k < len; k++)
            cr_assert_eq(p[k], id);
    }
    expect_end(lr);
    lg_reader_close(lr);
    tu_rmrf(dir);
}

Test(log, group_commit_from_four_threads, .timeout = 120)
{
    concurrent_appends(1 << 20, true);
}

Test(log, concurrent_appends_through_a_small_buffer_keep_order, .timeout = 120)
{
    concurrent_appends(256, false);
    concurrent_appends(4096, true);
}
