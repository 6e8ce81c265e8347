/*
 * page.c -- the common page header (layout in page.h) and its checksum.
 *
 * The crc covers bytes [4, page_size): everything but itself, including the
 * zeroed unused tail, so a page is either exactly what was sealed or rejected.
 * It is stored masked (crc32c_mask), like every crc in shale.  The page
 * number inside the page catches misdirected reads and writes; the type byte
 * is never 0 on a sealed page, which rejects a page of zeroes whatever its
 * crc.
 */
#include "page.h"

#include <string.h>

#include "crc32c.h"

/* sp_page_init -- zero the page and fill the header fields (crc left 0). */
void sp_page_init(uint8_t *page, uint32_t page_size, uint8_t type, uint64_t pgno, uint64_t gen)
{
    memset(page, 0, page_size);
    page[4] = type;
    put_u64(page + 8, pgno);
    put_u64(page + 16, gen);
}

/* sp_page_crc -- the masked crc of a page as stored in bytes 0..3. */
static uint32_t sp_page_crc(const uint8_t *page, uint32_t page_size)
{
    return crc32c_mask(crc32c(page + 4, page_size - 4));
}

/* sp_page_seal -- compute and store the crc; call after the last change. */
void sp_page_seal(uint8_t *page, uint32_t page_size)
{
    put_u32(page, sp_page_crc(page, page_size));
}

/* sp_page_verify -- check crc, page number, used length and type. */
int sp_page_verify(const uint8_t *page, uint32_t page_size, uint64_t pgno)
{
    if (page_size < SP_MIN_PAGE_SIZE || page_size > SP_MAX_PAGE_SIZE)
        return SHALE_EINVAL;
    if (get_u32(page) != sp_page_crc(page, page_size))
        return SHALE_ECORRUPT;
    if (sp_page_pgno(page) != pgno || sp_page_type(page) == 0 ||
        sp_page_used(page) > page_size - SP_PAGE_HDR)
        return SHALE_ECORRUPT;
    return SHALE_OK;
}
