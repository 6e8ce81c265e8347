/*
 * test_node.c -- leaf and parent pages decoded and searched in memory.
 *
 * The pages here are encoded by a small encoder written from the format in
 * node.h (not by builder.c), so these tests check the decoder against the
 * documented format; test_builder.c checks builder and decoder together.
 * Keys with overflow runs need space and are tested in test_builder.c; here
 * overflowed keys appear only where no run is read (distinct inline bytes).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/pagewriter/node.h"
#include "../support/testutil.h"

#define MAXE 4096

typedef struct tkey {
    uint8_t b[300];
    size_t len;
} tkey;

typedef struct tent {
    tkey k;
    uint8_t kind;
    uint64_t kovf; /* fake run pages: never read in these tests */
    uint8_t v[300];
    size_t vlen;
    uint64_t vovf;
} tent;

static tent ents[MAXE];

static int tent_cmp(const void *a, const void *b)
{
    const tent *x = a, *y = b;
    return key_cmp(x->k.b, x->k.len, y->k.b, y->k.len);
}

/* sort_unique -- sort ents[0..n) by key and drop duplicates; returns the new n. */
static unsigned sort_unique(unsigned n)
{
    qsort(ents, n, sizeof(tent), tent_cmp);
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++)
        if (m == 0 || tent_cmp(&ents[m - 1], &ents[i]) != 0)
            ents[m++] = ents[i];
    return m;
}

/* inl -- inline key length of e on a page of size ps. */
static size_t inl(const tent *e, uint32_t ps)
{
    return MIN(e->k.len, node_key_inline_max(ps));
}

/* test_leaf_size -- bytes the format needs for ents[0..n) with prefix P. */
static size_t test_leaf_size(unsigned n, uint32_t ps, size_t P)
{
    size_t s = P + 2 * n;
    for (unsigned i = 0; i < n; i++) {
        const tent *e = &ents[i];
        s += 1 + varint_len(e->k.len) + varint_len(inl(e, ps) - P) + inl(e, ps) - P;
        s += e->kovf ? varint_len(e->kovf) : 0;
        s += varint_len(e->vlen) + (e->vovf ? varint_len(e->vovf) : e->vlen);
    }
    return s;
}

/* test_leaf_encode -- encode as many of ents[0..n) as fit; returns how many. */
static unsigned test_leaf_encode(uint8_t *page, uint32_t ps, unsigned n)
{
    size_t P = 0;
    unsigned m = 0;
    while (m < n) { /* grow while the leaf fits */
        size_t p2 = m == 0 ? inl(&ents[0], ps) : P;
        if (m > 0) {
            size_t i = 0, lim = MIN(p2, inl(&ents[m], ps));
            while (i < lim && ents[0].k.b[i] == ents[m].k.b[i])
                i++;
            p2 = i;
        }
        if (test_leaf_size(m + 1, ps, p2) > ps - SP_PAGE_HDR)
            break;
        P = p2;
        m++;
    }
    memset(page, 0, ps);
    page[4] = SP_PT_LEAF;
    put_u64(page + 8, 77);
    put_u16(page + 6, (uint16_t)m);
    put_u32(page + 28, (uint32_t)P);
    uint8_t *q = page + SP_PAGE_HDR;
    memcpy(q, ents[0].k.b, P);
    uint8_t *slots = q + P;
    q = slots + 2 * m;
    for (unsigned i = 0; i < m; i++) {
        const tent *e = &ents[i];
        size_t S = inl(e, ps) - P;
        put_u16(slots + 2 * i, (uint16_t)(q - page));
        *q++ = e->kind | (e->kovf ? NODE_F_KEY_OVF : 0) | (e->vovf ? NODE_F_VAL_OVF : 0);
        q += varint_put(q, e->k.len);
        q += varint_put(q, S);
        memcpy(q, e->k.b + P, S);
        q += S;
        if (e->kovf)
            q += varint_put(q, e->kovf);
        q += varint_put(q, e->vlen);
        if (e->vovf) {
            q += varint_put(q, e->vovf);
        } else {
            memcpy(q, e->v, e->vlen);
            q += e->vlen;
        }
    }
    put_u32(page + 24, (uint32_t)(q - page - SP_PAGE_HDR));
    return m;
}

