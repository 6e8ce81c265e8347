/*
 * snapshot.c -- read views across all trees: a pinned version and the
 * sequence number it was pinned at, so every get and iterator through one
 * snapshot sees the same instant, whatever is written, written out or
 * merged meanwhile.  A snapshot keeps that version's memtables and pages
 * alive (pages a merge frees become zombies until it is closed).
 */
#include <stdlib.h>

#include "../space/common.h"
#include "db.h"

int shale_snapshot_open(shale_db *db, shale_snapshot **sp)
{
    if (!db || !sp)
        return SHALE_EINVAL;
    shale_snapshot *s = malloc(sizeof *s);
    if (!s)
        return SHALE_ENOMEM;
    s->db = db;
    s->v = db_pin(db, &s->seq);
    *sp = s;
    return SHALE_OK;
}

void shale_snapshot_close(shale_snapshot *s)
{
    if (!s)
        return;
    ver_unref(s->v);
    free(s);
}

int shale_snapshot_get(shale_snapshot *s, shale_tree *t, const void *key, size_t klen,
                       shale_buf *val)
{
    if (!s || !val || (t && s->db != t->db))
        return SHALE_EINVAL;
    RET(tree_check_key(t, key, klen));
    uint8_t *ik = malloc(klen + IKEY_PREFIX);
    if (!ik)
        return SHALE_ENOMEM;
    ikey_make(ik, t->id, key, klen);
    int rc = db_get_ikey(s->db, s->v, s->seq, ik, klen + IKEY_PREFIX, val);
    free(ik);
    return rc;
}
