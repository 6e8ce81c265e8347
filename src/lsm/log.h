/*
 * log.h -- the write-ahead log: files of CRC-framed records.
 *
 * Record (little-endian), LG_HDR = 17 bytes then the payload:
 *   0  u32 crc   crc32c_mask(crc32c(bytes [4, 17 + length)))
 *   4  u32 length of the payload (at most LG_MAX_PAYLOAD)
 *   8  u8  type  (LG_T_*)
 *   9  u64 seq   sequence number of the record's first write
 *  17  payload
 * A file is a plain sequence of records from offset 0; there is no file
 * header (the file name carries its number).  A torn tail -- a short header,
 * a length past the end of the file, a crc mismatch, or a zero-filled header --
 * ends the valid part of the file: the reader reports the offset where the
 * valid prefix ends and recovery truncates there.
 *
 * The writer buffers appends in memory and writes them to the file in order,
 * when the buffer fills, on lg_write_out, or on lg_sync.  Appends are
 * thread-safe and ordered by the caller (one appender at a time is fine; the
 * writer takes its own lock).  lg_sync(upto) is group commit: a caller whose
 * bytes were already made durable by another thread's sync returns at once;
 * otherwise one sync covers every byte appended so far.
 */
#ifndef SHALE_LOG_H
#define SHALE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "../space/env.h"

#define LG_HDR 17u
#define LG_MAX_PAYLOAD ((uint32_t)0x7fffffff)

enum lg_type {
    LG_T_BATCH = 1, /* a batch of writes (lsm/batch.h encoding) */
};

typedef struct lg_writer lg_writer;

/* lg_writer_open -- create log file path (emptied if it exists) with an
 * append buffer of buf_bytes; the caller syncs the directory. */
int lg_writer_open(sp_env *env, const char *path, size_t buf_bytes, lg_writer **lwp);
/* lg_append -- buffer one record; *end (may be NULL) gets the file offset just
 * past it, to pass to lg_sync.  Errors: SHALE_ETOOBIG, write errors. */
int lg_append(lg_writer *lw, uint8_t type, uint64_t seq, const void *payload, size_t len,
              uint64_t *end);
/* lg_write_out -- hand the buffered bytes to the file (no sync). */
int lg_write_out(lg_writer *lw);
/* lg_sync -- make every byte up to `upto` durable (UINT64_MAX: everything). */
int lg_sync(lg_writer *lw, uint64_t upto);
uint64_t lg_size(lg_writer *lw);        /* bytes appended (buffered included) */
uint64_t lg_synced(lg_writer *lw);      /* bytes known durable */
/* lg_writer_close -- write out, optionally sync, close and free.  NULL ok. */
int lg_writer_close(lg_writer *lw, int sync);

typedef struct lg_reader lg_reader;

int lg_reader_open(sp_env *env, const char *path, lg_reader **lrp);
/* lg_reader_next -- SHALE_OK with the next record (payload valid until the
 * next call), SHALE_NOTFOUND at the end of the valid prefix (clean end or torn
 * tail), or an I/O error. */
int lg_reader_next(lg_reader *lr, uint8_t *type, uint64_t *seq, const void **payload,
                   size_t *len);
uint64_t lg_reader_valid_end(const lg_reader *lr); /* offset after the last good record */
uint64_t lg_reader_file_size(const lg_reader *lr);
void lg_reader_close(lg_reader *lr); /* NULL ok */

#endif
