/*
 * log.c -- the write-ahead log: a writer with group commit, and a reader that
 * stops at the first torn or damaged record.
 *
 * Format (log.h states it; repeated here as the one place the code follows):
 *   0  u32 crc   crc32c_mask(crc32c(bytes [4, 17 + length)))
 *   4  u32 length of the payload (at most LG_MAX_PAYLOAD)
 *   8  u8  type
 *   9  u64 seq
 *  17  payload
 * Records follow each other from offset 0; there is no padding and no file
 * header.  Integers are little-endian.
 *
 * Writer.  Three mutexes, always taken in the order sync_mu -> io_mu -> mu:
 *   - mu guards the append state: the active buffer, `size` (the file offset
 *     just past the last appended byte) and the sticky error.
 *   - io_mu serialises file writes, so bytes reach the file in append order.
 *     A write-out swaps the active buffer for the spare one under mu, then
 *     writes the full one with only io_mu held: appenders keep filling the
 *     new active buffer during the syscall.  The spare buffer is touched only
 *     by the holder of io_mu.
 *   - sync_mu makes syncs take turns; a thread that waited re-checks `synced`
 *     and returns at once when an earlier sync covered its bytes (group
 *     commit).
 * A record larger than the buffer bypasses it: under io_mu and mu the writer
 * reserves its offset and takes the buffered bytes, then writes both, in
 * that order, with only io_mu held.
 *
 * Errors are sticky: after a failed write or sync the file's contents past
 * `synced` are unknown, so every later append, write-out and sync returns the
 * first error.  `synced` only grows, and only after env->sync returned OK.
 *
 * Reader.  Reads ahead in chunks of LG_READ_AHEAD (never more than the file
 * holds); a record longer than that is read into a buffer of its own, sized
 * from its length field only after the length was checked against the file
 * size, so damaged lengths cannot make it allocate more than the file.
 */
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "../space/common.h"
#include "../space/crc32c.h"

#define LG_READ_AHEAD ((size_t)1 << 20)

struct lg_writer {
    sp_env *env;
    sp_file *f;
    pthread_mutex_t mu;
    pthread_mutex_t io_mu;
    pthread_mutex_t sync_mu;
    /* under mu */
    uint8_t *buf; /* active buffer: bytes [buf_off, buf_off + len) */
    size_t len;
    uint64_t buf_off;
    int err;        /* sticky error, SHALE_OK while healthy */
    uint8_t *spare; /* under io_mu */
    size_t cap;     /* size of buf and of spare; fixed */
    /* written under mu (size) or sync_mu (synced), read without a lock */
    _Atomic uint64_t size;
    _Atomic uint64_t synced;
};

/* --- writer ---------------------------------------------------------------- */

/* lg_header -- fill the LG_HDR-byte header of a record, crc included. */
static void lg_header(uint8_t *h, uint8_t type, uint64_t seq, const void *payload, size_t len)
{
    put_u32(h + 4, (uint32_t)len);
    h[8] = type;
    put_u64(h + 9, seq);
    uint32_t crc = crc32c_extend(0, h + 4, LG_HDR - 4);
    crc = crc32c_extend(crc, payload, len);
    put_u32(h, crc32c_mask(crc));
}

/* lg_fail -- record err as the writer's sticky error (the first one wins). */
static int lg_fail(lg_writer *lw, int err)
{
    pthread_mutex_lock(&lw->mu);
    if (lw->err == SHALE_OK)
        lw->err = err;
    err = lw->err;
    pthread_mutex_unlock(&lw->mu);
    return err;
}

/* lg_take -- with io_mu and mu held: hand the active buffer's bytes to the
 * caller (as the spare) and start an empty active buffer after them. */
static void lg_take(lg_writer *lw, const uint8_t **data, size_t *n, uint64_t *off)
{
    uint8_t *full = lw->buf;
    *data = full;
    *n = lw->len;
    *off = lw->buf_off;
    lw->buf = lw->spare;
    lw->spare = full;
    lw->buf_off += lw->len;
    lw->len = 0;
}

/* lg_put -- with io_mu held and mu released: write n bytes at off, or record
 * the failure. */
