/*
 * Command-line helpers: --version, usage errors, number and size parsing,
 * and the refusal of passwords written in argv.
 */
#ifndef DRIFTLESS_OPT_H
#define DRIFTLESS_OPT_H

#include <stddef.h>
#include <stdint.h>

/* The exit-status section every --help ends with. */
#define OPT_EXIT_HELP                                                                              \
    "Exit status:\n"                                                                               \
    "  0 success, 1 differences, 2 usage, 3 I/O error, 4 bad input data,\n"                        \
    "  5 database error, 6 refused by a safety check, 7 locked, 8 internal error\n"

/* Print "prog (driftless) VERSION" on stdout. */
void opt_print_version(void);

/*
 * Report a getopt error for c ('?' unknown option, ':' missing argument) and
 * print the "Try 'prog --help'" line. Returns EXIT_USAGE.
 */
int opt_getopt_error(int c, char **argv);
/* Print "prog: message" and the "Try" line; returns EXIT_USAGE. */
int opt_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* strtoll with full-string and range checks; prints and returns EXIT_USAGE on error. */
int opt_parse_int64(const char *arg, const char *name, int64_t min, int64_t max, int64_t *out);
/* A byte count with an optional K, M or G suffix (powers of 1024), e.g. "64M". */
int opt_parse_size(const char *arg, const char *name, int64_t min, int64_t max, int64_t *out);
/* --level: a zstd level; negative ones are the fast levels. */
int opt_parse_level(const char *arg, int *out);
/* --max-row-bytes: the largest record a stream may hold. */
int opt_parse_max_row(const char *arg, size_t *out);

/*
 * Refuse an argument that carries a password (password=, a URI with user:pass@):
 * argv is visible to every user through ps. Returns 0 or EXIT_USAGE.
 */
int opt_refuse_password(const char *arg, const char *name);

/* Split "a,b,c" into a NULL-terminated array of new strings; *n gets the count. */
char **opt_split_list(const char *arg, int *n);
void opt_free_list(char **list);

#endif
