/*
 * The dump: the columns of a table (from the catalog) or of a query (from its
 * description), the key columns with their order kind, the one COPY statement
 * that emits and orders the key as DESIGN.md "Keys and order" says, and the
 * hot path that turns COPY text into a row stream, bounded by one row.
 */
#include "dump.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "mem.h"

/* Type OIDs of int2, int4 and int8 (fixed in pg_type.dat). */
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23

struct col {
    char *name;
    char *type;
    int is_int; /* smallint, integer or bigint, or a domain over one */
};

struct cols {
    struct col *v;
    int n;
};

static void
cols_add(struct cols *c, const char *name, const char *type, int is_int)
{
    c->v = xrealloc(c->v, sizeof(*c->v) * (size_t)(c->n + 1));
    c->v[c->n].name = xstrdup(name);
    c->v[c->n].type = xstrdup(type);
    c->v[c->n].is_int = is_int;
    c->n++;
}

static void
cols_free(struct cols *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->v[i].name);
        free(c->v[i].type);
    }
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

static int
cols_find(const struct cols *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->v[i].name, name) == 0)
            return i;
    return -1;
}

static int
is_int_oid(const char *s)
{
    long v;

    if (s == NULL)
        return 0;
    v = strtol(s, NULL, 10);
    return v == INT2OID || v == INT4OID || v == INT8OID;
}

/*
 * The table's canonical name and OID, its columns in attnum order (dropped
 * ones left out, generated ones kept: they are data), and the row security
 * check. A missing table is the server's message, exit 5.
 */
static int
table_columns(struct db *db, const struct dump_opts *o, struct dump_plan *p, struct cols *c,
              char **from)
{
    /* The base type of a domain (over a domain ...) decides the order kind. */
    static const char cols_sql[] =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),"
        " (WITH RECURSIVE b(o, base) AS ("
        "   SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid"
        "   UNION ALL"
        "   SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t JOIN b ON t.oid = b.base)"
        "  SELECT b.o FROM b WHERE b.base = 0 LIMIT 1)"
        " FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum";
    static const char rel_sql[] =
        "SELECT n.nspname, c.relname, c.oid, pg_catalog.row_security_active(c.oid),"
        " current_user"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = $1::pg_catalog.regclass";
    struct db_result *r = NULL;
    char *quoted = NULL, *qs = NULL, *qt = NULL;
    const char *params[1];
    char ctx[600], oid[32];
    struct buf b;
    int rc;

    snprintf(ctx, sizeof(ctx), "%s%stable %s", o->side != NULL ? o->side : "",
             o->side != NULL ? " " : "", o->table);
    if ((quoted = db_quote_qualified(db, o->table)) == NULL)
        return EXIT_USAGE;
    params[0] = quoted;
    rc = db_query(db, &r, ctx, rel_sql, 1, params);
    free(quoted);
    if (rc != 0)
        return rc;
    if (db_ntuples(r) != 1 || db_nfields(r) != 5) {
        db_result_free(r);
        return err_msg(EXIT_DB, "%s: could not find the table in the catalog", ctx);
    }
    buf_init(&b);
    buf_printf(&b, "%s.%s", db_value(r, 0, 0), db_value(r, 0, 1));
    rs_header_init(&p->h, RS_KIND_ROWS, b.data);
    buf_reset(&b);
    if (o->side != NULL)
        buf_printf(&b, "%s ", o->side);
    buf_printf(&b, "table %s", p->h.table);
    p->label = b.data;
    snprintf(oid, sizeof(oid), "%s", db_value(r, 0, 2));
    qs = db_quote_ident(db, db_value(r, 0, 0));
    qt = db_quote_ident(db, db_value(r, 0, 1));
    if (qs == NULL || qt == NULL) {
        rc = EXIT_DATA;
    } else if (strcmp(db_value(r, 0, 3), "t") == 0 && !o->allow_row_security) {
        /* A policy may hide some rows, not only all of them: counts prove nothing. */
        rc = err_msg(EXIT_REFUSED, "%s: row security is active for role %s", p->label,
                     db_value(r, 0, 4));
        err_note("hint: a policy may hide rows from this role; dump as the table's owner or "
                 "a role with BYPASSRLS, or pass --allow-row-security to dump what the "
                 "policies let it see");
    } else {
        buf_init(&b);
        buf_printf(&b, "%s.%s", qs, qt);
        *from = b.data;
    }
    free(qs);
    free(qt);
    db_result_free(r);
    r = NULL;
    if (rc != 0)
        return rc;

    params[0] = oid;
    if ((rc = db_query(db, &r, p->label, cols_sql, 1, params)) != 0)
        return rc;
    if (db_nfields(r) != 3) {
        db_result_free(r);
        return err_msg(EXIT_DB, "%s: unexpected catalog result", p->label);
    }
    for (int i = 0; i < db_ntuples(r); i++)
        cols_add(c, db_value(r, i, 0), db_value(r, i, 1), is_int_oid(db_value(r, i, 2)));
    db_result_free(r);
    if (c->n == 0)
        return err_msg(EXIT_DB, "%s: the table has no columns", p->label);
    return 0;
}

