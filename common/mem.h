/*
 * Allocation helpers and growable byte buffers. The x* allocators are the one
 * place in common/ that exits: out of memory is exit 8.
 */
#ifndef DRIFTLESS_MEM_H
#define DRIFTLESS_MEM_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* A growable byte buffer; data is always NUL-terminated for convenience. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
/* Make room for n more bytes (data + len stays valid for writing n bytes). */
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_putc(struct buf *b, char c);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string (invalid UTF-8 becomes U+FFFD); NULL is null. */
void buf_json_string(struct buf *b, const char *s, size_t len);

#endif
