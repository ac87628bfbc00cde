/*
 * Stream to COPY CSV / COPY text, the header listing and the count (see emit.h).
 * Values go through fmt.c in chunks, so a value of any size needs no more
 * than the output buffer.
 */
#include "emit.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fmt.h"
#include "io.h"

/* Input bytes per fmt call: escaped, a chunk at most doubles. */
#define CHUNK (OUT_BUF_SIZE / 4)

static void
csv_value(struct out *o, const char *s, size_t len, int single)
{
    if (!fmt_csv_needs_quote(s, len, single)) {
        out_write(o, s, len);
        return;
    }
    out_byte(o, '"');
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;

        out_advance(o, fmt_csv_double_quotes(out_reserve(o, 2 * n), s + off, n));
    }
    out_byte(o, '"');
}

void
emit_text_value(struct out *o, const char *s, size_t len)
{
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;

        out_advance(o, fmt_text_escape(out_reserve(o, 2 * n), s + off, n));
    }
}

int
emit_rows(struct rs_reader *r, struct out *o, enum emit_format f, int header_row)
{
    const struct rs_header *h = rs_reader_header(r);
    /* COPY quotes a lone "\." only when it would be alone on its line. */
    int single = h->ncols == 1;
    char delim = f == EMIT_CSV ? ',' : '\t';
    int rc;

    if (header_row) {
        for (int i = 0; i < h->ncols; i++) {
            if (i > 0)
                out_byte(o, delim);
            if (f == EMIT_CSV)
                csv_value(o, h->cols[i].name, strlen(h->cols[i].name), single);
            else
                emit_text_value(o, h->cols[i].name, strlen(h->cols[i].name));
        }
        out_byte(o, '\n');
    }
    for (;;) {
        const struct rs_value *v;

        if ((rc = rs_reader_next(r, &v)) != 0)
            return rc;
        if (v == NULL)
            break;
        if (o->rc != 0 || io_interrupted)
            return o->rc;
        for (int i = 0; i < h->ncols; i++) {
            if (i > 0)
                out_byte(o, delim);
            if (f == EMIT_CSV) {
                if (v[i].data != NULL)
                    csv_value(o, v[i].data, v[i].len, single);
            } else if (v[i].data == NULL) {
                out_write(o, "\\N", 2);
            } else {
                emit_text_value(o, v[i].data, v[i].len);
            }
        }
        out_byte(o, '\n');
    }
    return out_flush(o);
}

static const char *
kind_name(char kind)
{
    switch (kind) {
    case RS_KIND_ROWS:
        return "rows";
    case RS_KIND_CHANGES:
        return "changes";
    case RS_KIND_MAP:
        return "map";
    default:
        return NULL;
    }
}

static const char *
role_name(char role)
{
    switch (role) {
    case RS_ROLE_KEY:
        return "key";
    case RS_ROLE_DATA:
        return "data";
    case RS_ROLE_HASH:
        return "hash";
    case RS_ROLE_OP:
        return "op";
    default:
        return NULL;
    }
}

static const char *
order_name(char order)
{
    switch (order) {
    case RS_ORDER_NONE:
        return "-";
    case RS_ORDER_INT:
        return "int";
    case RS_ORDER_TEXT:
        return "text";
    default:
        return NULL;
    }
}

/* A tab, then s escaped; NULL prints as empty. */
static void
field(struct out *o, const char *s)
{
    out_byte(o, '\t');
    if (s != NULL)
        emit_text_value(o, s, strlen(s));
}

/* A tab, then a name for a code byte, or the byte itself when the name is unknown. */
static void
code_field(struct out *o, const char *name, char code)
{
    char raw[2] = { code, '\0' };

    field(o, name != NULL ? name : raw);
}

void
emit_header(const struct rs_header *h, struct out *o)
{
    char num[32];

    out_str(o, "kind");
    code_field(o, kind_name(h->kind), h->kind);
    out_str(o, "\ntable");
    field(o, h->table);
    snprintf(num, sizeof(num), "%d", h->server_version);
    out_str(o, "\nserver_version");
    field(o, num);
    out_str(o, "\nencoding");
    field(o, h->encoding);
    snprintf(num, sizeof(num), "%d", h->ncols);
    out_str(o, "\ncolumns");
    field(o, num);
    out_byte(o, '\n');
    for (int i = 0; i < h->ncols; i++) {
        const struct rs_column *c = &h->cols[i];

        snprintf(num, sizeof(num), "%d", i + 1);
        out_str(o, "column");
        field(o, num);
        field(o, c->name);
        field(o, c->type);
        code_field(o, role_name(c->role), c->role);
        code_field(o, order_name(c->order), c->order);
        out_byte(o, '\n');
    }
    for (int i = 0; i < h->nhashed; i++) {
        out_str(o, "hashed");
        field(o, h->hashed[i]);
        out_byte(o, '\n');
    }
    for (int i = 0; i < h->nmeta; i++) {
        out_str(o, "meta");
        field(o, h->meta[i].key);
        field(o, h->meta[i].value);
        out_byte(o, '\n');
    }
}

int
emit_count(struct rs_reader *r, struct out *o)
{
    const struct rs_value *v;
    char num[32];
    int rc;

    /* Nothing per value: the reader's own checks are the whole cost. */
    do {
        if ((rc = rs_reader_next(r, &v)) != 0)
            return rc;
    } while (v != NULL && !io_interrupted);
    if (io_interrupted)
        return 0;
    snprintf(num, sizeof(num), "%" PRIu64 "\n", rs_reader_count(r));
    out_str(o, num);
    return out_flush(o);
}
