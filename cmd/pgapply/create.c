/*
 * --create-tables FILE: the reviewed DDL of "analyze --ddl" applied to the
 * target in one transaction (migrate --create-missing). The file is checked
 * for the shape analyze writes before anything runs; what exists already is
 * skipped, so a repeated or resumed run does nothing twice; each table it
 * creates is recorded in the state's created_tables in the same transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "err.h"
#include "io.h"
#include "mem.h"
#include "pgapply.h"
#include "state.h"

#define DDL_MAX_BYTES (16 * 1024 * 1024)

enum tok_type { TOK_WORD, TOK_QIDENT, TOK_STRING, TOK_PUNCT, TOK_OTHER };

struct tok {
    enum tok_type type;
    char *s; /* a word lowercased, a quoted identifier unquoted, punctuation as is */
    int depth;
};

enum stmt_kind { K_SCHEMA, K_TABLE, K_COLUMN, K_RLS, K_REVOKE, K_INDEX, K_FK, K_COMMENT };

struct stmt {
    enum stmt_kind kind;
    char *text; /* as written, from its first token to before the ';' */
    int line;
    char *schema, *table; /* the object, unquoted (K_SCHEMA: schema only) */
    char **cols;          /* K_COLUMN: the new column; K_FK: its columns; K_COMMENT: 0 or 1 */
    int ncols;
};

struct ddl {
    struct stmt *st;
    int n;
};

static void
toks_free(struct tok *t, int n)
{
    for (int i = 0; i < n; i++)
        free(t[i].s);
    free(t);
}

static void
ddl_free(struct ddl *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->st[i].text);
        free(f->st[i].schema);
        free(f->st[i].table);
        for (int j = 0; j < f->st[i].ncols; j++)
            free(f->st[i].cols[j]);
        free(f->st[i].cols);
    }
    free(f->st);
}

static int
word_char(unsigned char c, int first)
{
    return c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (!first && ((c >= '0' && c <= '9') || c == '$'));
}

static int
refuse(const char *file, int line, const char *what)
{
    return err_msg(EXIT_DATA,
                   "%s: line %d: refused: %s (the file must hold only the statements "
                   "analyze --ddl writes; see pgapply(1))",
                   file, line, what);
}

/* Refuse a statement, quoting its start (on one line). */
static int
refuse_stmt(const char *file, const struct stmt *s, const char *why)
{
    struct buf b;
    int rc;

    buf_init(&b);
    buf_printf(&b, "%s: %.60s%s", why, s->text, strlen(s->text) > 60 ? "..." : "");
    for (char *p = b.data; *p; p++)
        if (*p == '\n' || *p == '\t' || *p == '\r')
            *p = ' ';
    rc = refuse(file, s->line, b.data);
    buf_free(&b);
    return rc;
}

static int
is(const struct tok *t, int n, int i, const char *word)
{
    return i < n && t[i].type == TOK_WORD && strcmp(t[i].s, word) == 0;
}

static int
is_punct(const struct tok *t, int n, int i, const char *p)
{
    return i < n && t[i].type == TOK_PUNCT && strcmp(t[i].s, p) == 0;
}

static int
is_ident(const struct tok *t, int n, int i)
{
    return i < n && (t[i].type == TOK_WORD || t[i].type == TOK_QIDENT);
}

/* A dotted name at *i: up to 3 parts into parts (borrowed); the count, 0 if none. */
static int
name_at(const struct tok *t, int n, int *i, const char **parts)
{
    int k = 0;

    if (!is_ident(t, n, *i))
        return 0;
    parts[k++] = t[(*i)++].s;
    while (is_punct(t, n, *i, ".") && is_ident(t, n, *i + 1)) {
        if (k == 3)
            return 4;
        parts[k++] = t[*i + 1].s;
        *i += 2;
    }
    return k;
}

/* A parenthesized list of column names at *i, e.g. "(a, b)". */
static int
cols_at(const struct tok *t, int n, int *i, struct stmt *s)
{
    if (!is_punct(t, n, *i, "("))
        return -1;
    (*i)++;
    s->cols = xcalloc((size_t)n, sizeof(char *));
    for (;;) {
        if (!is_ident(t, n, *i))
            return -1;
        s->cols[s->ncols++] = xstrdup(t[(*i)++].s);
        if (is_punct(t, n, *i, ")")) {
            (*i)++;
            return 0;
        }
        if (!is_punct(t, n, *i, ","))
            return -1;
        (*i)++;
    }
}

