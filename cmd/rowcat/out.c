/*
 * Buffered output for rowcat (see out.h).
 */
#include "out.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "io.h"
#include "mem.h"

void
out_init(struct out *o, int fd, const char *name)
{
    o->fd = fd;
    o->name = name;
    o->buf = xmalloc(OUT_BUF_SIZE);
    o->len = 0;
    o->rc = 0;
}

int
out_flush(struct out *o)
{
    if (o->len > 0 && o->rc == 0 && io_write_full(o->fd, o->buf, o->len) != 0)
        o->rc = err_sys(EXIT_IO, "could not write to %s", o->name);
    /* After a failure the data is dropped: the run ends with exit 3 anyway. */
    o->len = 0;
    return o->rc;
}

void
out_free(struct out *o)
{
    free(o->buf);
    o->buf = NULL;
    o->len = 0;
}

void
out_write(struct out *o, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (o->len + n <= OUT_BUF_SIZE) {
        memcpy(o->buf + o->len, p, n);
        o->len += n;
        return;
    }
    out_flush(o);
    if (n < OUT_BUF_SIZE) {
        memcpy(o->buf, p, n);
        o->len = n;
        return;
    }
    /* A value larger than the buffer goes straight to the descriptor. */
    if (o->rc == 0 && io_write_full(o->fd, p, n) != 0)
        o->rc = err_sys(EXIT_IO, "could not write to %s", o->name);
}

void
out_str(struct out *o, const char *s)
{
    out_write(o, s, strlen(s));
}

void
out_spaces(struct out *o, size_t n)
{
    while (n > 0) {
        size_t k = n < 256 ? n : 256;

        memset(out_reserve(o, k), ' ', k);
        out_advance(o, k);
        n -= k;
    }
}
