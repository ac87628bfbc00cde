/*
 * CSV to row stream (see csvin.h). libcsv does the quoting; this file adds
 * what PostgreSQL's CSV rules and the row stream need on top: NULL versus
 * "", line numbers, the field count, typed keys and their order.
 */
#include "csvin.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <csv.h>

#include "err.h"
#include "io.h"
#include "mem.h"
#include "opt.h"
#include "rs.h"

#define READ_SIZE ((size_t)1 << 16)
/* libcsv grows its field buffer by this much at a time (its default, 128, is quadratic). */
#define CSV_BLOCK ((size_t)1 << 20)
/* Fields per record: the row-stream reader accepts no more columns than this. */
#define MAX_FIELDS 4096
/* Longest key value quoted in a message. */
#define SHOW_MAX 64

/* One --types entry. */
struct coltype {
    char *col;
    char *type;
};

struct state {
    const struct csvin_opts *o;
    struct csv_parser p;
    int rc;
    unsigned long line;     /* the physical line being parsed, from 1 */
    unsigned long rec_line; /* the line the current record started on */
    int last_cr;            /* the last record ended with CR: a following LF is CRLF */

    /* The current record: field bytes in data, located by off/len. */
    struct buf data;
    size_t *off;
    size_t *len;
    char *isnull;
    int nf;
    int capf;
    size_t row_bytes;

    /* Set up from the header row. */
    int ncols; /* 0 until the header row is read */
    struct rs_header h;
    struct rs_writer *w;
    struct rs_value *vals;
    int nkeys;
    int *keycols;
    char (*intbuf)[24]; /* integer keys in canonical form, one per key */

    /* The previous record's key, for the order check. */
    struct buf prev_data;
    struct rs_value *prev;
    int have_prev;
    unsigned long prev_line;
};

/* libcsv's realloc hook has no context argument: the limit is file-wide. */
static size_t csv_limit;

static int
never_space(unsigned char c)
{
    (void)c;
    /* PostgreSQL keeps spaces around unquoted values; libcsv would trim them. */
    return 0;
}

static void *
limited_realloc(void *p, size_t n)
{
    /* A NULL here makes libcsv retry smaller, then fail with CSV_ENOMEM. */
    if (n > csv_limit)
        return NULL;
    return realloc(p, n);
}

/* Free a --types list. */
static void
free_types(struct coltype *t, int n)
{
    for (int i = 0; i < n; i++) {
        free(t[i].col);
        free(t[i].type);
    }
    free(t);
}

static char *
trimmed(const char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return xstrndup(s, n);
}

/*
 * The PostgreSQL spelling of a type as format_type() prints it, for the
 * integer types at least: their order kind depends on it. Other names are
 * only lowercased (unless quoted).
 */
static char *
normalize_type(const char *t)
{
    static const char *const alias[][2] = {
        { "int2", "smallint" }, { "smallint", "smallint" }, { "int4", "integer" },
        { "int", "integer" },   { "integer", "integer" },   { "int8", "bigint" },
        { "bigint", "bigint" },
    };
    char *s = xstrdup(t);

    if (strchr(s, '"') == NULL)
        for (char *p = s; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++) {
        if (strcmp(s, alias[i][0]) == 0) {
            free(s);
            return xstrdup(alias[i][1]);
        }
    }
    return s;
}

static int
is_integer_type(const char *t)
{
    return strcmp(t, "smallint") == 0 || strcmp(t, "integer") == 0 || strcmp(t, "bigint") == 0;
}

/*
 * Parse "col:type,col:type". Commas inside parentheses belong to the type
 * (numeric(10,2)); the type starts after the last colon. Returns 0 or
 * EXIT_USAGE after printing.
 */
