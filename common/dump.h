/*
 * Dumping one table or query as a row stream: the plan (header and COPY
 * statement, built from the catalog, the key emitted and ordered as DESIGN.md
 * "Keys and order" says) and the COPY-to-stream loop. pgdump-rows and
 * pgverify's database mode call this one piece of code, so both dump alike.
 */
#ifndef DRIFTLESS_DUMP_H
#define DRIFTLESS_DUMP_H

#include <stddef.h>

#include "db.h"
#include "rs.h"

struct dump_opts {
    const char *table; /* "schema.table", or NULL with query */
    const char *query;
    const char *name; /* the stream's table name for a query */
    const char *where;
    char **columns; /* NULL: every column */
    int ncolumns;
    char **keys;
    int nkeys;
    const char *snapshot; /* NULL: a snapshot of the dump's own */
    const char *key_set;  /* a row stream: dump only the rows with its keys; NULL all */
    const char *side;     /* "source", "target": prefixes messages; NULL none */
    int skip_null_keys;
    int allow_row_security;
    int progress;
    int level;
    size_t max_row;
};

struct dump_plan {
    struct rs_header h; /* key columns first, in --key order */
    char *copy_sql;     /* COPY (SELECT ... ORDER BY key) TO STDOUT */
    char *key_sql;      /* with key_set: the SELECT of one chunk of keys ($1..$n) */
    char *label;        /* "table public.items" or "query NAME", for messages */
    int nkeys;
};

/*
 * Open the dump's transaction: row_security off (on with allow_row_security),
 * REPEATABLE READ, READ ONLY, in o->snapshot when set. Returns 0 or an exit
 * code after printing.
 */
int dump_begin(struct db *db, const struct dump_opts *o);

/*
 * Read the catalog (or describe the query) and build the header and the COPY
 * statement; for a table, refuse one under row security unless allowed.
 * Runs inside the dump's transaction. Returns 0 or an exit code after printing.
 */
int dump_plan_build(struct db *db, const struct dump_opts *o, struct dump_plan *p);
void dump_plan_free(struct dump_plan *p);

/*
 * Run the plan's COPY and write every row to a row stream on fd (name for
 * messages); the stream is finished (trailer written) only when the COPY
 * completed. A caller that cancels on SIGINT calls db_cancel from its handler;
 * this returns EXIT_DB once io_interrupted is set. Returns 0 or an exit code
 * after printing.
 */
int dump_copy_rows(struct db *db, const struct dump_opts *o, const struct dump_plan *p, int fd,
                   const char *name);

/*
 * With o->key_set: read that stream's keys (its key columns named and ordered
 * as the plan's), and write the rows with those keys, in key order, to a row
 * stream on fd, one query per chunk of keys, each row fetched alone: memory is
 * one chunk of keys and one row. The output is finished only when the key set
 * verified to its trailer. Returns 0 or an exit code after printing.
 */
int dump_key_set_rows(struct db *db, const struct dump_opts *o, const struct dump_plan *p, int fd,
                      const char *name);

/*
 * With row_security off the server refuses a query that a policy would filter:
 * turn that EXIT_DB into EXIT_REFUSED with a hint. Returns rc otherwise.
 */
int dump_refused_by_policy(struct db *db, int rc);

#endif
