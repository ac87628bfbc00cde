/*
 * COPY CSV quoting and COPY text escaping (see fmt.h). Table-driven: the
 * common case is a value with nothing to quote or escape, and it costs one
 * lookup per byte.
 */
#include "fmt.h"

#include <string.h>

/* Bytes that make COPY CSV quote a value. */
static const unsigned char csv_special[256] = {
    ['\n'] = 1,
    ['\r'] = 1,
    [','] = 1,
    ['"'] = 1,
};

/* For each byte COPY text escapes, the letter after the backslash. */
static const char text_escape[256] = {
    ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n',  ['\r'] = 'r',
    ['\t'] = 't', ['\v'] = 'v', ['\\'] = '\\',
};

int
fmt_csv_needs_quote(const char *s, size_t len, int single_column)
{
    const unsigned char *p = (const unsigned char *)s;

    /* The empty string must not read back as NULL (COPY's null_print is ""). */
    if (len == 0)
        return 1;
    if (single_column && len == 2 && s[0] == '\\' && s[1] == '.')
        return 1;
    for (size_t i = 0; i < len; i++)
        if (csv_special[p[i]])
            return 1;
    return 0;
}

size_t
fmt_csv_double_quotes(char *dst, const char *s, size_t len)
{
    char *d = dst;
    const char *end = s + len;

    while (s < end) {
        const char *q = memchr(s, '"', (size_t)(end - s));
        size_t n = (q != NULL ? q + 1 : end) - s;

        memcpy(d, s, n);
        d += n;
        s += n;
        if (q != NULL)
            *d++ = '"';
    }
    return (size_t)(d - dst);
}

int
fmt_text_needs_escape(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < len; i++)
        if (text_escape[p[i]])
            return 1;
    return 0;
}

size_t
fmt_text_escape(char *dst, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    char *d = dst;
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        char e = text_escape[p[i]];

        if (e == 0)
            continue;
        memcpy(d, s + start, i - start);
        d += i - start;
        *d++ = '\\';
        *d++ = e;
        start = i + 1;
    }
    memcpy(d, s + start, len - start);
    d += len - start;
    return (size_t)(d - dst);
}
