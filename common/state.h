/*
 * The state schema in the target (DESIGN.md "State in the target"): its
 * versioned install, run bookkeeping, catalog fingerprints, and the SQL
 * conventions that every program reading the state must share.
 *
 * Tables (schema "driftless" unless overridden; see pgapply(1) for columns):
 *   schema_version  one row per applied migration
 *   runs            one row per run: who, where, when, status, counts, fingerprints;
 *                   rollback_of / rolled_back_by link a rollback and the run it undid
 *   tables          tables driftless has taken over (crosswalk or owned keys filled)
 *   crosswalk       (table_name, legacy_key) -> uuid, every mapped row
 *   owned_keys      integer-key tables: the keys that came from the source
 *   batches         checkpoints, keyed by (stream_checksum, table_name, phase, batch)
 *   changes         one row per applied change: before-image and after-hash
 *   created_tables  tables a run created
 *   watermarks      per table, where migrate's next incremental compare starts
 *
 * Conventions:
 * - table_name is "schema.table" unquoted, as the change stream's header
 *   (or pgapply --table) names it.
 * - legacy_key is the text of the target's legacy key: for one column its
 *   PostgreSQL text form ((col)::text), for a composite key the jsonb text of
 *   the array of the columns' text forms, to_jsonb(ARRAY[(a)::text, (b)::text])::text,
 *   e.g. ["42", "a b"]. state_legacy_key_sql builds that expression.
 * - tables.key_columns names the legacy key. When those are no columns of the
 *   table, the key lives in the crosswalk only (the earlier migration kept it
 *   in a CSV or a mapping table; pgapply --register --import-map imports it):
 *   the table's migrated rows are those whose uuid_column value the crosswalk
 *   holds for the table, and their legacy key is crosswalk.legacy_key.
 *   Integer keys are kept as numbers there ("7", never "007").
 * - Key text columns (table_name, legacy_key, stream_checksum) are COLLATE "C":
 *   compare them as bytes.
 * - changes is indexed by its primary key (stream_checksum, table_name,
 *   legacy_key) only: a run's changes are found through its batches
 *   (batches.run_id -> stream_checksum, table_name), then filtered on run_id.
 * - Row images (since version 4): changes.before_image is a jsonb object
 *   mapping every column of the row (generated ones included) to its text
 *   form, (col)::text, SQL NULL as JSON null: exact for every type, where
 *   to_jsonb(row) could not tell a json null from NULL, rewrote json text and
 *   dropped array bounds. A restore casts each text back to its column's type
 *   ((img ->> 'c')::type) and writes the columns that are not generated; the
 *   generated ones are computed again and checked by the hash. The expression
 *   is built in one place, the state function row_image_sql(table, alias)
 *   (state_row_image_sql), because scripts/rollback builds its SQL in the
 *   target too. The text forms hold under driftless's pinned session settings
 *   (db.c: DateStyle, IntervalStyle, extra_float_digits, bytea_output,
 *   lc_monetary, TimeZone); every reader sets them as well.
 * - after_hash is md5(image::text) of the row as stored (RETURNING, after
 *   BEFORE triggers and generated columns): STATE_ROW_HASH_SQL; a later check
 *   of the current row hashes the same way. Runs before version 4
 *   (runs.image_form NULL) hashed md5(to_jsonb(row)::text).
 */
#ifndef DRIFTLESS_STATE_H
#define DRIFTLESS_STATE_H

#include <stdio.h>

#include "db.h"
#include "mem.h"

#define STATE_DEFAULT_SCHEMA "driftless"

/* The migration this build brings the state schema up to. */
#define STATE_VERSION 5

/* The migration that brought row images in text form (row_image_sql). */
#define STATE_IMAGE_VERSION 4

/* printf format of the row hash; %s is a row image expression (state_row_image_sql). */
#define STATE_ROW_HASH_SQL "pg_catalog.md5((%s)::pg_catalog.text)"

/* Run statuses (runs.status). */
#define STATE_RUN_RUNNING     "running"
#define STATE_RUN_OK          "ok"
#define STATE_RUN_REJECTS     "rejects"
#define STATE_RUN_FAILED      "failed"
#define STATE_RUN_INTERRUPTED "interrupted"

/* 1 when s is one of the run statuses above. */
int state_status_valid(const char *s);

/* 1 when name can be a state schema: not public, not pg_*, not empty. */
int state_schema_name_ok(const char *name);

/*
 * Create or upgrade the state schema to STATE_VERSION in its own transaction,
 * serialised by an advisory lock; then make sure every state table has row
 * security enabled and that PUBLIC, anon, authenticated and service_role
 * (those that exist) hold no privilege on the schema or its objects.
 * Idempotent. Must not be called inside a transaction. Returns 0 or an exit
 * code after printing (EXIT_REFUSED when the schema is newer than this build).
 */
int state_install(struct db *d, const char *schema);

/*
 * Read the installed version without writing: *version is 0 when the schema
 * or its version table does not exist. Returns 0 or an exit code.
 */
int state_version(struct db *d, const char *schema, int *version);

/* Print every migration's SQL for schema to out (for review; pgapply --print-state-sql). */
void state_print_sql(FILE *out, const char *schema);

/* A new run's description (NULL fields stay NULL). */
struct state_run {
    const char *program; /* "pgapply", "migrate" ... */
    char *const *tables; /* the run's tables, "schema.table" */
    int ntables;
    int resumed;           /* goes on from an interrupted run */
    const char *source_fp; /* catalog fingerprints (state_fingerprint) */
    const char *target_fp;
};

/*
 * Insert a runs row (status running, host and OS user of this process,
 * current_user) in its own statement; *id gets its id. Returns 0 or an exit code.
 */
int state_run_begin(struct db *d, const char *schema, const struct state_run *run, long long *id);

/*
 * Close run id: status (state_status_valid), exit code, counts (JSON text or
 * NULL to keep), resumed (ORed in). A counts object with a "watermark" and no
 * failed row moves that table's watermark, in the same statement, when the
 * status is ok or rejects. EXIT_USAGE when there is no such run.
 */
int state_run_end(struct db *d, const char *schema, long long id, const char *status, int exit_code,
                  const char *counts_json, int resumed);

/* Check that run id exists; EXIT_USAGE after printing when it does not. */
int state_run_exists(struct db *d, const char *schema, long long id);

/*
 * md5 (32 hex digits into out) of the catalog of the given tables ("schema.table",
 * unquoted; tables NULL: every table outside the system schemas and
 * exclude_schema): columns with types, NOT NULL and generation, and
 * constraints. Equal fingerprints mean no schema drift. Returns 0 or an exit code.
 */
int state_fingerprint(struct db *d, char *const *tables, int ntables, const char *exclude_schema,
                      char out[33]);

/*
 * Append the legacy-key text expression over the SQL expressions exprs[0..n)
 * (e.g. "t.\"legacy_id\"") to out: see "legacy_key" above.
 */
void state_legacy_key_sql(struct buf *out, const char *const *exprs, int n);

/*
 * The row image expression ("Row images" above) of the table with oid rel_oid
 * over the row alias alias, from the state's row_image_sql (the state schema
 * must be at STATE_IMAGE_VERSION or later): *out is malloc'd. Columns are
 * qualified by the alias, so a column named like the alias is no ambiguity.
 * Returns 0 or an exit code.
 */
int state_row_image_sql(struct db *d, const char *schema, const char *rel_oid, const char *alias,
                        char **out);

/* Append s as a PostgreSQL array element literal list "{...}" of text. */
void state_text_array(struct buf *out, char *const *items, int n);

#endif
