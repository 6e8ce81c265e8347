/*
 * header.c -- the two header slots of the page file and their spill runs.
 *
 * Slot 0 is page 0 and slot 1 is page 1 (each page_size bytes).  A checkpoint
 * writes the idle slot with the next sequence number and syncs; open takes the
 * valid slot with the higher sequence number, so a torn slot write falls back
 * to the previous checkpoint, which is complete and durable.
 *
 * Slot format (little-endian; SP_HDR_FIXED = 80 bytes, then the inline body;
 * the rest of the page is zero):
 *    0  u32  crc          crc32c_mask(crc32c(slot bytes [4, used)))
 *    4  u32  used         SP_HDR_FIXED + inline body length (<= page_size)
 *    8  u8[8] magic       "SHALEDB\0"
 *   16  u32  version      SP_HDR_VERSION (1); newer -> SHALE_EFORMAT
 *   20  u32  page_size    power of two in [SP_MIN_PAGE_SIZE, SP_MAX_PAGE_SIZE]
 *   24  u64  seq          checkpoint sequence number, >= 1
 *   32  u64  file_pages   pages at or beyond this are free; >= 2
 *   40  u64  body_len     bytes of the body
 *   48  u64  spill_first  first page of the spill run; 0: the body is inline
 *   56  u64  spill_pages  pages in the spill run (0 when inline)
 *   64  u32  body_crc     crc32c_mask(crc32c(body))
 *   68  u32  flags        0 in version 1
 *   72  u64  reserved     0
 *   80  body              body_len bytes when inline
 * The crc, used, magic and version fields keep their place in every future
 * version, so an intact slot of a newer format is recognised as such.
 *
 * Body: the persisted free list as bl_encode writes it (blocklist.h), then
 * the opaque meta of the layer above (the rest of the body).
 *
 * Spill run: when the body does not fit in the slot it is cut into
 * consecutive SP_PT_META pages (page.h layout) of page_size - SP_PAGE_HDR
 * payload bytes each: gen = seq of the header, aux = index in the run,
 * used = body bytes in this page (0 for surplus pages at the end of a run).
 * The run is written and synced before the slot that names it, and it stays
 * allocated until a later header that does not name it is durable.  A slot is
 * valid only if its fields are sane, its crc matches, every spill page
 * verifies (crc, pgno, type, gen, index, used) and the body crc matches.
 *
 * Page size discovery: slot 0 states the page size, which places slot 1.
 * When slot 0 is damaged, slot 1 is looked for at each possible page size
 * and must state that same size.
 */
#include "header.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "crc32c.h"
#include "page.h"

static const uint8_t hdr_magic[8] = {'S', 'H', 'A', 'L', 'E', 'D', 'B', '\0'};

/* hdr_payload -- body bytes one META page holds. */
static uint64_t hdr_payload(uint32_t page_size)
{
    return page_size - SP_PAGE_HDR;
}

/* hdr_fits_inline -- whether a body of len bytes fits in a slot. */
bool hdr_fits_inline(uint32_t page_size, uint64_t len)
{
    return len <= page_size - SP_HDR_FIXED;
}

/* hdr_spill_need -- META pages a spilled body of len bytes needs. */
uint64_t hdr_spill_need(uint32_t page_size, uint64_t len)
{
    uint64_t cap = hdr_payload(page_size);
    return len / cap + (len % cap != 0);
}

/* hdr_page_size_ok -- a power of two within the supported range. */
static bool hdr_page_size_ok(uint32_t ps)
{
    return ps >= SP_MIN_PAGE_SIZE && ps <= SP_MAX_PAGE_SIZE && (ps & (ps - 1)) == 0;
}

/* hdr_body_encode -- *body (malloc'd) = encoding of free, then meta. */
int hdr_body_encode(const sp_blocklist *free_list, const void *meta, size_t metalen, uint8_t **body,
                    size_t *len)
{
    size_t fl = bl_encoded_len(free_list);
    uint8_t *b;

    *body = NULL;
    *len = 0;
    if (metalen > SIZE_MAX - fl || (metalen && meta == NULL))
        return SHALE_EINVAL;
    b = malloc(fl + metalen);
    if (b == NULL)
        return SHALE_ENOMEM;
    bl_encode(free_list, b);
    if (metalen)
        memcpy(b + fl, meta, metalen);
    *body = b;
    *len = fl + metalen;
    return SHALE_OK;
}

