/*
 * Program name, exit codes and error messages shared by every driftless program.
 * Messages go to stderr as "prog: context: message", each written with one call
 * so that the stages of a pipeline never interleave inside a line.
 */
#ifndef DRIFTLESS_ERR_H
#define DRIFTLESS_ERR_H

/* The exit codes of DESIGN.md; every --help repeats them. */
enum {
    EXIT_OK = 0,
    EXIT_DIFF = 1,     /* differences found or left */
    EXIT_USAGE = 2,    /* bad flag or argument */
    EXIT_IO = 3,       /* file, pipe or disk error */
    EXIT_DATA = 4,     /* truncated, corrupt or unsorted input, bad CSV or map */
    EXIT_DB = 5,       /* connection, missing relation, failed statement */
    EXIT_REFUSED = 6,  /* a safety check said no */
    EXIT_LOCKED = 7,   /* another run holds the lock */
    EXIT_INTERNAL = 8, /* out of memory, broken invariant */
};

#define ERR_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Set the name used as the prefix of every message: a fixed name, not argv[0]. */
void err_init(const char *progname);
const char *err_progname(void);

/* Print "prog: <message>" and return code, so callers write "return err_msg(...)". */
int err_msg(int code, const char *fmt, ...) ERR_PRINTF(2, 3);
/* As err_msg, with ": strerror(errno)" appended (errno read on entry). */
int err_sys(int code, const char *fmt, ...) ERR_PRINTF(2, 3);
/* Print "prog: <message>" with no code: warnings, progress, "detail:"/"hint:" lines. */
void err_note(const char *fmt, ...) ERR_PRINTF(1, 2);

/* For main() only: print the message and exit with code. */
_Noreturn void err_die(int code, const char *fmt, ...) ERR_PRINTF(2, 3);

#endif
