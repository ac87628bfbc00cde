/*
 * pgdump-rows internals: the options, the dump plan (header and COPY
 * statement, built from the catalog) and the COPY-to-stream loop.
 */
#ifndef PGDUMP_ROWS_H
#define PGDUMP_ROWS_H

#include <stddef.h>

#include "db.h"
#include "rs.h"

struct dump_opts {
    const char *dsn_env;
    const char *table;
    const char *query;
    const char *name;
    const char *where;
    char **columns; /* NULL: every column */
    int ncolumns;
    char **keys;
    int nkeys;
    const char *snapshot;
    const char *output;
    int export_snapshot;
    int skip_null_keys;
    int allow_row_security;
    int progress;
    int level;
    size_t max_row;
};

struct dump_plan {
    struct rs_header h; /* key columns first, in --key order */
    char *copy_sql;     /* COPY (SELECT ... ORDER BY key) TO STDOUT */
    char *label;        /* "table public.items" or "query NAME", for messages */
    int nkeys;
};

/*
 * Read the catalog (or describe the query) and build the header and the COPY
 * statement; for --table, refuse a table under row security unless allowed.
 * Runs inside the dump's transaction. Returns 0 or an exit code after printing.
 */
int plan_build(struct db *db, const struct dump_opts *o, struct dump_plan *p);
void plan_free(struct dump_plan *p);

/*
 * Run the plan's COPY and write every row to a row stream on fd (name for
 * messages); the stream is finished (trailer written) only when the COPY
 * completed. Returns 0 or an exit code after printing.
 */
int copy_rows(struct db *db, const struct dump_opts *o, const struct dump_plan *p, int fd,
              const char *name);

/* The connection a SIGINT/SIGTERM handler cancels (set while a COPY runs). */
extern struct db *volatile copy_cancel_db;

#endif
