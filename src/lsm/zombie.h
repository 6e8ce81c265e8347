/*
 * zombie.h -- pages no version references any more, held until no reader can
 * reach them.
 *
 * Every version gets an id, increasing, when it is made (zb_version_begin)
 * and gives it up when its last reference goes (zb_version_end).  When a
 * write-out or a merge installs a version that no longer references some
 * pages, those pages become zombies tagged with the id of the version they
 * were replaced in: the last version that could reach them.  A zombie goes
 * back to space (fs_retire: pending, reusable after the next durable
 * checkpoint) only once every version with an id up to its tag has ended.
 *
 * Keyed to versions rather than segments, the rule holds however pages move
 * between segments: a page recycled from segment A into B and dropped when B
 * is replaced is tagged with the version that replaced B, so a reader still
 * pinning an older version that lists A keeps it (seeds/004).  Versions end
 * in any order; the live ones are kept in a list in id order, so the oldest
 * live id is its head.
 *
 * Thread safe (one mutex; fs_retire runs under it).
 */
#ifndef SHALE_ZOMBIE_H
#define SHALE_ZOMBIE_H

#include <stdint.h>

#include "../space/blocklist.h"
#include "../space/freespace.h"

typedef struct zb_set zb_set;

/* A version's place in the live list (embedded in the version). */
typedef struct zb_node {
    uint64_t id;
    struct zb_node *prev, *next;
} zb_node;

int zb_open(sp_freespace *fs, zb_set **zp);
/* zb_close -- retire every zombie left (no version may be live) and free. */
void zb_close(zb_set *z);

/* zb_version_begin -- give n the next id and enter it in the live list. */
void zb_version_begin(zb_set *z, zb_node *n);
/* zb_version_end -- n leaves the live list; zombies no live version can
 * reach go to space. */
void zb_version_end(zb_set *z, zb_node *n);

/* zb_add -- pages (taken over; *pages is left empty) were last referenced by
 * version `tag`.  SHALE_ENOMEM leaves *pages as it was. */
int zb_add(zb_set *z, uint64_t tag, sp_blocklist *pages);

typedef struct zb_stats {
    uint64_t pages;      /* zombie pages held now */
    uint64_t versions;   /* live versions */
    uint64_t oldest;     /* id of the oldest live version (0: none) */
    uint64_t retired;    /* pages handed to space so far */
    uint64_t lost;       /* pages whose fs_retire failed (free again after reopen) */
} zb_stats;
void zb_stats_get(zb_set *z, zb_stats *st);

#endif
