/*
 * dump.c -- export and import: every tree of a database in one file.
 *
 * Format (version 1), all integers little-endian, varints LEB128:
 *   "SHALEDMP" | u32 version
 *   records, each a type byte and its fields:
 *     'T' varint name length | name      a tree starts ("" is the default
 *                                        tree, first; then by name, each once)
 *     'K' varint key length | key | varint value length | value
 *                                        an entry of the current tree; keys
 *                                        strictly increasing within a tree
 *     'E' u64 entries | u64 trees | u64 XXH3-64 of every byte before the 'E'
 *                                        the end: nothing may follow
 * Export reads one snapshot of every tree.  Import reads the whole file
 * twice: first to check it (structure, limits, counts and hash; and, unless
 * SHALE_IMPORT_OVERWRITE, that no key it holds exists already), then to
 * write it in batches, so a truncated or damaged dump, or one that overlaps
 * the database, is refused before anything is written.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

#include "../pagewriter/node.h"
#include "../space/common.h"
#include "db.h"

#define DUMP_MAGIC "SHALEDMP"
#define DUMP_VERSION 1u
#define DUMP_PROGRESS_EVERY 65536u
#define IMPORT_BATCH_OPS 1024u
#define IMPORT_BATCH_BYTES (4u << 20)

/* ---- writing ---------------------------------------------------------------- */

typedef struct dump_out {
    shale_db *db;
    FILE *f;
    XXH3_state_t *h;
    uint64_t entries, trees, total;
    shale_progress_fn progress;
    void *ctx;
} dump_out;

static int put_bytes(dump_out *o, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, o->f) != n)
        return errno == ENOSPC ? SHALE_ENOSPC : SHALE_EIO;
    XXH3_64bits_update(o->h, p, n);
    return SHALE_OK;
}

static int put_varint(dump_out *o, uint64_t v)
{
    uint8_t b[VARINT_MAX];
    return put_bytes(o, b, varint_put(b, v));
}

static int put_le64(dump_out *o, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return put_bytes(o, b, 8);
}

/* export_entry -- tree_entry_fn: a 'K' record. */
static int export_entry(void *ctx, const uint8_t *k, size_t kl, const void *val, size_t vl)
{
    dump_out *o = ctx;
    RET(put_bytes(o, "K", 1));
    RET(put_varint(o, kl));
    RET(put_bytes(o, k, kl));
    RET(put_varint(o, vl));
    RET(put_bytes(o, val, vl));
    if (++o->entries % DUMP_PROGRESS_EVERY == 0 && o->progress)
        o->progress(o->ctx, o->entries, o->total);
    return SHALE_OK;
}

/* export_tree -- tree id's record and entries at (v, snap). */
static int export_tree(dump_out *o, ver_version *v, uint64_t snap, uint32_t id, const char *name,
                       size_t nlen)
{
    RET(put_bytes(o, "T", 1));
    RET(put_varint(o, nlen));
    RET(put_bytes(o, name, nlen));
    o->trees++;
    return tree_scan(o->db, v, snap, id, export_entry, o);
}

int shale_export(shale_db *db, const char *path, shale_progress_fn progress, void *ctx)
{
    int rc = SHALE_OK;
    uint64_t snap;
    tree_name *trees = NULL;
    size_t ntrees = 0;
    dump_out o = {.db = db, .progress = progress, .ctx = ctx};
    if (!db || !path)
        return SHALE_EINVAL;
    ver_version *v = db_pin(db, &snap);
    for (size_t i = 0; i < v->nsegs; i++)
        o.total += v->segs[i]->tree.entries;
    o.total += mt_count(v->mem.mt);
    if (!(o.h = XXH3_createState()) || XXH3_64bits_reset(o.h) != XXH_OK)
        ERR_SET(SHALE_ENOMEM);
    if (!(o.f = fopen(path, "wbx")))
        ERR_SET(errno == EEXIST ? SHALE_EEXIST : errno == ENOENT ? SHALE_ENOENT : SHALE_EIO);
    uint8_t ver[4];
    put_u32(ver, DUMP_VERSION);
    ERR(put_bytes(&o, DUMP_MAGIC, 8));
    ERR(put_bytes(&o, ver, 4));
    ERR(tree_names(v, snap, &trees, &ntrees));
    ERR(export_tree(&o, v, snap, TREE_ID_DEFAULT, "", 0));
    for (size_t i = 0; i < ntrees; i++)
        ERR(export_tree(&o, v, snap, trees[i].id, trees[i].name, trees[i].nlen));
    uint64_t sum = XXH3_64bits_digest(o.h);
    ERR(put_bytes(&o, "E", 1));
    ERR(put_le64(&o, o.entries));
    ERR(put_le64(&o, o.trees));
    ERR(put_le64(&o, sum));
    if (fflush(o.f) != 0 || fsync(fileno(o.f)) != 0)
        ERR_SET(SHALE_EIO);
    if (progress)
        progress(ctx, o.entries, o.entries);
err:
    if (o.f && fclose(o.f) != 0 && rc == SHALE_OK)
        rc = SHALE_EIO;
    if (rc < 0 && o.f)
        remove(path); /* no half dump left behind */
    tree_names_free(trees, ntrees);
    XXH3_freeState(o.h);
    ver_unref(v);
    return rc;
}

