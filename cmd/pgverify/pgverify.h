/*
 * pgverify internals: the options, the stream comparison (merge join by key,
 * values compared column by column where the hashes differ, the crosswalk
 * check), its report, the database mode's dumpers and the catalog check.
 */
#ifndef PGVERIFY_H
#define PGVERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"
#include "rs.h"

struct pv_opts {
    /* stream mode */
    const char *source; /* paths, "-" for stdin */
    const char *target;
    const char *crosswalk;
    const char *uuid_col;
    const char *table; /* the report's table name */
    /* database mode */
    const char *source_env;
    const char *target_env;
    const char *source_table;
    const char *target_table;
    char **keys;
    int nkeys;
    char **columns;
    int ncolumns;
    const char *snap_source;
    const char *snap_target;
    int allow_row_security;
    /* schema mode */
    int schema;
    struct buf map_columns; /* every list option, joined with ',' */
    struct buf expr;
    struct buf fk;
    struct buf ignore;
    const char *source_tables;
    /* report */
    int64_t show;
    int values;
    int quiet;
    const char *json;
    size_t max_row;
};

extern struct pv_opts opt;

/* One listed discrepancy: a line for people and a JSON value for scripts. */
struct pv_item {
    char *text;
    char *json;
};

/* A kind of discrepancy: its count and the first opt.show keys. */
struct pv_list {
    uint64_t count;
    struct pv_item *items;
    int n;
};

enum { PV_MISSING, PV_EXTRA, PV_DIFFERENT, PV_UUID, PV_NKINDS };

struct pv_result {
    char *table;
    uint64_t source_rows;
    uint64_t target_rows;
    uint64_t matched;
    struct pv_list list[PV_NKINDS];
};

/* An input stream of the comparison. */
struct pv_input {
    const char *what; /* "source", "target", "crosswalk" */
    const char *name; /* a path, "stdin", or a table for a dump */
    int fd;
    struct rs_reader *r;
};

/*
 * How two headers line up: key positions, the compared columns on each
 * side, and whether the streams' own hashes are used. Built by
 * pv_layout_build, which refuses (EXIT_DATA) incompatible headers by name.
 */
struct pv_layout {
    int nkeys;
    int *skey, *tkey; /* key positions, in key order */
    int ncmp;
    const char **cmp_names;
    int *scmp, *tcmp; /* positions of compared columns; -1 when not in the stream */
    int shash, thash; /* hash column positions, -1 none */
    int stream_hash;  /* 1: compare the streams' hashes; 0: hash_row both sides */
    int have_values;  /* every compared column present on both sides */
};

int pv_layout_build(const struct rs_header *s, const struct rs_header *t, struct pv_layout *l);
void pv_layout_free(struct pv_layout *l);

/*
 * Compare source and target (and check the target's UUIDs against the
 * crosswalk when xw is not NULL). Readers must be open. Fills res (free with
 * pv_result_free). Returns 0 or an exit code after printing.
 */
int pv_compare(struct pv_input *src, struct pv_input *tgt, struct pv_input *xw,
               struct pv_result *res);
void pv_result_free(struct pv_result *res);
/* 1 when res holds any discrepancy. */
int pv_result_differs(const struct pv_result *res);

/* The human report on stdout (unless opt.quiet) and the JSON line (opt.json). */
int pv_report(const struct pv_result *res);

/* Append a value for people: "quoted", control bytes escaped, cut at max bytes. */
void pv_text_value(struct buf *b, const char *s, size_t len, size_t max);
/* Add text to what goes to the JSON file opt.json. */
int pv_json_write(const char *text, size_t len);
/*
 * With write, write it all through a temp file and a rename ("-" is stdout);
 * without, drop it. Returns 0 or EXIT_IO after printing.
 */
int pv_json_flush(int write);

struct db;

/* Database mode: dump both sides and compare them. Returns the exit code. */
int pv_database(void);
/* --schema: compare the catalogs. Returns the exit code. */
int pv_schema(void);

#endif
