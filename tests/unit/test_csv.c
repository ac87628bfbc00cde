/*
 * rowcat's COPY CSV quoting and COPY text escaping (cmd/rowcat/fmt.c), checked
 * against the rules of PostgreSQL's copyto.c byte by byte. fmt.c is compiled
 * in directly: unit tests link only libcommon.a, and fmt.c depends on libc alone.
 */
#include <stdlib.h>
#include <string.h>

#include "../../cmd/rowcat/fmt.c"
#include "unit.h"

static int
quoted(const char *s, int single)
{
    return fmt_csv_needs_quote(s, strlen(s), single);
}

TEST(csv_quotes_what_copy_quotes)
{
    CHECK(quoted("", 0) == 1); /* '' must not read back as NULL */
    CHECK(quoted("a,b", 0) == 1);
    CHECK(quoted("say \"hi\"", 0) == 1);
    CHECK(quoted("cr\r", 0) == 1);
    CHECK(quoted("\nlf", 0) == 1);
    CHECK(quoted("plain", 0) == 0);
    CHECK(quoted(" spaces ", 0) == 0);
    CHECK(quoted("NULL", 0) == 0);
    CHECK(quoted("\\N", 0) == 0);
    CHECK(quoted("tab\there", 0) == 0);
    CHECK(quoted("back\\slash", 0) == 0);
    CHECK(quoted("\xff\xfe", 0) == 0);
    /* "\." is the end-of-data marker only when alone on its line. */
    CHECK(quoted("\\.", 1) == 1);
    CHECK(quoted("\\.", 0) == 0);
    CHECK(quoted("\\.x", 1) == 0);
    CHECK(quoted("x\\.", 1) == 0);
}

TEST(csv_every_byte)
{
    for (int c = 0; c < 256; c++) {
        char s[3] = { 'a', (char)c, 'b' };
        int want = c == ',' || c == '"' || c == '\n' || c == '\r';

        CHECK(fmt_csv_needs_quote(s, 3, 0) == want);
    }
    /* A NUL byte is data, not the end of the value. */
    CHECK(fmt_csv_needs_quote("a\0,", 3, 0) == 1);
}

TEST(csv_doubles_quotes)
{
    char out[64];
    size_t n;

    n = fmt_csv_double_quotes(out, "say \"hi\"", 8);
    CHECK(n == 10 && memcmp(out, "say \"\"hi\"\"", 10) == 0);
    n = fmt_csv_double_quotes(out, "\"\"", 2);
    CHECK(n == 4 && memcmp(out, "\"\"\"\"", 4) == 0);
    n = fmt_csv_double_quotes(out, "none", 4);
    CHECK(n == 4 && memcmp(out, "none", 4) == 0);
    n = fmt_csv_double_quotes(out, "", 0);
    CHECK(n == 0);
}

/* COPY text escaping as copyto.c's CopyAttributeOutText does it, one byte at a time. */
static size_t
reference_escape(char *dst, const unsigned char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        const char *e = NULL;

        switch (s[i]) {
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        case '\v':
            e = "\\v";
            break;
        case '\\':
            e = "\\\\";
            break;
        default:
            dst[n++] = (char)s[i];
            continue;
        }
        dst[n++] = e[0];
        dst[n++] = e[1];
    }
    return n;
}

TEST(text_every_byte)
{
    unsigned char all[256];
    char got[512], want[512];
    size_t ng, nw;

    for (int c = 0; c < 256; c++)
        all[c] = (unsigned char)c;
    ng = fmt_text_escape(got, (const char *)all, sizeof(all));
    nw = reference_escape(want, all, sizeof(all));
    CHECK(ng == nw);
    CHECK(memcmp(got, want, nw) == 0);
    CHECK(fmt_text_needs_escape((const char *)all, sizeof(all)) == 1);
    CHECK(fmt_text_needs_escape("a,b \"c\" \x01\x7f\xff", 12) == 0);
}

TEST(text_escape_examples)
{
    char out[64];
    size_t n;

    n = fmt_text_escape(out, "\\N", 2);
    CHECK(n == 3 && memcmp(out, "\\\\N", 3) == 0);
    n = fmt_text_escape(out, "a\tb\nc", 5);
    CHECK(n == 7 && memcmp(out, "a\\tb\\nc", 7) == 0);
    n = fmt_text_escape(out, "\r\n", 2);
    CHECK(n == 4 && memcmp(out, "\\r\\n", 4) == 0);
}

/* rowcat escapes a large value in chunks: the pieces must join to the whole. */
TEST(text_escape_in_chunks)
{
    const char *s = "x\\y\tz\n\\\\end\r";
    size_t len = strlen(s);
    char whole[64], parts[64];
    size_t nw = fmt_text_escape(whole, s, len);

    for (size_t chunk = 1; chunk <= len; chunk++) {
        size_t np = 0;

        for (size_t off = 0; off < len; off += chunk)
            np += fmt_text_escape(parts + np, s + off, len - off < chunk ? len - off : chunk);
        CHECK(np == nw && memcmp(parts, whole, nw) == 0);
    }
}

UNIT_MAIN
