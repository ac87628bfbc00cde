/*
 * pgapply: applies a change stream to one target table (or the streams of a
 * foreign-key cycle, together) in batched transactions, recording every
 * change, its before-image and a checkpoint in the state schema. Shared
 * declarations of its parts: options (main.c), the spooled stream (spool.c),
 * the target's catalog (target.c) and the batches (apply.c).
 */
#ifndef PGAPPLY_H
#define PGAPPLY_H

#include <stdint.h>

#include "db.h"
#include "mem.h"
#include "rs.h"

enum phase_set { PHASE_UPSERT = 1, PHASE_DELETE = 2, PHASE_RETRY = 4, PHASE_ALL = 7 };

struct options {
    const char *dsn_env;
    const char *table; /* --table, else the stream header's */
    const char *uuid_column;
    const char *spool_dir;
    const char *reject_file;
    const char *stats_file;
    const char *schema;     /* state schema */
    const char *input;      /* CHANGES; NULL or "-" is stdin */
    const char *legacy_key; /* --register: the legacy key columns, "a,b" */
    const char *import_map; /* --register: a map stream to fill the crosswalk from */
    int registering;        /* --register: a crosswalk-only key may be unregistered */
    int app_rows_none;      /* --register --app-rows none: every target key is migrated */
    int64_t group_max_rows;
    long long run_id; /* 0: pgapply makes its own run */
    int phases;       /* enum phase_set */
    int64_t batch_rows;
    int64_t batch_bytes;
    int64_t lock_timeout_ms;
    int dry_run;
    int progress;
    int allow_pooler;
    /* failpoint: SIGKILL the process group after this many commits (0: off) */
    long long fail_after_commit;
};

/* The verified change stream, as a file that can be read again. */
struct spool {
    char *path;    /* the file read by every pass */
    char *display; /* the input's name in messages */
    char *tmpdir;  /* our own temp dir, removed at the end; NULL if none */
    char *tmpfile; /* a spool file to remove at the end; NULL if kept */
    char checksum[17];
    struct rs_header hdr;
    int op_col;
    int nkeys;
    int *key_cols; /* stream column of each key column */
    int ndata;
    int *data_cols; /* stream columns written to the target (not _op, _hash, _reason) */
    uint64_t nrecords;
    uint64_t n_insert, n_update, n_delete;
    /* the file as verified: every later pass must read the same one */
    int have_id;
    unsigned long long dev, ino, size;
    long long mtime_sec, mtime_nsec;
};

/* Read CHANGES to its trailer (copying a pipe to a spool file first). */
int spool_load(struct spool *s, const struct options *o);
void spool_free(struct spool *s);

/* A pass over the spool. */
struct spool_iter {
    int fd;
    struct rs_reader *r;
    uint64_t next_ord;
};
int spool_iter_open(struct spool_iter *it, const struct spool *s);
/* 0 with *vals set (and *ord its 0-based position), 0 with *vals NULL at the end, or a code. */
int spool_iter_next(struct spool_iter *it, const struct rs_value **vals, uint64_t *ord);
void spool_iter_close(struct spool_iter *it);

/* A target column. */
struct tcol {
    char *name;
    char *qname; /* quoted */
    char *cast;  /* the type to cast text to: format_type without typmod */
    int generated;
    char identity; /* 'a' always, 'd' by default, 0 none */
};

/* A foreign key that references the target table. */
struct fkref {
    char *conname;
    char *child;  /* "schema.table" */
    char *qchild; /* quoted */
    int ncols;
    char **child_cols;  /* quoted */
    char **parent_cols; /* quoted */
    int nlegacy;        /* child's legacy key columns (quoted); 0: every child row is target-born */
    char **legacy;
    int nident; /* child's primary key columns (quoted) to name a row; 0: ctid */
    char **ident;
    char **ident_names; /* unquoted, for messages */
    /* a child keyed in the crosswalk only: its uuid column (quoted) and name (literal) */
    char *cw_uuid;
    char *cw_name;
};

/* A unique index of the target. */
struct uindex {
    char *name;
    int primary;
    int ncols;
    char **cols; /* unquoted */
};

