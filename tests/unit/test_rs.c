/*
 * Row-stream codec tests: round trips, every reader error, truncation at every
 * byte and decoding at every read size.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"
#include "rs.h"
#include "unit.h"

static char tmpl[] = "/tmp/test_rs.XXXXXX";
static int saved_stderr = -1;
static char captured[8192];

/* Send stderr to a file while a failing case runs; capture_end keeps its text. */
static void
capture_begin(void)
{
    int fd = open("/tmp/test_rs.stderr", O_RDWR | O_CREAT | O_TRUNC, 0600);

    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

static const char *
capture_end(void)
{
    int fd;
    ssize_t n;

    dup2(saved_stderr, 2);
    close(saved_stderr);
    fd = open("/tmp/test_rs.stderr", O_RDONLY);
    n = read(fd, captured, sizeof(captured) - 1);
    captured[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink("/tmp/test_rs.stderr");
    return captured;
}

static void
make_header(struct rs_header *h)
{
    rs_header_init(h, RS_KIND_ROWS, "public.t");
    h->server_version = 150018;
    free(h->encoding);
    h->encoding = xstrdup("UTF8");
    rs_header_add_column(h, "id", "bigint", RS_ROLE_KEY, RS_ORDER_INT);
    rs_header_add_column(h, "name", "text", RS_ROLE_DATA, RS_ORDER_NONE);
    rs_header_add_column(h, "blob", "bytea", RS_ROLE_DATA, RS_ORDER_NONE);
    rs_header_add_hashed(h, "name");
    rs_header_set_meta(h, "snapshot", "00000003-0000001B-1");
}

static int
tmpfile_fd(char *path)
{
    strcpy(path, tmpl);
    return mkstemp(path);
}

/* Awkward values: NULL, '', 'NULL', \N, tabs, newlines, quotes, invalid UTF-8, NUL bytes. */
static const char *const awkward[] = { "",
                                       "NULL",
                                       "\\N",
                                       "a\tb",
                                       "line1\nline2\r\n",
                                       "back\\slash",
                                       "\"quoted\"",
                                       "\xff\xfe\x80",
                                       "emoji \xf0\x9f\x98\x80",
                                       "," };
#define NAWK ((int)(sizeof(awkward) / sizeof(awkward[0])))

/* Write rows 1..n (with negative ids first) to path; returns the write status. */
static int
write_stream(const char *path, int n, int finish)
{
    struct rs_header h;
    struct rs_writer *w = NULL;
    int fd = open(path, O_WRONLY | O_TRUNC);
    int rc;

    make_header(&h);
    rc = rs_writer_open(&w, fd, path, &h, 3);
    for (int i = 0; rc == 0 && i < n; i++) {
        char id[32], blob[4] = { 0, (char)i, '\n', 0 };
        struct rs_value v[3];

        snprintf(id, sizeof(id), "%d", i - 3);
        v[0] = (struct rs_value){ id, strlen(id) };
        v[1] = i % (NAWK + 1) == NAWK
                   ? (struct rs_value){ NULL, 0 }
                   : (struct rs_value){ awkward[i % (NAWK + 1)], strlen(awkward[i % (NAWK + 1)]) };
        v[2] = (struct rs_value){ blob, 4 };
        rc = rs_writer_put(w, v);
    }
    if (rc == 0 && finish)
        rc = rs_writer_finish(w);
    rs_writer_free(w);
    rs_header_free(&h);
    close(fd);
    return rc;
}

/* Read path to the end; returns the reader's status and the count in *count. */
static int
read_stream(const char *path, uint64_t *count, int check_values)
{
    struct rs_reader *r = NULL;
    const struct rs_value *v;
    int fd = open(path, O_RDONLY);
    int rc = rs_reader_open(&r, fd, path);
    int i = 0;

    while (rc == 0 && (rc = rs_reader_next(r, &v)) == 0 && v != NULL) {
        if (check_values) {
            char id[32];
            int k = i % (NAWK + 1);

            snprintf(id, sizeof(id), "%d", i - 3);
            CHECK(v[0].len == strlen(id) && memcmp(v[0].data, id, v[0].len) == 0);
            if (k == NAWK)
                CHECK(v[1].data == NULL);
            else
                CHECK(v[1].data != NULL && v[1].len == strlen(awkward[k]) &&
                      memcmp(v[1].data, awkward[k], v[1].len) == 0);
            CHECK(v[2].len == 4 && v[2].data[0] == 0 && v[2].data[1] == (char)i);
        }
        i++;
    }
    if (count != NULL)
        *count = r ? rs_reader_count(r) : 0;
    rs_reader_free(r);
    close(fd);
    return rc;
}

static long
file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

TEST(round_trip_awkward_values)
{
    char path[64];
    int fd = tmpfile_fd(path);
    uint64_t count = 0;

    close(fd);
    CHECK(write_stream(path, 100, 1) == 0);
    CHECK(read_stream(path, &count, 1) == 0);
    CHECK(count == 100);
    unlink(path);
}

TEST(header_round_trip)
{
    char path[64];
    int fd = tmpfile_fd(path);
    struct rs_reader *r = NULL;
    const struct rs_header *h;

    close(fd);
    write_stream(path, 0, 1);
    fd = open(path, O_RDONLY);
    CHECK(rs_reader_open(&r, fd, path) == 0);
    h = rs_reader_header(r);
    CHECK(h->kind == RS_KIND_ROWS);
    CHECK(strcmp(h->table, "public.t") == 0);
    CHECK(h->server_version == 150018);
    CHECK(strcmp(h->encoding, "UTF8") == 0);
    CHECK(h->ncols == 3 && strcmp(h->cols[2].type, "bytea") == 0);
    CHECK(h->cols[0].role == RS_ROLE_KEY && h->cols[0].order == RS_ORDER_INT);
    CHECK(h->cols[1].order == RS_ORDER_NONE);
    CHECK(h->nhashed == 1 && strcmp(h->hashed[0], "name") == 0);
    CHECK(strcmp(rs_header_meta(h, "snapshot"), "00000003-0000001B-1") == 0);
    rs_reader_free(r);
    close(fd);
    unlink(path);
}

TEST(zero_rows)
{
    char path[64];
    int fd = tmpfile_fd(path);
    uint64_t count = 1;

    close(fd);
    CHECK(write_stream(path, 0, 1) == 0);
    CHECK(read_stream(path, &count, 0) == 0);
    CHECK(count == 0);
    unlink(path);
}

TEST(million_tiny_rows)
{
    char path[64];
    int fd = tmpfile_fd(path);
    uint64_t count = 0;

    close(fd);
    CHECK(write_stream(path, 1000000, 1) == 0);
    CHECK(read_stream(path, &count, 1) == 0);
    CHECK(count == 1000000);
    unlink(path);
}

TEST(value_of_64_mib)
{
    char path[64];
    int fd = tmpfile_fd(path);
    struct rs_header h;
    struct rs_writer *w = NULL;
    struct rs_reader *r = NULL;
    const struct rs_value *v;
    size_t big = (size_t)64 * 1024 * 1024;
    char *data = xmalloc(big);
    struct rs_value vals[3] = { { "1", 1 }, { NULL, 0 }, { NULL, 0 } };

    for (size_t i = 0; i < big; i++)
        data[i] = (char)(i * 7 + (i >> 13));
    vals[2] = (struct rs_value){ data, big };
    make_header(&h);
    CHECK(rs_writer_open(&w, fd, path, &h, 1) == 0);
    CHECK(rs_writer_put(w, vals) == 0);
    CHECK(rs_writer_finish(w) == 0);
    rs_writer_free(w);
    close(fd);
    fd = open(path, O_RDONLY);
    CHECK(rs_reader_open(&r, fd, path) == 0);
    CHECK(rs_reader_next(r, &v) == 0 && v != NULL);
    CHECK(v != NULL && v[1].data == NULL && v[2].len == big && memcmp(v[2].data, data, big) == 0);
    CHECK(rs_reader_next(r, &v) == 0 && v == NULL);
    rs_reader_free(r);
    close(fd);
    rs_header_free(&h);
    free(data);
    unlink(path);
}

TEST(oversized_record_refused)
{
    char path[64];
    int fd = tmpfile_fd(path);
    struct rs_header h;
    struct rs_writer *w = NULL;
    struct rs_reader *r = NULL;
    const struct rs_value *v;
    char data[5000];
    struct rs_value vals[3] = { { "7", 1 }, { NULL, 0 }, { data, sizeof(data) } };

    memset(data, 'x', sizeof(data));
    make_header(&h);
    rs_writer_open(&w, fd, path, &h, 1);
    /* The writer refuses by table, key and column. */
    rs_writer_set_max_row(w, 4000);
    capture_begin();
    CHECK(rs_writer_put(w, vals) == EXIT_DATA);
    capture_end();
    CHECK(strstr(captured, "(id)=(7)") != NULL && strstr(captured, "\"blob\"") != NULL);
    rs_writer_set_max_row(w, RS_DEFAULT_MAX_ROW_BYTES);
    rs_writer_free(w);
    close(fd);
    /* The reader refuses a record above its own limit. */
    fd = open(path, O_WRONLY | O_TRUNC);
    rs_writer_open(&w, fd, path, &h, 1);
    CHECK(rs_writer_put(w, vals) == 0);
    CHECK(rs_writer_finish(w) == 0);
    rs_writer_free(w);
    close(fd);
    fd = open(path, O_RDONLY);
    CHECK(rs_reader_open(&r, fd, path) == 0);
    rs_reader_set_max_row(r, 4000);
    capture_begin();
    CHECK(rs_reader_next(r, &v) == EXIT_DATA);
    capture_end();
    CHECK(strstr(captured, "exceeds --max-row-bytes 4000") != NULL);
    rs_reader_free(r);
    close(fd);
    rs_header_free(&h);
    unlink(path);
}

TEST(truncated_at_every_offset)
{
    char path[64], cut[64];
    int fd = tmpfile_fd(path), cfd = tmpfile_fd(cut);
    long size;
    char *bytes;
    FILE *f;

    close(fd);
    close(cfd);
    write_stream(path, 40, 1);
    size = file_size(path);
    bytes = xmalloc((size_t)size);
    f = fopen(path, "rb");
    CHECK(fread(bytes, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    for (long n = 0; n < size; n++) {
        int rc;

        f = fopen(cut, "wb");
        fwrite(bytes, 1, (size_t)n, f);
        fclose(f);
        capture_begin();
        rc = read_stream(cut, NULL, 0);
        capture_end();
        CHECK(rc == EXIT_DATA);
        if (rc != EXIT_DATA)
            fprintf(stderr, "cut at %ld of %ld: rc %d\n", n, size, rc);
        if (n > 4 && rc == EXIT_DATA)
            CHECK(strstr(captured, "truncated") != NULL || strstr(captured, "corrupt") != NULL);
    }
    free(bytes);
    unlink(path);
    unlink(cut);
}

TEST(every_read_size)
{
    char path[64];
    int fd = tmpfile_fd(path);
    long size;

    close(fd);
    write_stream(path, 300, 1);
    size = file_size(path);
    for (long n = 1; n <= size + 1; n++) {
        uint64_t count = 0;

        rs_set_read_size((size_t)n);
        CHECK(read_stream(path, &count, 1) == 0);
        CHECK(count == 300);
    }
    rs_set_read_size(0);
    unlink(path);
}

static int
expect_error(const char *path, const char *needle)
{
    int rc;

    capture_begin();
    rc = read_stream(path, NULL, 0);
    capture_end();
    if (strstr(captured, needle) == NULL)
        fprintf(stderr, "expected \"%s\" in: %s", needle, captured);
    CHECK(strstr(captured, needle) != NULL);
    return rc;
}

static void
write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");

    fwrite(p, 1, n, f);
    fclose(f);
}

/* Compress raw stream content as one zstd frame (to craft damaged contents). */
#include <zstd.h>
static void
write_compressed(const char *path, const void *p, size_t n)
{
    size_t cap = ZSTD_compressBound(n);
    char *out = xmalloc(cap);
    size_t k = ZSTD_compress(out, cap, p, n, 1);

    write_bytes(path, out, k);
    free(out);
}

static size_t
read_decompressed(const char *path, char **out)
{
    long size = file_size(path);
    char *in = xmalloc((size_t)size);
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 20, n;

    CHECK(fread(in, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    *out = xmalloc(cap);
    n = ZSTD_decompress(*out, cap, in, (size_t)size);
    free(in);
    CHECK(!ZSTD_isError(n));
    return n;
}

TEST(reader_errors_each_named)
{
    char path[64], bad[64];
    int fd = tmpfile_fd(path), bfd = tmpfile_fd(bad);
    char *raw;
    size_t n;
    long size;
    char *bytes;
    FILE *f;

    close(fd);
    close(bfd);
    write_stream(path, 20, 1);

    /* Not zstd at all. */
    write_bytes(bad, "id,name\n1,a\n", 12);
    CHECK(expect_error(bad, "bad magic") == EXIT_DATA);

    /* zstd, but not our magic. */
    write_compressed(bad, "NOPE\001xxxxxxxxxxxx", 17);
    CHECK(expect_error(bad, "bad magic") == EXIT_DATA);

    /* An unknown version. */
    n = read_decompressed(path, &raw);
    raw[4] = 9;
    write_compressed(bad, raw, n);
    CHECK(expect_error(bad, "unsupported stream format version 9") == EXIT_DATA);
    raw[4] = RS_FORMAT_VERSION;

    /* A flipped value byte: our own checksum catches what zstd cannot. */
    raw[n - 20] ^= 0x01;
    write_compressed(bad, raw, n);
    CHECK(expect_error(bad, "checksum mismatch") == EXIT_DATA);
    raw[n - 20] ^= 0x01;

    /* Corrupt compressed bytes: zstd's frame checksum or decoder fails. */
    size = file_size(path);
    bytes = xmalloc((size_t)size);
    f = fopen(path, "rb");
    CHECK(fread(bytes, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    bytes[size - 6] ^= 0x55;
    write_bytes(bad, bytes, (size_t)size);
    CHECK(expect_error(bad, "corrupt stream") == EXIT_DATA);
    free(bytes);

    /* Truncation. */
    write_compressed(bad, raw, n - 12);
    CHECK(expect_error(bad, "truncated") == EXIT_DATA);

    /* Empty input. */
    write_bytes(bad, "", 0);
    CHECK(expect_error(bad, "empty input") == EXIT_DATA);

    free(raw);
    unlink(path);
    unlink(bad);
}

TEST(key_order_checked_by_writer_and_reader)
{
    char path[64];
    int fd = tmpfile_fd(path);
    struct rs_header h;
    struct rs_writer *w = NULL;
    struct rs_value a[3] = { { "10", 2 }, { NULL, 0 }, { NULL, 0 } };
    struct rs_value b[3] = { { "9", 1 }, { NULL, 0 }, { NULL, 0 } };
    struct rs_value dup[3] = { { "10", 2 }, { "x", 1 }, { NULL, 0 } };

    make_header(&h);
    /* Integer order: 9 < 10 although "9" > "10" as bytes. */
    rs_writer_open(&w, fd, path, &h, 1);
    CHECK(rs_writer_put(w, b) == 0);
    CHECK(rs_writer_put(w, a) == 0);
    capture_begin();
    CHECK(rs_writer_put(w, dup) == EXIT_DATA);
    capture_end();
    CHECK(strstr(captured, "duplicate key (id)=(10)") != NULL);
    rs_writer_free(w);
    close(fd);

    /* An unsorted stream written without the check is refused by the reader. */
    fd = open(path, O_WRONLY | O_TRUNC);
    rs_writer_open(&w, fd, path, &h, 1);
    rs_writer_no_order_check(w);
    rs_writer_put(w, a);
    rs_writer_put(w, b);
    CHECK(rs_writer_finish(w) == 0);
    rs_writer_free(w);
    close(fd);
    CHECK(expect_error(path, "key order violation: (id)=(9) after (id)=(10)") == EXIT_DATA);
    rs_header_free(&h);
    unlink(path);
}

TEST(text_keys_compare_as_bytes)
{
    struct rs_header h;
    struct rs_value x[1] = { { "B", 1 } }, y[1] = { { "a", 1 } }, z[1] = { { "ab", 2 } };

    rs_header_init(&h, RS_KIND_ROWS, "t");
    rs_header_add_column(&h, "k", "text", RS_ROLE_KEY, RS_ORDER_TEXT);
    CHECK(rs_key_cmp(&h, x, y) < 0); /* "C" collation: uppercase first */
    CHECK(rs_key_cmp(&h, y, z) < 0); /* a prefix sorts first */
    CHECK(rs_key_cmp(&h, z, z) == 0);
    rs_header_free(&h);
}

TEST(compatible_headers)
{
    struct rs_header a, b;

    make_header(&a);
    make_header(&b);
    CHECK(rs_header_check_compatible(&a, &b, "x") == 0);
    rs_header_add_hashed(&b, "blob");
    capture_begin();
    CHECK(rs_header_check_compatible(&a, &b, "source and target") == EXIT_DATA);
    capture_end();
    CHECK(strstr(captured, "hashed column lists differ") != NULL);
    b.cols[0].order = RS_ORDER_TEXT;
    capture_begin();
    CHECK(rs_header_check_compatible(&a, &b, "source and target") == EXIT_DATA);
    capture_end();
    CHECK(strstr(captured, "key columns differ") != NULL);
    rs_header_free(&a);
    rs_header_free(&b);
}

TEST(parse_int64_strict)
{
    int64_t v;

    CHECK(rs_parse_int64("-9223372036854775808", 20, &v) == 0 && v == INT64_MIN);
    CHECK(rs_parse_int64("9223372036854775807", 19, &v) == 0 && v == INT64_MAX);
    CHECK(rs_parse_int64("9223372036854775808", 19, &v) == -1);
    CHECK(rs_parse_int64("12a", 3, &v) == -1);
    CHECK(rs_parse_int64("", 0, &v) == -1);
    CHECK(rs_parse_int64("-", 1, &v) == -1);
}

int
main(void)
{
    err_init("test_rs");
    return unit_main();
}
