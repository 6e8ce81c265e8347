/*
 * test_rmw.c -- compare-and-swap and update: their semantics case by case,
 * then random operations against a plain map with small memtables, so most
 * of them decide on values read from segments being merged underneath.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/testutil.h"
#include "shale.h"

static char dir[256];
static shale_db *db;
static shale_tree *t;

static void setup(void)
{
    shale_options o;
    cr_assert_eq(tu_tmpdir(dir, sizeof dir), 0);
    shale_options_default(&o);
    o.memtable_size = 64 << 10;
    o.page_size = 1024;
    o.level_factor = 2;
    o.max_young_segments = 2;
    o.flush_every_ms = 0;
    cr_assert_eq(shale_open(dir, &o, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, "rmw", &t), SHALE_OK);
}

static void teardown(void)
{
    cr_assert_eq(shale_close(db), SHALE_OK);
    char fault[200];
    cr_assert_eq(tu_verify(dir, fault, sizeof fault), SHALE_OK, "check: %s", fault);
    tu_rmrf(dir);
}

static bool holds(const char *k, const char *want /* NULL: absent */)
{
    shale_buf b = SHALE_BUF_INIT;
    int rc = shale_get(t, k, strlen(k), &b);
    bool ok = want ? rc == SHALE_OK && b.len == strlen(want) && memcmp(b.data, want, b.len) == 0
                   : rc == SHALE_NOTFOUND;
    shale_buf_free(&b);
    return ok;
}