/* test_parent_encode -- children i = ents[i] (key = last key); as many as fit. */
static unsigned test_parent_encode(uint8_t *page, uint32_t ps, unsigned n)
{
    uint32_t kimax = node_key_inline_max(ps);
    size_t size = 0;
    unsigned m = 0;
    for (; m < n; m++) {
        const tent *e = &ents[m];
        size_t s = 2 + varint_len(1000 + m) + varint_len(10 + m) + varint_len(m) + 1 +
                   varint_len(e->k.len) + varint_len(inl(e, ps)) + inl(e, ps) +
                   (e->kovf ? varint_len(e->kovf) : 0);
        if (size + s > ps - SP_PAGE_HDR)
            break;
        size += s;
    }
    memset(page, 0, ps);
    page[4] = SP_PT_PARENT;
    put_u16(page + 6, (uint16_t)m);
    uint8_t *slots = page + SP_PAGE_HDR, *q = slots + 2 * m;
    for (unsigned i = 0; i < m; i++) {
        const tent *e = &ents[i];
        put_u16(slots + 2 * i, (uint16_t)(q - page));
        q += varint_put(q, 1000 + i);
        q += varint_put(q, 10 + i);
        q += varint_put(q, i);
        *q++ = e->kovf ? NODE_F_KEY_OVF : 0;
        q += varint_put(q, e->k.len);
        q += varint_put(q, MIN(e->k.len, kimax));
        memcpy(q, e->k.b, MIN(e->k.len, kimax));
        q += MIN(e->k.len, kimax);
        if (e->kovf)
            q += varint_put(q, e->kovf);
    }
    put_u32(page + 24, (uint32_t)(q - slots));
    return m;
}

/* gen_entries -- n random entries; style picks key shapes.  Keys longer than
 * the inline limit get a fake run only when allow_ovf. */
static unsigned gen_entries(tu_rng *r, unsigned n, uint32_t ps, int style, bool allow_ovf)
{
    uint32_t kimax = node_key_inline_max(ps);
    for (unsigned i = 0; i < n; i++) {
        tent *e = &ents[i];
        memset(e, 0, sizeof(*e));
        size_t maxk = allow_ovf ? sizeof(e->k.b) : MIN(sizeof(e->k.b), (size_t)kimax);
        size_t len = tu_rng_range(r, style == 2 ? maxk + 1 : 24);
        if (style == 1) { /* a long shared prefix, then a few random bytes */
            len = MIN(maxk, 40 + tu_rng_range(r, 6));
            memset(e->k.b, 'p', 40);
            tu_rng_bytes(r, e->k.b + 40, len - 40);
        } else {
            tu_rng_bytes(r, e->k.b, len);
        }
        if (style == 0 && len > 0) /* small alphabet: many shared prefixes */
            for (size_t j = 0; j < len; j++)
                e->k.b[j] = 'a' + e->k.b[j] % 3;
        e->k.len = len;
        e->kind = (uint8_t)tu_rng_range(r, 3);
        if (len > kimax)
            e->kovf = 1000 + i;
        if (e->kind != NODE_KIND_TOMBSTONE) {
            e->vlen = tu_rng_range(r, 6) == 0 ? 0 : tu_rng_range(r, 40);
            tu_rng_bytes(r, e->v, e->vlen);
            if (tu_rng_range(r, 10) == 0) {
                e->vovf = 5000 + i;
                e->vlen = 100000 + i;
            }
        }
    }
    /* the empty key is always among them */
    ents[0].k.len = 0;
    ents[0].kovf = 0;
    return sort_unique(n);
}

/* expect_key -- the node_key equals e's key (inline bytes; run page when overflowed). */
static void expect_key(const node_key *k, const tent *e, uint32_t ps)
{
    size_t il = inl(e, ps);
    cr_assert_eq(k->klen, e->k.len);
    cr_assert_eq(k->plen + k->slen, il);
    cr_assert(memcmp(k->prefix, e->k.b, k->plen) == 0);
    cr_assert(memcmp(k->suffix, e->k.b + k->plen, k->slen) == 0);
    cr_assert_eq(k->ovf_pgno, e->kovf);
}

static const uint32_t sizes[] = {1024, 4096, 65536};

