/*
 * Row hash tests: the encoding is unambiguous, the one-shot and streaming
 * paths agree, and a fixed vector pins the encoding so it cannot change by
 * accident (every stored hash would then differ from a fresh one).
 */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "hash.h"
#include "mem.h"
#include "unit.h"

static void
hash2(const char *a, size_t alen, const char *b, size_t blen, char out[33])
{
    struct rs_value v[2] = { { a, alen }, { b, blen } };
    static const int cols[2] = { 0, 1 };

    hash_row(v, cols, 2, out);
}

static void
hash1(const char *a, size_t alen, char out[33])
{
    struct rs_value v = { a, alen };
    static const int col = 0;

    hash_row(&v, &col, 1, out);
}

/* The encoding built naively in one buffer, hashed with the library's one-shot call. */
static void
reference(const struct rs_value *v, const int *cols, int n, char out[33])
{
    struct buf b;
    unsigned char le[8];
    XXH128_hash_t d;

    buf_init(&b);
    for (int i = 0; i < 4; i++)
        le[i] = (unsigned char)((unsigned)n >> (8 * i));
    buf_append(&b, le, 4);
    for (int i = 0; i < n; i++) {
        const struct rs_value *x = &v[cols[i]];

        buf_putc(&b, x->data == NULL ? 1 : 0);
        if (x->data == NULL)
            continue;
        for (int k = 0; k < 8; k++)
            le[k] = (unsigned char)((unsigned long long)x->len >> (8 * k));
        buf_append(&b, le, 8);
        buf_append(&b, x->data, x->len);
    }
    d = XXH3_128bits(b.data, b.len);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)d.high64, (unsigned long long)d.low64);
    buf_free(&b);
}

static int
is_hex32(const char *s)
{
    if (strlen(s) != 32)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

TEST(format_is_32_lowercase_hex)
{
    char h[33];

    memset(h, 'x', sizeof(h));
    hash1("abc", 3, h);
    CHECK(is_hex32(h));
    CHECK(h[32] == '\0');
}

TEST(split_point_matters)
{
    char a[33], b[33];

    hash2("ab", 2, "c", 1, a);
    hash2("a", 1, "bc", 2, b);
    CHECK(strcmp(a, b) != 0);
    hash2("", 0, "abc", 3, a);
    hash2("abc", 3, "", 0, b);
    CHECK(strcmp(a, b) != 0);
}

TEST(null_empty_and_the_word_null_differ)
{
    char n[33], e[33], w[33];

    hash1(NULL, 0, n);
    hash1("", 0, e);
    hash1("NULL", 4, w);
    CHECK(strcmp(n, e) != 0);
    CHECK(strcmp(n, w) != 0);
    CHECK(strcmp(e, w) != 0);
    /* A NULL that carries a stale length is still just NULL. */
    hash1(NULL, 7, w);
    CHECK(strcmp(n, w) == 0);
}

TEST(column_count_matters)
{
    struct rs_value v[2] = { { NULL, 0 }, { NULL, 0 } };
    static const int cols[2] = { 0, 1 };
    char one[33], two[33], none[33];

    hash_row(v, cols, 1, one);
    hash_row(v, cols, 2, two);
    hash_row(v, cols, 0, none);
    CHECK(strcmp(one, two) != 0);
    CHECK(strcmp(one, none) != 0);
    CHECK(strcmp(two, none) != 0);
}

TEST(column_selection_and_order)
{
    struct rs_value v[3] = { { "1", 1 }, { "x", 1 }, { "y", 1 } };
    static const int c12[2] = { 1, 2 }, c21[2] = { 2, 1 };
    char a[33], b[33], c[33];

    hash_row(v, c12, 2, a);
    hash_row(v, c21, 2, b);
    hash2("x", 1, "y", 1, c);
    CHECK(strcmp(a, b) != 0);
    CHECK(strcmp(a, c) == 0); /* only the listed columns count */
}

/* Fixed vectors: computed once from this encoding, asserted forever. */
TEST(golden_vectors)
{
    struct rs_value v[3] = { { "42", 2 }, { NULL, 0 }, { "h\xc3\xa9llo, \"world\"\n", 16 } };
    static const int cols[3] = { 0, 1, 2 };
    char h[33];

    hash_row(v, cols, 3, h);
    CHECK(strcmp(h, "a58f11c7cb2ff8e0eb80b86c96d8b6f0") == 0);
    hash_row(v, cols, 0, h);
    CHECK(strcmp(h, "2a33816ed7e0c373dbe563c737220b65") == 0);
    hash1("", 0, h);
    CHECK(strcmp(h, "12c1fb93c7fa74d7b09647f9a36db69e") == 0);
}

/* Rows around and far beyond the internal buffer take the streaming path. */
TEST(matches_reference_at_every_size)
{
    static const size_t sizes[] = { 0,    1,    50,   4000, 4081, 4082, 4083,   4086,   4087,
                                    4095, 4096, 4097, 8191, 8192, 8193, 100000, 1000000 };
    size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
    char *big = xmalloc(1000000);
    unsigned seed = 12345;
    int bad = 0;

    for (size_t i = 0; i < 1000000; i++) {
        seed = seed * 1103515245u + 12345u;
        big[i] = (char)(seed >> 16);
    }
    for (size_t i = 0; i < nsizes; i++) {
        for (size_t j = 0; j < nsizes; j++) {
            struct rs_value v[4] = { { "k", 1 },
                                     { big, sizes[i] },
                                     { NULL, 0 },
                                     { big + 7, sizes[j] < 999993 ? sizes[j] : 999993 } };
            static const int cols[4] = { 0, 1, 2, 3 };
            char a[33], b[33];

            hash_row(v, cols, 4, a);
            reference(v, cols, 4, b);
            bad += strcmp(a, b) != 0;
        }
    }
    /* Many small columns: the buffer fills on a header, not on a value. */
    {
        struct rs_value v[700];
        int cols[700];
        char a[33], b[33];

        for (int i = 0; i < 700; i++) {
            v[i].data = i % 3 == 0 ? NULL : big + i;
            v[i].len = (size_t)(i % 5);
            cols[i] = 699 - i;
        }
        hash_row(v, cols, 700, a);
        reference(v, cols, 700, b);
        bad += strcmp(a, b) != 0;
    }
    CHECK(bad == 0);
    free(big);
}

UNIT_MAIN
