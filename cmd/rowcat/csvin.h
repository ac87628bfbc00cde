/*
 * rowcat --from-csv: a CSV file with a header row, read through libcsv with
 * PostgreSQL's CSV rules (an unquoted empty field is NULL, "" is the empty
 * string), written as a row stream. Memory is bounded by one record.
 */
#ifndef ROWCAT_CSVIN_H
#define ROWCAT_CSVIN_H

#include <stddef.h>

struct csvin_opts {
    const char *input;   /* path, or NULL / "-" for stdin */
    const char *in_name; /* "stdin" or the path, for messages */
    const char *table;   /* the stream's table name */
    const char *types;   /* --types "col:type,..." or NULL */
    const char *keys;    /* --key "col,..." or NULL */
    int level;           /* zstd level or RS_LEVEL_AUTO */
    size_t max_row;      /* --max-row-bytes */
    int out_fd;
    const char *out_name;
};

/*
 * Check the syntax of --types and --key before any input is read.
 * Returns 0 or EXIT_USAGE after printing.
 */
int csvin_check_options(const struct csvin_opts *o);

/*
 * Convert. Returns 0 once the stream's trailer is written, or an exit code
 * after printing (EXIT_DATA names the CSV line). The output fd is not closed.
 */
int csvin_run(const struct csvin_opts *o);

#endif
