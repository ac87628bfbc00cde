/*
 * UTF-8 decoding: the one place that knows what a valid sequence is.
 */
#ifndef DRIFTLESS_UTF8_H
#define DRIFTLESS_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * The length (1..4) of the valid UTF-8 sequence at s (at most n bytes, n > 0)
 * and its code point in *cp, or 0 when it is not one: overlong forms,
 * surrogates and code points past U+10FFFF are not UTF-8.
 */
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* 1 if [p, p+n) is valid UTF-8 without NUL (what a text column can hold). */
int utf8_valid_text(const unsigned char *p, size_t n);

#endif