static int
parse_types(const char *arg, struct coltype **out, int *nout)
{
    struct coltype *t = NULL;
    int n = 0, depth = 0;
    const char *start = arg;

    *out = NULL;
    *nout = 0;
    for (const char *p = arg;; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && depth > 0)
            depth--;
        if (*p == '\0' || (*p == ',' && depth == 0)) {
            const char *colon = NULL;
            char *col, *type;

            for (const char *q = start; q < p; q++)
                if (*q == ':')
                    colon = q;
            if (colon == NULL) {
                free_types(t, n);
                return opt_usage_error("--types: expected COLUMN:TYPE, got '%.*s'",
                                       (int)(p - start), start);
            }
            col = trimmed(start, (size_t)(colon - start));
            type = trimmed(colon + 1, (size_t)(p - colon - 1));
            if (col[0] == '\0' || type[0] == '\0') {
                free(col);
                free(type);
                free_types(t, n);
                return opt_usage_error("--types: expected COLUMN:TYPE, got '%.*s'",
                                       (int)(p - start), start);
            }
            for (int i = 0; i < n; i++) {
                if (strcmp(t[i].col, col) == 0) {
                    opt_usage_error("--types: column \"%s\" is given twice", col);
                    free(col);
                    free(type);
                    free_types(t, n);
                    return EXIT_USAGE;
                }
            }
            t = xrealloc(t, ((size_t)n + 1) * sizeof(*t));
            t[n].col = col;
            t[n].type = normalize_type(type);
            free(type);
            n++;
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
    *out = t;
    *nout = n;
    return 0;
}

/* Parse --key into a list; refuses empty names and repeats. */
static int
parse_keys(const char *arg, char ***out, int *nout)
{
    char **k = opt_split_list(arg, nout);

    for (int i = 0; i < *nout; i++) {
        if (k[i][0] == '\0') {
            opt_free_list(k);
            return opt_usage_error("--key: empty column name in '%s'", arg);
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(k[i], k[j]) == 0) {
                opt_usage_error("--key: column \"%s\" is given twice", k[i]);
                opt_free_list(k);
                return EXIT_USAGE;
            }
        }
    }
    *out = k;
    return 0;
}

int
csvin_check_options(const struct csvin_opts *o)
{
    struct coltype *t = NULL;
    char **k = NULL;
    int nt = 0, nk = 0, rc = 0;

    if (o->types != NULL && (rc = parse_types(o->types, &t, &nt)) != 0)
        return rc;
    free_types(t, nt);
    if (o->keys != NULL && (rc = parse_keys(o->keys, &k, &nk)) != 0)
        return rc;
    opt_free_list(k);
    return 0;
}

