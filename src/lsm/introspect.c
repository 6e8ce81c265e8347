/*
 * introspect.c -- what a database can tell about itself as a whole:
 * shale_checksum, shale_size_on_disk, shale_was_recovered.
 *
 * The checksum is over contents, not layout, so two databases holding the
 * same trees with the same keys and values agree however their files were
 * written (an export imported elsewhere, a compacted copy): XXH3-64 over,
 * for each tree in name order (the default tree "" first), the name's
 * length and bytes, then for each key in order its length, bytes, value
 * length and value bytes (lengths as u64 little-endian), then the tree's
 * key count.  It reads one snapshot of every tree.
 */
#include <stdlib.h>
#include <xxhash.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"

/* hash_u64 -- v into the state, little-endian. */
static void hash_u64(XXH3_state_t *st, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    XXH3_64bits_update(st, b, 8);
}

/* hash_tree -- tree id's name and contents at (v, snap). */
static int hash_tree(XXH3_state_t *st, ver_version *v, uint64_t snap, uint32_t id,
                     const char *name, size_t nlen)
{
    int rc = SHALE_OK;
    cur_cursor *c = NULL;
    uint8_t lo[IKEY_PREFIX], hi[IKEY_PREFIX];
    uint64_t n = 0;
    hash_u64(st, nlen);
    XXH3_64bits_update(st, name, nlen);
    put_be32(lo, id);
    put_be32(hi, id + 1);
    ERR(cur_open(v, snap, true, 0, v->nsegs, true, &c));
    ERR(cur_set_bounds(c, lo, sizeof lo, hi, sizeof hi));
    for (rc = cur_first(c); rc == SHALE_OK; rc = cur_next(c), n++) {
        size_t kl, vl;
        const uint8_t *k = cur_key(c, &kl);
        const void *val;
        ERR(cur_value(c, &val, &vl));
        hash_u64(st, kl - IKEY_PREFIX);
        XXH3_64bits_update(st, k + IKEY_PREFIX, kl - IKEY_PREFIX);
        hash_u64(st, vl);
        XXH3_64bits_update(st, val, vl);
    }
    if (rc == SHALE_NOTFOUND)
        rc = SHALE_OK;
    hash_u64(st, n);
err:
    cur_close(c);
    return rc;
}

/* A tree to hash: its id and name, from the catalog as of the snapshot. */
typedef struct named {
    uint32_t id;
    char *name;
    size_t nlen;
} named;

typedef struct named_list {
    named *v;
    size_t n, cap;
} named_list;

/* collect -- tree_catalog_fn: the trees' names ('n' + name -> id), in name
 * order as the catalog keeps them. */
static int collect(void *ctx, const uint8_t *k, size_t kl, const void *val, size_t vl)
{
    named_list *l = ctx;
    if (kl < 1 || k[0] != 'n')
        return SHALE_OK; /* not a name */
    if (vl != 4)
        return SHALE_ECORRUPT;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? 2 * l->cap : 16;
        named *nv = realloc(l->v, ncap * sizeof *nv);
        if (!nv)
            return SHALE_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    named *t = &l->v[l->n];
    t->nlen = kl - 1;
    if (!(t->name = malloc(t->nlen + 1)))
        return SHALE_ENOMEM;
    memcpy(t->name, k + 1, t->nlen);
    t->id = get_u32(val);
    l->n++;
    return SHALE_OK;
}

int shale_checksum(shale_db *db, uint64_t *sum)
{
    int rc = SHALE_OK;
    uint64_t snap;
    named_list trees = {0};
    XXH3_state_t *st = NULL;
    if (!db || !sum)
        return SHALE_EINVAL;
    ver_version *v = db_pin(db, &snap);
    if (!(st = XXH3_createState()) || XXH3_64bits_reset(st) != XXH_OK)
        ERR_SET(SHALE_ENOMEM);
    ERR(hash_tree(st, v, snap, TREE_ID_DEFAULT, "", 0));
    ERR(tree_catalog_scan(v, snap, collect, &trees));
    for (size_t i = 0; i < trees.n; i++)
        ERR(hash_tree(st, v, snap, trees.v[i].id, trees.v[i].name, trees.v[i].nlen));
    *sum = XXH3_64bits_digest(st);
err:
    for (size_t i = 0; i < trees.n; i++)
        free(trees.v[i].name);
    free(trees.v);
    XXH3_freeState(st);
    ver_unref(v);
    return rc;
}

int shale_size_on_disk(shale_db *db, uint64_t *bytes)
{
    if (!db || !bytes)
        return SHALE_EINVAL;
    sp_stats ss;
    sp_stats_get(db->sp, &ss);
    *bytes = ss.file_pages * sp_page_size(db->sp) + db_log_bytes(db);
    return SHALE_OK;
}

bool shale_was_recovered(shale_db *db) { return db && db->recovered; }
