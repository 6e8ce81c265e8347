/*
 * test_meta.c -- the checkpoint body's version: the current one and the two
 * before it are read; anything newer (or older) is SHALE_EFORMAT, so a
 * binary never reads a database whose entries it would misread (version 4
 * marks merge operands, which version-3 code would take for values).
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "../../src/lsm/meta.h"
#include "../../src/space/common.h"
#include "shale.h"

static int decode_as(uint32_t version)
{
    meta_body m = {.ckpt_seq = 5, .log_no = 2, .next_seg_id = 1, .next_gen = 1,
                   .level_factor = 10, .flags = META_CLEAN, .has_flags = true};
    uint8_t *buf;
    size_t len;
    cr_assert_eq(meta_encode(&m, &buf, &len), SHALE_OK);
    put_u32(buf + 4, version);
    meta_body out;
    int rc = meta_decode(NULL, buf, len, &out);
    free(buf);
    if (rc == SHALE_OK)
        cr_assert_eq(out.ckpt_seq, 5u);
    meta_free_segs(&out);
    return rc;
}

Test(meta, reads_its_versions_and_refuses_others)
{
    cr_assert_eq(META_VERSION, 4u);
    cr_assert_eq(decode_as(4), SHALE_OK);
    cr_assert_eq(decode_as(3), SHALE_OK);
    cr_assert_eq(decode_as(5), SHALE_EFORMAT);
    cr_assert_eq(decode_as(1), SHALE_EFORMAT);
    cr_assert_eq(decode_as(0xffffffffu), SHALE_EFORMAT);
}
