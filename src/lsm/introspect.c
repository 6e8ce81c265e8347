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
#include "db.h"

/* hash_u64 -- v into the state, little-endian. */
static void hash_u64(XXH3_state_t *st, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    XXH3_64bits_update(st, b, 8);
}

/* hash_entry -- tree_entry_fn: one key and value into the state. */
typedef struct hash_ctx {
    XXH3_state_t *st;
    uint64_t n;
} hash_ctx;

static int hash_entry(void *ctx, const uint8_t *k, size_t kl, const void *val, size_t vl)
{
    hash_ctx *h = ctx;
    hash_u64(h->st, kl);
    XXH3_64bits_update(h->st, k, kl);
    hash_u64(h->st, vl);
    XXH3_64bits_update(h->st, val, vl);
    h->n++;
    return SHALE_OK;
}

/* hash_tree -- tree id's name and contents at (v, snap). */
static int hash_tree(shale_db *db, XXH3_state_t *st, ver_version *v, uint64_t snap, uint32_t id,
                     const char *name, size_t nlen)
{
    hash_ctx h = {st, 0};
    hash_u64(st, nlen);
    XXH3_64bits_update(st, name, nlen);
    RET(tree_scan(db, v, snap, id, hash_entry, &h));
    hash_u64(st, h.n);
    return SHALE_OK;
}

int shale_checksum(shale_db *db, uint64_t *sum)
{
    int rc = SHALE_OK;
    uint64_t snap;
    tree_name *trees = NULL;
    size_t n = 0;
    XXH3_state_t *st = NULL;
    if (!db || !sum)
        return SHALE_EINVAL;
    ver_version *v = db_pin(db, &snap);
    if (!(st = XXH3_createState()) || XXH3_64bits_reset(st) != XXH_OK)
        ERR_SET(SHALE_ENOMEM);
    ERR(hash_tree(db, st, v, snap, TREE_ID_DEFAULT, "", 0));
    ERR(tree_names(v, snap, &trees, &n));
    for (size_t i = 0; i < n; i++)
        ERR(hash_tree(db, st, v, snap, trees[i].id, trees[i].name, trees[i].nlen));
    *sum = XXH3_64bits_digest(st);
err:
    tree_names_free(trees, n);
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
