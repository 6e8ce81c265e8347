/*
 * test_header.c -- header slots: encode/decode round trips, the choice of the
 * newest valid slot when the other is torn, format versions, damaged files
 * that must fail cleanly, and bodies spilled into META page runs.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/space/crc32c.h"
#include "../../src/space/header.h"
#include "../../src/space/page.h"
#include "../../src/space/space.h"
#include "shale.h"

static char dir[64];
static char path[96];
static sp_env *env;

static void setup(void)
{
    strcpy(dir, "/tmp/shale-hdr-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/data", dir);
    env = sp_env_posix();
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

TestSuite(header, .init = setup, .fini = teardown);

/* write_slot -- write slot `which` with an inline body of free list fl and meta. */
static void write_slot(sp_file *f, int which, uint32_t ps, uint64_t seq, const sp_blocklist *fl,
                       const char *meta)
{
    sp_slot s = {.seq = seq, .page_size = ps, .file_pages = 64};
    uint8_t *body;
    size_t len;

    cr_assert_eq(hdr_body_encode(fl, meta, strlen(meta), &body, &len), SHALE_OK);
    cr_assert_eq(hdr_write_slot(env, f, which, &s, body, len), SHALE_OK);
    free(body);
}

/* two_slots -- a file with slot 0 at seq0 ("zero") and slot 1 at seq1 ("one"). */
static sp_file *two_slots(uint32_t ps, uint64_t seq0, uint64_t seq1)
{
    sp_file *f;
    sp_blocklist fl = BL_INIT;

    cr_assert_eq(env->open(env, path, SP_O_CREATE, &f), SHALE_OK);
    bl_add(&fl, 10, 20);
    write_slot(f, 0, ps, seq0, &fl, "zero");
    write_slot(f, 1, ps, seq1, &fl, "one");
    bl_free(&fl);
    return f;
}

/* expect_meta -- hdr_read succeeds and yields slot `which` with meta m. */
static void expect_meta(sp_file *f, int which, const char *m)
{
    sp_header h;
    cr_assert_eq(hdr_read(env, f, &h), SHALE_OK);
    cr_expect_eq(h.which, which);
    cr_assert_eq(h.metalen, strlen(m));
    cr_expect_eq(memcmp(h.meta, m, h.metalen), 0);
    hdr_free(&h);
}

/* poke -- overwrite one byte of the file. */
static void poke(sp_file *f, uint64_t off, uint8_t v)
{
    cr_assert_eq(env->write(f, &v, 1, off), SHALE_OK);
}

Test(header, slot_encode_decode_round_trip)
{
    uint8_t buf[4096], body[100];
    sp_slot s = {.seq = 77, .page_size = 4096, .file_pages = 1234}, d;
    const uint8_t *inl;

    for (int i = 0; i < 100; i++)
        body[i] = (uint8_t)i;
    hdr_slot_encode(buf, &s, body, sizeof(body));
    cr_assert_eq(hdr_slot_decode(buf, sizeof(buf), 0, &d, &inl), SHALE_OK);
    cr_assert_eq(d.seq, 77);
    cr_assert_eq(d.page_size, 4096);
    cr_assert_eq(d.file_pages, 1234);
    cr_assert_eq(d.body_len, 100);
    cr_assert_eq(d.spill_first, 0);
    cr_assert_eq(memcmp(inl, body, 100), 0);
    cr_assert_eq(hdr_slot_decode(buf, sizeof(buf), 8192, &d, &inl), SHALE_ECORRUPT);
    cr_assert_eq(hdr_slot_decode(buf, SP_HDR_FIXED + 99, 0, &d, &inl), SHALE_ECORRUPT);
}

Test(header, body_round_trip_splits_free_list_and_meta)
{
    sp_blocklist fl = BL_INIT, out = BL_INIT;
    uint8_t *body;
    size_t len, mlen;
    void *meta;

    bl_add(&fl, 2, 9);
    bl_add(&fl, 100, 100);
    cr_assert_eq(hdr_body_encode(&fl, "hello", 5, &body, &len), SHALE_OK);
    cr_assert_eq(hdr_body_decode(body, len, &out, &meta, &mlen), SHALE_OK);
    cr_assert(bl_equal(&fl, &out));
    cr_assert_eq(mlen, 5);
    cr_assert_eq(memcmp(meta, "hello", 5), 0);
    free(meta);
    free(body);
    bl_clear(&fl);
    cr_assert_eq(hdr_body_encode(&fl, NULL, 0, &body, &len), SHALE_OK);
    cr_assert_eq(hdr_body_decode(body, len, &out, &meta, &mlen), SHALE_OK);
    cr_assert_null(meta);
    cr_assert_eq(mlen, 0);
    cr_assert_eq(out.n, 0);
    free(body);
    bl_free(&fl);
    bl_free(&out);
}

Test(header, read_picks_the_higher_sequence_number)
{
    sp_file *f = two_slots(4096, 5, 6);
    expect_meta(f, 1, "one");
    write_slot(f, 0, 4096, 7, &(sp_blocklist)BL_INIT, "seven");
    expect_meta(f, 0, "seven");
    env->close(f);
}