static int lg_put(lg_writer *lw, const void *data, size_t n, uint64_t off)
{
    if (n == 0)
        return SHALE_OK;
    int rc = lw->env->write(lw->f, data, n, off);
    return rc < 0 ? lg_fail(lw, rc) : SHALE_OK;
}

/* lg_flush -- write every appended byte to the file; *upto gets the offset
 * the file now holds (all of it written, none of it necessarily synced). */
static int lg_flush(lg_writer *lw, uint64_t *upto)
{
    const uint8_t *data;
    size_t n;
    uint64_t off;
    int rc;

    pthread_mutex_lock(&lw->io_mu);
    pthread_mutex_lock(&lw->mu);
    rc = lw->err;
    if (rc == SHALE_OK)
        lg_take(lw, &data, &n, &off);
    pthread_mutex_unlock(&lw->mu);
    if (rc == SHALE_OK) {
        rc = lg_put(lw, data, n, off);
        if (upto != NULL)
            *upto = off + n;
    }
    pthread_mutex_unlock(&lw->io_mu);
    return rc;
}

/* lg_append_big -- a record longer than the buffer: write out what is
 * buffered, then the record itself, straight to the file. */
static int lg_append_big(lg_writer *lw, const uint8_t *hdr, const void *payload, size_t len,
                         uint64_t *end)
{
    const uint8_t *data;
    size_t n;
    uint64_t off;
    int rc;

    pthread_mutex_lock(&lw->io_mu);
    pthread_mutex_lock(&lw->mu);
    rc = lw->err;
    if (rc == SHALE_OK) {
        lg_take(lw, &data, &n, &off);
        lw->buf_off += LG_HDR + len; /* the record's place in the file */
        atomic_store_explicit(&lw->size, lw->buf_off, memory_order_relaxed);
        if (end != NULL)
            *end = lw->buf_off;
    }
    pthread_mutex_unlock(&lw->mu);
    if (rc == SHALE_OK)
        rc = lg_put(lw, data, n, off);
    if (rc == SHALE_OK)
        rc = lg_put(lw, hdr, LG_HDR, off + n);
    if (rc == SHALE_OK)
        rc = lg_put(lw, payload, len, off + n + LG_HDR);
    pthread_mutex_unlock(&lw->io_mu);
    return rc;
}

/* lg_try_buffer -- copy a record into the active buffer if it fits there;
 * *done tells whether it did. */
static int lg_try_buffer(lg_writer *lw, const uint8_t *hdr, const void *payload, size_t len,
                         uint64_t *end, bool *done)
{
    size_t rec = LG_HDR + len;

    pthread_mutex_lock(&lw->mu);
    int rc = lw->err;
    *done = false;
    if (rc == SHALE_OK && rec <= lw->cap - lw->len) {
        memcpy(lw->buf + lw->len, hdr, LG_HDR);
        if (len)
            memcpy(lw->buf + lw->len + LG_HDR, payload, len);
        lw->len += rec;
        uint64_t e = lw->buf_off + lw->len;
        atomic_store_explicit(&lw->size, e, memory_order_relaxed);
        if (end != NULL)
            *end = e;
        *done = true;
    }
    pthread_mutex_unlock(&lw->mu);
    return rc;
}

/* lg_append -- buffer one record (see log.h). */
int lg_append(lg_writer *lw, uint8_t type, uint64_t seq, const void *payload, size_t len,
              uint64_t *end)
{
    uint8_t hdr[LG_HDR];
    bool done;

    if (len > LG_MAX_PAYLOAD)
        return SHALE_ETOOBIG;
    lg_header(hdr, type, seq, payload, len);
    if (LG_HDR + len > lw->cap)
        return lg_append_big(lw, hdr, payload, len, end);
    /* A full buffer is written out and the append retried; with several
     * appenders the fresh buffer may fill again before this one gets it. */
    for (;;) {
        RET(lg_try_buffer(lw, hdr, payload, len, end, &done));
        if (done)
            return SHALE_OK;
        RET(lg_flush(lw, NULL));
    }
}

/* lg_write_out -- hand the buffered bytes to the file (no sync). */
int lg_write_out(lg_writer *lw)
{
    return lg_flush(lw, NULL);
}