Test(rmw, cas_creates_swaps_deletes_and_reports_mismatches, .init = setup, .fini = teardown)
{
    shale_buf actual = SHALE_BUF_INIT;
    /* absent -> value creates */
    cr_assert_eq(shale_cas(t, "k", 1, NULL, 0, "one", 3, &actual), SHALE_OK);
    cr_assert(holds("k", "one"));
    /* creating again fails: the key exists, and its value is reported */
    cr_assert_eq(shale_cas(t, "k", 1, NULL, 0, "two", 3, &actual), SHALE_EMISMATCH);
    cr_assert(actual.data && actual.len == 3 && memcmp(actual.data, "one", 3) == 0);
    cr_assert(holds("k", "one"));
    /* value -> value */
    cr_assert_eq(shale_cas(t, "k", 1, "one", 3, "two", 3, &actual), SHALE_OK);
    cr_assert(holds("k", "two"));
    /* a wrong expectation writes nothing */
    cr_assert_eq(shale_cas(t, "k", 1, "one", 3, "three", 5, &actual), SHALE_EMISMATCH);
    cr_assert(actual.len == 3 && memcmp(actual.data, "two", 3) == 0);
    cr_assert(holds("k", "two"));
    /* value -> absent deletes */
    cr_assert_eq(shale_cas(t, "k", 1, "two", 3, NULL, 0, &actual), SHALE_OK);
    cr_assert(holds("k", NULL));
    /* expecting a value of an absent key: the absence is reported */
    cr_assert_eq(shale_cas(t, "k", 1, "two", 3, "x", 1, &actual), SHALE_EMISMATCH);
    cr_assert_null(actual.data, "absent: data NULL");
    cr_assert_eq(actual.len, 0);
    /* an empty value is not an absent one */
    cr_assert_eq(shale_cas(t, "e", 1, NULL, 0, "", 0, NULL), SHALE_OK);
    cr_assert(holds("e", ""));
    cr_assert_eq(shale_cas(t, "e", 1, NULL, 0, "x", 1, &actual), SHALE_EMISMATCH);
    cr_assert(actual.data != NULL && actual.len == 0, "empty: data not NULL");
    cr_assert_eq(shale_cas(t, "e", 1, "", 0, "x", 1, &actual), SHALE_OK);
    cr_assert(holds("e", "x"));
    /* bad arguments */
    cr_assert_eq(shale_cas(NULL, "k", 1, NULL, 0, "v", 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_cas(t, "k", 1, NULL, 3, "v", 1, NULL), SHALE_EINVAL);
    cr_assert_eq(shale_cas(t, "k", 1, NULL, 0, NULL, 2, NULL), SHALE_EINVAL);
    shale_buf_free(&actual);
}

/* append -- update callback: old value plus ctx's byte; "del" deletes,
 * "err" aborts with 42. */
typedef struct app {
    char add;
    char buf[512];
    int calls;
} app;

static int append(void *ctx, const void *old, size_t oldlen, const void **nv, size_t *nl)
{
    app *a = ctx;
    a->calls++;
    if (a->add == 'D') {
        *nv = NULL;
        return 0;
    }
    if (a->add == 'E')
        return 42;
    if (old)
        memcpy(a->buf, old, oldlen);
    a->buf[old ? oldlen : 0] = a->add;
    *nv = a->buf;
    *nl = (old ? oldlen : 0) + 1;
    return 0;
}

Test(rmw, update_returns_old_or_new_deletes_and_passes_errors_through, .init = setup,
     .fini = teardown)
{
    shale_buf out = SHALE_BUF_INIT;
    app a = {.add = 'a'};
    cr_assert_eq(shale_update(t, "u", 1, append, &a, SHALE_UPDATE_RETURN_OLD, &out),
                 SHALE_NOTFOUND, "no old value");
    cr_assert_null(out.data);
    cr_assert(holds("u", "a"));
    a.add = 'b';
    cr_assert_eq(shale_update(t, "u", 1, append, &a, SHALE_UPDATE_RETURN_NEW, &out), SHALE_OK);
    cr_assert(out.len == 2 && memcmp(out.data, "ab", 2) == 0);
    a.add = 'c';
    cr_assert_eq(shale_update(t, "u", 1, append, &a, SHALE_UPDATE_RETURN_OLD, &out), SHALE_OK);
    cr_assert(out.len == 2 && memcmp(out.data, "ab", 2) == 0);
    cr_assert(holds("u", "abc"));
    a.add = 'E'; /* the callback's own code comes back, nothing is written */
    cr_assert_eq(shale_update(t, "u", 1, append, &a, SHALE_UPDATE_RETURN_NEW, &out), 42);
    cr_assert(holds("u", "abc"));
    a.add = 'D';
    cr_assert_eq(shale_update(t, "u", 1, append, &a, SHALE_UPDATE_RETURN_NEW, &out),
                 SHALE_NOTFOUND, "deleted: no new value");
    cr_assert(holds("u", NULL));
    cr_assert_eq(shale_update(t, "u", 1, NULL, &a, SHALE_UPDATE_RETURN_NEW, &out), SHALE_EINVAL);
    cr_assert_eq(shale_update(t, "u", 1, append, &a, 7, &out), SHALE_EINVAL);
    shale_buf_free(&out);
}

/* Random CAS and updates against a map of small integers (as decimal
 * strings), with writes in between so values come from segments. */
#define NK 300
static int model[NK]; /* -1: absent */

static size_t num(int v, char *b) { return (size_t)snprintf(b, 32, "%d", v); }

static int add_n(void *ctx, const void *old, size_t oldlen, const void **nv, size_t *nl)
{
    static char out[32];
    int d = *(int *)ctx, v = 0;
    if (old) {
        char tmp[32];
        memcpy(tmp, old, oldlen);
        tmp[oldlen] = 0;
        v = atoi(tmp);
    }
    if (v + d > 1000) {
        *nv = NULL; /* too big: delete */
        return 0;
    }
    *nl = num(v + d, out);
    *nv = out;
    return 0;
}

Test(rmw, random_cas_and_updates_match_a_map, .init = setup, .fini = teardown, .timeout = 300)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    shale_buf b = SHALE_BUF_INIT;
    for (int i = 0; i < NK; i++)
        model[i] = -1;
    for (int op = 0; op < (int)tu_scaled(30000); op++) {
        int i = (int)tu_rng_range(&r, NK);
        char k[16], cur[32], want[32], des[32];
        snprintf(k, sizeof k, "key%04d", i);
        size_t curl = model[i] >= 0 ? num(model[i], cur) : 0;
        switch (tu_rng_range(&r, 4)) {
        case 0: { /* CAS with the right expectation, or a wrong one */
            bool right = tu_rng_range(&r, 3) != 0;
            int d = (int)tu_rng_range(&r, 1000);
            size_t dl = num(d, des);
            bool del = tu_rng_range(&r, 5) == 0;
            const char *exp = model[i] >= 0 ? cur : NULL;
            size_t el = curl;
            if (!right) {
                exp = model[i] >= 0 && tu_rng_range(&r, 2) ? NULL : want;
                el = exp ? num(model[i] + 1 + (int)tu_rng_range(&r, 5), want) : 0;
            }
            int rc = shale_cas(t, k, strlen(k), exp, el, del ? NULL : des, del ? 0 : dl, &b);
            if (right) {
                cr_assert_eq(rc, SHALE_OK, "op %d: cas %s", op, shale_strerror(rc));
                model[i] = del ? -1 : d;
            } else {
                cr_assert_eq(rc, SHALE_EMISMATCH, "op %d", op);
                if (model[i] < 0)
                    cr_assert_null(b.data, "op %d: absence reported", op);
                else
                    cr_assert(b.len == curl && memcmp(b.data, cur, curl) == 0, "op %d", op);
            }
            break;
        }
        case 1: { /* update, adding d */
            int d = 1 + (int)tu_rng_range(&r, 50);
            int mode = (int)tu_rng_range(&r, 2);
            int rc = shale_update(t, k, strlen(k), add_n, &d, mode, &b);
            int old = model[i], nw = (old < 0 ? 0 : old) + d;
            if (nw > 1000)
                nw = -1;
            model[i] = nw;
            int shown = mode == SHALE_UPDATE_RETURN_OLD ? old : nw;
            if (shown < 0) {
                cr_assert_eq(rc, SHALE_NOTFOUND, "op %d", op);
            } else {
                cr_assert_eq(rc, SHALE_OK, "op %d: %s", op, shale_strerror(rc));
                size_t sl = num(shown, want);
                cr_assert(b.len == sl && memcmp(b.data, want, sl) == 0, "op %d", op);
            }
            break;
        }
        case 2: { /* a plain write */
            int v = (int)tu_rng_range(&r, 1000);
            size_t vl = num(v, des);
            cr_assert_eq(shale_insert(t, k, strlen(k), des, vl, NULL), SHALE_OK);
            model[i] = v;
            break;
        }
        default: { /* a read */
            int rc = shale_get(t, k, strlen(k), &b);
            if (model[i] < 0) {
                cr_assert_eq(rc, SHALE_NOTFOUND, "op %d", op);
            } else {
                cr_assert_eq(rc, SHALE_OK, "op %d", op);
                cr_assert(b.len == curl && memcmp(b.data, cur, curl) == 0, "op %d", op);
            }
        }
        }
    }
    shale_buf_free(&b);
}