struct target {
    char *name;  /* "schema.table" as named by the stream or --table */
    char *qname; /* quoted qualified */
    char *lname; /* name as an SQL literal */
    int ncols;
    struct tcol *cols;
    int integer_mode; /* no UUID column: the legacy key is the primary key */
    int uuid_tcol;    /* target column index of the UUID column, or -1 */
    int uuid_scol;    /* stream column that carries it, or -1 */
    int *key_tcol;    /* per stream key column: target column, or -1 (crosswalk_keys) */
    char **key_cast;  /* per stream key column: the type its text is cast to */
    /*
     * The legacy key is no column of the table: it lives in the crosswalk only
     * (a mapping kept in a CSV or a mapping table). Rows are found by
     * uuid column = crosswalk.uuid of the stream's key.
     */
    int crosswalk_keys;
    int *data_tcol; /* per stream data column: target column */
    int nuindex;
    struct uindex *uindex;
    int nfk;
    struct fkref *fk;
    int registered;    /* the table is in the state's tables registry */
    int reg_same_keys; /* ... with the stream's key columns */
    char *reg_uuid;    /* ... and this uuid_column (NULL: integer keys) */
    char *reg_keys;    /* its key columns, "a, b", for messages */
    /* the row image over alias t (state_row_image_sql); NULL::jsonb without a state to read */
    char *img;
};

/* Look up the target table and match it with the stream. Returns 0 or a code. */
int target_describe(struct db *d, struct target *t, const struct spool *s, const struct options *o,
                    int state_version);
void target_free(struct target *t);
/* The target column index of name, or -1. */
int target_find(const struct target *t, const char *name);
/* 1 if the unique index (or constraint) name covers exactly the legacy key. */
int target_is_legacy_index(const struct target *t, const struct spool *s, const char *name);
const struct uindex *target_uindex(const struct target *t, const char *name);

/*
 * A cycle group (--stream): refuse (EXIT_REFUSED, by name) a foreign key
 * between two of its tables that is neither DEFERRABLE nor nullable, and put
 * the parents of the non-deferrable ones first in order[] (indexes into t).
 */
int target_group_check(struct db *d, struct target *const *t, int n, int *order);

/* Counters of a run, written by --stats. */
struct counts {
    uint64_t inserted, updated, deleted, failed, deferred, not_found, not_owned;
    uint64_t batches, skipped_batches, skipped_rows;
};

/* Apply (or, with o->dry_run, check) the spooled stream. Returns 0, 1 (rejects) or a code. */
int apply_run(struct db *d, const struct options *o, struct spool *s, struct target *t,
              long long run_id, struct counts *c);

/*
 * A cycle group: n tables, each with its options (o[i].input, table, uuid
 * column, reject file), spool, target and counts; order[] as
 * target_group_check gives it. Each phase of the whole group is one
 * transaction with SET CONSTRAINTS ALL DEFERRED. Returns 0, 1 or a code.
 */
int apply_group(struct db *d, const struct options *o, struct spool *s, struct target *t,
                const int *order, int n, long long run_id, struct counts *c);

/*
 * --register: register the table and fill its crosswalk from its legacy key
 * columns or from o->import_map, in one transaction; s holds the key columns
 * only (no records). Returns 0 or a code (EXIT_DATA for a bad map).
 */
int apply_register(struct db *d, const struct options *o, struct spool *s, struct target *t,
                   long long run_id);

/*
 * --declare-migrated: add keys of a registered integer-key table to its owned
 * keys, in one transaction; each of keys[] is a key as messages print it, or
 * "-" for standard input, one key a line. Every key must name a row of the
 * table (EXIT_DATA). Returns 0 or a code.
 */
int apply_declare(struct db *d, const struct options *o, struct spool *s, struct target *t,
                  long long run_id, char *const *keys, int nkeys);

/*
 * --create-tables FILE (create.c): check the DDL's shape (EXIT_DATA), then in
 * one transaction run what the target lacks, record the created tables under
 * o->run_id and check their conventions (EXIT_REFUSED); with o->dry_run only
 * print. Prints the script of what ran on stdout. Returns 0 or an exit code.
 */
int create_tables(const struct options *o, const char *file);

#endif