/* lg_size -- bytes appended so far, buffered ones included. */
uint64_t lg_size(lg_writer *lw)
{
    return atomic_load_explicit(&lw->size, memory_order_relaxed);
}

/* lg_sync -- group commit: make every byte up to upto durable. */
int lg_sync(lg_writer *lw, uint64_t upto)
{
    uint64_t target = 0;
    int rc;

    /* "everything" is what was appended before this call */
    upto = MIN(upto, lg_size(lw));
    if (atomic_load_explicit(&lw->synced, memory_order_acquire) >= upto)
        return SHALE_OK;
    pthread_mutex_lock(&lw->sync_mu);
    if (atomic_load_explicit(&lw->synced, memory_order_acquire) >= upto) {
        pthread_mutex_unlock(&lw->sync_mu);
        return SHALE_OK;
    }
    rc = lg_flush(lw, &target);
    if (rc == SHALE_OK) {
        rc = lw->env->sync(lw->f);
        if (rc < 0)
            rc = lg_fail(lw, rc);
    }
    if (rc == SHALE_OK && target > atomic_load_explicit(&lw->synced, memory_order_relaxed))
        atomic_store_explicit(&lw->synced, target, memory_order_release);
    pthread_mutex_unlock(&lw->sync_mu);
    return rc;
}

/* lg_synced -- bytes known durable. */
uint64_t lg_synced(lg_writer *lw)
{
    return atomic_load_explicit(&lw->synced, memory_order_acquire);
}

/* lg_writer_free -- release the writer's memory and mutexes (not the file). */
static void lg_writer_free(lg_writer *lw)
{
    pthread_mutex_destroy(&lw->mu);
    pthread_mutex_destroy(&lw->io_mu);
    pthread_mutex_destroy(&lw->sync_mu);
    free(lw->buf);
    free(lw->spare);
    free(lw);
}

/* lg_writer_open -- create (or empty) the log file path; see log.h. */
int lg_writer_open(sp_env *env, const char *path, size_t buf_bytes, lg_writer **lwp)
{
    int rc = SHALE_OK;
    lg_writer *lw = calloc(1, sizeof(*lw));

    *lwp = NULL;
    if (lw == NULL)
        return SHALE_ENOMEM;
    pthread_mutex_init(&lw->mu, NULL);
    pthread_mutex_init(&lw->io_mu, NULL);
    pthread_mutex_init(&lw->sync_mu, NULL);
    atomic_init(&lw->size, 0);
    atomic_init(&lw->synced, 0);
    lw->env = env;
    lw->cap = buf_bytes;
    /* malloc(0) may return NULL: keep a byte so NULL always means failure */
    lw->buf = malloc(buf_bytes ? buf_bytes : 1);
    lw->spare = malloc(buf_bytes ? buf_bytes : 1);
    if (lw->buf == NULL || lw->spare == NULL)
        ERR_SET(SHALE_ENOMEM);
    ERR(env->open(env, path, SP_O_CREATE, &lw->f));
    uint64_t old;
    ERR(env->size(lw->f, &old));
    if (old > 0) {
        /* old records must not come back after a crash and be replayed */
        ERR(env->truncate(lw->f, 0));
        ERR(env->sync(lw->f));
    }
    *lwp = lw;
    return SHALE_OK;
err:
    if (lw->f != NULL)
        env->close(lw->f);
    lg_writer_free(lw);
    return rc;
}

/* lg_writer_close -- write out, optionally sync, close and free.  NULL ok. */
int lg_writer_close(lg_writer *lw, int sync)
{
    int rc;

    if (lw == NULL)
        return SHALE_OK;
    rc = sync ? lg_sync(lw, UINT64_MAX) : lg_flush(lw, NULL);
    int crc = lw->env->close(lw->f);
    if (rc == SHALE_OK)
        rc = crc;
    lg_writer_free(lw);
    return rc;
}

/* --- reader ---------------------------------------------------------------- */

struct lg_reader {
    sp_env *env;
    sp_file *f;
    uint64_t fsize;
    uint64_t pos; /* offset of the next record = end of the valid prefix */
    bool done;    /* the valid prefix has ended */
    uint8_t *ra;  /* read-ahead: file bytes [ra_off, ra_off + ra_len) */
    size_t ra_cap;
    size_t ra_len;
    uint64_t ra_off;
    uint8_t *big; /* a record longer than the read-ahead buffer */
    size_t big_cap;
};