/* ---- reading ---------------------------------------------------------------- */

typedef struct dump_in {
    FILE *f;
    XXH3_state_t *h;
    uint8_t *buf; /* the current key and value */
    size_t cap;
} dump_in;

/* get_bytes -- n bytes into p (SHALE_ECORRUPT at a premature end). */
static int get_bytes(dump_in *in, void *p, size_t n)
{
    if (n && fread(p, 1, n, in->f) != n)
        return ferror(in->f) ? SHALE_EIO : SHALE_ECORRUPT;
    XXH3_64bits_update(in->h, p, n);
    return SHALE_OK;
}

static int get_varint(dump_in *in, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        RET(get_bytes(in, &b, 1));
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return SHALE_OK;
    }
    return SHALE_ECORRUPT;
}

static int get_le64(FILE *f, uint64_t *v)
{
    uint8_t b[8];
    if (fread(b, 1, 8, f) != 8)
        return ferror(f) ? SHALE_EIO : SHALE_ECORRUPT;
    *v = 0;
    for (int i = 0; i < 8; i++)
        *v |= (uint64_t)b[i] << (8 * i);
    return SHALE_OK;
}

/* get_field -- a varint length (at most max) and that many bytes, into
 * in->buf at off. */
static int get_field(dump_in *in, size_t off, uint64_t max, size_t *len)
{
    uint64_t n;
    RET(get_varint(in, &n));
    if (n > max)
        return SHALE_ECORRUPT;
    if (off + n > in->cap || !in->buf) { /* (never NULL, even for empty fields) */
        size_t ncap = MAX(MAX(off + (size_t)n, 2 * in->cap), (size_t)64);
        uint8_t *nb = realloc(in->buf, ncap);
        if (!nb)
            return SHALE_ENOMEM;
        in->buf = nb;
        in->cap = ncap;
    }
    *len = (size_t)n;
    return get_bytes(in, in->buf + off, *len);
}

/* What one pass over a dump does with it. */
typedef struct import_pass {
    shale_db *db;
    bool apply;       /* the second pass: write */
    bool overwrite;   /* existing keys may be replaced */
    shale_buf *conflict;
    shale_progress_fn progress;
    void *ctx;
    uint64_t total;   /* entries (from the first pass) */
    /* state */
    char name[SHALE_MAX_TREE_NAME + 1];
    size_t nlen;
    bool have_tree;
    shale_tree *t;    /* NULL in the check pass when the tree does not exist */
    shale_batch batch;
    uint8_t *last;    /* the previous key of the tree */
    size_t lastlen, lastcap;
    bool have_last;
    uint64_t entries, trees;
    shale_buf probe;
} import_pass;

static int flush_batch(import_pass *p)
{
    if (!p->batch.count)
        return SHALE_OK;
    int rc = shale_batch_apply(p->db, &p->batch);
    shale_batch_clear(&p->batch);
    return rc;
}

/* on_tree -- a 'T' record (name in in->buf). */
static int on_tree(import_pass *p, const uint8_t *name, size_t nlen)
{
    if (memchr(name, 0, nlen))
        return SHALE_ECORRUPT;
    if (p->have_tree) { /* the default tree first, then names in order */
        if (key_cmp(name, nlen, p->name, p->nlen) <= 0)
            return SHALE_ECORRUPT;
    } else if (nlen != 0) {
        return SHALE_ECORRUPT;
    }
    memcpy(p->name, name, nlen);
    p->name[nlen] = 0;
    p->nlen = nlen;
    p->have_tree = true;
    p->have_last = false;
    p->trees++;
    if (p->apply) {
        RET(flush_batch(p));
        return shale_open_tree(p->db, p->name, &p->t);
    }
    p->t = tree_lookup(p->db, p->name);
    return SHALE_OK;
}