/*
 * The columns of --query, from its description (LIMIT 0: planned, not run).
 * A column that comes straight from a table gets that column's declared type
 * (a domain keeps its name, as with --table); others get the result's type.
 */
static int
query_columns(struct db *db, const struct dump_opts *o, struct dump_plan *p, struct cols *c,
              char **from)
{
    static const char types_sql[] =
        "SELECT pg_catalog.format_type(COALESCE(a.atttypid, u.t),"
        "  CASE WHEN a.attrelid IS NULL THEN u.m ELSE a.atttypmod END)"
        " FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]),"
        "  pg_catalog.unnest($2::pg_catalog.int4[]), pg_catalog.unnest($3::pg_catalog.oid[]),"
        "  pg_catalog.unnest($4::pg_catalog.int2[])) WITH ORDINALITY AS u(t, m, r, c, n)"
        " LEFT JOIN pg_catalog.pg_attribute a"
        "  ON a.attrelid = u.r AND a.attnum = u.c AND u.c > 0 AND NOT a.attisdropped"
        " ORDER BY u.n";
    struct db_result *r = NULL, *t = NULL;
    struct buf sql, arr[4], label;
    const char *params[4];
    size_t qlen;
    int rc, n;

    /* A trailing semicolon would end the subquery: drop it, and blanks. */
    qlen = strlen(o->query);
    while (qlen > 0 && strchr(" \t\r\n;", o->query[qlen - 1]) != NULL)
        qlen--;
    if (qlen == 0)
        return err_msg(EXIT_USAGE, "--query is empty");
    rs_header_init(&p->h, RS_KIND_ROWS, o->name != NULL ? o->name : "query");
    buf_init(&label);
    if (o->side != NULL)
        buf_printf(&label, "%s ", o->side);
    if (o->name != NULL)
        buf_printf(&label, "query %s", o->name);
    else
        buf_puts(&label, "query");
    p->label = label.data;

    buf_init(&sql);
    /* Newlines: a "--" comment at the end of the query must not swallow our SQL. */
    buf_printf(&sql, "(\n%.*s\n) AS q", (int)qlen, o->query);
    *from = xstrdup(sql.data);
    buf_reset(&sql);
    buf_printf(&sql, "SELECT * FROM %s LIMIT 0", *from);
    rc = db_query(db, &r, p->label, sql.data, 0, NULL);
    buf_free(&sql);
    if (rc != 0)
        return rc;
    n = db_nfields(r);
    if (n == 0) {
        db_result_free(r);
        return err_msg(EXIT_USAGE, "%s: the query returns no columns", p->label);
    }
    for (int i = 0; i < 4; i++) {
        buf_init(&arr[i]);
        buf_putc(&arr[i], '{');
    }
    for (int i = 0; i < n; i++) {
        const char *sep = i ? "," : "";

        buf_printf(&arr[0], "%s%u", sep, db_field_type(r, i));
        buf_printf(&arr[1], "%s%d", sep, db_field_typmod(r, i));
        buf_printf(&arr[2], "%s%u", sep, db_field_table(r, i));
        buf_printf(&arr[3], "%s%d", sep, db_field_tablecol(r, i));
    }
    for (int i = 0; i < 4; i++) {
        buf_putc(&arr[i], '}');
        params[i] = arr[i].data;
    }
    rc = db_query(db, &t, p->label, types_sql, 4, params);
    for (int i = 0; i < 4; i++)
        buf_free(&arr[i]);
    if (rc == 0 && (db_ntuples(t) != n || db_nfields(t) != 1))
        rc = err_msg(EXIT_DB, "%s: unexpected catalog result", p->label);
    for (int i = 0; rc == 0 && i < n; i++) {
        const char *name = db_field_name(r, i);

        if (cols_find(c, name) >= 0)
            rc = err_msg(EXIT_USAGE, "%s: two result columns are named \"%s\"", p->label, name);
        else
            /* The result reports a domain's base type, which is what the order needs. */
            cols_add(c, name, db_value(t, i, 0),
                     db_field_type(r, i) == INT2OID || db_field_type(r, i) == INT4OID ||
                         db_field_type(r, i) == INT8OID);
    }
    db_result_free(t);
    db_result_free(r);
    return rc;
}

