/*
 * iter.c -- the public iterator: a merging cursor over a pinned version,
 * restricted to one tree's key range (and the caller's bounds), hiding
 * tombstones, handing out keys without the tree prefix.
 */
#include <stdlib.h>

#include "../space/common.h"
#include "cursor.h"
#include "db.h"

struct shale_iter {
    shale_tree *t;
    cur_cursor *c;
    bool positioned;
    const void *val;
    size_t vlen;
    uint8_t *kbuf; /* scratch for seek keys */
    size_t kcap;
};

/* prefixed -- tree prefix + key in it->kbuf. */
static int prefixed(shale_iter *it, const void *key, size_t klen, uint8_t **out)
{
    if (klen + IKEY_PREFIX > it->kcap) {
        uint8_t *nb = realloc(it->kbuf, klen + IKEY_PREFIX);
        if (!nb)
            return SHALE_ENOMEM;
        it->kbuf = nb;
        it->kcap = klen + IKEY_PREFIX;
    }
    ikey_make(it->kbuf, it->t->id, key, klen);
    *out = it->kbuf;
    return SHALE_OK;
}

int shale_iter_set_bounds(shale_iter *it, const void *lo, size_t lolen, const void *hi,
                          size_t hilen)
{
    int rc = SHALE_OK;
    uint8_t *l = NULL, *h = NULL;
    if (!it || (!lo && lolen) || (!hi && hilen))
        return SHALE_EINVAL;
    if (lolen > SHALE_MAX_KEY_SIZE || hilen > SHALE_MAX_KEY_SIZE)
        return SHALE_ETOOBIG;
    it->positioned = false;
    if (!(l = malloc(lolen + IKEY_PREFIX)) || !(h = malloc(hilen + IKEY_PREFIX)))
        ERR_SET(SHALE_ENOMEM);
    ikey_make(l, it->t->id, lo, lo ? lolen : 0);
    if (hi) {
        ikey_make(h, it->t->id, hi, hilen);
    } else {
        put_be32(h, it->t->id + 1);
        hilen = 0;
    }
    rc = cur_set_bounds(it->c, l, (lo ? lolen : 0) + IKEY_PREFIX, h, hilen + IKEY_PREFIX);
err:
    free(l);
    free(h);
    return rc;
}

/* iter_open -- an iterator over tree t in version v at snapshot snap. */
static int iter_open(shale_tree *t, ver_version *v, uint64_t snap, shale_iter **itp)
{
    int rc;
    shale_iter *it = calloc(1, sizeof *it);
    if (!it)
        return SHALE_ENOMEM;
    it->t = t;
    rc = cur_open(v, snap, true, 0, v->nsegs, CUR_HIDE, &it->c);
    if (rc == SHALE_OK) {
        cur_use_operators(it->c, t->db);
        rc = shale_iter_set_bounds(it, NULL, 0, NULL, 0);
    }
    if (rc < 0) {
        shale_iter_close(it);
        return rc;
    }
    *itp = it;
    return SHALE_OK;
}

int shale_iter_open(shale_tree *t, shale_iter **itp)
{
    uint64_t snap;
    if (!t || !itp || atomic_load(&t->dropped))
        return SHALE_EINVAL;
    ver_version *v = db_pin(t->db, &snap);
    int rc = iter_open(t, v, snap, itp);
    ver_unref(v);
    return rc;
}

int shale_iter_open_at(shale_tree *t, shale_snapshot *s, shale_iter **itp)
{
    if (!t || !s || !itp || atomic_load(&t->dropped) || s->db != t->db)
        return SHALE_EINVAL;
    return iter_open(t, s->v, s->seq, itp);
}

/* moved -- record the result of a cursor move and load the value. */
static int moved(shale_iter *it, int rc)
{
    it->positioned = (rc == SHALE_OK);
    if (rc == SHALE_OK) {
        rc = cur_value(it->c, &it->val, &it->vlen);
        if (rc < 0)
            it->positioned = false;
    }
    return rc;
}

int shale_iter_first(shale_iter *it) { return it ? moved(it, cur_first(it->c)) : SHALE_EINVAL; }
int shale_iter_last(shale_iter *it) { return it ? moved(it, cur_last(it->c)) : SHALE_EINVAL; }

/* seek -- check the key, then position with cur_seek_ge (dir > 0) or cur_seek_le. */
static int seek(shale_iter *it, const void *key, size_t klen, int dir)
{
    uint8_t *ik;
    if (!it || (!key && klen))
        return SHALE_EINVAL;
    if (klen > SHALE_MAX_KEY_SIZE)
        return SHALE_ETOOBIG;
    RET(prefixed(it, key, klen, &ik));
    klen += IKEY_PREFIX;
    return moved(it, dir > 0 ? cur_seek_ge(it->c, ik, klen) : cur_seek_le(it->c, ik, klen));
}

int shale_iter_seek(shale_iter *it, const void *key, size_t klen) { return seek(it, key, klen, 1); }

int shale_iter_seek_prev(shale_iter *it, const void *key, size_t klen)
{
    return seek(it, key, klen, -1);
}

int shale_iter_next(shale_iter *it)
{
    if (!it)
        return SHALE_EINVAL;
    if (!it->positioned)
        return SHALE_NOTFOUND;
    return moved(it, cur_next(it->c));
}

int shale_iter_prev(shale_iter *it)
{
    if (!it)
        return SHALE_EINVAL;
    if (!it->positioned)
        return SHALE_NOTFOUND;
    return moved(it, cur_prev(it->c));
}

const void *shale_iter_key(const shale_iter *it, size_t *klen)
{
    size_t kl;
    if (!it || !it->positioned) {
        if (klen)
            *klen = 0;
        return NULL;
    }
    const uint8_t *k = cur_key(it->c, &kl);
    if (klen)
        *klen = kl - IKEY_PREFIX;
    return k + IKEY_PREFIX;
}

const void *shale_iter_value(const shale_iter *it, size_t *vlen)
{
    if (!it || !it->positioned) {
        if (vlen)
            *vlen = 0;
        return NULL;
    }
    if (vlen)
        *vlen = it->vlen;
    return it->val ? it->val : "";
}

void shale_iter_close(shale_iter *it)
{
    if (!it)
        return;
    cur_close(it->c);
    free(it->kbuf);
    free(it);
}