/* hdr_body_decode -- split a body into the free list and a meta copy. */
int hdr_body_decode(const uint8_t *body, size_t len, sp_blocklist *free_list, void **meta,
                    size_t *metalen)
{
    size_t used;
    void *m = NULL;

    *meta = NULL;
    *metalen = 0;
    RET(bl_decode(free_list, body, len, &used));
    if (len > used) {
        m = malloc(len - used);
        if (m == NULL)
            return SHALE_ENOMEM;
        memcpy(m, body + used, len - used);
    }
    *meta = m;
    *metalen = len - used;
    return SHALE_OK;
}

/* hdr_slot_encode -- fill a page_size buffer with slot s and its body. */
void hdr_slot_encode(uint8_t *buf, const sp_slot *s, const uint8_t *body, size_t len)
{
    uint32_t used = SP_HDR_FIXED;

    memset(buf, 0, s->page_size);
    if (s->spill_first == 0 && len) {
        memcpy(buf + SP_HDR_FIXED, body, len);
        used += (uint32_t)len;
    }
    put_u32(buf + 4, used);
    memcpy(buf + 8, hdr_magic, 8);
    put_u32(buf + 16, SP_HDR_VERSION);
    put_u32(buf + 20, s->page_size);
    put_u64(buf + 24, s->seq);
    put_u64(buf + 32, s->file_pages);
    put_u64(buf + 40, len);
    put_u64(buf + 48, s->spill_first);
    put_u64(buf + 56, s->spill_pages);
    put_u32(buf + 64, len ? crc32c_mask(crc32c(body, len)) : crc32c_mask(0));
    put_u32(buf, crc32c_mask(crc32c(buf + 4, used - 4)));
}

/* hdr_slot_fields -- read the fixed fields of an intact version-1 slot. */
static void hdr_slot_fields(const uint8_t *buf, sp_slot *s)
{
    s->page_size = get_u32(buf + 20);
    s->seq = get_u64(buf + 24);
    s->file_pages = get_u64(buf + 32);
    s->body_len = get_u64(buf + 40);
    s->spill_first = get_u64(buf + 48);
    s->spill_pages = get_u64(buf + 56);
    s->body_crc = get_u32(buf + 64);
}

/* hdr_slot_sane -- whether the fields of a slot are consistent. */
static bool hdr_slot_sane(const sp_slot *s, uint32_t used)
{
    if (!hdr_page_size_ok(s->page_size) || used > s->page_size || s->seq == 0 ||
        s->file_pages < 2 || s->file_pages > UINT64_MAX / s->page_size)
        return false;
    if (s->spill_first == 0)
        return s->spill_pages == 0 && used - SP_HDR_FIXED == s->body_len;
    return used == SP_HDR_FIXED && s->spill_first >= 2 && s->spill_pages >= 1 &&
           s->spill_pages <= s->file_pages - s->spill_first &&
           hdr_spill_need(s->page_size, s->body_len) <= s->spill_pages;
}

/* hdr_slot_decode -- parse and check a slot from the avail bytes at buf. */
int hdr_slot_decode(const uint8_t *buf, size_t avail, uint32_t page_size, sp_slot *s,
                    const uint8_t **inl)
{
    uint32_t used, version;

    *inl = NULL;
    if (avail < SP_HDR_FIXED)
        return SHALE_ECORRUPT;
    used = get_u32(buf + 4);
    if (used < SP_HDR_FIXED || used > avail || used > SP_MAX_PAGE_SIZE)
        return SHALE_ECORRUPT;
    if (get_u32(buf) != crc32c_mask(crc32c(buf + 4, used - 4)) || memcmp(buf + 8, hdr_magic, 8))
        return SHALE_ECORRUPT;
    version = get_u32(buf + 16);
    if (version != SP_HDR_VERSION)
        return version > SP_HDR_VERSION ? SHALE_EFORMAT : SHALE_ECORRUPT;
    hdr_slot_fields(buf, s);
    if (get_u32(buf + 68) != 0 || get_u64(buf + 72) != 0 || !hdr_slot_sane(s, used) ||
        (page_size != 0 && s->page_size != page_size))
        return SHALE_ECORRUPT;
    if (s->spill_first == 0)
        *inl = buf + SP_HDR_FIXED;
    return SHALE_OK;
}

