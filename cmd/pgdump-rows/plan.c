/*
 * The dump plan: the columns of a table (from the catalog) or of a query (from
 * its description), the key columns with their order kind, and the one COPY
 * statement that emits and orders the key as DESIGN.md "Keys and order" says.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mem.h"
#include "pgdump.h"

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

    snprintf(ctx, sizeof(ctx), "table %s", o->table);
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

int
plan_build(struct db *db, const struct dump_opts *o, struct dump_plan *p)
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
        /* NULL keys first: a refused NULL key stops the dump at once. */
        buf_puts(&ord, " NULLS FIRST");
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
plan_free(struct dump_plan *p)
{
    if (p->h.table != NULL)
        rs_header_free(&p->h);
    free(p->copy_sql);
    free(p->label);
    memset(p, 0, sizeof(*p));
}