Test(node, leaf_roundtrip_random_entries)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed());
    uint8_t *page = malloc(65536);
    for (unsigned si = 0; si < 3; si++) {
        uint32_t ps = sizes[si];
        for (int style = 0; style < 3; style++) {
            for (int round = 0; round < 20; round++) {
                unsigned n = gen_entries(&r, 1 + (unsigned)tu_rng_range(&r, 400), ps, style, true);
                unsigned m = test_leaf_encode(page, ps, n);
                cr_assert(m >= 1);
                cr_assert_eq(node_leaf_check(page, ps), SHALE_OK);
                for (unsigned i = 0; i < m; i++) {
                    node_entry e;
                    cr_assert_eq(node_leaf_entry(page, ps, i, &e), SHALE_OK);
                    expect_key(&e.key, &ents[i], ps);
                    cr_assert_eq(e.kind, ents[i].kind);
                    cr_assert_eq(e.vlen, ents[i].vlen);
                    cr_assert_eq(e.val_ovf_pgno, ents[i].vovf);
                    if (!ents[i].vovf)
                        cr_assert(memcmp(e.val, ents[i].v, e.vlen) == 0);
                }
                node_entry e;
                cr_assert_eq(node_leaf_entry(page, ps, m, &e), SHALE_EINVAL);
            }
        }
    }
    free(page);
}

/* lower_bound -- the first i in [0, m) with ents[i] >= key. */
static unsigned lower_bound(unsigned m, const uint8_t *key, size_t klen)
{
    unsigned i = 0;
    while (i < m && key_cmp(ents[i].k.b, ents[i].k.len, key, klen) < 0)
        i++;
    return i;
}

Test(node, leaf_search_finds_every_key)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed() + 1);
    uint8_t *page = malloc(65536);
    for (unsigned si = 0; si < 3; si++) {
        uint32_t ps = sizes[si];
        for (int style = 0; style < 3; style++) {
            for (int round = 0; round < 10; round++) {
                /* no overflowed keys: the search needs no space */
                unsigned n = gen_entries(&r, 1 + (unsigned)tu_rng_range(&r, 600), ps, style, false);
                unsigned m = test_leaf_encode(page, ps, n);
                for (unsigned i = 0; i < m; i++) {
                    unsigned idx = 99999;
                    bool exact = false;
                    cr_assert_eq(
                        node_leaf_search(NULL, page, ps, ents[i].k.b, ents[i].k.len, &idx, &exact),
                        SHALE_OK);
                    cr_assert_eq(idx, i, "key %u found at %u", i, idx);
                    cr_assert(exact);
                }
                for (int q = 0; q < 300; q++) { /* probes: mutated present keys and random ones */
                    uint8_t key[300];
                    size_t klen;
                    const tent *src = &ents[tu_rng_range(&r, m)];
                    klen = src->k.len;
                    memcpy(key, src->k.b, klen);
                    switch (tu_rng_range(&r, 4)) {
                    case 0:
                        if (klen)
                            klen--;
                        break;
                    case 1:
                        if (klen < 40)
                            key[klen++] = (uint8_t)tu_rng_next(&r);
                        break;
                    case 2:
                        if (klen)
                            key[tu_rng_range(&r, klen)] ^= 1;
                        break;
                    default:
                        klen = tu_rng_range(&r, 8);
                        tu_rng_bytes(&r, key, klen);
                        break;
                    }
                    unsigned idx, want = lower_bound(m, key, klen);
                    bool exact;
                    cr_assert_eq(node_leaf_search(NULL, page, ps, key, klen, &idx, &exact),
                                 SHALE_OK);
                    cr_assert_eq(idx, want);
                    cr_assert_eq(exact, want < m && key_cmp(ents[want].k.b, ents[want].k.len, key,
                                                            klen) == 0);
                }
            }
        }
    }
    free(page);
}

