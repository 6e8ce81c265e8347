/*
 * tree.c -- named trees and the catalog.
 *
 * Every tree is a key range of the one LSM: its keys are prefixed by the
 * tree's 4-byte big-endian id (batch.h), so batches across trees are atomic
 * for free.  Id 0 is the catalog itself, id 1 the default tree (""), which
 * always exists and has no catalog entry.  The catalog maps names to ids:
 *   key 'n' + name   -> u32 id (little-endian)
 *   key '#next'      -> u32 next id to hand out (ids are never reused)
 * Creating a tree is one batch writing both keys, so it is durable and
 * recovered like any write.  Dropping a tree is one batch removing its
 * catalog entry and writing a range tombstone over its id's key range
 * (graveyard.h), so a drop costs one small write; its keys are also skipped
 * when segments are written or merged (tree_id_live).  Clearing a tree is
 * the range tombstone alone.  Handles of
 * dropped trees stay allocated (marked dropped) until close, so a stale
 * handle gets SHALE_EINVAL rather than freed memory.
 */
#include <stdlib.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"
#include "mergeop.h"

#define CAT_NAME 'n'
static const char cat_next_key[] = "#next";

/* tree_add -- a new handle in the table (tree_mu held). */
static int tree_add(shale_db *db, const char *name, size_t nlen, uint32_t id,
                    struct shale_tree **out)
{
    struct shale_tree *t = calloc(1, sizeof *t);
    if (!t || !(t->name = malloc(nlen + 1))) {
        free(t);
        return SHALE_ENOMEM;
    }
    memcpy(t->name, name, nlen);
    t->name[nlen] = 0;
    t->db = db;
    t->id = id;
    pthread_mutex_lock(&db->list_mu);
    t->next = db->trees;
    db->trees = t;
    if (id >= db->next_tree_id)
        db->next_tree_id = id + 1;
    pthread_mutex_unlock(&db->list_mu);
    if (out)
        *out = t;
    return SHALE_OK;
}