Test(header, zeroed_newest_slot_falls_back_to_the_other)
{
    sp_file *f = two_slots(4096, 5, 6);
    uint8_t zero[4096] = {0};
    cr_assert_eq(env->write(f, zero, sizeof(zero), 4096), SHALE_OK);
    expect_meta(f, 0, "zero");
    env->close(f);
}

Test(header, flipped_byte_in_newest_slot_falls_back_to_the_other)
{
    sp_file *f = two_slots(4096, 9, 8);
    poke(f, 30, 0xee); /* inside slot 0's seq field */
    expect_meta(f, 1, "one");
    env->close(f);
}

Test(header, slot_one_is_found_when_slot_zero_is_torn)
{
    sp_file *f = two_slots(16384, 3, 2);
    uint8_t junk[100];
    memset(junk, 0xab, sizeof(junk));
    cr_assert_eq(env->write(f, junk, sizeof(junk), 0), SHALE_OK);
    expect_meta(f, 1, "one");
    env->close(f);
}

Test(header, both_slots_torn_is_ecorrupt)
{
    sp_file *f = two_slots(4096, 1, 2);
    sp_header h;
    poke(f, 84, 1);         /* inside the inline body */
    poke(f, 4096 + 8, 'X'); /* magic */
    cr_assert_eq(hdr_read(env, f, &h), SHALE_ECORRUPT);
    env->close(f);
}

Test(header, newer_format_version_is_eformat)
{
    sp_file *f = two_slots(4096, 1, 2);
    uint8_t buf[4096];
    sp_header h;

    cr_assert_eq(env->read(f, buf, sizeof(buf), 0), SHALE_OK);
    put_u32(buf + 16, SP_HDR_VERSION + 1);
    put_u32(buf, crc32c_mask(crc32c(buf + 4, get_u32(buf + 4) - 4)));
    cr_assert_eq(env->write(f, buf, sizeof(buf), 0), SHALE_OK);
    cr_assert_eq(hdr_read(env, f, &h), SHALE_EFORMAT);
    env->close(f);
}

Test(header, truncated_and_random_files_fail_cleanly)
{
    sp_file *f = two_slots(1024, 1, 2);
    uint8_t buf[3000];
    uint64_t seed = 1;
    sp_header h;

    for (uint64_t n = 0; n < 2048; n += 37) {
        cr_assert_eq(env->truncate(f, n), SHALE_OK);
        cr_assert_eq(hdr_read(env, f, &h), SHALE_ECORRUPT, "size %lu", (unsigned long)n);
    }
    for (int iter = 0; iter < 300; iter++) {
        size_t n = (size_t)(iter * 11 % sizeof(buf));
        for (size_t i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (uint8_t)(seed >> 56);
        }
        cr_assert_eq(env->truncate(f, 0), SHALE_OK);
        cr_assert_eq(env->write(f, buf, n, 0), SHALE_OK);
        cr_assert_eq(hdr_read(env, f, &h), SHALE_ECORRUPT);
    }
    env->close(f);
}

/* --- spilled bodies, through the space layer --- */

/* open_space -- open (creating) the page file with 1 KiB pages. */
static sp_space *open_space(void **meta, size_t *mlen)
{
    sp_config cfg = {.path = path, .page_size = 1024, .cache_bytes = 64 * 1024, .create = true};
    sp_space *sp;
    bool created;
    cr_assert_eq(sp_open(&cfg, &sp, meta, mlen, &created), SHALE_OK);
    return sp;
}

/* fill_pages -- allocate and write n sealed pages; returns their first page. */
static uint64_t fill_pages(sp_space *sp, uint64_t n)
{
    sp_block b;
    uint8_t *buf = calloc(n, 1024);
    cr_assert_eq(fs_alloc(sp_freespace_of(sp), n, &b), SHALE_OK);
    for (uint64_t i = 0; i < n; i++) {
        sp_page_init(buf + i * 1024, 1024, SP_PT_LEAF, b.first + i, 1);
        sp_page_seal(buf + i * 1024, 1024);
    }
    cr_assert_eq(sp_write_pages(sp, b.first, buf, n), SHALE_OK);
    free(buf);
    return b.first;
}

/* big_meta -- a deterministic meta body of n bytes. */
static uint8_t *big_meta(size_t n, uint8_t salt)
{
    uint8_t *m = malloc(n);
    for (size_t i = 0; i < n; i++)
        m[i] = (uint8_t)(i * 31 + salt);
    return m;
}

/* read_header -- hdr_read of the closed page file. */
static void read_header(sp_header *h)
{
    sp_file *f;
    cr_assert_eq(env->open(env, path, SP_O_RDONLY, &f), SHALE_OK);
    cr_assert_eq(hdr_read(env, f, h), SHALE_OK);
    env->close(f);
}

