/*
 * libpq behind a small interface: connect from a named environment variable,
 * pin the session, run statements with parameters, stream COPY in and out.
 * Only db.c includes libpq-fe.h. Every function prints its own error once
 * (connection described as user@host:port/db, never the conninfo) and
 * returns 0 or an exit code.
 */
#ifndef DRIFTLESS_DB_H
#define DRIFTLESS_DB_H

#include <stddef.h>

struct db;
struct db_result;

enum db_session {
    DB_SESSION_READ,  /* search_path pinned to pg_catalog; for dumping */
    DB_SESSION_WRITE, /* the role's default search_path kept (target triggers) */
};

/*
 * Connect with the conninfo held by environment variable dsn_env (NULL: libpq's
 * PG* variables alone). side names the connection in messages ("source").
 * Runs db_setup_session. Refuses Supabase's transaction pooler (port 6543)
 * with EXIT_REFUSED unless allow_pooler.
 */
int db_connect(struct db **d, const char *dsn_env, const char *side, enum db_session mode,
               int allow_pooler);
void db_close(struct db *d);
/* "user@host:port/db" of a live connection. */
const char *db_describe(const struct db *d);
/* The side name given at connect. */
const char *db_side(const struct db *d);
int db_server_version(const struct db *d);
/* server_encoding, as read at connect. */
const char *db_server_encoding(const struct db *d);

/* Run a command that returns no rows. */
int db_exec(struct db *d, const char *sql);
/*
 * Run a statement with text parameters (NULL entries are SQL NULL). *res gets the
 * result when it returns rows (free with db_result_free); pass res NULL for a
 * command. context prefixes the error message ("table public.users").
 */
int db_query(struct db *d, struct db_result **res, const char *context, const char *sql,
             int nparams, const char *const *params);
int db_ntuples(const struct db_result *r);
int db_nfields(const struct db_result *r);
/* The value (NUL-terminated text) or NULL for SQL NULL. */
const char *db_value(const struct db_result *r, int row, int col);
size_t db_length(const struct db_result *r, int row, int col);
/* The number of rows a command affected (cmdTuples), or -1. */
long long db_cmd_tuples(const struct db_result *r);
void db_result_free(struct db_result *r);

/* SQLSTATE of the last failed statement ("" when none). */
const char *db_last_sqlstate(const struct db *d);
/* The constraint named by the last error (PG_DIAG_CONSTRAINT_NAME) or "". */
const char *db_last_constraint(const struct db *d);
/* Suppress the printing of statement errors (the caller reports them itself). */
void db_set_quiet(struct db *d, int quiet);
/* The primary message of the last error ("" when none). */
const char *db_last_message(const struct db *d);

/* Quote an identifier (PQescapeIdentifier) into a new malloc'd string. */
char *db_quote_ident(struct db *d, const char *ident);
/* Quote "schema.table" (split at the first unquoted dot) as "schema"."table". */
char *db_quote_qualified(struct db *d, const char *name);

/*
 * COPY ... TO STDOUT: begin, then db_copy_out_line until it returns 0 (end).
 * Each line (without its newline) is returned in *line, valid until the next call.
 */
int db_copy_out_begin(struct db *d, const char *context, const char *sql);
/* Returns 1 with a line, 0 at the end (the COPY's result checked), or -exit code. */
int db_copy_out_line(struct db *d, const char **line, size_t *len);

/*
 * A query's rows one at a time (single-row mode): begin, then db_rows_next
 * until it returns 0. Each row is a one-row result the caller frees.
 */
int db_rows_begin(struct db *d, const char *context, const char *sql, int nparams,
                  const char *const *params);
/* Returns 1 with a row in *row, 0 at the end (the query's result checked), or -exit code. */
int db_rows_next(struct db *d, struct db_result **row);

/* COPY ... FROM STDIN: begin, put data (COPY text), then end (errmsg NULL = commit data). */
int db_copy_in_begin(struct db *d, const char *context, const char *sql);
int db_copy_in_put(struct db *d, const char *data, size_t len);
/* With errmsg non-NULL the COPY is aborted on the server (nothing half-loaded). */
int db_copy_in_end(struct db *d, const char *errmsg);

/* Ask the server to cancel the running statement (safe from a signal handler). */
void db_cancel(struct db *d);
/*
 * Cancel d's running statement on SIGINT or SIGTERM (besides setting
 * io_interrupted), so a long COPY ends at once in an error; up to four at a time.
 * db_cancel_forget takes d off that list before it is closed.
 */
void db_cancel_on_signal(struct db *d);
void db_cancel_forget(struct db *d);

/* ---- additions (pgdump-rows) ---- */

/* Quote a string as an SQL literal (PQescapeLiteral) into a new malloc'd string. */
char *db_quote_literal(struct db *d, const char *s);

/* Result columns: name, type OID (a domain's base type), typmod, source table OID and column. */
const char *db_field_name(const struct db_result *r, int col);
unsigned int db_field_type(const struct db_result *r, int col);
int db_field_typmod(const struct db_result *r, int col);
unsigned int db_field_table(const struct db_result *r, int col);
int db_field_tablecol(const struct db_result *r, int col);

/*
 * Print the server's DETAIL lines that quote a whole row ("Failing row
 * contains ...") only when on: they hold customer data (--values). Off by default.
 */
void db_set_show_values(struct db *d, int on);

/*
 * Wait until fd reaches EOF or io_interrupted is set, while watching the
 * connection. Returns 0, or EXIT_DB after printing when the connection is lost.
 */
int db_wait_eof(struct db *d, int fd);

#endif
