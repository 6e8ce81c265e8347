/*
 * tool_stats.h -- print a shale_stats snapshot as an aligned "name: value"
 * table; shared by the shale CLI (`shale stat`) and shale-demo.
 *
 * Each tool is one .c file linked into its own program, so this header holds
 * the printer as static inline functions rather than a separate object.  The
 * table is data (one row per shale_stats field, in the struct's order), so a
 * field added to shale_stats needs one row here and nothing else.  Byte counts
 * are followed by a human-readable size; derived figures (write amplification,
 * cache hit ratio) come last and are marked as such by their names.
 */
#ifndef SHALE_TOOL_STATS_H
#define SHALE_TOOL_STATS_H

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

#include "shale.h"

/* How a row's value is shown. */
enum { TS_COUNT, TS_BYTES };

/* One row: a label, the field's offset in shale_stats and how to show it. */
typedef struct ts_row {
    const char *name;
    size_t off;
    int kind;
} ts_row;

static const ts_row ts_rows[] = {
    {"page size", offsetof(shale_stats, page_size), TS_BYTES},
    {"pages in file", offsetof(shale_stats, file_pages), TS_COUNT},
    {"pages used", offsetof(shale_stats, live_pages), TS_COUNT},
    {"pages free", offsetof(shale_stats, free_pages), TS_COUNT},
    {"pages pending", offsetof(shale_stats, pending_pages), TS_COUNT},
    {"pages zombie", offsetof(shale_stats, zombie_pages), TS_COUNT},
    {"file size", offsetof(shale_stats, file_bytes), TS_BYTES},
    {"log bytes", offsetof(shale_stats, log_bytes), TS_BYTES},
    {"segments", offsetof(shale_stats, segments), TS_COUNT},
    {"young segments", offsetof(shale_stats, young_segments), TS_COUNT},
    {"segment blocks", offsetof(shale_stats, segment_blocks), TS_COUNT},
    {"entries", offsetof(shale_stats, entries), TS_COUNT},
    {"tombstones", offsetof(shale_stats, tombstones), TS_COUNT},
    {"range tombstones", offsetof(shale_stats, range_tombstones), TS_COUNT},
    {"memtable bytes", offsetof(shale_stats, memtable_bytes), TS_BYTES},
    {"memtables", offsetof(shale_stats, memtables), TS_COUNT},
    {"last sequence", offsetof(shale_stats, last_sequence), TS_COUNT},
    {"checkpoints", offsetof(shale_stats, checkpoints), TS_COUNT},
    {"flushes", offsetof(shale_stats, flushes), TS_COUNT},
    {"merges", offsetof(shale_stats, merges), TS_COUNT},
    {"bytes written (user)", offsetof(shale_stats, bytes_written_user), TS_BYTES},
    {"bytes written (log)", offsetof(shale_stats, bytes_written_log), TS_BYTES},
    {"bytes written (pages)", offsetof(shale_stats, bytes_written_pages), TS_BYTES},
    {"cache hits", offsetof(shale_stats, cache_hits), TS_COUNT},
    {"cache misses", offsetof(shale_stats, cache_misses), TS_COUNT},
    {"write stalls", offsetof(shale_stats, write_stalls), TS_COUNT},
    {"stall time (us)", offsetof(shale_stats, stall_micros), TS_COUNT},
    {"leaves", offsetof(shale_stats, leaves), TS_COUNT},
    {"leaves compressed", offsetof(shale_stats, compressed_leaves), TS_COUNT},
    {"leaf cache hits", offsetof(shale_stats, leaf_cache_hits), TS_COUNT},
    {"leaf cache misses", offsetof(shale_stats, leaf_cache_misses), TS_COUNT},
    {"leaf cache bytes", offsetof(shale_stats, leaf_cache_bytes), TS_BYTES},
    {"merge leaves rewritten", offsetof(shale_stats, merge_leaves_rewritten), TS_COUNT},
    {"merge leaves recycled", offsetof(shale_stats, merge_leaves_recycled), TS_COUNT},
    {"merge bytes written", offsetof(shale_stats, merge_bytes_written), TS_BYTES},
    {"merge keys promoted", offsetof(shale_stats, merge_keys_promoted), TS_COUNT},
    {"merge parents written", offsetof(shale_stats, merge_parents_written), TS_COUNT},
    {"merge time (us)", offsetof(shale_stats, merge_micros), TS_COUNT},
    {"partial merges", offsetof(shale_stats, merge_windows), TS_COUNT},
    {"write slowdowns", offsetof(shale_stats, write_slowdowns), TS_COUNT},
    {"longest stall (us)", offsetof(shale_stats, stall_max_micros), TS_COUNT},
    {"transactions committed", offsetof(shale_stats, txn_commits), TS_COUNT},
    {"transaction conflicts", offsetof(shale_stats, txn_reruns), TS_COUNT},
    {"transactions given up", offsetof(shale_stats, txn_conflicts), TS_COUNT},
};