/* tree_find -- the live handle named name, or NULL (tree_mu held). */
static struct shale_tree *tree_find(shale_db *db, const char *name)
{
    for (struct shale_tree *t = db->trees; t; t = t->next)
        if (!t->dropped && strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

/* load_entry -- one catalog entry read at open. */
static int load_entry(shale_db *db, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    int rc = ids_load(db, k, kl, v, vl);
    if (rc != SHALE_NOTFOUND)
        return rc;
    if (vl != 4)
        return SHALE_ECORRUPT;
    uint32_t id = get_u32(v);
    if (kl == sizeof cat_next_key - 1 && memcmp(k, cat_next_key, kl) == 0) {
        pthread_mutex_lock(&db->list_mu);
        if (id > db->next_tree_id)
            db->next_tree_id = id;
        pthread_mutex_unlock(&db->list_mu);
        return SHALE_OK;
    }
    if (kl < 1 || k[0] != CAT_NAME || kl - 1 > SHALE_MAX_TREE_NAME || id <= TREE_ID_DEFAULT)
        return SHALE_ECORRUPT;
    if (memchr(k + 1, 0, kl - 1))
        return SHALE_ECORRUPT;
    return tree_add(db, (const char *)k + 1, kl - 1, id, NULL);
}

int tree_scan(shale_db *db, ver_version *v, uint64_t snap, uint32_t id, tree_entry_fn fn,
              void *ctx)
{
    int rc = SHALE_OK;
    cur_cursor *c = NULL;
    uint8_t lo[IKEY_PREFIX], hi[IKEY_PREFIX];
    put_be32(lo, id);
    put_be32(hi, id + 1);
    ERR(cur_open(v, snap, true, 0, v->nsegs, CUR_HIDE, &c));
    if (db)
        cur_use_operators(c, db);
    ERR(cur_set_bounds(c, lo, sizeof lo, hi, sizeof hi));
    for (rc = cur_first(c); rc == SHALE_OK; rc = cur_next(c)) {
        size_t kl, vl;
        const uint8_t *k = cur_key(c, &kl);
        const void *val;
        ERR(cur_value(c, &val, &vl));
        ERR(fn(ctx, k + IKEY_PREFIX, kl - IKEY_PREFIX, val, vl));
    }
    if (rc == SHALE_NOTFOUND)
        rc = SHALE_OK;
err:
    cur_close(c);
    return rc;
}

/* A growing list of tree names (tree_names). */
typedef struct name_list {
    tree_name *v;
    size_t n, cap;
} name_list;

static int add_name(void *ctx, const uint8_t *k, size_t kl, const void *val, size_t vl)
{
    name_list *l = ctx;
    if (kl < 1 || k[0] != CAT_NAME)
        return SHALE_OK; /* not a tree's entry */
    if (vl != 4)
        return SHALE_ECORRUPT;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? 2 * l->cap : 16;
        tree_name *nv = realloc(l->v, ncap * sizeof *nv);
        if (!nv)
            return SHALE_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    tree_name *t = &l->v[l->n];
    t->nlen = kl - 1;
    if (!(t->name = malloc(t->nlen + 1)))
        return SHALE_ENOMEM;
    memcpy(t->name, k + 1, t->nlen);
    t->name[t->nlen] = 0;
    t->id = get_u32(val);
    l->n++;
    return SHALE_OK;
}

int tree_names(ver_version *v, uint64_t snap, tree_name **out, size_t *n)
{
    name_list l = {0};
    int rc = tree_scan(NULL, v, snap, TREE_ID_CATALOG, add_name, &l);
    if (rc < 0) {
        tree_names_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return SHALE_OK;
}

void tree_names_free(tree_name *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

static int load_one(void *ctx, const uint8_t *k, size_t kl, const void *v, size_t vl)
{
    return load_entry(ctx, k, kl, v, vl);
}

int tree_load_catalog(shale_db *db)
{
    uint64_t snap;
    ver_version *v = db_pin(db, &snap);
    int rc = tree_add(db, "", 0, TREE_ID_DEFAULT, NULL);
    if (rc == SHALE_OK)
        rc = tree_scan(NULL, v, snap, TREE_ID_CATALOG, load_one, db);
    ver_unref(v);
    return rc;
}

void tree_free_all(shale_db *db)
{
    struct shale_tree *t = db->trees, *n;
    for (; t; t = n) {
        n = t->next;
        for (mo_op *o = t->merge_ops, *older; o; o = older) {
            older = o->older;
            free(o);
        }
        free(t->name);
        free(t);
    }
    db->trees = NULL;
}

/* db_key_live -- whether ikey belongs to a tree that still exists (the last
 * tree id's answer is cached: consecutive keys share a tree). */
bool db_key_live(live_cache *lc, const uint8_t *ikey, size_t iklen)
{
    if (iklen < IKEY_PREFIX)
        return false;
    uint32_t id = get_be32(ikey);
    if (!lc->valid || id != lc->id) {
        lc->id = id;
        lc->live = tree_id_live(lc->db, id);
        lc->valid = true;
    }
    return lc->live;
}

/* db_dead_tree_between -- whether a tree id in [a, b] was dropped (or never
 * finished being created: either way its keys are dead).  A span of more
 * than 4096 ids answers yes without looking. */
bool db_dead_tree_between(shale_db *db, uint32_t a, uint32_t b)
{
    if (b < a)
        return false;
    if (b - a > 4096)
        return true;
    for (uint64_t id = a; id <= b; id++)
        if (!tree_id_live(db, (uint32_t)id))
            return true;
    return false;
}

int shale_set_merge_operator(shale_tree *t, shale_merge_fn fn, void *ctx)
{
    if (!t || atomic_load(&t->dropped))
        return SHALE_EINVAL;
    mo_op *o = NULL;
    if (fn) {
        if (!(o = malloc(sizeof *o)))
            return SHALE_ENOMEM;
        *o = (mo_op){fn, ctx, NULL};
    }
    /* Readers may hold an earlier operator while folding: every one is kept
     * until close. */
    pthread_mutex_lock(&t->db->list_mu);
    if (o) {
        o->older = t->merge_ops;
        t->merge_ops = o;
    }
    atomic_store_explicit(&t->merge_op, o, memory_order_release);
    pthread_mutex_unlock(&t->db->list_mu);
    return SHALE_OK;
}

const mo_op *db_merge_op(op_cache *oc, const uint8_t *ikey, size_t iklen)
{
    if (iklen < IKEY_PREFIX)
        return NULL;
    uint32_t id = get_be32(ikey);
    if (!oc->valid || id != oc->id) {
        oc->id = id;
        oc->t = NULL;
        oc->valid = true;
        pthread_mutex_lock(&oc->db->list_mu);
        for (struct shale_tree *t = oc->db->trees; t; t = t->next)
            if (t->id == id && !atomic_load(&t->dropped))
                oc->t = t;
        pthread_mutex_unlock(&oc->db->list_mu);
    }
    return oc->t ? atomic_load_explicit(&oc->t->merge_op, memory_order_acquire) : NULL;
}

bool tree_id_live(shale_db *db, uint32_t id)
{
    if (id <= TREE_ID_DEFAULT)
        return true;
    bool live = false;
    pthread_mutex_lock(&db->list_mu);
    if (id >= db->next_tree_id)
        live = true; /* being created right now */
    for (struct shale_tree *t = db->trees; t && !live; t = t->next)
        if (t->id == id && !t->dropped)
            live = true;
    pthread_mutex_unlock(&db->list_mu);
    return live;
}

/* catalog_key -- 'n' + name into buf. */
static size_t catalog_key(uint8_t *buf, const char *name, size_t nlen)
{
    buf[0] = CAT_NAME;
    memcpy(buf + 1, name, nlen);
    return nlen + 1;
}

/* create_tree -- write the catalog entry for a new tree (tree_mu held). */
static int create_tree(shale_db *db, const char *name, size_t nlen, struct shale_tree **out)
{
    int rc = SHALE_OK;
    uint8_t key[SHALE_MAX_TREE_NAME + 1], idv[4], nextv[4];
    shale_batch b = {0};
    uint32_t id = db->next_tree_id;
    put_u32(idv, id);
    put_u32(nextv, id + 1);
    ERR(batch_add(&b, NODE_KIND_VALUE, TREE_ID_CATALOG, key, catalog_key(key, name, nlen), idv,
                  4));
    ERR(batch_add(&b, NODE_KIND_VALUE, TREE_ID_CATALOG, cat_next_key, sizeof cat_next_key - 1,
                  nextv, 4));
    ERR(db_write(db, &b));
    /* The id is spent once the catalog write is in: never hand it out again,
     * even if the handle cannot be allocated below. */
    pthread_mutex_lock(&db->list_mu);
    db->next_tree_id = id + 1;
    pthread_mutex_unlock(&db->list_mu);
    ERR(tree_add(db, name, nlen, id, out));
err:
    free(b.buf);
    return rc;
}

/* check_name -- NULL is the default tree's ""; *nlen gets the length. */
static int check_name(shale_db *db, const char **name, size_t *nlen)
{
    if (!db)
        return SHALE_EINVAL;
    if (!*name)
        *name = "";
    *nlen = strlen(*name);
    return *nlen > SHALE_MAX_TREE_NAME ? SHALE_EINVAL : SHALE_OK;
}

struct shale_tree *tree_lookup(shale_db *db, const char *name)
{
    pthread_mutex_lock(&db->tree_mu);
    struct shale_tree *t = tree_find(db, name);
    pthread_mutex_unlock(&db->tree_mu);
    return t;
}

int shale_open_tree(shale_db *db, const char *name, shale_tree **treep)
{
    int rc = SHALE_OK;
    size_t nlen;
    if (!treep)
        return SHALE_EINVAL;
    RET(check_name(db, &name, &nlen));
    pthread_mutex_lock(&db->tree_mu);
    struct shale_tree *t = tree_find(db, name);
    if (!t) {
        if (db->opts.read_only)
            ERR_SET(SHALE_EREADONLY);
        ERR(create_tree(db, name, nlen, &t));
    }
    *treep = t;
err:
    pthread_mutex_unlock(&db->tree_mu);
    return rc;
}

/* clear_tree -- delete every key of tree t atomically: one range tombstone. */
static int clear_tree(shale_db *db, struct shale_tree *t)
{
    shale_batch b = {0};
    int rc = batch_add_range(&b, t->id, NULL, 0, NULL, 0);
    if (rc == SHALE_OK)
        rc = db_write(db, &b);
    free(b.buf);
    return rc;
}

int shale_clear_tree(shale_tree *t)
{
    if (!t || atomic_load_explicit(&t->dropped, memory_order_relaxed))
        return SHALE_EINVAL;
    return clear_tree(t->db, t);
}

int shale_drop_tree(shale_db *db, const char *name)
{
    int rc = SHALE_OK;
    uint8_t key[SHALE_MAX_TREE_NAME + 1];
    shale_batch b = {0};
    size_t nlen;
    RET(check_name(db, &name, &nlen));
    if (db->opts.read_only)
        return SHALE_EREADONLY;
    pthread_mutex_lock(&db->tree_mu);
    struct shale_tree *t = tree_find(db, name);
    if (!t)
        ERR_SET(SHALE_NOTFOUND);
    if (t->id == TREE_ID_DEFAULT) {
        rc = clear_tree(db, t);
        goto err;
    }
    ERR(batch_add(&b, NODE_KIND_TOMBSTONE, TREE_ID_CATALOG, key, catalog_key(key, name, nlen),
                  NULL, 0));
    ERR(batch_add_range(&b, t->id, NULL, 0, NULL, 0));
    ERR(db_write(db, &b));
    /* Write-outs skip a dropped tree's keys as soon as it is marked; the drop
     * must be durable by then, or a crash could bring back the tree empty. */
    ERR(shale_flush(db));
    t->dropped = true;
err:
    pthread_mutex_unlock(&db->tree_mu);
    free(b.buf);
    return rc;
}
