/*
 * ids.c -- shale_generate_id: unique, strictly increasing ids across
 * restarts and crashes.
 *
 * Ids are leased in blocks of ID_LEASE: the catalog key '#id' holds the
 * ceiling of the current lease (u64, as the catalog's other numbers), written and made
 * durable (shale_flush) before any id at or above the old ceiling is handed
 * out.  At open the next id is the ceiling read back, so ids of a lease cut
 * short by a crash are skipped, never repeated.
 */
#include <stdlib.h>

#include "../pagewriter/node.h"
#include "../space/common.h"
#include "db.h"

#define ID_LEASE 4096u
static const char id_key[] = "#id";

int ids_load(shale_db *db, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    if (kl != sizeof id_key - 1 || memcmp(k, id_key, kl) != 0)
        return SHALE_NOTFOUND;
    if (vl != 8)
        return SHALE_ECORRUPT;
    pthread_mutex_lock(&db->id_mu);
    db->id_ceiling = db->next_id = get_u64(v);
    pthread_mutex_unlock(&db->id_mu);
    return SHALE_OK;
}

int shale_generate_id(shale_db *db, uint64_t *id)
{
    int rc = SHALE_OK;
    if (!db || !id)
        return SHALE_EINVAL;
    if (db->opts.read_only)
        return SHALE_EREADONLY;
    pthread_mutex_lock(&db->id_mu);
    if (db->next_id >= db->id_ceiling) {
        if (db->id_ceiling > UINT64_MAX - ID_LEASE)
            ERR_SET(SHALE_ENOSPC);
        uint8_t v[8];
        shale_batch b = {0};
        put_u64(v, db->id_ceiling + ID_LEASE);
        rc = batch_add(&b, NODE_KIND_VALUE, TREE_ID_CATALOG, id_key, sizeof id_key - 1, v, 8);
        if (rc == SHALE_OK)
            rc = db_write(db, &b);
        free(b.buf);
        ERR(rc);
        ERR(shale_flush(db)); /* durable before any id of the new lease is out */
        db->id_ceiling += ID_LEASE;
    }
    *id = db->next_id++;
err:
    pthread_mutex_unlock(&db->id_mu);
    return rc;
}
