/*
 * libpq behind the interface of db.h: connections from a named environment
 * variable, pinned sessions, statements with parameters, COPY both ways.
 * The one file that includes libpq-fe.h. Each error is printed here, once;
 * connections are described as user@host:port/db, never by their conninfo.
 */
#include "db.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "err.h"
#include "io.h"
#include "mem.h"

#define DEFAULT_CONNECT_TIMEOUT "10"
#define POOLER_PORT             "6543"

struct db {
    PGconn *conn;
    PGcancel *cancel; /* made at connect: PQcancel on it is signal-safe */
    char *side;
    char *desc;
    char *encoding;
    int server_version;
    int quiet;
    int show_values;
    char sqlstate[6];
    char *constraint;
    char *message;
    char *copy_buf; /* the line last handed out by db_copy_out_line */
    char *copy_context;
};

struct db_result {
    PGresult *res;
};

/* ---- describing connections ---- */

/* A field of user@host:port/db; anything that looks like a conninfo is hidden. */
static const char *
safe_field(const char *s)
{
    if (s == NULL || *s == '\0')
        return "?";
    if (strchr(s, '=') != NULL || strstr(s, "://") != NULL)
        return "?";
    return s;
}

static char *
describe(const char *user, const char *host, const char *port, const char *dbname)
{
    struct buf b;

    buf_init(&b);
    buf_printf(&b, "%s@%s:%s/%s", safe_field(user), safe_field(host), safe_field(port),
               safe_field(dbname));
    return b.data;
}

static const char *
option_value(const PQconninfoOption *opts, const char *keyword)
{
    if (opts == NULL)
        return NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val != NULL && o->val[0] != '\0' ? o->val : NULL;
    return NULL;
}

/*
 * After a failed connect: the allowlisted options libpq settled on (conninfo,
 * PG* variables, defaults), else what the string itself says.
 */
static char *
describe_failed(PGconn *conn, const PQconninfoOption *parsed)
{
    PQconninfoOption *eff = conn != NULL ? PQconninfo(conn) : NULL;
    const char *user, *host, *port, *dbname;
    char *s;

    user = option_value(eff, "user");
    host = option_value(eff, "host");
    if (host == NULL)
        host = option_value(eff, "hostaddr");
    port = option_value(eff, "port");
    dbname = option_value(eff, "dbname");
    if (user == NULL)
        user = option_value(parsed, "user");
    if (host == NULL)
        host = option_value(parsed, "host");
    if (host == NULL)
        host = option_value(parsed, "hostaddr");
    if (port == NULL)
        port = option_value(parsed, "port");
    if (dbname == NULL)
        dbname = option_value(parsed, "dbname");
    s = describe(user, host, port, dbname);
    if (eff != NULL)
        PQconninfoFree(eff);
    return s;
}

/* The port libpq will use (or used): a comma-separated list for several hosts. */
static char *
effective_port(PGconn *conn)
{
    PQconninfoOption *eff;
    const char *p;
    char *s = NULL;

    if (PQstatus(conn) == CONNECTION_OK)
        return xstrdup(PQport(conn) != NULL ? PQport(conn) : "");
    eff = PQconninfo(conn);
    p = option_value(eff, "port");
    s = xstrdup(p != NULL ? p : "");
    if (eff != NULL)
        PQconninfoFree(eff);
    return s;
}