/* hdr_spill_encode -- fill the spill run of s with body as sealed META pages. */
void hdr_spill_encode(uint8_t *out, const sp_slot *s, const uint8_t *body, size_t len)
{
    uint32_t ps = s->page_size;
    uint64_t cap = hdr_payload(ps);

    for (uint64_t i = 0; i < s->spill_pages; i++) {
        uint8_t *pg = out + i * ps;
        uint64_t off = i * cap;
        size_t k = off < len ? (size_t)MIN(cap, len - off) : 0;
        sp_page_init(pg, ps, SP_PT_META, s->spill_first + i, s->seq);
        if (k)
            memcpy(pg + SP_PAGE_HDR, body + off, k);
        sp_page_set_used(pg, (uint32_t)k);
        sp_page_set_aux(pg, (uint32_t)i);
        sp_page_seal(pg, ps);
    }
}

/* hdr_spill_decode -- verify a spill run and reassemble its body into out. */
int hdr_spill_decode(const uint8_t *pages, const sp_slot *s, uint8_t *out)
{
    uint32_t ps = s->page_size;
    uint64_t cap = hdr_payload(ps);

    for (uint64_t i = 0; i < s->spill_pages; i++) {
        const uint8_t *pg = pages + i * ps;
        uint64_t off = i * cap;
        uint64_t k = off < s->body_len ? MIN(cap, s->body_len - off) : 0;
        RET(sp_page_verify(pg, ps, s->spill_first + i));
        if (sp_page_type(pg) != SP_PT_META || sp_page_gen(pg) != s->seq ||
            sp_page_aux(pg) != (uint32_t)i || sp_page_used(pg) != k)
            return SHALE_ECORRUPT;
        if (k)
            memcpy(out + off, pg + SP_PAGE_HDR, (size_t)k);
    }
    return SHALE_OK;
}

/* hdr_body_crc_ok -- whether the body matches the slot's body crc. */
static bool hdr_body_crc_ok(const sp_slot *s, const uint8_t *body)
{
    return s->body_crc == crc32c_mask(s->body_len ? crc32c(body, (size_t)s->body_len) : 0);
}

/* hdr_read_spill -- read and verify the spill run of s into *body (malloc'd). */
static int hdr_read_spill(sp_env *env, sp_file *f, uint64_t fsize, const sp_slot *s, uint8_t **body)
{
    uint8_t *pages = NULL, *b = NULL;
    uint64_t fpages = fsize / s->page_size;
    int rc = SHALE_OK;

    *body = NULL;
    /* Bound the allocation by what the file can hold before trusting it. */
    if (s->spill_first >= fpages || s->spill_pages > fpages - s->spill_first ||
        s->body_len > s->spill_pages * hdr_payload(s->page_size))
        return SHALE_ECORRUPT;
    pages = malloc((size_t)(s->spill_pages * s->page_size));
    b = malloc(s->body_len ? (size_t)s->body_len : 1);
    if (pages == NULL || b == NULL)
        ERR_SET(SHALE_ENOMEM);
    ERR(env->read(f, pages, (size_t)(s->spill_pages * s->page_size),
                  s->spill_first * s->page_size));
    ERR(hdr_spill_decode(pages, s, b));
    *body = b;
    b = NULL;
err:
    free(pages);
    free(b);
    return rc;
}

/* hdr_check_free -- the free list lies in the file and misses the spill run. */
static int hdr_check_free(const sp_header *h)
{
    const sp_blocklist *fl = &h->free;
    const sp_slot *s = &h->slot;

    if (fl->n && (fl->v[0].first < 2 || fl->v[fl->n - 1].last >= s->file_pages))
        return SHALE_ECORRUPT;
    if (s->spill_first && bl_overlaps(fl, s->spill_first, s->spill_first + s->spill_pages - 1))
        return SHALE_ECORRUPT;
    return SHALE_OK;
}

/* hdr_load -- fetch and decode the body of a checked slot into h. */
static int hdr_load(sp_env *env, sp_file *f, uint64_t fsize, const sp_slot *s, const uint8_t *inl,
                    sp_header *h)
{
    uint8_t *spilled = NULL;
    const uint8_t *body = inl;
    int rc = SHALE_OK;

    if (inl == NULL) {
        ERR(hdr_read_spill(env, f, fsize, s, &spilled));
        body = spilled;
    }
    if (!hdr_body_crc_ok(s, body))
        ERR_SET(SHALE_ECORRUPT);
    h->slot = *s;
    ERR(hdr_body_decode(body, (size_t)s->body_len, &h->free, &h->meta, &h->metalen));
    rc = hdr_check_free(h);
    if (rc < 0) {
        free(h->meta);
        h->meta = NULL;
        h->metalen = 0;
    }
err:
    free(spilled);
    return rc;
}

