/*
 * Row hashes (see hash.h for the encoding). Small rows are encoded into a
 * stack buffer and hashed in one call; a row larger than the buffer is fed to
 * XXH3's streaming state piece by piece, which gives the same digest.
 */
#include <string.h>

/* Inlined: faster for short rows, and XXH3_state_t on the stack needs no ABI match. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hash.h"

/* Big enough that the typical row takes the one-shot path. */
#define HASH_BUF_SIZE 4096

struct hasher {
    unsigned char buf[HASH_BUF_SIZE];
    size_t used;
    int streaming; /* state holds earlier pieces */
    XXH3_state_t state;
};

static void
flush(struct hasher *h)
{
    if (!h->streaming) {
        XXH3_128bits_reset(&h->state);
        h->streaming = 1;
    }
    XXH3_128bits_update(&h->state, h->buf, h->used);
    h->used = 0;
}

static void
feed(struct hasher *h, const void *p, size_t n)
{
    if (n > sizeof(h->buf) - h->used) {
        flush(h);
        /* A large value goes straight to the state rather than through buf. */
        if (n > sizeof(h->buf)) {
            XXH3_128bits_update(&h->state, p, n);
            return;
        }
    }
    memcpy(h->buf + h->used, p, n);
    h->used += n;
}

static void
put_le(unsigned char *out, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        out[i] = (unsigned char)(v >> (8 * i));
}

static void
to_hex(uint64_t v, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--) {
        out[i] = digits[v & 0xf];
        v >>= 4;
    }
}

void
hash_row(const struct rs_value *vals, const int *cols, int ncols, char out[33])
{
    struct hasher h;
    unsigned char head[9];
    XXH128_hash_t d;

    h.used = 0;
    h.streaming = 0;
    put_le(head, (uint64_t)(uint32_t)ncols, 4);
    feed(&h, head, 4);
    for (int i = 0; i < ncols; i++) {
        const struct rs_value *v = &vals[cols[i]];

        if (v->data == NULL) {
            head[0] = 1;
            feed(&h, head, 1);
            continue;
        }
        head[0] = 0;
        put_le(head + 1, (uint64_t)v->len, 8);
        feed(&h, head, 9);
        feed(&h, v->data, v->len);
    }
    if (h.streaming) {
        flush(&h);
        d = XXH3_128bits_digest(&h.state);
    } else {
        d = XXH3_128bits(h.buf, h.used);
    }
    to_hex(d.high64, out);
    to_hex(d.low64, out + 16);
    out[HASH_HEX_LEN] = '\0';
}