/* Append the quoted column reference to b. */
static int
put_ident(struct db *db, struct buf *b, const char *name)
{
    char *q = db_quote_ident(db, name);

    if (q == NULL)
        return EXIT_DATA;
    buf_puts(b, q);
    free(q);
    return 0;
}

/*
 * The SELECT of one chunk of a key set: the key columns' values come as
 * parameters, one array per key column (bigint[] for integer keys, text[] of
 * the emitted text otherwise), so an index on the key serves the lookups.
 */
static int
key_set_sql(struct db *db, const struct dump_opts *o, struct dump_plan *p, struct buf *sql,
            const char *sel, const char *from, const char *notnull, const char *ord)
{
    struct buf keys, arrays;
    int rc = 0;

    buf_init(&keys);
    buf_init(&arrays);
    for (int i = 0; i < p->nkeys; i++) {
        int is_int = p->h.cols[i].order == RS_ORDER_INT;

        buf_puts(&keys, i ? ", " : "");
        if (!is_int)
            buf_putc(&keys, '(');
        if ((rc = put_ident(db, &keys, p->h.cols[i].name)) != 0)
            goto done;
        if (!is_int)
            buf_puts(&keys, ")::pg_catalog.text");
        /* ROWS FROM: unnest(a, b) is syntax, which a qualified name cannot use. */
        buf_printf(&arrays, "%spg_catalog.unnest($%d::pg_catalog.%s[])", i ? ", " : "", i + 1,
                   is_int ? "int8" : "text");
    }
    if (p->nkeys == 1)
        buf_printf(sql, "SELECT %s FROM %s WHERE %s = ANY ($1::pg_catalog.%s[])", sel, from,
                   keys.data, p->h.cols[0].order == RS_ORDER_INT ? "int8" : "text");
    else
        buf_printf(sql, "SELECT %s FROM %s WHERE (%s) IN (SELECT * FROM ROWS FROM (%s))", sel, from,
                   keys.data, arrays.data);
    if (o->where != NULL)
        buf_printf(sql, " AND (\n%s\n)", o->where);
    if (o->skip_null_keys)
        buf_printf(sql, " AND %s", notnull);
    buf_printf(sql, " ORDER BY %s", ord);
    p->key_sql = sql->data;
    buf_init(sql);
done:
    buf_free(&keys);
    buf_free(&arrays);
    return rc;
}

