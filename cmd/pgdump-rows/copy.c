/*
 * The hot path: COPY text lines from the server, decoded in place into one
 * reused buffer and an rs_value array, written to the row stream. Memory is
 * bounded by one row; values without escapes are not copied at all.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "io.h"
#include "mem.h"
#include "pgdump.h"

struct db *volatile copy_cancel_db = NULL;

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Decode the escapes of one field [p, end) into out (COPY FROM's rules: \b \f
 * \n \r \t \v, \ooo octal, \xHH hex, any other escaped byte stands for itself).
 * Returns the end of the decoded bytes, or NULL on a lone trailing backslash.
 */
static char *
unescape(const char *p, const char *end, char *out)
{
    while (p < end) {
        char c = *p++;

        if (c != '\\') {
            *out++ = c;
            continue;
        }
        if (p == end)
            return NULL;
        c = *p++;
        switch (c) {
        case 'b':
            *out++ = '\b';
            break;
        case 'f':
            *out++ = '\f';
            break;
        case 'n':
            *out++ = '\n';
            break;
        case 'r':
            *out++ = '\r';
            break;
        case 't':
            *out++ = '\t';
            break;
        case 'v':
            *out++ = '\v';
            break;
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7': {
            int v = c - '0';

            for (int i = 0; i < 2 && p < end && *p >= '0' && *p <= '7'; i++)
                v = v * 8 + (*p++ - '0');
            *out++ = (char)(v & 0377);
            break;
        }
        case 'x':
            if (p < end && hex_digit(*p) >= 0) {
                int v = hex_digit(*p++);

                if (p < end && hex_digit(*p) >= 0)
                    v = v * 16 + hex_digit(*p++);
                *out++ = (char)v;
            } else {
                *out++ = 'x';
            }
            break;
        default:
            *out++ = c;
            break;
        }
    }
    return out;
}

/*
 * Split one COPY text line into ncols values. Fields without a backslash
 * point into line itself; escaped ones are decoded into out (len bytes are
 * enough: decoding never grows a field). Returns the field count found, or -1
 * on a malformed escape.
 */
static int
decode_line(const char *line, size_t len, char *out, struct rs_value *vals, int ncols)
{
    const char *p = line, *end = line + len;
    int col = 0;

    for (;;) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        const char *fend = tab != NULL ? tab : end;
        size_t flen = (size_t)(fend - p);

        if (col < ncols) {
            const char *bs = flen > 0 ? memchr(p, '\\', flen) : NULL;

            if (bs == NULL) {
                vals[col].data = p;
                vals[col].len = flen;
            } else if (flen == 2 && p[1] == 'N') {
                /* A value "\N" comes escaped as "\\N": this is NULL. */
                vals[col].data = NULL;
                vals[col].len = 0;
            } else {
                char *start = out, *o;

                memcpy(out, p, (size_t)(bs - p));
                o = unescape(bs, fend, out + (bs - p));
                if (o == NULL)
                    return -1;
                vals[col].data = start;
                vals[col].len = (size_t)(o - start);
                out = o;
            }
        }
        col++;
        if (tab == NULL)
            return col;
        p = tab + 1;
    }
}

static double
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Refuse a NULL key or an integer key that does not parse; 0 when the key is fine. */
static int
check_key(const struct dump_plan *p, const struct rs_value *vals, uint64_t row)
{
    for (int i = 0; i < p->nkeys; i++) {
        int64_t v;

        if (vals[i].data == NULL) {
            char key[512];

            rs_key_format(&p->h, vals, key, sizeof(key));
            err_msg(EXIT_DATA, "%s: row %llu: NULL in key column \"%s\": %s", p->label,
                    (unsigned long long)row, p->h.cols[i].name, key);
            err_note("hint: rows whose key is NULL cannot be compared; --skip-null-keys "
                     "leaves them out");
            return EXIT_DATA;
        }
        if (p->h.cols[i].order == RS_ORDER_INT &&
            rs_parse_int64(vals[i].data, vals[i].len, &v) != 0) {
            char key[512];

            rs_key_format(&p->h, vals, key, sizeof(key));
            return err_msg(EXIT_DATA, "%s: row %llu: key column \"%s\" is not a 64-bit integer: %s",
                           p->label, (unsigned long long)row, p->h.cols[i].name, key);
        }
    }
    return 0;
}

int
copy_rows(struct db *db, const struct dump_opts *o, const struct dump_plan *p, int fd,
          const char *name)
{
    struct rs_writer *w = NULL;
    struct rs_value *vals = NULL;
    struct buf row;
    uint64_t rows = 0;
    double start = 0, last = 0;
    int ncols = p->h.ncols;
    int rc;

    buf_init(&row);
    vals = xcalloc((size_t)ncols, sizeof(*vals));
    if (o->progress)
        start = last = now_seconds();

    copy_cancel_db = db;
    if (io_interrupted) {
        rc = EXIT_DB;
        goto done;
    }
    if ((rc = db_copy_out_begin(db, p->label, p->copy_sql)) != 0)
        goto done;
    /* Opened once the COPY runs, so that a refused dump writes no output at all. */
    if ((rc = rs_writer_open(&w, fd, name, &p->h, o->level)) != 0)
        goto done;
    rs_writer_set_max_row(w, o->max_row);
    for (;;) {
        const char *line;
        size_t len;
        int got = db_copy_out_line(db, &line, &len), n;

        if (got == 0)
            break;
        if (got < 0) {
            rc = -got;
            goto done;
        }
        if (io_interrupted) {
            rc = EXIT_DB; /* main dies by the signal */
            goto done;
        }
        rows++;
        /* Grows to the longest row, then is reused: no allocation per value. */
        buf_reserve(&row, len);
        n = decode_line(line, len, row.data, vals, ncols);
        if (n != ncols) {
            rc = err_msg(EXIT_DB, "%s: row %llu: malformed COPY data (%d fields, expected %d)",
                         p->label, (unsigned long long)rows, n, ncols);
            goto done;
        }
        if ((rc = check_key(p, vals, rows)) != 0 || (rc = rs_writer_put(w, vals)) != 0)
            goto done;
        if (o->progress && (rows & 1023) == 0) {
            double t = now_seconds();

            if (t - last >= 0.5) {
                err_note("%s: %llu rows, %.0f rows/s", p->label, (unsigned long long)rows,
                         (double)rows / (t - start));
                last = t;
            }
        }
    }
    copy_cancel_db = NULL;
    if ((rc = rs_writer_finish(w)) != 0)
        goto done;
    if (o->progress) {
        double t = now_seconds() - start;

        err_note("%s: %llu rows in %.1f s, %.0f rows/s", p->label, (unsigned long long)rows, t,
                 t > 0 ? (double)rows / t : 0.0);
    }
done:
    copy_cancel_db = NULL;
    rs_writer_free(w);
    free(vals);
    buf_free(&row);
    return rc;
}