Test(node, leaf_search_outside_the_prefix)
{
    uint32_t ps = 4096;
    uint8_t *page = malloc(ps);
    for (unsigned i = 0; i < 10; i++) {
        memset(&ents[i], 0, sizeof(tent));
        memcpy(ents[i].k.b, "commonprefix-", 13);
        ents[i].k.b[13] = (uint8_t)('0' + i);
        ents[i].k.len = 14;
    }
    cr_assert_eq(test_leaf_encode(page, ps, 10), 10);
    cr_assert_eq(sp_page_aux(page), 13);
    unsigned idx;
    bool exact;
    cr_assert_eq(node_leaf_search(NULL, page, ps, "common", 6, &idx, &exact), SHALE_OK);
    cr_assert(idx == 0 && !exact);
    cr_assert_eq(node_leaf_search(NULL, page, ps, "commonprefix-", 13, &idx, &exact), SHALE_OK);
    cr_assert(idx == 0 && !exact);
    cr_assert_eq(node_leaf_search(NULL, page, ps, "commonprefiy", 12, &idx, &exact), SHALE_OK);
    cr_assert(idx == 10 && !exact);
    cr_assert_eq(node_leaf_search(NULL, page, ps, "a", 1, &idx, &exact), SHALE_OK);
    cr_assert(idx == 0 && !exact);
    cr_assert_eq(node_leaf_search(NULL, page, ps, NULL, 0, &idx, &exact), SHALE_OK);
    cr_assert(idx == 0 && !exact);
    cr_assert_eq(node_leaf_search(NULL, page, ps, "commonprefix-5x", 15, &idx, &exact), SHALE_OK);
    cr_assert(idx == 6 && !exact);
    free(page);
}

Test(node, key_cmp_and_copy_inline_keys)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed() + 2);
    uint32_t ps = 4096;
    uint8_t *page = malloc(ps), *buf = NULL;
    size_t cap = 0, len;
    unsigned n = gen_entries(&r, 200, ps, 0, false);
    unsigned m = test_leaf_encode(page, ps, n);
    for (unsigned i = 0; i < m; i++) {
        node_entry e;
        cr_assert_eq(node_leaf_entry(page, ps, i, &e), SHALE_OK);
        cr_assert_eq(node_key_copy(NULL, &e.key, &buf, &cap, &len), SHALE_OK);
        cr_assert_eq(len, ents[i].k.len);
        cr_assert(len == 0 || memcmp(buf, ents[i].k.b, len) == 0);
        for (unsigned j = 0; j < m; j += 7) {
            int c;
            cr_assert_eq(node_key_cmp(NULL, ents[j].k.b, ents[j].k.len, &e.key, &c), SHALE_OK);
            int want = key_cmp(ents[j].k.b, ents[j].k.len, ents[i].k.b, ents[i].k.len);
            cr_assert_eq(c < 0 ? -1 : c > 0, want < 0 ? -1 : want > 0);
        }
    }
    free(buf);
    free(page);
}

Test(node, parent_roundtrip_and_search)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed() + 3);
    uint8_t *page = malloc(65536);
    for (unsigned si = 0; si < 3; si++) {
        uint32_t ps = sizes[si];
        for (int style = 0; style < 3; style++) {
            unsigned n = gen_entries(&r, 1 + (unsigned)tu_rng_range(&r, 500), ps, style, false);
            unsigned m = test_parent_encode(page, ps, n);
            cr_assert(m >= 1);
            cr_assert_eq(node_parent_check(page, ps), SHALE_OK);
            for (unsigned i = 0; i < m; i++) {
                node_child c;
                cr_assert_eq(node_parent_child(page, ps, i, &c), SHALE_OK);
                cr_assert_eq(c.pgno, 1000 + i);
                cr_assert_eq(c.entries, 10 + i);
                cr_assert_eq(c.tombstones, i);
                expect_key(&c.last, &ents[i], ps);
                unsigned idx;
                cr_assert_eq(node_parent_search(NULL, page, ps, ents[i].k.b, ents[i].k.len, &idx),
                             SHALE_OK);
                cr_assert_eq(idx, i);
            }
            for (int q = 0; q < 200; q++) {
                uint8_t key[8];
                size_t klen = tu_rng_range(&r, 8);
                tu_rng_bytes(&r, key, klen);
                unsigned idx;
                cr_assert_eq(node_parent_search(NULL, page, ps, key, klen, &idx), SHALE_OK);
                cr_assert_eq(idx, lower_bound(m, key, klen));
            }
        }
    }
    free(page);
}

