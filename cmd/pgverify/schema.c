/*
 * --schema: compare the catalogs of a source and a target table as the map
 * pairs them, before any data moves ("the schema changed in the source"):
 * a source column the target lacks, a type that differs without a map
 * expression, a target NOT NULL column the source never fills, a source
 * foreign key the map does not translate, and source tables the map leaves
 * out. Each problem is named; any one is schema drift, exit 6.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "err.h"
#include "opt.h"
#include "pgverify.h"

struct column {
    char *name;
    char *type;
    int notnull;
    int hasdef; /* a default, an identity or a generated column */
    int generated;
    int paired; /* source: some target column reads it */
};

struct table {
    char *name; /* "schema.table" as the catalog spells it */
    char oid[32];
    struct column *cols;
    int ncols;
};

/* The map's pairing, from the options. */
struct mapping {
    char **pairs; /* "tcol=scol" */
    int npairs;
    char **expr;
    int nexpr;
    char **fk; /* "a" or "a+b" */
    int nfk;
    char **ignore;
    int nignore;
};

struct problems {
    int n;
    struct buf text;  /* lines for people */
    struct buf json;  /* objects, comma-separated */
    struct buf names; /* the columns or tables, for the one-line error */
    char first[1024]; /* the first problem, for the error when it is the only one */
};

static int
in_list(char **list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

/* 1 when name is one of the columns of a --fk entry ("a" or "a+b"). */
static int
in_fk(const struct mapping *m, const char *name)
{
    size_t len = strlen(name);

    for (int i = 0; i < m->nfk; i++) {
        const char *p = m->fk[i];

        while (*p != '\0') {
            const char *e = strchr(p, '+');
            size_t n = e != NULL ? (size_t)(e - p) : strlen(p);

            if (n == len && strncmp(p, name, n) == 0)
                return 1;
            p += n;
            if (*p == '+')
                p++;
        }
    }
    return 0;
}

/* The source column the map reads for target column t, or NULL. */
static const char *
mapped_from(const struct mapping *m, const char *t)
{
    size_t len = strlen(t);

    for (int i = 0; i < m->npairs; i++)
        if (strncmp(m->pairs[i], t, len) == 0 && m->pairs[i][len] == '=')
            return m->pairs[i] + len + 1;
    return NULL;
}

static struct column *
find_col(const struct table *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return &t->cols[i];
    return NULL;
}

static void
table_free(struct table *t)
{
    for (int i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
    }
    free(t->cols);
    free(t->name);
    memset(t, 0, sizeof(*t));
}

/* Read a table's columns; a missing table is exit 5, naming it. */
static int
table_load(struct db *db, const char *side, const char *name, struct table *t)
{
    static const char rel_sql[] =
        "SELECT c.oid, n.nspname OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.relname"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = pg_catalog.to_regclass($1)";
    static const char cols_sql[] =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', a.attgenerated <> ''"
        " FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum";
    struct db_result *r = NULL;
    const char *params[1];
    char *quoted, ctx[600];
    int rc;

    memset(t, 0, sizeof(*t));
    snprintf(ctx, sizeof(ctx), "%s table %s", side, name);
    if ((quoted = db_quote_qualified(db, name)) == NULL)
        return EXIT_USAGE;
    params[0] = quoted;
    rc = db_query(db, &r, ctx, rel_sql, 1, params);
    free(quoted);
    if (rc != 0)
        return rc;
    if (db_nfields(r) != 2 || db_ntuples(r) != 1) {
        db_result_free(r);
        return err_msg(EXIT_DB, "%s: does not exist", ctx);
    }
    snprintf(t->oid, sizeof(t->oid), "%s", db_value(r, 0, 0));
    t->name = xstrdup(db_value(r, 0, 1));
    db_result_free(r);
    params[0] = t->oid;
    if ((rc = db_query(db, &r, ctx, cols_sql, 1, params)) != 0)
        return rc;
    if (db_nfields(r) != 5) {
        db_result_free(r);
        return err_msg(EXIT_DB, "%s: unexpected catalog result", ctx);
    }
    t->ncols = db_ntuples(r);
    t->cols = xcalloc((size_t)t->ncols + 1, sizeof(*t->cols));
    for (int i = 0; i < t->ncols; i++) {
        t->cols[i].name = xstrdup(db_value(r, i, 0));
        t->cols[i].type = xstrdup(db_value(r, i, 1));
        t->cols[i].notnull = strcmp(db_value(r, i, 2), "t") == 0;
        t->cols[i].hasdef = strcmp(db_value(r, i, 3), "t") == 0;
        t->cols[i].generated = strcmp(db_value(r, i, 4), "t") == 0;
    }
    db_result_free(r);
    return 0;
}

/* 1 when name is already in the ", "-separated list b. */
static int
name_listed(const struct buf *b, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = b->len > 0 ? b->data : ""; *p != '\0';) {
        const char *e = strstr(p, ", ");
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);

        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p += len;
        if (e != NULL)
            p += 2;
    }
    return 0;
}