static int
is_pooler_port(const char *ports)
{
    size_t n = strlen(POOLER_PORT);

    for (const char *p = ports; *p != '\0';) {
        size_t len = strcspn(p, ",");

        if (len == n && strncmp(p, POOLER_PORT, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Mask every occurrence of secret in s (a buffer of cap bytes); cut s where the mask won't fit. */
static void
redact(char *s, size_t cap, const char *secret)
{
    static const char mask[] = "********";
    size_t slen, mlen = sizeof(mask) - 1;
    char *hit, *from = s;

    if (secret == NULL || (slen = strlen(secret)) == 0)
        return;
    while ((hit = strstr(from, secret)) != NULL) {
        size_t tail = strlen(hit + slen);

        if ((size_t)(hit - s) + mlen + tail + 1 > cap) {
            *hit = '\0';
            break;
        }
        memmove(hit + mlen, hit + slen, tail + 1);
        memcpy(hit, mask, mlen);
        from = hit + mlen;
    }
}

/* The first line of a libpq message into out, with anything password-like masked. */
static void
first_line(const char *msg, char *out, size_t cap, const char *const *secrets, int nsecrets)
{
    size_t n;
    char *p;

    if (msg == NULL)
        msg = "";
    while (*msg == ' ' || *msg == '\t' || *msg == '\n')
        msg++;
    n = strcspn(msg, "\n");
    if (n > cap / 2)
        n = cap / 2;
    memcpy(out, msg, n);
    out[n] = '\0';
    if (n == 0)
        snprintf(out, cap, "unknown error");
    for (int i = 0; i < nsecrets; i++)
        redact(out, cap, secrets[i]);
    /* libpq does not echo passwords; make sure a keyword=value form never gets out either. */
    if ((p = strstr(out, "password")) != NULL && strchr(p, '=') != NULL)
        snprintf(p, cap - (size_t)(p - out), "password=********");
}

static int
valid_env_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return 0;
    for (; *s != '\0'; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return 0;
    return 1;
}

/* libpq's test for "this dbname is a connection string". */
static int
is_conninfo(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 ||
           strchr(s, '=') != NULL;
}

/* ---- errors of statements ---- */

static void
reset_last(struct db *d)
{
    d->sqlstate[0] = '\0';
    free(d->constraint);
    free(d->message);
    d->constraint = NULL;
    d->message = NULL;
}

/* Newlines inside server text would break the one-line rule. */
static char *
one_line(const char *s)
{
    char *t = xstrdup(s);
    size_t n = strlen(t);

    while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == ' '))
        t[--n] = '\0';
    for (char *p = t; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    return t;
}

/*
 * Record the error of res (or, with res NULL, of the connection) for db_last_*
 * and print it unless quiet. Returns EXIT_DB.
 */
static int
report(struct db *d, const char *context, const PGresult *res)
{
    const char *primary = NULL, *sqlstate = NULL, *detail = NULL, *hint = NULL, *cons = NULL;
    char line[1024];

    if (res != NULL) {
        primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
        cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    }
    if (primary == NULL) {
        const char *m = res != NULL ? PQresultErrorMessage(res) : NULL;
        char unexpected[128];

        if (m == NULL || *m == '\0') {
            ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;

            if (st != PGRES_FATAL_ERROR && st != PGRES_NONFATAL_ERROR) {
                snprintf(unexpected, sizeof(unexpected), "unexpected result status %s",
                         PQresStatus(st));
                m = unexpected;
            } else {
                m = PQerrorMessage(d->conn);
            }
        }
        first_line(m, line, sizeof(line), NULL, 0);
        primary = line;
    }
    reset_last(d);
    snprintf(d->sqlstate, sizeof(d->sqlstate), "%s", sqlstate != NULL ? sqlstate : "");
    d->constraint = xstrdup(cons != NULL ? cons : "");
    d->message = one_line(primary);
    if (d->quiet)
        return EXIT_DB;
    if (sqlstate != NULL)
        err_msg(EXIT_DB, "%s: %s (SQLSTATE %s)", context, d->message, sqlstate);
    else
        err_msg(EXIT_DB, "%s: %s", context, d->message);
    if (detail != NULL) {
        /* NOT NULL and CHECK violations quote the whole row: customer data. */
        if (!d->show_values && strncmp(detail, "Failing row contains", 20) == 0) {
            err_note("detail: the failing row's values are not shown");
        } else {
            char *t = one_line(detail);

            err_note("detail: %s", t);
            free(t);
        }
    }
    if (hint != NULL) {
        char *t = one_line(hint);

        err_note("hint: %s", t);
        free(t);
    }
    return EXIT_DB;
}

/* Pump libpq back to idle, so the connection can be used (or closed) cleanly. */
static void
drain(struct db *d)
{
    PGresult *res;

    while ((res = PQgetResult(d->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);

        PQclear(res);
        /* In a COPY state PQgetResult keeps answering the same: stop there. */
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH)
            break;
    }
}

/* ---- connect ---- */

/* Server notices (and a FATAL sent while idle) in our message format. */
static void
on_notice(void *arg, const PGresult *res)
{
    const struct db *d = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char lower[16];
    size_t i;
    char *t;

    if (sev == NULL)
        sev = "NOTICE";
    for (i = 0; sev[i] != '\0' && i < sizeof(lower) - 1; i++)
        lower[i] = (char)tolower((unsigned char)sev[i]);
    lower[i] = '\0';
    t = one_line(primary != NULL ? primary : PQresultErrorMessage(res));
    err_note("%s: %s: %s", d->side, lower, t);
    free(t);
}

static int
setup_session(struct db *d, enum db_session mode)
{
    struct buf sql;
    PGresult *res;
    const char *enc;
    int rc = 0;

    buf_init(&sql);
    buf_puts(&sql, "SELECT pg_catalog.set_config('DateStyle', 'ISO, MDY', false),"
                   " pg_catalog.set_config('IntervalStyle', 'postgres', false),"
                   " pg_catalog.set_config('extra_float_digits', '3', false),"
                   " pg_catalog.set_config('TimeZone', 'UTC', false),"
                   " pg_catalog.set_config('bytea_output', 'hex', false),"
                   " pg_catalog.set_config('lc_monetary', 'C', false),"
                   " pg_catalog.set_config('statement_timeout', '0', false),"
                   " pg_catalog.set_config('idle_in_transaction_session_timeout', '0', false),");
    if (mode == DB_SESSION_READ)
        /* As pg_dump's ALWAYS_SECURE_SEARCH_PATH_SQL: nobody's functions shadow ours. */
        buf_puts(&sql, " pg_catalog.set_config('lock_timeout', '0', false),"
                       " pg_catalog.set_config('search_path', 'pg_catalog', false)");
    else
        buf_puts(&sql, " pg_catalog.set_config('lock_timeout', '30s', false)");
    res = PQexec(d->conn, sql.data);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = report(d, d->side, res);
    PQclear(res);
    buf_free(&sql);
    if (rc != 0)
        return rc;
    enc = PQparameterStatus(d->conn, "client_encoding");
    if (enc == NULL || strcmp(enc, "UTF8") != 0)
        return err_msg(EXIT_DB, "%s %s: could not set client_encoding to UTF8", d->side, d->desc);
    return 0;
}

int
db_connect(struct db **dp, const char *dsn_env, const char *side, enum db_session mode,
           int allow_pooler)
{
    const char *keys[6], *vals[6];
    const char *dsn = NULL;
    const char *secrets[3];
    PQconninfoOption *parsed = NULL;
    PGconn *conn = NULL;
    struct db *d = NULL;
    char *desc = NULL, *port = NULL;
    char line[1024];
    int n = 0, rc = 0;

    *dp = NULL;
    if (side == NULL)
        side = "database";
    if (dsn_env != NULL) {
        if (!valid_env_name(dsn_env))
            /* Not echoed: a connection string given here may hold a password. */
            return err_msg(EXIT_USAGE, "--dsn-env takes the name of an environment variable, "
                                       "not a connection string");
        dsn = getenv(dsn_env);
        if (dsn == NULL)
            return err_msg(EXIT_USAGE, "environment variable %s is not set", dsn_env);
        if (dsn[0] == '\0')
            return err_msg(EXIT_USAGE, "environment variable %s is empty", dsn_env);
        if (is_conninfo(dsn)) {
            char *errmsg = NULL;

            parsed = PQconninfoParse(dsn, &errmsg);
            if (parsed == NULL) {
                /* libpq's message may quote the string, password and all. */
                PQfreemem(errmsg);
                err_msg(EXIT_DB,
                        "%s: could not parse the connection string in environment "
                        "variable %s",
                        side, dsn_env);
                err_note("hint: libpq's message is not shown, as it may quote the string");
                return EXIT_DB;
            }
        }
    }

    /* Earlier keywords lose to the conninfo's own: connect_timeout is a default only. */
    if (getenv("PGCONNECT_TIMEOUT") == NULL) {
        keys[n] = "connect_timeout";
        vals[n++] = DEFAULT_CONNECT_TIMEOUT;
    }
    if (dsn != NULL) {
        keys[n] = "dbname";
        vals[n++] = dsn;
    }
    keys[n] = "fallback_application_name";
    vals[n++] = err_progname();
    keys[n] = "client_encoding";
    vals[n++] = "UTF8";
    keys[n] = NULL;
    vals[n] = NULL;

    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        rc = err_msg(EXIT_INTERNAL, "%s: out of memory (libpq connection)", side);
        goto done;
    }
    if (PQstatus(conn) == CONNECTION_OK)
        desc = describe(PQuser(conn), PQhost(conn), PQport(conn), PQdb(conn));
    else
        desc = describe_failed(conn, parsed);

    port = effective_port(conn);
    if (!allow_pooler && is_pooler_port(port)) {
        rc = err_msg(EXIT_REFUSED, "%s %s: refused: port %s is Supabase's transaction pooler", side,
                     desc, POOLER_PORT);
        err_note("hint: the transaction pooler keeps no session state (SET, temp tables, "
                 "prepared statements); use the direct connection, or the session-mode "
                 "pooler on port 5432");
        goto done;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        secrets[0] = option_value(parsed, "password");
        secrets[1] = PQpass(conn);
        secrets[2] = getenv("PGPASSWORD");
        first_line(PQerrorMessage(conn), line, sizeof(line), secrets, 3);
        rc = err_msg(EXIT_DB, "%s %s: could not connect: %s", side, desc, line);
        goto done;
    }

    d = xcalloc(1, sizeof(*d));
    d->conn = conn;
    conn = NULL;
    d->cancel = PQgetCancel(d->conn);
    PQsetNoticeReceiver(d->conn, on_notice, d);
    d->side = xstrdup(side);
    d->desc = desc;
    desc = NULL;
    d->server_version = PQserverVersion(d->conn);
    d->encoding = xstrdup(PQparameterStatus(d->conn, "server_encoding") != NULL
                              ? PQparameterStatus(d->conn, "server_encoding")
                              : "");
    if ((rc = setup_session(d, mode)) != 0) {
        db_close(d);
        d = NULL;
        goto done;
    }
    *dp = d;
done:
    if (conn != NULL)
        PQfinish(conn);
    if (parsed != NULL)
        PQconninfoFree(parsed);
    free(desc);
    free(port);
    return rc;
}

void
db_close(struct db *d)
{
    if (d == NULL)
        return;
    if (d->copy_buf != NULL)
        PQfreemem(d->copy_buf);
    if (d->cancel != NULL)
        PQfreeCancel(d->cancel);
    PQfinish(d->conn);
    free(d->side);
    free(d->desc);
    free(d->encoding);
    free(d->constraint);
    free(d->message);
    free(d->copy_context);
    free(d);
}

const char *
db_describe(const struct db *d)
{
    return d->desc;
}

const char *
db_side(const struct db *d)
{
    return d->side;
}

int
db_server_version(const struct db *d)
{
    return d->server_version;
}

const char *
db_server_encoding(const struct db *d)
{
    return d->encoding;
}

/* ---- statements ---- */

int
db_exec(struct db *d, const char *sql)
{
    PGresult *res;
    ExecStatusType st;
    int rc = 0;

    reset_last(d);
    res = PQexec(d->conn, sql);
    st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = report(d, d->side, res);
    PQclear(res);
    /* A COPY started by mistake would leave the connection busy. */
    if (st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH)
        drain(d);
    return rc;
}

int
db_query(struct db *d, struct db_result **out, const char *context, const char *sql, int nparams,
         const char *const *params)
{
    PGresult *res;
    ExecStatusType st;

    if (out != NULL)
        *out = NULL;
    reset_last(d);
    /* The extended protocol runs exactly one statement. */
    res = PQexecParams(d->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        int rc = report(d, context != NULL ? context : d->side, res);

        PQclear(res);
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH)
            drain(d);
        return rc;
    }
    if (out == NULL) {
        PQclear(res);
        return 0;
    }
    *out = xmalloc(sizeof(**out));
    (*out)->res = res;
    return 0;
}

int
db_ntuples(const struct db_result *r)
{
    return PQntuples(r->res);
}

int
db_nfields(const struct db_result *r)
{
    return PQnfields(r->res);
}

static int
in_range(const struct db_result *r, int row, int col)
{
    return row >= 0 && row < PQntuples(r->res) && col >= 0 && col < PQnfields(r->res);
}

const char *
db_value(const struct db_result *r, int row, int col)
{
    if (!in_range(r, row, col) || PQgetisnull(r->res, row, col))
        return NULL;
    return PQgetvalue(r->res, row, col);
}

size_t
db_length(const struct db_result *r, int row, int col)
{
    if (!in_range(r, row, col))
        return 0;
    return (size_t)PQgetlength(r->res, row, col);
}

long long
db_cmd_tuples(const struct db_result *r)
{
    const char *s = PQcmdTuples(r->res);
    char *end = NULL;
    long long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    return v;
}

void
db_result_free(struct db_result *r)
{
    if (r == NULL)
        return;
    PQclear(r->res);
    free(r);
}

const char *
db_field_name(const struct db_result *r, int col)
{
    return PQfname(r->res, col);
}

unsigned int
db_field_type(const struct db_result *r, int col)
{
    return (unsigned int)PQftype(r->res, col);
}

int
db_field_typmod(const struct db_result *r, int col)
{
    return PQfmod(r->res, col);
}

unsigned int
db_field_table(const struct db_result *r, int col)
{
    return (unsigned int)PQftable(r->res, col);
}

int
db_field_tablecol(const struct db_result *r, int col)
{
    return PQftablecol(r->res, col);
}

const char *
db_last_sqlstate(const struct db *d)
{
    return d->sqlstate;
}

const char *
db_last_constraint(const struct db *d)
{
    return d->constraint != NULL ? d->constraint : "";
}

void
db_set_quiet(struct db *d, int quiet)
{
    d->quiet = quiet;
}

void
db_set_show_values(struct db *d, int on)
{
    d->show_values = on;
}

const char *
db_last_message(const struct db *d)
{
    return d->message != NULL ? d->message : "";
}

/* ---- quoting ---- */

char *
db_quote_ident(struct db *d, const char *ident)
{
    char *q = PQescapeIdentifier(d->conn, ident, strlen(ident));
    char *s;

    if (q == NULL) {
        char line[1024];

        first_line(PQerrorMessage(d->conn), line, sizeof(line), NULL, 0);
        err_msg(EXIT_DATA, "could not quote identifier: %s", line);
        return NULL;
    }
    s = xstrdup(q);
    PQfreemem(q);
    return s;
}

char *
db_quote_literal(struct db *d, const char *str)
{
    char *q = PQescapeLiteral(d->conn, str, strlen(str));
    char *s;

    if (q == NULL) {
        char line[1024];

        first_line(PQerrorMessage(d->conn), line, sizeof(line), NULL, 0);
        err_msg(EXIT_DATA, "could not quote literal: %s", line);
        return NULL;
    }
    s = xstrdup(q);
    PQfreemem(q);
    return s;
}

/*
 * One part of a possibly quoted name, from *p up to an unquoted dot (when
 * stop_at_dot) or the end; "" inside quotes is one quote.
 */
static char *
name_part(const char **p, int stop_at_dot)
{
    struct buf b;
    int quoted = 0;
    const char *s = *p;

    buf_init(&b);
    buf_reserve(&b, strlen(s));
    for (; *s != '\0'; s++) {
        if (*s == '"') {
            if (quoted && s[1] == '"') {
                buf_putc(&b, '"');
                s++;
            } else {
                quoted = !quoted;
            }
            continue;
        }
        if (*s == '.' && !quoted && stop_at_dot)
            break;
        buf_putc(&b, *s);
    }
    *p = s;
    return b.data;
}

char *
db_quote_qualified(struct db *d, const char *name)
{
    const char *p = name;
    char *schema, *table, *qs, *qt, *out;
    struct buf b;

    schema = name_part(&p, 1);
    if (*p != '.') {
        out = db_quote_ident(d, schema);
        free(schema);
        return out;
    }
    p++;
    table = name_part(&p, 0);
    qs = db_quote_ident(d, schema);
    qt = db_quote_ident(d, table);
    out = NULL;
    if (qs != NULL && qt != NULL) {
        buf_init(&b);
        buf_printf(&b, "%s.%s", qs, qt);
        out = b.data;
    }
    free(schema);
    free(table);
    free(qs);
    free(qt);
    return out;
}

/* ---- COPY ---- */

static int
copy_begin(struct db *d, const char *context, const char *sql, ExecStatusType want)
{
    PGresult *res;
    int rc = 0;

    reset_last(d);
    free(d->copy_context);
    d->copy_context = xstrdup(context != NULL ? context : d->side);
    res = PQexecParams(d->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != want)
        rc = report(d, d->copy_context, res);
    /* The result that starts a COPY is cleared like any other. */
    PQclear(res);
    return rc;
}

int
db_copy_out_begin(struct db *d, const char *context, const char *sql)
{
    return copy_begin(d, context, sql, PGRES_COPY_OUT);
}

int
db_copy_out_line(struct db *d, const char **line, size_t *len)
{
    PGresult *res;
    int n, rc = 0;

    if (d->copy_buf != NULL) {
        PQfreemem(d->copy_buf);
        d->copy_buf = NULL;
    }
    /* In text mode each CopyData message, so each call, is exactly one row. */
    n = PQgetCopyData(d->conn, &d->copy_buf, 0);
    if (n > 0) {
        size_t k = (size_t)n;

        if (d->copy_buf[k - 1] == '\n')
            k--;
        *line = d->copy_buf;
        *len = k;
        return 1;
    }
    *line = NULL;
    *len = 0;
    if (n == -1) {
        res = PQgetResult(d->conn);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = report(d, d->copy_context, res);
        PQclear(res);
        drain(d);
        return -rc;
    }
    /* -2 (or 0, which only non-blocking mode returns) */
    rc = report(d, d->copy_context, NULL);
    drain(d);
    return -rc;
}

/* ---- a query's rows one at a time (single-row mode) ---- */

int
db_rows_begin(struct db *d, const char *context, const char *sql, int nparams,
              const char *const *params)
{
    reset_last(d);
    free(d->copy_context);
    d->copy_context = xstrdup(context != NULL ? context : d->side);
    if (!PQsendQueryParams(d->conn, sql, nparams, NULL, params, NULL, NULL, 0))
        return report(d, d->copy_context, NULL);
    /* Memory stays one row, however many rows the query returns. */
    if (!PQsetSingleRowMode(d->conn)) {
        drain(d);
        return err_msg(EXIT_INTERNAL, "%s: could not enter single-row mode", d->copy_context);
    }
    return 0;
}

int
db_rows_next(struct db *d, struct db_result **row)
{
    PGresult *res;
    ExecStatusType st;
    int rc = 0;

    *row = NULL;
    res = PQgetResult(d->conn);
    st = PQresultStatus(res);
    if (st == PGRES_SINGLE_TUPLE) {
        *row = xmalloc(sizeof(**row));
        (*row)->res = res;
        return 1;
    }
    /* The zero-row result that ends the set, or an error. */
    if (st != PGRES_TUPLES_OK)
        rc = report(d, d->copy_context, res);
    PQclear(res);
    drain(d);
    return -rc;
}

int
db_copy_in_begin(struct db *d, const char *context, const char *sql)
{
    return copy_begin(d, context, sql, PGRES_COPY_IN);
}

int
db_copy_in_put(struct db *d, const char *data, size_t len)
{
    while (len > 0) {
        int chunk = len > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)len;

        if (PQputCopyData(d->conn, data, chunk) != 1)
            return report(d, d->copy_context, NULL);
        data += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

int
db_copy_in_end(struct db *d, const char *errmsg)
{
    PGresult *res;
    int rc = 0;

    if (PQputCopyEnd(d->conn, errmsg) != 1) {
        rc = report(d, d->copy_context, NULL);
        drain(d);
        return rc;
    }
    res = PQgetResult(d->conn);
    if (errmsg == NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = report(d, d->copy_context, res);
    } else if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        rc = err_msg(EXIT_INTERNAL, "%s: the server accepted a COPY that was aborted",
                     d->copy_context);
    } else {
        /* The abort the caller asked for: recorded, not printed (the caller said why). */
        int quiet = d->quiet;

        d->quiet = 1;
        report(d, d->copy_context, res);
        d->quiet = quiet;
    }
    PQclear(res);
    drain(d);
    return rc;
}

void
db_cancel(struct db *d)
{
    char errbuf[256];

    /* PQcancel is designed to be called from a signal handler. */
    if (d != NULL && d->cancel != NULL)
        (void)PQcancel(d->cancel, errbuf, (int)sizeof(errbuf));
}

static struct db *volatile cancel_dbs[4];

static void
on_cancel_signal(int sig)
{
    int saved = errno;

    io_interrupted = sig;
    for (size_t i = 0; i < sizeof(cancel_dbs) / sizeof(cancel_dbs[0]); i++)
        db_cancel(cancel_dbs[i]);
    errno = saved;
}

void
db_cancel_on_signal(struct db *d)
{
    static int installed;

    if (!installed) {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_cancel_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        installed = 1;
    }
    for (size_t i = 0; i < sizeof(cancel_dbs) / sizeof(cancel_dbs[0]); i++) {
        if (cancel_dbs[i] == NULL) {
            cancel_dbs[i] = d;
            return;
        }
    }
}

void
db_cancel_forget(struct db *d)
{
    for (size_t i = 0; i < sizeof(cancel_dbs) / sizeof(cancel_dbs[0]); i++)
        if (cancel_dbs[i] == d)
            cancel_dbs[i] = NULL;
}

/* ---- holding a transaction open ---- */

int
db_wait_eof(struct db *d, int fd)
{
    char scratch[4096];

    for (;;) {
        struct pollfd p[2];
        int n;

        if (io_interrupted)
            return 0;
        p[0].fd = fd;
        p[0].events = POLLIN;
        p[0].revents = 0;
        p[1].fd = PQsocket(d->conn);
        p[1].events = POLLIN;
        p[1].revents = 0;
        /* The timeout bounds the race between the flag test and poll. */
        n = poll(p, 2, 500);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return err_sys(EXIT_IO, "could not wait for input");
        }
        if (p[1].revents != 0 || PQstatus(d->conn) != CONNECTION_OK) {
            PGnotify *note;

            if (!PQconsumeInput(d->conn) || PQstatus(d->conn) != CONNECTION_OK) {
                char line[1024];

                first_line(PQerrorMessage(d->conn), line, sizeof(line), NULL, 0);
                return err_msg(EXIT_DB, "%s %s: connection lost: %s", d->side, d->desc, line);
            }
            while ((note = PQnotifies(d->conn)) != NULL)
                PQfreemem(note);
        }
        if (p[0].revents & POLLNVAL)
            return 0;
        if (p[0].revents != 0) {
            ssize_t k = read(fd, scratch, sizeof(scratch));

            if (k == 0)
                return 0;
            if (k < 0 && errno != EINTR && errno != EAGAIN)
                return err_sys(EXIT_IO, "could not read standard input");
        }
    }
}