/* one_leaf -- a small valid leaf of 1 KiB in page (for the targeted corruptions). */
static unsigned one_leaf(uint8_t *page)
{
    for (unsigned i = 0; i < 5; i++) {
        memset(&ents[i], 0, sizeof(tent));
        memcpy(ents[i].k.b, "key-", 4);
        ents[i].k.b[4] = (uint8_t)('a' + i);
        ents[i].k.len = 5;
        ents[i].vlen = 3;
        memcpy(ents[i].v, "val", 3);
    }
    return test_leaf_encode(page, 1024, 5);
}

Test(node, leaf_structural_damage_is_corrupt)
{
    uint8_t *page = malloc(1024);
    node_entry e;
    unsigned idx;
    bool exact;
    uint32_t used;

    cr_assert_eq(one_leaf(page), 5);
    cr_assert_eq(sp_page_aux(page), 4);
    used = sp_page_used(page);
    /* wrong type */
    page[4] = SP_PT_PARENT;
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_ECORRUPT);
    cr_assert_eq(node_leaf_entry(page, 1024, 0, &e), SHALE_ECORRUPT);
    page[4] = SP_PT_LEAF;
    /* used past the page */
    put_u32(page + 24, 1024);
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_ECORRUPT);
    put_u32(page + 24, used);
    /* the slot array past used */
    put_u16(page + 6, 500);
    cr_assert_eq(node_leaf_search(NULL, page, 1024, "key-c", 5, &idx, &exact), SHALE_ECORRUPT);
    put_u16(page + 6, 5);
    /* prefix longer than allowed */
    put_u32(page + 28, 200);
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_ECORRUPT);
    put_u32(page + 28, 4);
    /* a slot pointing into the slots, or past used */
    uint8_t *slot2 = page + SP_PAGE_HDR + 4 + 4;
    uint16_t save = get_u16(slot2);
    put_u16(slot2, SP_PAGE_HDR + 4);
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    put_u16(slot2, (uint16_t)(SP_PAGE_HDR + used));
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    cr_assert_eq(node_leaf_search(NULL, page, 1024, "key-c", 5, &idx, &exact), SHALE_ECORRUPT);
    put_u16(slot2, save);
    uint8_t *ent2 = page + save;
    /* unknown flag bits, unknown kind */
    ent2[0] = 0x40;
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    ent2[0] = 0x07;
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    ent2[0] = 0;
    /* key length disagreeing with prefix + suffix */
    ent2[1] = 9;
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    ent2[1] = 5;
    /* suffix running past used */
    ent2[2] = 0x7f;
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_ECORRUPT);
    ent2[2] = 1;
    /* a varint that never ends */
    put_u32(page + 24, (uint32_t)(save - SP_PAGE_HDR + 2));
    ent2[1] = 0x85;
    ent2[2] = 0x80;
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    ent2[1] = 5;
    ent2[2] = 1;
    put_u32(page + 24, used);
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_OK);
    /* keys out of order */
    ent2[3] = 'z';
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_ECORRUPT);
    ent2[3] = 'c';
    /* a value past used */
    ent2[4] = 100;
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    ent2[4] = 3;
    /* an inline key flagged overflowed */
    ent2[0] = NODE_F_KEY_OVF;
    cr_assert_eq(node_leaf_entry(page, 1024, 2, &e), SHALE_ECORRUPT);
    ent2[0] = 0;
    cr_assert_eq(node_leaf_check(page, 1024), SHALE_OK);
    cr_assert_eq(node_leaf_check(page, 512), SHALE_EINVAL);
    free(page);
}

/* expect_robust -- decode every way; results must be OK or corrupt, and a
 * page that passes the check must decode entirely. */
static void expect_robust(const uint8_t *page, uint32_t ps, tu_rng *r)
{
    int ck = node_leaf_check(page, ps);
    cr_assert(ck == SHALE_OK || ck == SHALE_ECORRUPT);
    unsigned cnt = sp_page_count(page);
    for (unsigned i = 0; i < cnt; i++) {
        node_entry e;
        int rc = node_leaf_entry(page, ps, i, &e);
        cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT);
        if (ck == SHALE_OK)
            cr_assert_eq(rc, SHALE_OK);
    }
    for (int q = 0; q < 8; q++) {
        uint8_t key[16];
        size_t klen = tu_rng_range(r, 16);
        tu_rng_bytes(r, key, klen);
        unsigned idx;
        bool exact;
        int rc = node_leaf_search(NULL, page, ps, key, klen, &idx, &exact);
        /* EINVAL: an overflowed key needed its run and there is no space here */
        cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT || rc == SHALE_EINVAL);
        if (rc == SHALE_OK)
            cr_assert(idx <= cnt);
    }
}

