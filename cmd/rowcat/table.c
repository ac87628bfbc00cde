/*
 * The aligned table (see table.h). Each value is rendered once: control
 * characters and bytes that are not UTF-8 become escapes, the display width is
 * counted with wcwidth(), and the value is cut at --width.
 */
#define _XOPEN_SOURCE 700 /* wcwidth */
#include "table.h"

#include <inttypes.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "io.h"
#include "mem.h"
#include "utf8.h"

#define CUT_MARK  "..."
#define CUT_WIDTH 3

static int utf8_locale;

struct table {
    const struct rs_header *h;
    struct out *o;
    const char *null_str;
    size_t width; /* 0: no cut */
    int ncols;
    char *right; /* right-aligned (numeric) columns */
    size_t *colw;
    /* The first TABLE_WINDOW records, rendered: cell i of the window is cells.data[off[i] ..]. */
    struct buf cells;
    size_t *off;
    size_t *cellw;
    size_t nwin;
    struct buf scratch;
};

void
table_init_locale(void)
{
    /* Widths only; messages and number formats stay in the C locale. */
    utf8_locale = setlocale(LC_CTYPE, "C.UTF-8") != NULL;
}

/*
 * Render one value into b: printable text as is, the rest escaped (\n \r \t,
 * \xHH for other control bytes and for bytes that are not UTF-8, \uXXXX for
 * code points with no width). Cut at limit columns (0: never). Returns the
 * display width.
 */
static size_t
render(struct buf *b, const char *s, size_t len, size_t limit)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t w = 0, cut_len = b->len, cut_w = 0;
    size_t i = 0;

    while (i < len) {
        char esc[16];
        const char *piece = esc;
        size_t plen, pw;
        uint32_t cp = 0;
        int n = utf8_decode(p + i, len - i, &cp);

        if (n == 0) {
            plen = (size_t)snprintf(esc, sizeof(esc), "\\x%02X", p[i]);
            pw = plen;
            n = 1;
        } else if (cp == '\n' || cp == '\r' || cp == '\t') {
            esc[0] = '\\';
            esc[1] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't';
            plen = pw = 2;
        } else if (cp < 0x20 || cp == 0x7f) {
            plen = (size_t)snprintf(esc, sizeof(esc), "\\x%02X", (unsigned)cp);
            pw = plen;
        } else if (cp < 0x80) {
            piece = s + i;
            plen = pw = 1;
        } else {
            int cw = utf8_locale ? wcwidth((wchar_t)cp) : 1;

            if (cw < 0) {
                plen = (size_t)snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)cp);
                pw = plen;
            } else {
                piece = s + i;
                plen = (size_t)n;
                pw = (size_t)cw;
            }
        }
        if (limit > 0 && w + pw > limit) {
            b->len = cut_len;
            buf_append(b, CUT_MARK, CUT_WIDTH);
            return cut_w + CUT_WIDTH;
        }
        buf_append(b, piece, plen);
        w += pw;
        i += (size_t)n;
        if (limit == 0 || w + CUT_WIDTH <= limit) {
            cut_len = b->len;
            cut_w = w;
        }
    }
    return w;
}

/* psql right-aligns numbers. */
static int
is_numeric_type(const char *t)
{
    static const char *const types[] = {
        "smallint", "integer", "bigint",           "int2", "int4",  "int8", "real",
        "float4",   "float8",  "double precision", "oid",  "money",
    };

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(t, types[i]) == 0)
            return 1;
    return strncmp(t, "numeric", 7) == 0 && (t[7] == '\0' || t[7] == '(');
}

static void
print_cell(struct table *t, int col, const char *s, size_t len, size_t w)
{
    struct out *o = t->o;
    size_t pad = t->colw[col] > w ? t->colw[col] - w : 0;
    int last = col == t->ncols - 1;

    if (col > 0)
        out_byte(o, '|');
    out_byte(o, ' ');
    if (t->right[col])
        out_spaces(o, pad);
    out_write(o, s, len);
    /* Like psql: no trailing blanks after the last column of a data line. */
    if (!t->right[col] && !last)
        out_spaces(o, pad);
    if (!last)
        out_byte(o, ' ');
}

/* Render one record's cell into b, returning its width. */
static size_t
render_value(struct table *t, struct buf *b, const struct rs_value *v)
{
    if (v->data == NULL)
        return render(b, t->null_str, strlen(t->null_str), 0);
    return render(b, v->data, v->len, t->width);
}