/* lr_window -- make file bytes [off, off + n) available, n <= ra_cap, and
 * return a pointer to them.  The caller checked off + n <= fsize. */
static int lr_window(lg_reader *lr, uint64_t off, size_t n, const uint8_t **p)
{
    if (off < lr->ra_off || off + n > lr->ra_off + lr->ra_len) {
        size_t want = (size_t)MIN((uint64_t)lr->ra_cap, lr->fsize - off);
        RET(lr->env->read(lr->f, lr->ra, want, off));
        lr->ra_off = off;
        lr->ra_len = want;
    }
    *p = lr->ra + (off - lr->ra_off);
    return SHALE_OK;
}

/* lr_record -- read a whole record of rec bytes at off (header included). */
static int lr_record(lg_reader *lr, uint64_t off, size_t rec, const uint8_t **p)
{
    if (rec <= lr->ra_cap)
        return lr_window(lr, off, rec, p);
    if (rec > lr->big_cap) {
        uint8_t *b = realloc(lr->big, rec);
        if (b == NULL)
            return SHALE_ENOMEM;
        lr->big = b;
        lr->big_cap = rec;
    }
    RET(lr->env->read(lr->f, lr->big, rec, off));
    *p = lr->big;
    return SHALE_OK;
}

/* lr_zero -- whether n bytes are all zero. */
static bool lr_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* lg_reader_open -- open path for reading its records from the start. */
int lg_reader_open(sp_env *env, const char *path, lg_reader **lrp)
{
    int rc = SHALE_OK;
    lg_reader *lr = calloc(1, sizeof(*lr));

    *lrp = NULL;
    if (lr == NULL)
        return SHALE_ENOMEM;
    lr->env = env;
    ERR(env->open(env, path, SP_O_RDONLY, &lr->f));
    ERR(env->size(lr->f, &lr->fsize));
    lr->ra_cap = (size_t)MIN((uint64_t)LG_READ_AHEAD, lr->fsize);
    lr->ra = malloc(lr->ra_cap ? lr->ra_cap : 1);
    if (lr->ra == NULL)
        ERR_SET(SHALE_ENOMEM);
    *lrp = lr;
    return SHALE_OK;
err:
    lg_reader_close(lr);
    return rc;
}

/* lg_reader_next -- the next good record, or SHALE_NOTFOUND at the end of the
 * valid prefix. */
int lg_reader_next(lg_reader *lr, uint8_t *type, uint64_t *seq, const void **payload, size_t *len)
{
    const uint8_t *h;

    if (lr->done || lr->fsize - lr->pos < LG_HDR) {
        lr->done = true;
        return SHALE_NOTFOUND;
    }
    RET(lr_window(lr, lr->pos, LG_HDR, &h));
    uint32_t n = get_u32(h + 4);
    if (lr_zero(h, LG_HDR) || n > LG_MAX_PAYLOAD || lr->fsize - lr->pos - LG_HDR < n) {
        lr->done = true;
        return SHALE_NOTFOUND;
    }
    size_t rec = LG_HDR + (size_t)n;
    RET(lr_record(lr, lr->pos, rec, &h));
    if (crc32c_mask(crc32c(h + 4, rec - 4)) != get_u32(h)) {
        lr->done = true;
        return SHALE_NOTFOUND;
    }
    *type = h[8];
    *seq = get_u64(h + 9);
    *payload = h + LG_HDR;
    *len = n;
    lr->pos += rec;
    return SHALE_OK;
}

/* lg_reader_valid_end -- offset just past the last good record read. */
uint64_t lg_reader_valid_end(const lg_reader *lr)
{
    return lr->pos;
}

/* lg_reader_file_size -- the file's size when the reader opened it. */
uint64_t lg_reader_file_size(const lg_reader *lr)
{
    return lr->fsize;
}

/* lg_reader_close -- close the file and free the reader.  NULL ok. */
void lg_reader_close(lg_reader *lr)
{
    if (lr == NULL)
        return;
    if (lr->f != NULL)
        lr->env->close(lr->f);
    free(lr->ra);
    free(lr->big);
    free(lr);
}