/* Quote a key value for a message: printable ASCII as is, other bytes as \xHH. */
static void
show_value(char *dst, size_t dstsz, const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 5 < dstsz; i++) {
        unsigned char c = (unsigned char)s[i];

        if (i == SHOW_MAX) {
            n += (size_t)snprintf(dst + n, dstsz - n, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\')
            dst[n++] = (char)c;
        else
            n += (size_t)snprintf(dst + n, dstsz - n, "\\x%02x", c);
    }
    dst[n] = '\0';
}

static int fail(struct state *st, int code, const char *fmt, ...) ERR_PRINTF(3, 4);

/* Report an error about the current record and stop the parse. */
static int
fail(struct state *st, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    st->rc = err_msg(code, "%s: line %lu: %s", st->o->in_name, st->rec_line, msg);
    return st->rc;
}

/*
 * The header row: column names, then the stream header from --types and
 * --key, then the writer.
 */
static int
take_header(struct state *st)
{
    const struct csvin_opts *o = st->o;
    struct coltype *types = NULL;
    char **keys = NULL;
    int ntypes = 0, nkeys = 0, rc = 0, *keypos = NULL;

    if (st->nf == 0)
        return fail(st, EXIT_DATA, "the header row is empty");
    for (int i = 0; i < st->nf; i++) {
        const char *name = st->data.data + st->off[i];

        if (st->isnull[i] || st->len[i] == 0)
            return fail(st, EXIT_DATA, "column %d of the header row has no name", i + 1);
        if (memchr(name, '\0', st->len[i]) != NULL)
            return fail(st, EXIT_DATA, "column %d of the header row contains a NUL byte", i + 1);
    }
    /* Names are NUL-terminated in place: the data buffer holds them back to back. */
    {
        struct buf names;

        buf_init(&names);
        for (int i = 0; i < st->nf; i++) {
            size_t at = names.len;

            buf_append(&names, st->data.data + st->off[i], st->len[i]);
            buf_putc(&names, '\0');
            st->off[i] = at;
        }
        buf_free(&st->data);
        st->data = names;
    }
    for (int i = 0; i < st->nf; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(st->data.data + st->off[i], st->data.data + st->off[j]) == 0)
                return fail(st, EXIT_DATA, "column \"%s\" appears twice in the header row",
                            st->data.data + st->off[i]);

    if (o->types != NULL && (rc = parse_types(o->types, &types, &ntypes)) != 0)
        goto done;
    if (o->keys != NULL && (rc = parse_keys(o->keys, &keys, &nkeys)) != 0)
        goto done;

    st->ncols = st->nf;
    rs_header_init(&st->h, RS_KIND_ROWS, o->table);
    rs_header_set_meta(&st->h, "source", "csv");
    keypos = xcalloc((size_t)nkeys + 1, sizeof(int));
    for (int k = 0; k < nkeys; k++) {
        keypos[k] = -1;
        for (int i = 0; i < st->ncols; i++)
            if (strcmp(keys[k], st->data.data + st->off[i]) == 0)
                keypos[k] = i;
        if (keypos[k] < 0) {
            rc = err_msg(EXIT_USAGE, "--key: %s has no column \"%s\" in its header row", o->in_name,
                         keys[k]);
            goto done;
        }
        /* The key order is the column order of the stream's header. */
        if (k > 0 && keypos[k] < keypos[k - 1]) {
            rc = err_msg(EXIT_USAGE,
                         "--key: list the key columns in the order of the header row "
                         "(\"%s\" comes before \"%s\")",
                         keys[k], keys[k - 1]);
            goto done;
        }
    }
    for (int t = 0; t < ntypes; t++) {
        int found = 0;

        for (int i = 0; i < st->ncols; i++)
            if (strcmp(types[t].col, st->data.data + st->off[i]) == 0)
                found = 1;
        if (!found) {
            rc = err_msg(EXIT_USAGE, "--types: %s has no column \"%s\" in its header row",
                         o->in_name, types[t].col);
            goto done;
        }
    }

    st->keycols = xcalloc((size_t)nkeys + 1, sizeof(int));
    st->intbuf = xcalloc((size_t)nkeys + 1, sizeof(*st->intbuf));
    for (int i = 0; i < st->ncols; i++) {
        const char *name = st->data.data + st->off[i];
        const char *type = "text";
        int is_key = 0;

        for (int t = 0; t < ntypes; t++)
            if (strcmp(types[t].col, name) == 0)
                type = types[t].type;
        for (int k = 0; k < nkeys; k++)
            if (keypos[k] == i)
                is_key = 1;
        if (is_key) {
            rs_header_add_column(&st->h, name, type, RS_ROLE_KEY,
                                 is_integer_type(type) ? RS_ORDER_INT : RS_ORDER_TEXT);
            st->keycols[st->nkeys++] = i;
        } else {
            rs_header_add_column(&st->h, name, type, RS_ROLE_DATA, RS_ORDER_NONE);
        }
    }
    st->vals = xcalloc((size_t)st->ncols, sizeof(*st->vals));
    st->prev = xcalloc((size_t)st->ncols, sizeof(*st->prev));
    if ((rc = rs_writer_open(&st->w, o->out_fd, o->out_name, &st->h, o->level)) != 0)
        goto done;
    rs_writer_set_max_row(st->w, o->max_row);
    /* Keys are checked here first, to name the CSV lines; the writer checks again. */
    if (st->nkeys == 0)
        rs_writer_no_order_check(st->w);
done:
    free(keypos);
    free_types(types, ntypes);
    opt_free_list(keys);
    if (rc != 0)
        st->rc = rc;
    return rc;
}

/* Check and canonicalise the keys, check their order, write the record. */
static int
take_record(struct state *st)
{
    const struct rs_header *h = &st->h;
    char cur[512], prev[512], shown[SHOW_MAX * 4 + 8];
    int rc;

    if (st->nf == 0)
        return fail(st, EXIT_DATA, "expected %d fields, found an empty line", st->ncols);
    if (st->nf != st->ncols)
        return fail(st, EXIT_DATA, "expected %d fields, found %d", st->ncols, st->nf);
    for (int i = 0; i < st->ncols; i++) {
        st->vals[i].data = st->isnull[i] ? NULL : st->data.data + st->off[i];
        st->vals[i].len = st->len[i];
    }
    for (int k = 0; k < st->nkeys; k++) {
        int i = st->keycols[k];
        struct rs_value *v = &st->vals[i];
        int64_t n;

        if (v->data == NULL)
            return fail(st, EXIT_DATA, "key column \"%s\" is NULL", h->cols[i].name);
        if (h->cols[i].order != RS_ORDER_INT)
            continue;
        if (rs_parse_int64(v->data, v->len, &n) != 0) {
            show_value(shown, sizeof(shown), v->data, v->len);
            return fail(st, EXIT_DATA, "key column \"%s\": \"%s\" is not a valid %s",
                        h->cols[i].name, shown, h->cols[i].type);
        }
        /* PostgreSQL's own spelling (no '+', no leading zeros), as a dump has it. */
        v->len = (size_t)snprintf(st->intbuf[k], sizeof(st->intbuf[k]), "%" PRId64, n);
        v->data = st->intbuf[k];
    }
    if (st->nkeys > 0 && st->have_prev) {
        int cmp = rs_key_cmp(h, st->prev, st->vals);

        if (cmp >= 0) {
            rs_key_format(h, st->vals, cur, sizeof(cur));
            if (cmp == 0)
                return fail(st, EXIT_DATA, "duplicate key %s (first on line %lu)", cur,
                            st->prev_line);
            rs_key_format(h, st->prev, prev, sizeof(prev));
            fail(st, EXIT_DATA, "key %s sorts before the previous key %s on line %lu", cur, prev,
                 st->prev_line);
            err_note("hint: sort the CSV by the --key columns first (see rowcat(1))");
            return st->rc;
        }
    }
    if ((rc = rs_writer_put(st->w, st->vals)) != 0) {
        err_note("detail: %s: line %lu", st->o->in_name, st->rec_line);
        st->rc = rc;
        return rc;
    }
    if (st->nkeys > 0) {
        buf_reset(&st->prev_data);
        for (int k = 0; k < st->nkeys; k++)
            buf_append(&st->prev_data, st->vals[st->keycols[k]].data, st->vals[st->keycols[k]].len);
        for (size_t k = 0, at = 0; k < (size_t)st->nkeys; k++) {
            int i = st->keycols[k];

            st->prev[i].data = st->prev_data.data + at;
            st->prev[i].len = st->vals[i].len;
            at += st->vals[i].len;
        }
        st->have_prev = 1;
        st->prev_line = st->rec_line;
    }
    return 0;
}

/* libcsv's field callback: s is NULL for an unquoted empty field. */
static void
on_field(void *s, size_t len, void *data)
{
    struct state *st = data;

    if (st->rc != 0)
        return;
    if (st->ncols > 0 && st->nf >= st->ncols) {
        st->nf++; /* only counted, for the message */
        return;
    }
    if (st->nf == MAX_FIELDS) {
        fail(st, EXIT_DATA, "more than %d fields", MAX_FIELDS);
        return;
    }
    st->row_bytes += len;
    if (st->row_bytes > st->o->max_row) {
        fail(st, EXIT_DATA, "record larger than --max-row-bytes (%zu bytes)", st->o->max_row);
        return;
    }
    if (st->nf == st->capf) {
        st->capf = st->capf ? st->capf * 2 : 16;
        st->off = xrealloc(st->off, (size_t)st->capf * sizeof(*st->off));
        st->len = xrealloc(st->len, (size_t)st->capf * sizeof(*st->len));
        st->isnull = xrealloc(st->isnull, (size_t)st->capf);
    }
    st->off[st->nf] = st->data.len;
    st->len[st->nf] = len;
    st->isnull[st->nf] = (s == NULL);
    buf_append(&st->data, s != NULL ? s : "", len);
    st->nf++;
}

/* libcsv's record callback: c is the byte that ended the record, -1 at EOF. */
static void
on_record(int c, void *data)
{
    struct state *st = data;

    if (st->rc != 0)
        return;
    if (st->nf == 0 && c == '\n' && st->last_cr) {
        /* The LF of a CRLF: not a line of its own. */
        st->last_cr = 0;
        st->rec_line = st->line + 1;
        return;
    }
    if (st->nf == 0 && st->ncols == 1) {
        /* An empty line is one NULL when there is one column (as COPY reads it). */
        on_field(NULL, 0, st);
    }
    if (st->ncols == 0)
        take_header(st);
    else
        take_record(st);
    st->nf = 0;
    st->row_bytes = 0;
    buf_reset(&st->data);
    st->last_cr = (c == '\r');
    st->rec_line = c == '\n' ? st->line + 1 : st->line;
}

static int
parse_error(struct state *st)
{
    int e = csv_error(&st->p);

    if (st->rc != 0)
        return st->rc;
    if (e == CSV_EPARSE)
        st->rc = err_msg(EXIT_DATA,
                         "%s: line %lu: malformed CSV: a quote inside an unquoted field, "
                         "or text after a closing quote",
                         st->o->in_name, st->line);
    else if (e == CSV_ENOMEM && csv_get_buffer_size(&st->p) + 1 >= csv_limit)
        st->rc = err_msg(EXIT_DATA, "%s: line %lu: field larger than --max-row-bytes (%zu bytes)",
                         st->o->in_name, st->line, st->o->max_row);
    else if (e == CSV_ENOMEM)
        st->rc = err_msg(EXIT_INTERNAL, "%s: line %lu: out of memory", st->o->in_name, st->line);
    else
        st->rc = err_msg(EXIT_DATA, "%s: line %lu: %s", st->o->in_name, st->line, csv_strerror(e));
    return st->rc;
}

/* Feed one buffer to libcsv a line at a time, so that callbacks know the line. */
static int
feed(struct state *st, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl != NULL ? (size_t)(nl - p) + 1 : n;

        if (csv_parse(&st->p, p, k, on_field, on_record, st) != k)
            return parse_error(st);
        if (st->rc != 0)
            return st->rc;
        if (nl != NULL)
            st->line++;
        p += k;
        n -= k;
    }
    return 0;
}