/* Record one problem: a line for people, a JSON object, its name for the error line. */
static void problem(struct problems *p, const char *kind, const char *column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
problem(struct problems *p, const char *kind, const char *column, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    buf_printf(&p->text, "  %s\n", msg);
    if (p->n == 0)
        snprintf(p->first, sizeof(p->first), "%s", msg);
    if (p->n > 0)
        buf_putc(&p->json, ',');
    buf_puts(&p->json, "{\"kind\":");
    buf_json_string(&p->json, kind, strlen(kind));
    buf_puts(&p->json, ",\"name\":");
    buf_json_string(&p->json, column, strlen(column));
    buf_puts(&p->json, ",\"message\":");
    buf_json_string(&p->json, msg, strlen(msg));
    buf_putc(&p->json, '}');
    if (!name_listed(&p->names, column)) {
        if (p->names.len > 0)
            buf_puts(&p->names, ", ");
        buf_puts(&p->names, column);
    }
    p->n++;
}

/* Rank of an integer type, 0 when it is not one. */
static int
int_rank(const char *type)
{
    if (strcmp(type, "smallint") == 0)
        return 1;
    if (strcmp(type, "integer") == 0)
        return 2;
    if (strcmp(type, "bigint") == 0)
        return 3;
    return 0;
}

/* The n of "character varying(n)", 0 for an unbounded varchar or text, -1 otherwise. */
static long
varchar_len(const char *type)
{
    static const char vc[] = "character varying";

    if (strcmp(type, "text") == 0 || strcmp(type, vc) == 0)
        return 0;
    if (strncmp(type, vc, sizeof(vc) - 1) == 0 && type[sizeof(vc) - 1] == '(')
        return strtol(type + sizeof(vc), NULL, 10);
    return -1;
}

/*
 * A change of type that keeps every value's text form, so the streams of
 * both sides compare equal without an expression: a wider integer, a longer
 * or unbounded varchar or text, an unconstrained numeric.
 */
static int
same_text_form(const char *s, const char *t)
{
    long ls, lt;

    if (strcmp(s, t) == 0)
        return 1;
    if (int_rank(s) > 0 && int_rank(t) >= int_rank(s))
        return 1;
    ls = varchar_len(s);
    lt = varchar_len(t);
    if (ls >= 0 && lt >= 0)
        return lt == 0 || (ls > 0 && lt >= ls);
    return strncmp(s, "numeric", 7) == 0 && strcmp(t, "numeric") == 0;
}

static int
check_fks(struct db *db, const struct table *src, const struct table *tgt, const struct mapping *m,
          struct problems *p)
{
    static const char fk_sql[] =
        "SELECT c.conname, a.attname, c.confrelid::pg_catalog.regclass::pg_catalog.text"
        " FROM pg_catalog.pg_constraint c"
        " CROSS JOIN LATERAL pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(n, o)"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n"
        " WHERE c.conrelid = $1::pg_catalog.oid AND c.contype = 'f'"
        " ORDER BY c.conname, k.o";
    struct db_result *r = NULL;
    const char *params[1] = { src->oid };
    int rc, n;

    if ((rc = db_query(db, &r, src->name, fk_sql, 1, params)) != 0)
        return rc;
    if (db_nfields(r) != 3) {
        db_result_free(r);
        return err_msg(EXIT_DB, "source table %s: unexpected catalog result", src->name);
    }
    n = db_ntuples(r);
    for (int i = 0; i < n;) {
        const char *con = db_value(r, i, 0);
        struct buf cols, unmapped;
        int j = i, skip = 0;

        buf_init(&cols);
        buf_init(&unmapped);
        for (; j < n && strcmp(db_value(r, j, 0), con) == 0; j++) {
            const char *s = db_value(r, j, 1);
            int found = 0, declared = 0;

            buf_printf(&cols, "%s%s", j > i ? ", " : "", s);
            if (in_list(m->ignore, m->nignore, s)) {
                skip = 1;
                continue;
            }
            /* The target columns that read s: declared by --fk, or not. */
            for (int k = 0; k < tgt->ncols; k++) {
                const char *t = tgt->cols[k].name, *from = mapped_from(m, t);

                if (in_list(m->ignore, m->nignore, t) ||
                    (opt.uuid_col != NULL && strcmp(t, opt.uuid_col) == 0))
                    continue;
                if (from != NULL ? strcmp(from, s) != 0 : strcmp(t, s) != 0)
                    continue;
                found = 1;
                declared |= in_fk(m, t);
            }
            if (!found)
                skip = 1; /* reported as a missing column already */
            else if (!declared)
                buf_printf(&unmapped, "%s%s", unmapped.len ? ", " : "", s);
        }
        if (!skip && unmapped.len > 0)
            problem(p, "fk_not_in_map", cols.data,
                    "source foreign key \"%s\" (%s) -> %s: the map has no --fk entry for it", con,
                    cols.data, db_value(r, i, 2));
        buf_free(&cols);
        buf_free(&unmapped);
        i = j;
    }
    db_result_free(r);
    return 0;
}

static void
check_columns(const struct table *src, struct table *tgt, const struct mapping *m,
              struct problems *p)
{
    /* What the map names must exist. */
    for (int i = 0; i < m->npairs; i++) {
        const char *eq = strchr(m->pairs[i], '=');
        char *t = xstrndup(m->pairs[i], (size_t)(eq - m->pairs[i]));

        if (find_col(tgt, t) == NULL)
            problem(p, "map_target_column_missing", t,
                    "the map fills target column \"%s\", which the target lacks", t);
        if (find_col(src, eq + 1) == NULL)
            problem(p, "map_source_column_missing", eq + 1,
                    "the map reads source column \"%s\" (for target column \"%s\"), which the "
                    "source lacks",
                    eq + 1, t);
        free(t);
    }
    for (int i = 0; i < m->nexpr; i++)
        if (find_col(tgt, m->expr[i]) == NULL)
            problem(p, "map_target_column_missing", m->expr[i],
                    "the map has an expression for target column \"%s\", which the target "
                    "lacks",
                    m->expr[i]);

    for (int i = 0; i < tgt->ncols; i++) {
        struct column *t = &tgt->cols[i];
        const char *from = mapped_from(m, t->name);
        struct column *s;

        if (t->generated || in_list(m->ignore, m->nignore, t->name) ||
            (opt.uuid_col != NULL && strcmp(t->name, opt.uuid_col) == 0))
            continue;
        s = find_col(src, from != NULL ? from : t->name);
        if (s == NULL) {
            if (from == NULL && t->notnull && !t->hasdef && !in_list(m->expr, m->nexpr, t->name))
                problem(p, "not_null_unfilled", t->name,
                        "target column \"%s\" is NOT NULL without a default, and the source "
                        "never fills it",
                        t->name);
            continue;
        }
        s->paired = 1;
        if (in_list(m->expr, m->nexpr, t->name) || in_fk(m, t->name))
            continue;
        if (!same_text_form(s->type, t->type))
            problem(p, "type_differs", t->name,
                    "column \"%s\": the source's type is %s, the target's %s, and the map "
                    "has no expression for it",
                    t->name, s->type, t->type);
    }
    /* A column the target names alike counts as carried, whatever fills it. */
    for (int i = 0; i < src->ncols; i++) {
        const struct column *s = &src->cols[i];
        const struct column *t = find_col(tgt, s->name);

        if (s->paired || in_list(m->ignore, m->nignore, s->name))
            continue;
        if (t != NULL && mapped_from(m, t->name) == NULL &&
            (opt.uuid_col == NULL || strcmp(t->name, opt.uuid_col) != 0))
            continue;
        problem(p, "source_column_missing", s->name,
                "source column \"%s\" (%s) is not in the target", s->name, s->type);
    }
}

/* Finish a check: the report line, its problems, the JSON object. Returns 0 or 6. */
static int
report(const char *title, const char *json_head, struct problems *p)
{
    struct buf b;
    int rc = 0;

    buf_init(&b);
    if (!opt.quiet && (opt.json == NULL || strcmp(opt.json, "-") != 0)) {
        if (p->n == 0)
            buf_printf(&b, "%s: ok\n", title);
        else
            buf_printf(&b, "%s: %d problem%s\n%s", title, p->n, p->n == 1 ? "" : "s", p->text.data);
        if (fwrite(b.data, 1, b.len, stdout) != b.len)
            rc = err_sys(EXIT_IO, "could not write output");
    }
    if (opt.json != NULL) {
        buf_reset(&b);
        buf_printf(&b, "{%s,\"schema_drift\":%d,\"problems\":[%s]}\n", json_head, p->n,
                   p->json.len > 0 ? p->json.data : "");
        pv_json_write(b.data, b.len);
    }
    buf_free(&b);
    if (rc == 0 && p->n > 0)
        rc = EXIT_REFUSED;
    return rc;
}

static int
check_pair(struct db *sdb, struct db *tdb, const struct mapping *m)
{
    struct table src, tgt;
    struct problems p;
    struct buf title, head;
    int rc;

    memset(&src, 0, sizeof(src));
    memset(&tgt, 0, sizeof(tgt));
    memset(&p, 0, sizeof(p));
    buf_init(&p.text);
    buf_init(&p.json);
    buf_init(&p.names);
    buf_init(&title);
    buf_init(&head);
    if ((rc = table_load(sdb, "source", opt.source_table, &src)) != 0 ||
        (rc = table_load(tdb, "target",
                         opt.target_table != NULL ? opt.target_table : opt.source_table, &tgt)) !=
            0)
        goto done;
    check_columns(&src, &tgt, m, &p);
    if ((rc = check_fks(sdb, &src, &tgt, m, &p)) != 0)
        goto done;
    buf_printf(&title, "schema %s (source %s)", tgt.name, src.name);
    buf_puts(&head, "\"table\":");
    buf_json_string(&head, tgt.name, strlen(tgt.name));
    buf_puts(&head, ",\"source_table\":");
    buf_json_string(&head, src.name, strlen(src.name));
    rc = report(title.data, head.data, &p);
    if (rc == EXIT_REFUSED && p.n == 1)
        err_msg(EXIT_REFUSED, "table %s: schema drift: %s", tgt.name, p.first);
    else if (rc == EXIT_REFUSED)
        err_msg(EXIT_REFUSED, "table %s: schema drift (%d problems): %s", tgt.name, p.n,
                p.names.data);
done:
    table_free(&src);
    table_free(&tgt);
    buf_free(&p.text);
    buf_free(&p.json);
    buf_free(&p.names);
    buf_free(&title);
    buf_free(&head);
    return rc;
}

/* Source tables in the schemas the map uses that the map does not name. */
static int
check_unmapped(struct db *sdb)
{
    static const char sql[] =
        "SELECT n.nspname OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.relname"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
        "  AND n.nspname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])"
        "  AND NOT (n.nspname OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.relname)"
        "   OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])"
        " ORDER BY 1";
    struct db_result *r = NULL;
    struct problems p;
    struct buf schemas, tables, title, head;
    const char *params[2];
    char **list;
    int n, rc;

    memset(&p, 0, sizeof(p));
    buf_init(&p.text);
    buf_init(&p.json);
    buf_init(&p.names);
    buf_init(&schemas);
    buf_init(&tables);
    buf_init(&title);
    buf_init(&head);
    list = opt_split_list(opt.source_tables, &n);
    buf_putc(&schemas, '{');
    buf_putc(&tables, '{');
    for (int i = 0; i < n; i++) {
        const char *dot = strchr(list[i], '.');

        /* Array literals: every element quoted, " and \ escaped. */
        buf_puts(&tables, i ? ",\"" : "\"");
        buf_puts(&schemas, i ? ",\"" : "\"");
        for (const char *c = list[i]; *c != '\0'; c++) {
            if (*c == '"' || *c == '\\')
                buf_putc(&tables, '\\');
            buf_putc(&tables, *c);
            if (c < dot) {
                if (*c == '"' || *c == '\\')
                    buf_putc(&schemas, '\\');
                buf_putc(&schemas, *c);
            }
        }
        buf_putc(&tables, '"');
        buf_putc(&schemas, '"');
    }
    buf_putc(&schemas, '}');
    buf_putc(&tables, '}');
    params[0] = schemas.data;
    params[1] = tables.data;
    if ((rc = db_query(sdb, &r, "source tables", sql, 2, params)) != 0)
        goto done;
    if (db_nfields(r) != 1) {
        rc = err_msg(EXIT_DB, "source tables: unexpected catalog result");
        goto done;
    }
    for (int i = 0; i < db_ntuples(r); i++)
        problem(&p, "source_table_unmapped", db_value(r, i, 0),
                "source table %s is missing from the map", db_value(r, i, 0));
    buf_puts(&title, "schema: source tables");
    buf_puts(&head, "\"source_tables\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            buf_putc(&head, ',');
        buf_json_string(&head, list[i], strlen(list[i]));
    }
    buf_putc(&head, ']');
    rc = report(title.data, head.data, &p);
    if (rc == EXIT_REFUSED)
        err_msg(EXIT_REFUSED, "schema drift: source table%s missing from the map: %s",
                p.n == 1 ? "" : "s", p.names.data);
done:
    db_result_free(r);
    opt_free_list(list);
    buf_free(&p.text);
    buf_free(&p.json);
    buf_free(&p.names);
    buf_free(&schemas);
    buf_free(&tables);
    buf_free(&title);
    buf_free(&head);
    return rc;
}

static char **
split(struct buf *b, int *n)
{
    *n = 0;
    return b->len > 0 ? opt_split_list(b->data, n) : NULL;
}

int
pv_schema(void)
{
    struct db *sdb = NULL, *tdb = NULL;
    struct mapping m;
    int rc = 0, crc;

    memset(&m, 0, sizeof(m));
    m.pairs = split(&opt.map_columns, &m.npairs);
    m.expr = split(&opt.expr, &m.nexpr);
    m.fk = split(&opt.fk, &m.nfk);
    m.ignore = split(&opt.ignore, &m.nignore);
    for (int i = 0; i < m.npairs; i++) {
        const char *eq = strchr(m.pairs[i], '=');

        if (eq == NULL || eq == m.pairs[i] || eq[1] == '\0') {
            rc = opt_usage_error("--map-columns: '%s' is not TARGET_COLUMN=SOURCE_COLUMN",
                                 m.pairs[i]);
            goto done;
        }
    }
    if ((rc = db_connect(&sdb, opt.source_env, "source", DB_SESSION_READ, 0)) != 0)
        goto done;
    if (opt.source_table != NULL) {
        if ((rc = db_connect(&tdb, opt.target_env, "target", DB_SESSION_READ, 0)) != 0)
            goto done;
        rc = check_pair(sdb, tdb, &m);
        if (rc != 0 && rc != EXIT_REFUSED)
            goto done;
    }
    if (opt.source_tables != NULL) {
        crc = check_unmapped(sdb);
        if (crc != 0 && (rc == 0 || crc != EXIT_REFUSED))
            rc = crc;
    }
done:
    db_close(tdb);
    db_close(sdb);
    opt_free_list(m.pairs);
    opt_free_list(m.expr);
    opt_free_list(m.fk);
    opt_free_list(m.ignore);
    return rc;
}
