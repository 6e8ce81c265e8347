/*
 * api.c -- the small public entry points: options, error strings, buffers,
 * open, batches and statistics.
 */
#include <stdlib.h>

#include "../pagewriter/node.h"
#include "../space/common.h"
#include "db.h"

void shale_options_default(shale_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->create_if_missing = true;
    o->read_only = false;
    o->sync_writes = false;
    o->flush_every_ms = 500;
    o->cache_size = (size_t)64 << 20;
    o->memtable_size = (size_t)32 << 20;
    o->page_size = 4096;
    o->compression = SHALE_COMPRESSION_NONE;
    o->compression_level = 0;
    o->level_factor = 10;
    o->max_young_segments = 6;
}

const char *shale_strerror(int rc)
{
    switch (rc) {
    case SHALE_OK: return "success";
    case SHALE_NOTFOUND: return "not found";
    case SHALE_EINVAL: return "invalid argument";
    case SHALE_EIO: return "I/O error";
    case SHALE_ECORRUPT: return "data corrupted (checksum or structure check failed)";
    case SHALE_ENOMEM: return "out of memory";
    case SHALE_EBUSY: return "database is already open";
    case SHALE_ETOOBIG: return "key or value too large";
    case SHALE_EMISMATCH: return "compare-and-swap mismatch";
    case SHALE_ECONFLICT: return "transaction conflict";
    case SHALE_EREADONLY: return "database is read-only";
    case SHALE_ENOSPC: return "no space left on device";
    case SHALE_EEXIST: return "already exists";
    case SHALE_ENOENT: return "no such database or tree";
    case SHALE_EFORMAT: return "unsupported file format or settings";
    case SHALE_ENOMERGEOP: return "key holds merge operands and its tree has no merge operator";
    case SHALE_EOVERFLOW: return "watcher queue overflowed: events were dropped";
    default: return "unknown error";
    }
}

