/*
 * rowcat's output: one large buffer in front of a file descriptor, so that
 * writing a value costs a memcpy rather than a stdio call. The first failed
 * write is reported once; later writes are dropped and the caller stops at
 * the next row.
 */
#ifndef ROWCAT_OUT_H
#define ROWCAT_OUT_H

#include <stddef.h>
#include <string.h>

/* Buffer size: large enough that a pipe or file gets few, big writes. */
#define OUT_BUF_SIZE ((size_t)1 << 18)

struct out {
    int fd;
    const char *name; /* "stdout" or a path, for messages */
    char *buf;
    size_t len;
    int rc; /* 0, or EXIT_IO once a write failed */
};

void out_init(struct out *o, int fd, const char *name);
/* Write what is buffered. Returns 0 or EXIT_IO (printed once). */
int out_flush(struct out *o);
/* Release the buffer (does not flush, does not close fd). */
void out_free(struct out *o);
/* Append n bytes of any size. */
void out_write(struct out *o, const void *p, size_t n);
void out_str(struct out *o, const char *s);
/* Append n spaces. */
void out_spaces(struct out *o, size_t n);

/*
 * Room for n bytes (n <= OUT_BUF_SIZE) at the end of the buffer; the caller
 * fills some of them and calls out_advance with the count.
 */
static inline char *
out_reserve(struct out *o, size_t n)
{
    if (o->len + n > OUT_BUF_SIZE)
        out_flush(o);
    return o->buf + o->len;
}

static inline void
out_advance(struct out *o, size_t n)
{
    o->len += n;
}

static inline void
out_byte(struct out *o, char c)
{
    if (o->len == OUT_BUF_SIZE)
        out_flush(o);
    o->buf[o->len++] = c;
}

#endif