/* 1 when a comma stands outside parentheses from token i on (several ALTER actions). */
static int
top_comma(const struct tok *t, int n, int i)
{
    for (; i < n; i++)
        if (t[i].depth == 0 && is_punct(t, n, i, ","))
            return 1;
    return 0;
}

/* Set s->schema and s->table from a schema-qualified name at *i; -1 if not one. */
static int
rel_at(const struct tok *t, int n, int *i, struct stmt *s)
{
    const char *p[4];

    if (name_at(t, n, i, p) != 2)
        return -1;
    s->schema = xstrdup(p[0]);
    s->table = xstrdup(p[1]);
    return 0;
}

/*
 * The kind and object of one statement, or a refusal naming what is wrong.
 * Accepted: CREATE SCHEMA IF NOT EXISTS; CREATE TABLE s.t (...); CREATE
 * [UNIQUE] INDEX ... ON s.t; ALTER TABLE s.t ENABLE ROW LEVEL SECURITY | ADD
 * COLUMN c ... | ADD [CONSTRAINT n] FOREIGN KEY (c, ...) ... (one action);
 * REVOKE ... ON [TABLE] s.t FROM ...; COMMENT ON TABLE s.t | COLUMN s.t.c.
 */
static const char *
classify(const struct tok *t, int n, struct stmt *s)
{
    int i = 0;

    if (is(t, n, 0, "create") && is(t, n, 1, "schema")) {
        const char *p[4];

        i = 2;
        if (!(is(t, n, i, "if") && is(t, n, i + 1, "not") && is(t, n, i + 2, "exists")))
            return "CREATE SCHEMA without IF NOT EXISTS";
        i += 3;
        if (name_at(t, n, &i, p) != 1 || i != n)
            return "CREATE SCHEMA: expected one schema name and nothing else";
        s->kind = K_SCHEMA;
        s->schema = xstrdup(p[0]);
        return NULL;
    }
    if (is(t, n, 0, "create") && is(t, n, 1, "table")) {
        i = 2;
        if (is(t, n, i, "if") && is(t, n, i + 1, "not") && is(t, n, i + 2, "exists"))
            i += 3;
        if (rel_at(t, n, &i, s) != 0)
            return "CREATE TABLE: the table must be named schema.table";
        if (!is_punct(t, n, i, "("))
            return "CREATE TABLE: expected a column list (no AS, LIKE, PARTITION OF)";
        /* the column list closes at depth 0 and ends the statement */
        while (++i < n && !(t[i].depth == 0 && is_punct(t, n, i, ")")))
            ;
        if (i + 1 != n)
            return "CREATE TABLE: nothing may follow the column list";
        s->kind = K_TABLE;
        return NULL;
    }
    if (is(t, n, 0, "create") &&
        (is(t, n, 1, "index") || (is(t, n, 1, "unique") && is(t, n, 2, "index")))) {
        i = is(t, n, 1, "unique") ? 3 : 2;
        if (is(t, n, i, "concurrently"))
            return "CREATE INDEX CONCURRENTLY cannot run in a transaction";
        while (i < n && !is(t, n, i, "on"))
            i++;
        i++;
        if (is(t, n, i, "only"))
            i++;
        if (rel_at(t, n, &i, s) != 0)
            return "CREATE INDEX: the table must be named schema.table";
        s->kind = K_INDEX;
        return NULL;
    }
    if (is(t, n, 0, "alter") && is(t, n, 1, "table")) {
        i = 2;
        if (is(t, n, i, "only"))
            i++;
        if (rel_at(t, n, &i, s) != 0)
            return "ALTER TABLE: the table must be named schema.table";
        if (top_comma(t, n, i))
            return "ALTER TABLE with several actions";
        if (is(t, n, i, "enable") && is(t, n, i + 1, "row") && is(t, n, i + 2, "level") &&
            is(t, n, i + 3, "security") && i + 4 == n) {
            s->kind = K_RLS;
            return NULL;
        }
        if (is(t, n, i, "add") && is(t, n, i + 1, "column")) {
            i += 2;
            if (is(t, n, i, "if") && is(t, n, i + 1, "not") && is(t, n, i + 2, "exists"))
                i += 3;
            if (!is_ident(t, n, i) || i + 1 >= n)
                return "ALTER TABLE ADD COLUMN: expected a column name and a type";
            s->cols = xcalloc(1, sizeof(char *));
            s->cols[s->ncols++] = xstrdup(t[i].s);
            s->kind = K_COLUMN;
            return NULL;
        }
        if (is(t, n, i, "add")) {
            i++;
            if (is(t, n, i, "constraint") && is_ident(t, n, i + 1))
                i += 2;
            if (is(t, n, i, "foreign") && is(t, n, i + 1, "key")) {
                i += 2;
                if (cols_at(t, n, &i, s) != 0 || !is(t, n, i, "references"))
                    return "ALTER TABLE ADD FOREIGN KEY: expected (columns) REFERENCES";
                s->kind = K_FK;
                return NULL;
            }
        }
        return "ALTER TABLE other than ENABLE ROW LEVEL SECURITY, ADD COLUMN or ADD FOREIGN "
               "KEY";
    }
    if (is(t, n, 0, "revoke")) {
        for (i = 1; i < n && !(t[i].depth == 0 && is(t, n, i, "on")); i++)
            ;
        i++;
        if (is(t, n, i, "table"))
            i++;
        if (rel_at(t, n, &i, s) != 0 || !is(t, n, i, "from"))
            return "REVOKE: expected ON [TABLE] schema.table FROM (one table)";
        s->kind = K_REVOKE;
        return NULL;
    }
    if (is(t, n, 0, "comment") && is(t, n, 1, "on")) {
        const char *p[4];
        int k;

        i = 3;
        if (is(t, n, 2, "table")) {
            if (rel_at(t, n, &i, s) != 0)
                return "COMMENT ON TABLE: the table must be named schema.table";
        } else if (is(t, n, 2, "column")) {
            if ((k = name_at(t, n, &i, p)) != 3)
                return "COMMENT ON COLUMN: the column must be named schema.table.column";
            s->schema = xstrdup(p[0]);
            s->table = xstrdup(p[1]);
            s->cols = xcalloc(1, sizeof(char *));
            s->cols[s->ncols++] = xstrdup(p[2]);
        } else {
            return "COMMENT on something other than a table or a column";
        }
        if (!is(t, n, i, "is"))
            return "COMMENT: expected IS";
        s->kind = K_COMMENT;
        return NULL;
    }
    return "a statement analyze does not write";
}

