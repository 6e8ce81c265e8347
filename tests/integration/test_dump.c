/*
 * test_dump.c -- export and import: a multi-tree database of a million keys
 * goes through a dump into a fresh one with an equal checksum; importing
 * over existing keys fails cleanly (naming the first) unless told to
 * overwrite; a damaged, truncated or foreign dump is refused with nothing
 * written.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

static char dir[256];
static void setup(void) { cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0); }
static void teardown(void) { tu_rmrf(dir); }

static shale_db *open_at(const char *name)
{
    char p[400];
    shale_options o;
    shale_db *db;
    shale_options_default(&o);
    o.flush_every_ms = 0;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(shale_open(p, &o, &db), SHALE_OK);
    return db;
}

static uint64_t sum_of(shale_db *db)
{
    uint64_t s;
    cr_assert_eq(shale_checksum(db, &s), SHALE_OK);
    return s;
}

/* load -- n keys spread over the default tree and two named ones. */
static void load(shale_db *db, int n)
{
    static const char *const names[] = {NULL, "docs", "index"};
    shale_tree *t[3];
    shale_batch *b;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shale_open_tree(db, names[i], &t[i]), SHALE_OK);
    cr_assert_eq(shale_batch_new(&b), SHALE_OK);
    for (int i = 0; i < n; i++) {
        char k[32], v[128];
        int kl = snprintf(k, sizeof k, "k%09d", (int)((uint64_t)i * 2654435761u % 1000000007u));
        int vl = snprintf(v, sizeof v, "value %d %.*s", i, i % 60, "................................"
                                                              "............................");
        cr_assert_eq(shale_batch_insert(b, t[i % 3], k, (size_t)kl, v, (size_t)vl), SHALE_OK);
        if (shale_batch_count(b) == 1000) {
            cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
            shale_batch_clear(b);
        }
    }
    cr_assert_eq(shale_batch_apply(db, b), SHALE_OK);
    shale_batch_free(b);
    shale_tree *empty;
    cr_assert_eq(shale_open_tree(db, "empty", &empty), SHALE_OK);
}

Test(dump, a_million_keys_round_trip_with_an_equal_checksum, .init = setup, .fini = teardown,
     .timeout = 900)
{
    char file[400];
    snprintf(file, sizeof file, "%s/dump", dir);
    shale_db *a = open_at("a");
    load(a, (int)tu_scaled(1000000));
    uint64_t sa = sum_of(a);
    cr_assert_eq(shale_export(a, file, NULL, NULL), SHALE_OK);
    cr_assert_eq(shale_export(a, file, NULL, NULL), SHALE_EEXIST, "no overwriting a file");

    shale_db *b = open_at("b");
    cr_assert_eq(shale_import(b, file, 0, NULL, NULL, NULL), SHALE_OK);
    cr_assert_eq(sum_of(b), sa, "the imported copy holds the same trees, keys and values");

    /* into the database it came from: every key exists; refused, named */
    shale_buf conflict = SHALE_BUF_INIT;
    cr_assert_eq(shale_import(a, file, 0, &conflict, NULL, NULL), SHALE_EEXIST);
    cr_assert_gt(conflict.len, 1);
    cr_assert_eq(((char *)conflict.data)[0], 0, "the default tree's name is empty");
    cr_assert_eq(conflict.len, 1 + 10, "then the key");
    cr_assert_eq(sum_of(a), sa, "nothing written");
    /* with overwrite, a changed value comes back from the dump */
    shale_tree *docs;
    cr_assert_eq(shale_open_tree(a, "docs", &docs), SHALE_OK);
    shale_iter *it;
    cr_assert_eq(shale_iter_open(docs, &it), SHALE_OK);
    cr_assert_eq(shale_iter_first(it), SHALE_OK);
    size_t kl;
    const void *k = shale_iter_key(it, &kl);
    char key[32];
    memcpy(key, k, kl);
    shale_iter_close(it);
    cr_assert_eq(shale_insert(docs, key, kl, "changed", 7, NULL), SHALE_OK);
    cr_assert_neq(sum_of(a), sa);
    cr_assert_eq(shale_import(a, file, SHALE_IMPORT_OVERWRITE, NULL, NULL, NULL), SHALE_OK);
    cr_assert_eq(sum_of(a), sa, "overwritten back");
    shale_buf_free(&conflict);
    cr_assert_eq(shale_close(a), SHALE_OK);
    cr_assert_eq(shale_close(b), SHALE_OK);
}

/* copy_damaged -- the dump at from into to, with byte at (or cut at) off. */
static void copy_damaged(const char *from, const char *to, long off, bool cut)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    cr_assert(in && out);
    int ch;
    for (long i = 0; (ch = fgetc(in)) != EOF; i++) {
        if (cut && i == off)
            break;
        fputc(!cut && i == off ? ch ^ 0x20 : ch, out);
    }
    fclose(in);
    fclose(out);
}

Test(dump, damaged_truncated_or_foreign_dumps_are_refused_with_nothing_written, .init = setup,
     .fini = teardown, .timeout = 300)
{
    char file[400], bad[400];
    snprintf(file, sizeof file, "%s/dump", dir);
    snprintf(bad, sizeof bad, "%s/bad", dir);
    shale_db *a = open_at("a");
    load(a, 20000);
    cr_assert_eq(shale_export(a, file, NULL, NULL), SHALE_OK);
    cr_assert_eq(shale_close(a), SHALE_OK);
    FILE *f = fopen(file, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);

    shale_db *b = open_at("b");
    shale_tree *t;
    cr_assert_eq(shale_open_tree(b, "mine", &t), SHALE_OK);
    cr_assert_eq(shale_insert(t, "x", 1, "y", 1, NULL), SHALE_OK);
    uint64_t before = sum_of(b);
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    for (int i = 0; i < 40; i++) { /* a flipped byte anywhere */
        long off = (long)tu_rng_range(&r, (uint64_t)size);
        copy_damaged(file, bad, off, false);
        int rc = shale_import(b, bad, 0, NULL, NULL, NULL);
        cr_assert(rc == SHALE_ECORRUPT || (off >= 8 && off < 12 && rc == SHALE_EFORMAT),
                  "flipped byte %ld of %ld: %d", off, size, rc);
        remove(bad);
    }
    for (int i = 0; i < 40; i++) { /* cut short anywhere */
        long off = (long)tu_rng_range(&r, (uint64_t)size);
        copy_damaged(file, bad, off, true);
        cr_assert_eq(shale_import(b, bad, 0, NULL, NULL, NULL), SHALE_ECORRUPT, "cut at %ld",
                     off);
        remove(bad);
    }
    f = fopen(bad, "wb"); /* bytes after the end */
    FILE *in = fopen(file, "rb");
    for (int ch; (ch = fgetc(in)) != EOF;)
        fputc(ch, f);
    fputc(0, f);
    fclose(in);
    fclose(f);
    cr_assert_eq(shale_import(b, bad, 0, NULL, NULL, NULL), SHALE_ECORRUPT);
    cr_assert_eq(shale_import(b, "/nonexistent/dump", 0, NULL, NULL, NULL), SHALE_ENOENT);
    cr_assert_eq(shale_import(b, file, 7, NULL, NULL, NULL), SHALE_EINVAL);
    cr_assert_eq(sum_of(b), before, "no refused import wrote anything");
    cr_assert_eq(shale_import(b, file, 0, NULL, NULL, NULL), SHALE_OK, "the intact dump loads");
    cr_assert_neq(sum_of(b), before);
    cr_assert_eq(shale_close(b), SHALE_OK);
}