int
csvin_run(const struct csvin_opts *o)
{
    static const char bom[] = "\xef\xbb\xbf";
    struct state st;
    char *rbuf = NULL;
    int fd = -1, first = 1;

    memset(&st, 0, sizeof(st));
    st.o = o;
    st.line = 1;
    st.rec_line = 1;
    buf_init(&st.data);
    buf_init(&st.prev_data);
    csv_init(&st.p, CSV_STRICT | CSV_STRICT_FINI | CSV_REPALL_NL | CSV_EMPTY_IS_NULL);
    csv_set_space_func(&st.p, never_space);
    csv_set_realloc_func(&st.p, limited_realloc);
    csv_set_blk_size(&st.p, CSV_BLOCK);
    csv_limit = o->max_row + 1;

    if ((fd = io_open_input(o->input)) < 0) {
        st.rc = EXIT_IO;
        goto done;
    }
    rbuf = xmalloc(READ_SIZE);
    for (;;) {
        ssize_t n = io_read_full(fd, rbuf, READ_SIZE);
        const char *p = rbuf;

        if (n < 0) {
            st.rc = err_sys(EXIT_IO, "could not read %s", o->in_name);
            goto done;
        }
        if (n == 0)
            break;
        /* A spreadsheet's UTF-8 byte order mark is not part of the first name. */
        if (first && n >= 3 && memcmp(rbuf, bom, 3) == 0) {
            p += 3;
            n -= 3;
        }
        first = 0;
        if (feed(&st, p, (size_t)n) != 0)
            goto done;
        if (io_interrupted)
            goto done;
    }
    if (csv_fini(&st.p, on_field, on_record, &st) != 0) {
        if (st.rc == 0)
            fail(&st, EXIT_DATA, "unterminated quoted field at the end of the input");
        goto done;
    }
    if (st.rc != 0)
        goto done;
    if (st.ncols == 0) {
        st.rc = err_msg(EXIT_DATA, "%s: no header row (the input is empty)", o->in_name);
        goto done;
    }
    st.rc = rs_writer_finish(st.w);
done:
    if (st.w != NULL)
        rs_writer_free(st.w);
    if (st.ncols > 0)
        rs_header_free(&st.h);
    if (fd > STDIN_FILENO)
        close(fd);
    csv_free(&st.p);
    free(rbuf);
    buf_free(&st.data);
    buf_free(&st.prev_data);
    free(st.off);
    free(st.len);
    free(st.isnull);
    free(st.vals);
    free(st.prev);
    free(st.keycols);
    free(st.intbuf);
    return st.rc;
}