int
dump_plan_build(struct db *db, const struct dump_opts *o, struct dump_plan *p)
{
    struct cols c = { NULL, 0 };
    struct buf sel, ord, where, sql;
    char *from = NULL;
    int *is_key = NULL;
    int rc;

    memset(p, 0, sizeof(*p));
    buf_init(&sel);
    buf_init(&ord);
    buf_init(&where);
    buf_init(&sql);
    if (o->table != NULL)
        rc = table_columns(db, o, p, &c, &from);
    else
        rc = query_columns(db, o, p, &c, &from);
    if (rc != 0)
        goto done;
    p->h.server_version = db_server_version(db);
    free(p->h.encoding);
    p->h.encoding = xstrdup(db_server_encoding(db));
    is_key = xcalloc((size_t)c.n, sizeof(int));

    /* Keys first, in --key order: the stream's key order is its header order. */
    for (int i = 0; i < o->nkeys; i++) {
        int k = cols_find(&c, o->keys[i]);
        const char *sep = i ? ", " : "";

        if (k < 0) {
            rc = err_msg(EXIT_DB, "%s: key column \"%s\" does not exist", p->label, o->keys[i]);
            goto done;
        }
        is_key[k] = 1;
        rs_header_add_column(&p->h, c.v[k].name, c.v[k].type, RS_ROLE_KEY,
                             c.v[k].is_int ? RS_ORDER_INT : RS_ORDER_TEXT);
        buf_puts(&sel, sep);
        buf_puts(&ord, sep);
        buf_puts(&where, i ? " AND " : "");
        if (c.v[k].is_int) {
            if ((rc = put_ident(db, &sel, c.v[k].name)) != 0 ||
                (rc = put_ident(db, &ord, c.v[k].name)) != 0)
                goto done;
        } else {
            /* Emitted and ordered by the same expression, compared as bytes. */
            buf_putc(&sel, '(');
            buf_putc(&ord, '(');
            if ((rc = put_ident(db, &sel, c.v[k].name)) != 0 ||
                (rc = put_ident(db, &ord, c.v[k].name)) != 0)
                goto done;
            buf_puts(&sel, ")::pg_catalog.text");
            buf_puts(&ord, ")::pg_catalog.text COLLATE pg_catalog.\"C\"");
        }
        /*
         * Plain ascending order, so a primary-key index serves it: NULLS FIRST
         * would force a full sort. A NULL key is still refused when it comes.
         */
        if ((rc = put_ident(db, &where, c.v[k].name)) != 0)
            goto done;
        buf_puts(&where, " IS NOT NULL");
    }
    p->nkeys = o->nkeys;

    if (o->columns != NULL) {
        for (int i = 0; i < o->ncolumns; i++) {
            int k = cols_find(&c, o->columns[i]);

            if (k < 0) {
                rc = err_msg(EXIT_DB, "%s: column \"%s\" does not exist", p->label, o->columns[i]);
                goto done;
            }
            if (is_key[k])
                continue;
            rs_header_add_column(&p->h, c.v[k].name, c.v[k].type, RS_ROLE_DATA, RS_ORDER_NONE);
            buf_puts(&sel, ", ");
            if ((rc = put_ident(db, &sel, c.v[k].name)) != 0)
                goto done;
        }
    } else {
        for (int k = 0; k < c.n; k++) {
            if (is_key[k])
                continue;
            rs_header_add_column(&p->h, c.v[k].name, c.v[k].type, RS_ROLE_DATA, RS_ORDER_NONE);
            buf_puts(&sel, ", ");
            if ((rc = put_ident(db, &sel, c.v[k].name)) != 0)
                goto done;
        }
    }

    buf_printf(&sql, "COPY (SELECT %s FROM %s", sel.data, from);
    if (o->where != NULL && o->skip_null_keys)
        buf_printf(&sql, " WHERE (\n%s\n) AND %s", o->where, where.data);
    else if (o->where != NULL)
        buf_printf(&sql, " WHERE (\n%s\n)", o->where);
    else if (o->skip_null_keys)
        buf_printf(&sql, " WHERE %s", where.data);
    buf_printf(&sql, " ORDER BY %s) TO STDOUT", ord.data);
    p->copy_sql = sql.data;
    buf_init(&sql);
    if (o->key_set != NULL &&
        (rc = key_set_sql(db, o, p, &sql, sel.data, from, where.data, ord.data)) != 0)
        goto done;
done:
    free(is_key);
    free(from);
    cols_free(&c);
    buf_free(&sel);
    buf_free(&ord);
    buf_free(&where);
    buf_free(&sql);
    return rc;
}

void
dump_plan_free(struct dump_plan *p)
{
    if (p->h.table != NULL)
        rs_header_free(&p->h);
    free(p->copy_sql);
    free(p->key_sql);
    free(p->label);
    memset(p, 0, sizeof(*p));
}