void shale_buf_free(shale_buf *buf)
{
    if (!buf)
        return;
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

int shale_buf_set(shale_buf *buf, const void *data, size_t len)
{
    if (!buf || (!data && len))
        return SHALE_EINVAL;
    return buf_set(buf, data, len);
}

int shale_open(const char *path, const shale_options *opts, shale_db **dbp)
{
    return db_open_env(path, opts, sp_env_posix(), dbp);
}

int shale_batch_new(shale_batch **bp)
{
    if (!bp)
        return SHALE_EINVAL;
    *bp = calloc(1, sizeof **bp);
    return *bp ? SHALE_OK : SHALE_ENOMEM;
}

/* batch_check -- the tree belongs to the batch's db (the first tree fixes it). */
static int batch_check(shale_batch *b, shale_tree *t, const void *key, size_t klen)
{
    if (!b)
        return SHALE_EINVAL;
    RET(tree_check_key(t, key, klen));
    if (b->db && b->db != t->db)
        return SHALE_EINVAL;
    b->db = t->db;
    return SHALE_OK;
}

int shale_batch_insert(shale_batch *b, shale_tree *t, const void *key, size_t klen,
                       const void *val, size_t vlen)
{
    RET(batch_check(b, t, key, klen));
    if (!val && vlen)
        return SHALE_EINVAL;
    if (vlen > SHALE_MAX_VALUE_SIZE)
        return SHALE_ETOOBIG;
    return batch_add(b, NODE_KIND_VALUE, t->id, key, klen, val, vlen);
}

int shale_batch_remove(shale_batch *b, shale_tree *t, const void *key, size_t klen)
{
    RET(batch_check(b, t, key, klen));
    return batch_add(b, NODE_KIND_TOMBSTONE, t->id, key, klen, NULL, 0);
}

int shale_batch_merge(shale_batch *b, shale_tree *t, const void *key, size_t klen,
                      const void *operand, size_t oplen)
{
    RET(batch_check(b, t, key, klen));
    if (!operand && oplen)
        return SHALE_EINVAL;
    if (oplen > SHALE_MAX_VALUE_SIZE)
        return SHALE_ETOOBIG;
    return batch_add(b, NODE_KIND_MERGE, t->id, key, klen, operand, oplen);
}

int shale_batch_remove_range(shale_batch *b, shale_tree *t, const void *lo, size_t lolen,
                             const void *hi, size_t hilen)
{
    RET(batch_check(b, t, lo, lolen));
    if (hi || hilen)
        RET(tree_check_key(t, hi, hilen));
    return batch_add_range(b, t->id, lo, lolen, hi, hilen);
}

int shale_batch_apply(shale_db *db, shale_batch *b)
{
    if (!db || !b || (b->db && b->db != db))
        return SHALE_EINVAL;
    if (b->len > (size_t)LG_MAX_PAYLOAD)
        return SHALE_ETOOBIG;
    int rc = db_write(db, b);
    if (rc == SHALE_OK)
        atomic_fetch_add_explicit(&db->st_user_bytes, b->user_bytes, memory_order_relaxed);
    return rc;
}

size_t shale_batch_count(const shale_batch *b) { return b ? b->count : 0; }

void shale_batch_clear(shale_batch *b)
{
    if (!b)
        return;
    b->len = 0;
    b->count = 0;
    b->user_bytes = 0;
    b->db = NULL;
}

void shale_batch_free(shale_batch *b)
{
    if (!b)
        return;
    free(b->buf);
    free(b);
}

int shale_stats_get(shale_db *db, shale_stats *st)
{
    sp_stats ss;
    if (!db || !st)
        return SHALE_EINVAL;
    memset(st, 0, sizeof *st);
    sp_stats_get(db->sp, &ss);
    st->page_size = sp_page_size(db->sp);
    st->file_pages = ss.file_pages;
    st->free_pages = ss.free_pages;
    st->pending_pages = ss.pending_pages;
    st->file_bytes = ss.file_pages * st->page_size;
    st->cache_hits = ss.cache_hits;
    st->cache_misses = ss.cache_misses;
    st->bytes_written_pages = ss.pages_written * st->page_size;
    uint64_t snap;
    ver_version *v = db_pin(db, &snap);
    st->last_sequence = snap;
    st->memtables = 1 + v->nimm;
    st->memtable_bytes = mt_bytes(v->mem.mt);
    for (size_t i = 0; i < v->nimm; i++)
        st->memtable_bytes += mt_bytes(v->imm[i].mt);
    st->range_tombstones = v->gy ? v->gy->n : 0;
    for (size_t i = 0; i <= v->nimm; i++)
        for (const mt_range *r = mt_ranges(i ? v->imm[i - 1].mt : v->mem.mt); r; r = r->next)
            st->range_tombstones++;
    st->segments = v->nsegs;
    for (size_t i = 0; i < v->nsegs; i++) {
        seg_segment *s = v->segs[i];
        if (s->level == 0)
            st->young_segments++;
        st->segment_blocks += s->pages.n;
        st->live_pages += bl_pages(&s->pages);
        st->entries += s->tree.entries;
        st->tombstones += s->tree.tombstones;
        st->leaves += s->tree.leaves;
        st->compressed_leaves += s->tree.compressed_leaves;
        st->levels += s->level > 0;
        st->level_bytes[MIN(s->level, SHALE_STATS_LEVELS - 1)] +=
            bl_pages(&s->pages) * st->page_size;
        st->level_blocks[MIN(s->level, SHALE_STATS_LEVELS - 1)] += s->pages.n;
    }
    ver_unref(v);
    st->zombie_pages = st->file_pages > SP_FIRST_DATA_PAGE + st->live_pages + st->free_pages +
                                            st->pending_pages
                           ? st->file_pages - SP_FIRST_DATA_PAGE - st->live_pages -
                                 st->free_pages - st->pending_pages
                           : 0;
    st->checkpoints = atomic_load(&db->st_checkpoints);
    st->flushes = atomic_load(&db->st_flushes);
    st->merges = atomic_load(&db->st_merges);
    st->bytes_written_user = atomic_load(&db->st_user_bytes);
    st->bytes_written_log = atomic_load(&db->st_log_bytes);
    st->write_stalls = atomic_load(&db->st_stalls);
    st->stall_micros = atomic_load(&db->st_stall_us);
    st->log_bytes = db_log_bytes(db);
    st->recovered = db->recovered;
    st->merge_leaves_rewritten = atomic_load(&db->st_leaves_rewritten);
    st->merge_leaves_recycled = atomic_load(&db->st_leaves_recycled);
    st->merge_bytes_written = atomic_load(&db->st_merge_pages) * st->page_size;
    st->merge_keys_promoted = atomic_load(&db->st_merge_keys);
    st->merge_parents_written = atomic_load(&db->st_merge_parents);
    st->merge_micros = atomic_load(&db->st_merge_us);
    st->merge_windows = atomic_load(&db->st_merge_windows);
    st->txn_commits = atomic_load(&db->st_txn_commits);
    st->txn_reruns = atomic_load(&db->st_txn_reruns);
    st->txn_conflicts = atomic_load(&db->st_txn_conflicts);
    st->write_slowdowns = atomic_load(&db->st_slowdowns);
    st->stall_max_micros = atomic_load(&db->st_stall_max_us);
    st->compression = db->opts.compression;
    node_cache_stats ns;
    node_cache_stats_get(db->store.cache, &ns);
    st->leaf_cache_hits = ns.hits;
    st->leaf_cache_misses = ns.misses;
    st->leaf_cache_bytes = ns.bytes;
    return SHALE_OK;
}
