/*
 * Error reporting: one formatted line per call, written with a single write(2).
 */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *progname = "driftless";

void
err_init(const char *name)
{
    progname = name;
}

const char *
err_progname(void)
{
    return progname;
}

static void
emit(const char *fmt, va_list ap, const char *suffix)
{
    char line[4096];
    size_t n;
    int k;

    k = snprintf(line, sizeof(line), "%s: ", progname);
    n = k > 0 ? (size_t)k : 0;
    k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (k > 0)
        n += (size_t)k;
    if (n > sizeof(line) - 1)
        n = sizeof(line) - 1;
    if (suffix != NULL) {
        k = snprintf(line + n, sizeof(line) - n, ": %s", suffix);
        if (k > 0)
            n += (size_t)k;
        if (n > sizeof(line) - 1)
            n = sizeof(line) - 1;
    }
    /* Messages are one line: keep multi-line server text readable but whole. */
    while (n > 0 && line[n - 1] == '\n')
        n--;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* stderr is unbuffered; a single write keeps the line whole in a pipeline. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nothing left to report to */
    }
}

int
err_msg(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(fmt, ap, NULL);
    va_end(ap);
    return code;
}

int
err_sys(int code, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    emit(fmt, ap, strerror(saved));
    va_end(ap);
    return code;
}

void
err_note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(fmt, ap, NULL);
    va_end(ap);
}

void
err_die(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(fmt, ap, NULL);
    va_end(ap);
    exit(code);
}