/* Open the dump's transaction, in the given snapshot when there is one. */
int
dump_begin(struct db *db, const struct dump_opts *o)
{
    char *lit;
    struct buf b;
    int rc;

    /* With row_security off, a query that a policy would filter fails instead. */
    if ((rc = db_exec(db, o->allow_row_security ? "SET row_security = on"
                                                : "SET row_security = off")) != 0)
        return rc;
    if ((rc = db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")) != 0)
        return rc;
    if (o->snapshot == NULL)
        return 0;
    /* SET TRANSACTION SNAPSHOT takes no parameter: a checked, quoted literal. */
    if ((lit = db_quote_literal(db, o->snapshot)) == NULL)
        return EXIT_USAGE;
    buf_init(&b);
    buf_printf(&b, "SET TRANSACTION SNAPSHOT %s", lit);
    rc = db_exec(db, b.data);
    buf_free(&b);
    free(lit);
    return rc;
}

/*
 * With row_security off the server refuses a query that a policy would filter;
 * that is a safety refusal, not a failure (42501 is also "permission denied").
 */
int
dump_refused_by_policy(struct db *db, int rc)
{
    if (rc == EXIT_DB && strcmp(db_last_sqlstate(db), "42501") == 0 &&
        strstr(db_last_message(db), "row-level security") != NULL) {
        err_note("hint: a policy may hide rows from this role; dump as the owner or a role "
                 "with BYPASSRLS, or pass --allow-row-security");
        return EXIT_REFUSED;
    }
    return rc;
}

/*
 * ---- COPY to stream: the hot path ----
 * COPY text lines from the server, decoded in place into one reused buffer
 * and an rs_value array, written to the row stream. Values without escapes
 * are not copied at all.
 */

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
dump_copy_rows(struct db *db, const struct dump_opts *o, const struct dump_plan *p, int fd,
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
    if ((rc = rs_writer_finish(w)) != 0)
        goto done;
    if (o->progress) {
        double t = now_seconds() - start;

        err_note("%s: %llu rows in %.1f s, %.0f rows/s", p->label, (unsigned long long)rows, t,
                 t > 0 ? (double)rows / t : 0.0);
    }
done:
    rs_writer_free(w);
    free(vals);
    buf_free(&row);
    return rc;
}

/* ---- a key set's rows ---- */

/*
 * Keys per query: a few hundred KiB of parameters. A query whose key is an
 * expression (the crosswalk's cast) scans its table once per chunk: few large
 * chunks, not many small ones.
 */
#define KEY_CHUNK 50000

/* Append v to an array literal's elements: quoted, with " and \ escaped. */
static void
array_put(struct buf *a, const struct rs_value *v)
{
    buf_putc(a, a->len > 0 ? ',' : '{');
    buf_putc(a, '"');
    for (size_t i = 0; i < v->len; i++) {
        if (v->data[i] == '"' || v->data[i] == '\\')
            buf_putc(a, '\\');
        buf_putc(a, v->data[i]);
    }
    buf_putc(a, '"');
}

/* Run the plan's key_sql for the keys in arrays[0..nkeys) and write each row. */
static int
fetch_chunk(struct db *db, const struct dump_plan *p, struct buf *arrays, struct rs_writer *w,
            struct rs_value *vals, uint64_t *rows)
{
    const char **params = xcalloc((size_t)p->nkeys, sizeof(*params));
    struct db_result *row = NULL;
    int got, rc = 0;

    for (int i = 0; i < p->nkeys; i++) {
        buf_putc(&arrays[i], '}');
        params[i] = arrays[i].data;
    }
    if ((rc = db_rows_begin(db, p->label, p->key_sql, p->nkeys, params)) != 0)
        goto done;
    while ((got = db_rows_next(db, &row)) == 1) {
        (*rows)++;
        if (db_nfields(row) != p->h.ncols) {
            rc = err_msg(EXIT_DB, "%s: %d fields, expected %d", p->label, db_nfields(row),
                         p->h.ncols);
        } else {
            for (int i = 0; i < p->h.ncols; i++) {
                vals[i].data = db_value(row, 0, i);
                vals[i].len = vals[i].data != NULL ? db_length(row, 0, i) : 0;
            }
            if ((rc = check_key(p, vals, *rows)) == 0)
                rc = rs_writer_put(w, vals);
        }
        db_result_free(row);
        row = NULL;
        if (rc == 0 && io_interrupted)
            rc = EXIT_DB;
        if (rc != 0) {
            /* Stop the query and pump the connection back to idle. */
            db_cancel(db);
            while (db_rows_next(db, &row) == 1)
                db_result_free(row);
            goto done;
        }
    }
    if (got < 0)
        rc = -got;
done:
    for (int i = 0; i < p->nkeys; i++)
        buf_reset(&arrays[i]);
    free(params);
    return rc;
}

int
dump_key_set_rows(struct db *db, const struct dump_opts *o, const struct dump_plan *p, int fd,
                  const char *name)
{
    struct rs_reader *r = NULL;
    struct rs_writer *w = NULL;
    struct rs_value *vals = NULL;
    struct buf *arrays = NULL;
    const struct rs_header *kh;
    const struct rs_value *kv;
    int *kcol = NULL, in = -1, nchunk = 0, rc;
    uint64_t rows = 0;

    if ((in = io_open_input(o->key_set)) < 0)
        return EXIT_IO;
    if ((rc = rs_reader_open(&r, in, o->key_set)) != 0)
        goto done;
    kh = rs_reader_header(r);
    kcol = xcalloc((size_t)p->nkeys, sizeof(int));
    /* The same key, in the same order: then the chunks come out in stream order. */
    for (int i = 0, k = 0; i < kh->ncols; i++) {
        if (kh->cols[i].role != RS_ROLE_KEY)
            continue;
        if (k >= p->nkeys || strcmp(kh->cols[i].name, p->h.cols[k].name) != 0 ||
            kh->cols[i].order != p->h.cols[k].order) {
            rc = err_msg(EXIT_DATA, "%s: key set %s: its key is not the dump's (%s)", p->label,
                         o->key_set, p->h.cols[k < p->nkeys ? k : 0].name);
            goto done;
        }
        kcol[k++] = i;
        if (k == p->nkeys && i + 1 < kh->ncols) {
            for (int j = i + 1; j < kh->ncols; j++)
                if (kh->cols[j].role == RS_ROLE_KEY) {
                    rc = err_msg(EXIT_DATA, "%s: key set %s: its key is not the dump's", p->label,
                                 o->key_set);
                    goto done;
                }
        }
    }
    arrays = xcalloc((size_t)p->nkeys, sizeof(*arrays));
    for (int i = 0; i < p->nkeys; i++)
        buf_init(&arrays[i]);
    vals = xcalloc((size_t)p->h.ncols, sizeof(*vals));
    if ((rc = rs_writer_open(&w, fd, name, &p->h, o->level)) != 0)
        goto done;
    rs_writer_set_max_row(w, o->max_row);
    for (;;) {
        if ((rc = rs_reader_next(r, &kv)) != 0)
            goto done;
        if (kv != NULL) {
            for (int i = 0; i < p->nkeys; i++) {
                if (kv[kcol[i]].data == NULL) {
                    rc = err_msg(EXIT_DATA, "%s: key set %s: a NULL key", p->label, o->key_set);
                    goto done;
                }
                array_put(&arrays[i], &kv[kcol[i]]);
            }
            nchunk++;
        }
        if (nchunk > 0 && (kv == NULL || nchunk == KEY_CHUNK)) {
            if ((rc = fetch_chunk(db, p, arrays, w, vals, &rows)) != 0)
                goto done;
            nchunk = 0;
        }
        if (kv == NULL)
            break;
    }
    rc = rs_writer_finish(w);
done:
    rs_writer_free(w);
    rs_reader_free(r);
    if (in > STDIN_FILENO)
        close(in);
    if (arrays != NULL)
        for (int i = 0; i < p->nkeys; i++)
            buf_free(&arrays[i]);
    free(arrays);
    free(vals);
    free(kcol);
    return rc;
}
