/*
 * UTF-8 decoding: every length decodes to its code point, and each form that
 * is not UTF-8 (overlong, surrogate, past U+10FFFF, cut short, a stray
 * continuation byte) is refused; text validity also refuses NUL.
 */
#include <stdint.h>
#include <string.h>

#include "mem.h"
#include "unit.h"
#include "utf8.h"

static int
dec(const char *s, uint32_t *cp)
{
    return utf8_decode((const unsigned char *)s, strlen(s), cp);
}

TEST(each_length_decodes)
{
    uint32_t cp = 0;

    CHECK(dec("A", &cp) == 1 && cp == 0x41);
    CHECK(dec("\xc3\xa9", &cp) == 2 && cp == 0xe9);
    CHECK(dec("\xe2\x98\x83", &cp) == 3 && cp == 0x2603);
    CHECK(dec("\xf0\x9f\x98\x80", &cp) == 4 && cp == 0x1f600);
    CHECK(dec("\xf4\x8f\xbf\xbf", &cp) == 4 && cp == 0x10ffff);
}

TEST(what_is_not_utf8_is_refused)
{
    uint32_t cp;

    CHECK(dec("\xc0\xaf", &cp) == 0);         /* overlong / */
    CHECK(dec("\xe0\x80\xaf", &cp) == 0);     /* overlong, 3 bytes */
    CHECK(dec("\xf0\x80\x80\xaf", &cp) == 0); /* overlong, 4 bytes */
    CHECK(dec("\xed\xa0\x80", &cp) == 0);     /* a surrogate */
    CHECK(dec("\xf4\x90\x80\x80", &cp) == 0); /* past U+10FFFF */
    CHECK(dec("\x80", &cp) == 0);             /* a stray continuation byte */
    CHECK(dec("\xe2\x98", &cp) == 0);         /* cut short */
    CHECK(dec("\xe2\x41\x83", &cp) == 0);     /* not a continuation */
}

TEST(text_validity)
{
    CHECK(utf8_valid_text((const unsigned char *)"caf\xc3\xa9 \xf0\x9f\x98\x80", 10));
    CHECK(utf8_valid_text((const unsigned char *)"", 0));
    CHECK(!utf8_valid_text((const unsigned char *)"a\0b", 3));
    CHECK(!utf8_valid_text((const unsigned char *)"\xc3", 1));
}

TEST(json_strings_replace_what_is_not_utf8)
{
    struct buf b;

    buf_init(&b);
    buf_json_string(&b, "\xc3\xa9\xff\"\n", 5);
    CHECK(strcmp(b.data, "\"\xc3\xa9\\ufffd\\\"\\n\"") == 0);
    buf_reset(&b);
    buf_json_string(&b, NULL, 0);
    CHECK(strcmp(b.data, "null") == 0);
    buf_free(&b);
}

UNIT_MAIN