Test(node, fuzzed_leaf_bytes_never_crash)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed() + 4);
    uint32_t ps = 1024;
    uint8_t *orig = malloc(ps), *page = malloc(ps); /* exact size: ASan sees any overrun */
    uint64_t rounds = tu_scaled(5000);
    for (uint64_t k = 0; k < rounds; k++) {
        if (k % 500 == 0)
            test_leaf_encode(orig, ps, gen_entries(&r, 60, ps, (int)(k / 500) % 3, true));
        memcpy(page, orig, ps);
        unsigned flips = 1 + (unsigned)tu_rng_range(&r, 4);
        uint32_t span = SP_PAGE_HDR + sp_page_used(orig);
        for (unsigned f = 0; f < flips; f++) {
            size_t at =
                tu_rng_range(&r, 5) == 0 ? 4 + tu_rng_range(&r, 28) : tu_rng_range(&r, span);
            page[at] ^= (uint8_t)(1u << tu_rng_range(&r, 8));
        }
        page[4] = SP_PT_LEAF; /* wrong types are too easy: keep exploring the body */
        expect_robust(page, ps, &r);
    }
    free(orig);
    free(page);
}

Test(node, fuzzed_parent_bytes_never_crash)
{
    tu_rng r;
    tu_rng_seed(&r, tu_seed() + 5);
    uint32_t ps = 1024;
    uint8_t *orig = malloc(ps), *page = malloc(ps);
    uint64_t rounds = tu_scaled(3000);
    for (uint64_t k = 0; k < rounds; k++) {
        if (k % 500 == 0)
            test_parent_encode(orig, ps, gen_entries(&r, 60, ps, (int)(k / 500) % 3, false));
        memcpy(page, orig, ps);
        uint32_t span = SP_PAGE_HDR + sp_page_used(orig);
        for (unsigned f = 0, nf = 1 + (unsigned)tu_rng_range(&r, 4); f < nf; f++)
            page[tu_rng_range(&r, span)] ^= (uint8_t)(1u << tu_rng_range(&r, 8));
        page[4] = SP_PT_PARENT;
        int ck = node_parent_check(page, ps);
        cr_assert(ck == SHALE_OK || ck == SHALE_ECORRUPT);
        for (unsigned i = 0; i < sp_page_count(page); i++) {
            node_child c;
            int rc = node_parent_child(page, ps, i, &c);
            cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT);
            if (ck == SHALE_OK)
                cr_assert_eq(rc, SHALE_OK);
        }
        uint8_t key[4];
        tu_rng_bytes(&r, key, 4);
        unsigned idx;
        int rc = node_parent_search(NULL, page, ps, key, 4, &idx);
        cr_assert(rc == SHALE_OK || rc == SHALE_ECORRUPT || rc == SHALE_EINVAL);
    }
    free(orig);
    free(page);
}

Test(node, inline_limits_fit_the_smallest_page)
{
    /* The biggest possible entry: a 32 KiB key (overflowed, largest run page
     * number), an inline value of exactly the inline limit, in a 1 KiB page. */
    uint32_t ps = SP_MIN_PAGE_SIZE;
    size_t kimax = node_key_inline_max(ps), vimax = node_val_inline_max(ps);
    size_t entry = 1 + varint_len(SHALE_MAX_KEY_SIZE) + varint_len(kimax) + kimax + VARINT_MAX +
                   varint_len(vimax) + vimax;
    size_t ovf_val = varint_len(SHALE_MAX_VALUE_SIZE) + VARINT_MAX;
    cr_assert(ovf_val <= varint_len(vimax) + vimax);
    cr_assert_leq(entry + 2, ps - SP_PAGE_HDR);
    size_t child = 3 * VARINT_MAX + 1 + varint_len(SHALE_MAX_KEY_SIZE) + varint_len(kimax) + kimax +
                   VARINT_MAX + 2;
    cr_assert_geq((ps - SP_PAGE_HDR) / child, 2, "parents must hold two children");
}