/* on_entry -- a 'K' record. */
static int on_entry(import_pass *p, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    if (!p->have_tree || (p->have_last && key_cmp(k, kl, p->last, p->lastlen) <= 0))
        return SHALE_ECORRUPT;
    if (kl > p->lastcap) {
        uint8_t *nb = realloc(p->last, kl);
        if (!nb)
            return SHALE_ENOMEM;
        p->last = nb;
        p->lastcap = kl;
    }
    memcpy(p->last, k, kl);
    p->lastlen = kl;
    p->have_last = true;
    p->entries++;
    if (!p->apply) {
        if (p->overwrite || !p->t)
            return SHALE_OK;
        int rc = shale_get(p->t, k, kl, &p->probe);
        if (rc == SHALE_NOTFOUND)
            return SHALE_OK;
        RET(rc);
        if (p->conflict) { /* tree name, a zero byte, the key */
            RET(buf_set(p->conflict, p->name, p->nlen + 1));
            uint8_t *nb = realloc(p->conflict->data, p->nlen + 1 + kl + 1);
            if (!nb)
                return SHALE_ENOMEM;
            memcpy(nb + p->nlen + 1, k, kl);
            p->conflict->data = nb;
            p->conflict->len = p->nlen + 1 + kl;
            p->conflict->cap = p->nlen + 1 + kl + 1;
        }
        return SHALE_EEXIST;
    }
    RET(shale_batch_insert(&p->batch, p->t, k, kl, v, vl));
    if (p->batch.count >= IMPORT_BATCH_OPS || p->batch.len >= IMPORT_BATCH_BYTES)
        RET(flush_batch(p));
    if (p->entries % DUMP_PROGRESS_EVERY == 0 && p->progress)
        p->progress(p->ctx, p->entries, p->total);
    return SHALE_OK;
}

/* import_pass_run -- read the dump at path once, doing what p says. */
static int import_pass_run(const char *path, import_pass *p)
{
    int rc = SHALE_OK;
    dump_in in = {0};
    uint8_t hdr[12];
    if (!(in.f = fopen(path, "rb")))
        return errno == ENOENT ? SHALE_ENOENT : SHALE_EIO;
    if (!(in.h = XXH3_createState()) || XXH3_64bits_reset(in.h) != XXH_OK)
        ERR_SET(SHALE_ENOMEM);
    ERR(get_bytes(&in, hdr, sizeof hdr));
    if (memcmp(hdr, DUMP_MAGIC, 8) != 0)
        ERR_SET(SHALE_ECORRUPT);
    if (get_u32(hdr + 8) != DUMP_VERSION)
        ERR_SET(SHALE_EFORMAT);
    for (;;) {
        uint8_t type;
        size_t kl, vl;
        if (fread(&type, 1, 1, in.f) != 1)
            ERR_SET(ferror(in.f) ? SHALE_EIO : SHALE_ECORRUPT); /* no end record */
        if (type == 'E')
            break;
        XXH3_64bits_update(in.h, &type, 1);
        if (type == 'T') {
            ERR(get_field(&in, 0, SHALE_MAX_TREE_NAME, &kl));
            ERR(on_tree(p, in.buf, kl));
        } else if (type == 'K') {
            ERR(get_field(&in, 0, SHALE_MAX_KEY_SIZE, &kl));
            ERR(get_field(&in, kl, SHALE_MAX_VALUE_SIZE, &vl));
            ERR(on_entry(p, in.buf, kl, in.buf + kl, vl));
        } else {
            ERR_SET(SHALE_ECORRUPT);
        }
    }
    uint64_t entries, trees, sum, extra;
    uint64_t want = XXH3_64bits_digest(in.h);
    ERR(get_le64(in.f, &entries));
    ERR(get_le64(in.f, &trees));
    ERR(get_le64(in.f, &sum));
    if (fread(&extra, 1, 1, in.f) != 0 || entries != p->entries || trees != p->trees ||
        sum != want)
        ERR_SET(SHALE_ECORRUPT);
    if (p->apply)
        ERR(flush_batch(p));
err:
    fclose(in.f);
    XXH3_freeState(in.h);
    free(in.buf);
    return rc;
}

int shale_import(shale_db *db, const char *path, int flags, shale_buf *conflict,
                 shale_progress_fn progress, void *ctx)
{
    if (!db || !path || (flags & ~SHALE_IMPORT_OVERWRITE))
        return SHALE_EINVAL;
    if (db->opts.read_only)
        return SHALE_EREADONLY;
    import_pass check = {.db = db, .overwrite = flags & SHALE_IMPORT_OVERWRITE,
                         .conflict = conflict};
    int rc = import_pass_run(path, &check);
    shale_buf_free(&check.probe);
    free(check.last);
    free(check.batch.buf);
    if (rc < 0)
        return rc;
    import_pass apply = {.db = db, .apply = true, .progress = progress, .ctx = ctx,
                         .total = check.entries};
    rc = import_pass_run(path, &apply);
    free(apply.last);
    free(apply.batch.buf);
    if (rc == SHALE_OK && progress)
        progress(ctx, apply.entries, apply.entries);
    return rc;
}