Test(header, spilled_meta_and_free_list_survive_reopen)
{
    sp_blocklist live = BL_INIT, used = BL_INIT, want = BL_INIT;
    sp_header h;
    uint8_t *m = big_meta(20000, 1);
    void *meta;
    size_t mlen;
    sp_space *sp = open_space(NULL, NULL);
    uint64_t first = fill_pages(sp, 600);

    for (uint64_t p = first; p < first + 600; p += 2)
        bl_add(&live, p, p); /* every other page live: a long free list */
    cr_assert_eq(sp_checkpoint(sp, &live, m, 20000), SHALE_OK);
    sp_close(sp);

    read_header(&h);
    cr_assert_neq(h.slot.spill_first, 0, "a 20 KB body must spill out of a 1 KB slot");
    cr_assert_geq(h.slot.spill_pages, hdr_spill_need(1024, h.slot.body_len));
    /* free = [2, file_pages) minus live minus the spill run */
    cr_assert_eq(bl_copy(&used, &live), SHALE_OK);
    bl_add(&used, h.slot.spill_first, h.slot.spill_first + h.slot.spill_pages - 1);
    cr_assert_eq(bl_complement(&used, 2, h.slot.file_pages, &want), SHALE_OK);
    cr_assert(bl_equal(&h.free, &want));
    cr_assert_geq(h.free.n, 299);
    bl_free(&used);
    bl_free(&want);
    hdr_free(&h);

    sp = open_space(&meta, &mlen);
    cr_assert_eq(mlen, 20000);
    cr_assert_eq(memcmp(meta, m, 20000), 0);
    free(meta);
    sp_close(sp);
    bl_free(&live);
    free(m);
}

Test(header, corrupt_spill_page_invalidates_its_slot)
{
    sp_blocklist live = BL_INIT;
    uint8_t *m1 = big_meta(5000, 1), *m2 = big_meta(6000, 2);
    sp_header h;
    sp_file *f;
    void *meta;
    size_t mlen;
    sp_space *sp = open_space(NULL, NULL);

    bl_add(&live, fill_pages(sp, 4), 5);
    cr_assert_eq(sp_checkpoint(sp, &live, m1, 5000), SHALE_OK);
    cr_assert_eq(sp_checkpoint(sp, &live, m2, 6000), SHALE_OK);
    sp_close(sp);

    read_header(&h);
    cr_assert_eq(h.slot.seq, 3);
    cr_assert_eq(h.metalen, 6000);
    cr_assert_eq(env->open(env, path, 0, &f), SHALE_OK);
    poke(f, (h.slot.spill_first + 1) * 1024 + 500, 0x5a);
    env->close(f);
    hdr_free(&h);

    sp = open_space(&meta, &mlen);
    cr_assert_eq(sp_ckpt_seq(sp), 2);
    cr_assert_eq(mlen, 5000);
    cr_assert_eq(memcmp(meta, m1, 5000), 0);
    free(meta);
    sp_close(sp);
    bl_free(&live);
    free(m1);
    free(m2);
}

Test(header, spill_run_of_a_previous_checkpoint_is_reused_only_later)
{
    sp_blocklist live = BL_INIT;
    uint8_t *m = big_meta(3000, 3);
    sp_header h1, h2, h3;
    sp_space *sp = open_space(NULL, NULL);

    cr_assert_eq(sp_checkpoint(sp, &live, m, 3000), SHALE_OK);
    sp_close(sp);
    read_header(&h1);
    sp = open_space(NULL, NULL);
    cr_assert_eq(sp_checkpoint(sp, &live, m, 3000), SHALE_OK);
    sp_close(sp);
    read_header(&h2);
    /* h1's run is pending while h2 is written: a different run */
    cr_assert(h2.slot.spill_first + h2.slot.spill_pages <= h1.slot.spill_first ||
              h1.slot.spill_first + h1.slot.spill_pages <= h2.slot.spill_first);
    sp = open_space(NULL, NULL);
    cr_assert_eq(sp_checkpoint(sp, &live, m, 3000), SHALE_OK);
    cr_assert_eq(sp_checkpoint(sp, &live, m, 3000), SHALE_OK);
    sp_close(sp);
    read_header(&h3);
    cr_assert_eq(h3.slot.seq, 5);
    hdr_free(&h1);
    hdr_free(&h2);
    hdr_free(&h3);
    bl_free(&live);
    free(m);
}

Test(header, spill_decode_rejects_a_run_from_another_checkpoint)
{
    uint8_t body[3000], pages[4 * 1024], out[3000];
    sp_slot s = {.seq = 4,
                 .page_size = 1024,
                 .file_pages = 100,
                 .body_len = sizeof(body),
                 .spill_first = 10,
                 .spill_pages = 4};

    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)i;
    hdr_spill_encode(pages, &s, body, sizeof(body));
    cr_assert_eq(hdr_spill_decode(pages, &s, out), SHALE_OK);
    cr_assert_eq(memcmp(out, body, sizeof(body)), 0);
    s.seq = 5;
    cr_assert_eq(hdr_spill_decode(pages, &s, out), SHALE_ECORRUPT);
    s.seq = 4;
    s.spill_first = 11;
    cr_assert_eq(hdr_spill_decode(pages, &s, out), SHALE_ECORRUPT);
}