/* Column widths from names and the window, then the heading, then the window. */
static void
flush_window(struct table *t)
{
    struct out *o = t->o;
    struct buf names;
    size_t *noff = xcalloc((size_t)t->ncols + 1, sizeof(size_t));
    size_t *nw = xcalloc((size_t)t->ncols + 1, sizeof(size_t));

    buf_init(&names);
    for (int j = 0; j < t->ncols; j++) {
        noff[j] = names.len;
        nw[j] = render(&names, t->h->cols[j].name, strlen(t->h->cols[j].name), 0);
        t->colw[j] = nw[j];
    }
    noff[t->ncols] = names.len;
    for (size_t r = 0; r < t->nwin; r++)
        for (int j = 0; j < t->ncols; j++)
            if (t->cellw[r * (size_t)t->ncols + (size_t)j] > t->colw[j])
                t->colw[j] = t->cellw[r * (size_t)t->ncols + (size_t)j];

    /* The heading: names centred, as psql does. */
    for (int j = 0; j < t->ncols; j++) {
        size_t left = (t->colw[j] - nw[j]) / 2;

        if (j > 0)
            out_byte(o, '|');
        out_byte(o, ' ');
        out_spaces(o, left);
        out_write(o, names.data + noff[j], noff[j + 1] - noff[j]);
        out_spaces(o, t->colw[j] - nw[j] - left);
        out_byte(o, ' ');
    }
    if (t->ncols > 0)
        out_byte(o, '\n');
    for (int j = 0; j < t->ncols; j++) {
        size_t n = t->colw[j] + 2;

        if (j > 0)
            out_byte(o, '+');
        while (n-- > 0)
            out_byte(o, '-');
    }
    if (t->ncols > 0)
        out_byte(o, '\n');

    for (size_t r = 0; r < t->nwin; r++) {
        for (int j = 0; j < t->ncols; j++) {
            size_t i = r * (size_t)t->ncols + (size_t)j;

            print_cell(t, j, t->cells.data + t->off[i], t->off[i + 1] - t->off[i], t->cellw[i]);
        }
        out_byte(o, '\n');
    }
    buf_free(&names);
    free(noff);
    free(nw);
    buf_free(&t->cells);
    t->nwin = 0;
}

int
table_print(struct rs_reader *r, struct out *o, const char *null_str, int width)
{
    struct table t;
    uint64_t nrows = 0;
    int windowing = 1, rc = 0;
    char footer[64];

    memset(&t, 0, sizeof(t));
    t.h = rs_reader_header(r);
    t.o = o;
    t.null_str = null_str;
    t.width = (size_t)width;
    t.ncols = t.h->ncols;
    t.right = xcalloc((size_t)t.ncols + 1, 1);
    t.colw = xcalloc((size_t)t.ncols + 1, sizeof(size_t));
    t.off = xcalloc((size_t)TABLE_WINDOW * (size_t)t.ncols + 1, sizeof(size_t));
    t.cellw = xcalloc((size_t)TABLE_WINDOW * (size_t)t.ncols + 1, sizeof(size_t));
    buf_init(&t.cells);
    buf_init(&t.scratch);
    for (int j = 0; j < t.ncols; j++)
        t.right[j] = (char)is_numeric_type(t.h->cols[j].type);

    for (;;) {
        const struct rs_value *v;

        if ((rc = rs_reader_next(r, &v)) != 0)
            goto done;
        if (v == NULL || io_interrupted || o->rc != 0)
            break;
        nrows++;
        if (windowing) {
            for (int j = 0; j < t.ncols; j++) {
                size_t i = t.nwin * (size_t)t.ncols + (size_t)j;

                t.off[i] = t.cells.len;
                t.cellw[i] = render_value(&t, &t.cells, &v[j]);
            }
            t.nwin++;
            t.off[t.nwin * (size_t)t.ncols] = t.cells.len;
            if (t.nwin == TABLE_WINDOW) {
                flush_window(&t);
                windowing = 0;
            }
            continue;
        }
        for (int j = 0; j < t.ncols; j++) {
            size_t w;

            buf_reset(&t.scratch);
            w = render_value(&t, &t.scratch, &v[j]);
            print_cell(&t, j, t.scratch.data, t.scratch.len, w);
        }
        out_byte(o, '\n');
    }
    if (io_interrupted || o->rc != 0)
        goto done;
    if (windowing)
        flush_window(&t);
    snprintf(footer, sizeof(footer), "(%" PRIu64 " row%s)\n\n", nrows, nrows == 1 ? "" : "s");
    out_str(o, footer);
    rc = out_flush(o);
done:
    if (rc == 0)
        rc = o->rc;
    buf_free(&t.cells);
    buf_free(&t.scratch);
    free(t.right);
    free(t.colw);
    free(t.off);
    free(t.cellw);
    return rc;
}