/* The width of the label column: room for the longest label and its colon. */
#define TS_LABEL_WIDTH 26

/* ts_human -- format n bytes as "1.5 MiB" into buf. */
static inline void ts_human(char *buf, size_t cap, uint64_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", n);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
}

/* ts_label -- print "indent" + "name:" padded to the label column. */
static inline void ts_label(FILE *f, const char *indent, const char *name)
{
    char label[64];
    snprintf(label, sizeof label, "%s:", name);
    fprintf(f, "%s%-*s ", indent, TS_LABEL_WIDTH, label);
}

/* ts_print_row -- one row: the raw value, and a readable size for bytes. */
static inline void ts_print_row(FILE *f, const char *indent, const ts_row *r, const shale_stats *st)
{
    uint64_t v = *(const uint64_t *)(const void *)((const char *)st + r->off);
    char human[32];
    ts_label(f, indent, r->name);
    if (r->kind == TS_BYTES && v >= 1024) {
        ts_human(human, sizeof human, v);
        fprintf(f, "%" PRIu64 " (%s)\n", v, human);
    } else {
        fprintf(f, "%" PRIu64 "\n", v);
    }
}

/* ts_ratio -- num / den, or 0 when den is 0. */
static inline double ts_ratio(uint64_t num, uint64_t den)
{
    return den ? (double)num / (double)den : 0.0;
}

/* ts_print -- every field of st, then the derived figures, one per line. */
static inline void ts_print(FILE *f, const char *indent, const shale_stats *st)
{
    for (size_t i = 0; i < sizeof ts_rows / sizeof ts_rows[0]; i++)
        ts_print_row(f, indent, &ts_rows[i], st);
    ts_label(f, indent, "recovered");
    fprintf(f, "%s\n", st->recovered ? "yes" : "no");
    static const char *const codecs[] = {"none", "lz4", "zstd"};
    ts_label(f, indent, "compression");
    fprintf(f, "%s\n",
            st->compression >= 0 && st->compression <= 2 ? codecs[st->compression] : "?");
    for (size_t l = 0; l < SHALE_STATS_LEVELS; l++) {
        if (st->level_bytes[l] == 0)
            continue;
        char name[32], human[32];
        if (l == 0)
            snprintf(name, sizeof name, "young segments bytes");
        else
            snprintf(name, sizeof name, "level %zu bytes", l);
        ts_label(f, indent, name);
        ts_human(human, sizeof human, st->level_bytes[l]);
        fprintf(f, "%" PRIu64 " (%s) in %" PRIu64 " block%s\n", st->level_bytes[l], human,
                st->level_blocks[l], st->level_blocks[l] == 1 ? "" : "s");
    }
    ts_label(f, indent, "write amplification");
    fprintf(f, "%.2f\n",
            ts_ratio(st->bytes_written_log + st->bytes_written_pages, st->bytes_written_user));
    ts_label(f, indent, "cache hit ratio");
    fprintf(f, "%.3f\n", ts_ratio(st->cache_hits, st->cache_hits + st->cache_misses));
}

#endif /* SHALE_TOOL_STATS_H */