/* hdr_find_slot1 -- decode slot 1, at page_size if known, else at each size. */
static int hdr_find_slot1(const uint8_t *buf, size_t n, uint32_t ps, sp_slot *s,
                          const uint8_t **inl)
{
    if (ps != 0)
        return n > ps ? hdr_slot_decode(buf + ps, n - ps, ps, s, inl) : SHALE_ECORRUPT;
    for (uint32_t p = SP_MIN_PAGE_SIZE; p <= SP_MAX_PAGE_SIZE; p *= 2) {
        int rc = n > p ? hdr_slot_decode(buf + p, n - p, p, s, inl) : SHALE_ECORRUPT;
        if (rc != SHALE_ECORRUPT)
            return rc;
    }
    return SHALE_ECORRUPT;
}

/* hdr_choose -- load the newest slot that proves valid. */
static int hdr_choose(sp_env *env, sp_file *f, uint64_t fsize, const int rcs[2], const sp_slot s[2],
                      const uint8_t *inl[2], sp_header *h)
{
    int order[2] = {0, 1};

    if (rcs[0] == SHALE_EFORMAT || rcs[1] == SHALE_EFORMAT)
        return SHALE_EFORMAT;
    if (rcs[1] == SHALE_OK && (rcs[0] != SHALE_OK || s[1].seq > s[0].seq)) {
        order[0] = 1;
        order[1] = 0;
    }
    for (int k = 0; k < 2; k++) {
        int i = order[k], rc;
        if (rcs[i] != SHALE_OK)
            continue;
        rc = hdr_load(env, f, fsize, &s[i], inl[i], h);
        if (rc == SHALE_OK)
            h->which = i;
        /* Only corruption falls back: an I/O error must not roll back. */
        if (rc != SHALE_ECORRUPT)
            return rc;
    }
    return SHALE_ECORRUPT;
}

/* hdr_read -- read both slots and decode the newest valid one into h. */
int hdr_read(sp_env *env, sp_file *f, sp_header *h)
{
    uint64_t fsize;
    size_t n;
    uint8_t *buf = NULL;
    sp_slot s[2];
    const uint8_t *inl[2];
    int rcs[2];
    int rc = SHALE_OK;

    memset(h, 0, sizeof(*h));
    bl_init(&h->free);
    RET(env->size(f, &fsize));
    n = (size_t)MIN(fsize, 2 * (uint64_t)SP_MAX_PAGE_SIZE);
    if (n < SP_HDR_FIXED)
        return SHALE_ECORRUPT;
    buf = malloc(n);
    if (buf == NULL)
        return SHALE_ENOMEM;
    ERR(env->read(f, buf, n, 0));
    rcs[0] = hdr_slot_decode(buf, n, 0, &s[0], &inl[0]);
    rcs[1] = hdr_find_slot1(buf, n, rcs[0] == SHALE_OK ? s[0].page_size : 0, &s[1], &inl[1]);
    ERR(hdr_choose(env, f, fsize, rcs, s, inl, h));
err:
    if (rc < 0)
        bl_free(&h->free);
    free(buf);
    return rc;
}

/* hdr_write_slot -- write slot `which` as a full page. */
int hdr_write_slot(sp_env *env, sp_file *f, int which, const sp_slot *s, const uint8_t *body,
                   size_t len)
{
    uint8_t *buf;
    int rc;

    if ((which != 0 && which != 1) || !hdr_page_size_ok(s->page_size) ||
        (s->spill_first == 0 && !hdr_fits_inline(s->page_size, len)))
        return SHALE_EINVAL;
    buf = malloc(s->page_size);
    if (buf == NULL)
        return SHALE_ENOMEM;
    hdr_slot_encode(buf, s, body, len);
    rc = env->write(f, buf, s->page_size, (uint64_t)which * s->page_size);
    free(buf);
    return rc;
}

/* hdr_free -- release what hdr_read put in h. */
void hdr_free(sp_header *h)
{
    bl_free(&h->free);
    free(h->meta);
    h->meta = NULL;
    h->metalen = 0;
}