/* Split text into statements and tokens; classify each. */
static int
parse(const char *file, const char *text, size_t len, struct ddl *f)
{
    struct tok *t = NULL;
    int n = 0, depth = 0, line = 1, start_line = 0, rc = 0;
    size_t cap = 64, start = 0, i = 0, tok_end = 0;
    int counted = 0;

    memset(f, 0, sizeof(*f));
    if (memchr(text, '\0', len) != NULL)
        return err_msg(EXIT_DATA, "%s: not a text file (a NUL byte)", file);
    t = xcalloc(cap, sizeof(*t));
    for (;;) {
        unsigned char c = i < len ? (unsigned char)text[i] : ';';
        size_t from = i;

        /* a statement's text ends with its last token, not a comment after it */
        if (n > counted)
            tok_end = i;
        counted = n;
        if (i < len && (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f')) {
            line += c == '\n';
            i++;
            continue;
        }
        if (c == '-' && i + 1 < len && text[i + 1] == '-') {
            while (i < len && text[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && text[i + 1] == '*') {
            rc = refuse(file, line, "a block comment (/* */); use -- comments");
            break;
        }
        if (c == ';') {
            if (n > 0) {
                struct stmt *s;
                const char *why;

                f->st = xrealloc(f->st, ((size_t)f->n + 1) * sizeof(*f->st));
                s = &f->st[f->n++];
                memset(s, 0, sizeof(*s));
                s->text = xstrndup(text + start, tok_end - start);
                s->line = start_line;
                why = depth != 0 ? "unbalanced parentheses" : classify(t, n, s);
                if (why != NULL) {
                    rc = refuse_stmt(file, s, why);
                    break;
                }
                for (int k = 0; k < n; k++)
                    free(t[k].s);
                n = 0;
                depth = 0;
            }
            if (i >= len)
                break;
            i++;
            continue;
        }
        if ((size_t)n + 1 >= cap) {
            cap *= 2;
            t = xrealloc(t, cap * sizeof(*t));
        }
        if (n == 0) {
            start = i;
            start_line = line;
        }
        t[n].depth = depth;
        if (c == '\'' || c == '"') {
            struct buf b;

            buf_init(&b);
            for (i++; i < len; i++) {
                if ((unsigned char)text[i] == c) {
                    if (i + 1 < len && (unsigned char)text[i + 1] == c) {
                        buf_putc(&b, (char)c);
                        i++;
                        continue;
                    }
                    break;
                }
                line += text[i] == '\n';
                buf_putc(&b, text[i]);
            }
            if (i >= len) {
                buf_free(&b);
                rc = refuse(file, line,
                            c == '"' ? "an unterminated quoted identifier"
                                     : "an unterminated string");
                break;
            }
            i++;
            buf_putc(&b, '\0');
            t[n].type = c == '"' ? TOK_QIDENT : TOK_STRING;
            t[n++].s = b.data;
            continue;
        }
        if (word_char(c, 1)) {
            while (i < len && word_char((unsigned char)text[i], 0))
                i++;
            /* E'...' reads backslash escapes: this check could end its string early */
            if (i < len && text[i] == '\'' && i - from == 1 && (c == 'e' || c == 'E')) {
                rc = refuse(file, line, "an escape string (E'...')");
                break;
            }
            t[n].type = TOK_WORD;
            t[n].s = xstrndup(text + from, i - from);
            for (char *p = t[n].s; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
            n++;
            continue;
        }
        if (c == '$') {
            rc = refuse(file, line, "dollar quoting or a parameter ($)");
            break;
        }
        if (c >= '0' && c <= '9') {
            while (i < len && (word_char((unsigned char)text[i], 0) || text[i] == '.'))
                i++;
            t[n].type = TOK_OTHER;
            t[n++].s = xstrndup(text + from, i - from);
            continue;
        }
        if (c == '(')
            depth++;
        else if (c == ')' && --depth < 0) {
            rc = refuse(file, line, "unbalanced parentheses");
            break;
        }
        if (c == ')')
            t[n].depth = depth;
        t[n].type = TOK_PUNCT;
        t[n++].s = xstrndup(text + i, 1);
        i++;
    }
    toks_free(t, n);
    if (rc != 0) {
        ddl_free(f);
        memset(f, 0, sizeof(*f));
    }
    return rc;
}

static int
same_rel(const struct stmt *a, const struct stmt *b)
{
    return strcmp(a->schema, b->schema) == 0 && strcmp(a->table, b->table) == 0;
}

/*
 * Every statement but CREATE SCHEMA, CREATE TABLE and ADD COLUMN must be about
 * a table an earlier CREATE TABLE of the file creates, or (a foreign key, a
 * column comment) about columns an earlier ADD COLUMN adds: the file cannot
 * change what the target had.
 */
static int
check_objects(const char *file, const struct ddl *f)
{
    for (int i = 0; i < f->n; i++) {
        const struct stmt *s = &f->st[i];
        int created = 0;

        if (s->kind == K_SCHEMA)
            continue;
        for (int j = 0; j < i; j++)
            if (f->st[j].kind == K_TABLE && same_rel(&f->st[j], s))
                created = 1;
        if (s->kind == K_TABLE) {
            if (created)
                return refuse_stmt(file, s, "a second CREATE TABLE of the same table");
            continue;
        }
        if (created || s->kind == K_COLUMN)
            continue;
        if ((s->kind == K_FK || s->kind == K_COMMENT) && s->ncols > 0) {
            int all = 1;

            for (int c = 0; c < s->ncols; c++) {
                int added = 0;

                for (int j = 0; j < i; j++)
                    if (f->st[j].kind == K_COLUMN && same_rel(&f->st[j], s) &&
                        strcmp(f->st[j].cols[0], s->cols[c]) == 0)
                        added = 1;
                all = all && added;
            }
            if (all)
                continue;
        }
        {
            char why[512];

            snprintf(why, sizeof(why),
                     "a statement on %s.%s, which no earlier CREATE TABLE or ADD COLUMN of the "
                     "file makes",
                     s->schema, s->table);
            return refuse_stmt(file, s, why);
        }
    }
    return 0;
}

static int
read_file(const char *path, struct buf *b)
{
    char chunk[65536];
    ssize_t r;
    int fd = io_open_input(path);

    if (fd < 0)
        return EXIT_IO;
    while ((r = io_read_full(fd, chunk, sizeof(chunk))) > 0) {
        buf_append(b, chunk, (size_t)r);
        if (b->len > DDL_MAX_BYTES)
            break;
    }
    if (fd != 0)
        close(fd);
    if (r < 0)
        return err_sys(EXIT_IO, "could not read \"%s\"", path);
    if (b->len > DDL_MAX_BYTES)
        return err_msg(EXIT_DATA, "%s: larger than 16 MiB", path);
    return 0;
}

/* 1 if the query with params returns a row, 0 if not, -code on error. */
static int
exists(struct db *d, const char *sql, int nparams, const char *const *params)
{
    struct db_result *r = NULL;
    int rc = db_query(d, &r, "catalog", sql, nparams, params);

    if (rc != 0)
        return -rc;
    rc = db_ntuples(r) > 0;
    db_result_free(r);
    return rc;
}

static const char table_sql[] =
    "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
    "c.relnamespace WHERE n.nspname = $1 AND c.relname = $2";

/*
 * The conventions of a created table, checked before commit: row security on,
 * no privilege for PUBLIC, anon or authenticated on it or its columns (Supabase's
 * default privileges in public grant them ALL: the DDL must revoke them).
 */
static const char conventions_sql[] =
    "SELECT c.relrowsecurity,"
    " EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) AS a"
    "   WHERE a.grantee = 0 OR a.grantee IN (SELECT r.oid FROM pg_catalog.pg_roles AS r"
    "     WHERE r.rolname IN ('anon', 'authenticated')))"
    " OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS at, pg_catalog.aclexplode(at.attacl) AS a"
    "   WHERE at.attrelid = c.oid AND (a.grantee = 0 OR a.grantee IN (SELECT r.oid FROM "
    "pg_catalog.pg_roles AS r WHERE r.rolname IN ('anon', 'authenticated'))))"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = $1 AND c.relname = $2";

static int
check_conventions(struct db *d, const struct stmt *s)
{
    const char *params[2] = { s->schema, s->table };
    struct db_result *r = NULL;
    int rc = db_query(d, &r, "catalog", conventions_sql, 2, params);

    if (rc != 0)
        return rc;
    if (db_ntuples(r) != 1 || db_nfields(r) != 2)
        rc = err_msg(EXIT_INTERNAL, "table %s.%s: not found after CREATE TABLE", s->schema,
                     s->table);
    else if (strcmp(db_value(r, 0, 0), "t") != 0)
        rc = err_msg(EXIT_REFUSED,
                     "table %s.%s: refused: row level security would be off (the DDL must "
                     "ENABLE ROW LEVEL SECURITY)",
                     s->schema, s->table);
    else if (strcmp(db_value(r, 0, 1), "t") == 0)
        rc = err_msg(EXIT_REFUSED,
                     "table %s.%s: refused: PUBLIC, anon or authenticated would hold privileges "
                     "on it (the DDL must REVOKE them)",
                     s->schema, s->table);
    db_result_free(r);
    return rc;
}

static int
record_created(struct db *d, const struct options *o, const struct stmt *s)
{
    struct buf sql, name;
    char *qs = db_quote_ident(d, o->schema), run[32];
    const char *params[2];
    int rc;

    if (qs == NULL)
        return EXIT_DB;
    buf_init(&sql);
    buf_init(&name);
    buf_printf(&name, "%s.%s", s->schema, s->table);
    snprintf(run, sizeof(run), "%lld", o->run_id);
    params[0] = name.data;
    params[1] = run;
    /* a table dropped by hand and created again belongs to the run that recreated it */
    buf_printf(&sql,
               "INSERT INTO %s.created_tables (table_name, run_id) VALUES ($1, $2) "
               "ON CONFLICT (table_name) DO UPDATE SET run_id = EXCLUDED.run_id, "
               "created_at = pg_catalog.clock_timestamp()",
               qs);
    rc = db_query(d, NULL, "created_tables", sql.data, 2, params);
    buf_free(&sql);
    buf_free(&name);
    free(qs);
    return rc;
}

/*
 * Decide, statement by statement, what runs (*run): what exists is skipped,
 * and with it every statement about it; run (unless dry) what is new. The
 * script of what ran or would run goes to out, with one comment line per
 * table and column: "-- table S.T: created" (or "would be created", "exists,
 * skipped").
 */
static int
apply_ddl(struct db *d, const struct options *o, struct ddl *f, struct buf *out)
{
    char *fresh = xcalloc((size_t)f->n + 1, 1); /* the CREATE TABLE / ADD COLUMN ran */
    int rc = 0;

    for (int i = 0; i < f->n && rc == 0; i++) {
        struct stmt *s = &f->st[i];
        const char *params[3] = { s->schema, s->table, s->ncols > 0 ? s->cols[0] : NULL };
        int run = 0, from = -1, e;

        switch (s->kind) {
        case K_SCHEMA:
            e = exists(d, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", 1, params);
            run = e == 0;
            break;
        case K_TABLE:
            e = exists(d, table_sql, 2, params);
            run = e == 0;
            buf_printf(out, "-- table %s.%s: %s\n", s->schema, s->table,
                       run ? (o->dry_run ? "would be created" : "created") : "exists, skipped");
            break;
        default:
            e = 0;
            /* the CREATE TABLE of this table, if the file has one */
            for (int j = 0; j < i; j++)
                if (f->st[j].kind == K_TABLE && same_rel(&f->st[j], s))
                    from = j;
            if (from >= 0) {
                run = fresh[from];
            } else if (s->kind == K_COLUMN) {
                e = exists(d,
                           "SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c "
                           "ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = "
                           "c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND "
                           "a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped",
                           3, params);
                run = e == 0;
                buf_printf(out, "-- column %s.%s.%s: %s\n", s->schema, s->table, s->cols[0],
                           run ? (o->dry_run ? "would be added" : "added") : "exists, skipped");
            } else {
                /* a foreign key or comment on added columns: runs if they all were added */
                run = 1;
                for (int c = 0; c < s->ncols; c++) {
                    int added = 0;

                    for (int j = 0; j < i; j++)
                        if (f->st[j].kind == K_COLUMN && fresh[j] && same_rel(&f->st[j], s) &&
                            strcmp(f->st[j].cols[0], s->cols[c]) == 0)
                            added = 1;
                    run = run && added;
                }
            }
            break;
        }
        if (e < 0) {
            rc = -e;
            break;
        }
        fresh[i] = (char)run;
        if (!run)
            continue;
        buf_printf(out, "%s;\n", s->text);
        if (o->dry_run)
            continue;
        {
            char ctx[64];

            snprintf(ctx, sizeof(ctx), "DDL line %d", s->line);
            /* one statement per call: the extended protocol refuses several */
            if ((rc = db_query(d, NULL, ctx, s->text, 0, NULL)) != 0)
                break;
        }
        if (s->kind == K_TABLE)
            rc = record_created(d, o, s);
    }
    for (int i = 0; i < f->n && rc == 0 && !o->dry_run; i++)
        if (f->st[i].kind == K_TABLE && fresh[i])
            rc = check_conventions(d, &f->st[i]);
    free(fresh);
    return rc;
}

int
create_tables(const struct options *o, const char *file)
{
    struct db *d = NULL;
    struct buf text, out;
    struct ddl f;
    int rc, in_tx = 0;

    memset(&f, 0, sizeof(f));
    buf_init(&text);
    buf_init(&out);
    if ((rc = read_file(file, &text)) != 0)
        goto done;
    if ((rc = parse(file, text.data != NULL ? text.data : "", text.len, &f)) != 0)
        goto done;
    if ((rc = check_objects(file, &f)) != 0)
        goto done;
    if (!o->dry_run && o->run_id <= 0) {
        rc = err_msg(EXIT_USAGE, "--create-tables needs --run-id (or --dry-run)");
        goto done;
    }
    /*
     * search_path pg_catalog, as analyze read the catalog: the names in its
     * DDL resolve here as they did there.
     */
    if ((rc = db_connect(&d, o->dsn_env, "target", DB_SESSION_READ, o->allow_pooler)) != 0)
        goto done;
    if ((rc = db_exec(d, "SET client_min_messages = warning")) != 0 ||
        (rc = db_exec(d, "SET standard_conforming_strings = on")) != 0)
        goto done;
    if (!o->dry_run) {
        char sql[96];

        if ((rc = state_install(d, o->schema)) != 0 ||
            (rc = state_run_exists(d, o->schema, o->run_id)) != 0)
            goto done;
        snprintf(sql, sizeof(sql), "BEGIN; SET LOCAL lock_timeout = %lld",
                 (long long)o->lock_timeout_ms);
        if ((rc = db_exec(d, sql)) != 0)
            goto done;
        in_tx = 1;
    }
    if ((rc = apply_ddl(d, o, &f, &out)) != 0)
        goto done;
    if (in_tx) {
        if ((rc = db_exec(d, "COMMIT")) != 0)
            goto done;
        in_tx = 0;
    }
    if (out.len > 0 && fwrite(out.data, 1, out.len, stdout) != out.len)
        rc = err_sys(EXIT_IO, "could not write output");
done:
    if (in_tx)
        db_exec(d, "ROLLBACK");
    db_close(d);
    ddl_free(&f);
    buf_free(&text);
    buf_free(&out);
    return rc;
}
