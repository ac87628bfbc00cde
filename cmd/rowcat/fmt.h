/*
 * PostgreSQL's two COPY text forms, as pure functions over byte strings: the
 * CSV quoting rule of COPY ... TO ... CSV (copyto.c, CopyAttributeOutCSV) and
 * the backslash escapes of the text format (CopyAttributeOutText). Nothing
 * here allocates or prints, so tests/unit can check it byte for byte.
 */
#ifndef ROWCAT_FMT_H
#define ROWCAT_FMT_H

#include <stddef.h>

/*
 * 1 when COPY CSV would quote this non-NULL value: it is empty (NULL is the
 * unquoted empty field), contains a comma, a double quote, CR or LF, or, when
 * the row has a single column, it is exactly "\." (the end-of-data marker).
 */
int fmt_csv_needs_quote(const char *s, size_t len, int single_column);

/* Copy s to dst doubling each '"'; dst has room for 2 * len. Returns the bytes written. */
size_t fmt_csv_double_quotes(char *dst, const char *s, size_t len);

/* 1 when fmt_text_escape would change s. */
int fmt_text_needs_escape(const char *s, size_t len);

/*
 * COPY text escaping: backslash becomes "\\", and BS, FF, LF, CR, TAB, VT
 * become \b \f \n \r \t \v; other bytes are copied. dst has room for 2 * len.
 * Returns the bytes written.
 */
size_t fmt_text_escape(char *dst, const char *s, size_t len);

#endif
