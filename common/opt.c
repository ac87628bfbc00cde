/*
 * Command-line helpers shared by every program.
 */
#include "opt.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mem.h"
#include "version.h"

void
opt_print_version(void)
{
    printf("%s (driftless) %s\n", err_progname(), DRIFTLESS_VERSION);
}

static void
try_help(void)
{
    /* The GNU form of this line carries no "prog:" prefix. */
    fprintf(stderr, "Try '%s --help' for more information.\n", err_progname());
}

int
opt_getopt_error(int c, char **argv)
{
    const char *tok = argv[optind - 1];

    /* Long options are named by their token: optopt may hold a val >= 256. */
    if (c == ':')
        err_msg(EXIT_USAGE, "option '%s' requires an argument", tok);
    else if (strncmp(tok, "--", 2) == 0 && strchr(tok, '=') != NULL && optopt != 0)
        err_msg(EXIT_USAGE, "option '%.*s' doesn't allow an argument", (int)strcspn(tok, "="), tok);
    else if (strncmp(tok, "--", 2) == 0 || optopt <= 0 || optopt > 255)
        err_msg(EXIT_USAGE, "unrecognized option '%s'", tok);
    else
        err_msg(EXIT_USAGE, "invalid option -- '%c'", optopt);
    try_help();
    return EXIT_USAGE;
}

int
opt_usage_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    err_msg(EXIT_USAGE, "%s", line);
    try_help();
    return EXIT_USAGE;
}

int
opt_parse_int64(const char *arg, const char *name, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (arg[0] == '\0' || isspace((unsigned char)arg[0]) || *end != '\0')
        return opt_usage_error("invalid value for %s: '%s' is not a number", name, arg);
    if (errno == ERANGE || v < min || v > max)
        return opt_usage_error("invalid value for %s: %s is outside %lld..%lld", name, arg,
                               (long long)min, (long long)max);
    *out = v;
    return 0;
}

int
opt_parse_size(const char *arg, const char *name, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v;
    int64_t mult = 1;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (arg[0] == '\0' || isspace((unsigned char)arg[0]) || end == arg)
        return opt_usage_error("invalid value for %s: '%s' is not a size", name, arg);
    if (*end == 'K' || *end == 'k')
        mult = 1024;
    else if (*end == 'M' || *end == 'm')
        mult = 1024 * 1024;
    else if (*end == 'G' || *end == 'g')
        mult = 1024LL * 1024 * 1024;
    else if (*end != '\0')
        return opt_usage_error("invalid value for %s: '%s' is not a size", name, arg);
    if (mult != 1 && end[1] != '\0' && strcmp(end + 1, "iB") != 0 && strcmp(end + 1, "B") != 0)
        return opt_usage_error("invalid value for %s: '%s' is not a size", name, arg);
    if (errno == ERANGE || v < 0 || v > max / mult || v * mult < min)
        return opt_usage_error("invalid value for %s: %s is outside %lld..%lld bytes", name, arg,
                               (long long)min, (long long)max);
    *out = v * mult;
    return 0;
}

int
opt_refuse_password(const char *arg, const char *name)
{
    const char *scheme = strstr(arg, "://");

    if (strstr(arg, "password=") != NULL || strstr(arg, "password =") != NULL)
        goto refuse;
    if (scheme != NULL) {
        const char *auth = scheme + 3;
        const char *at = strchr(auth, '@');
        const char *colon = strchr(auth, ':');
        const char *slash = strchr(auth, '/');

        if (at != NULL && colon != NULL && colon < at && (slash == NULL || at < slash))
            goto refuse;
    }
    return 0;
refuse:
    /* The value itself is never echoed: it holds the secret. */
    err_msg(EXIT_USAGE, "%s: a password written on the command line is refused", name);
    err_note("hint: argv is visible to every user through ps; put the connection string in "
             "an environment variable and pass its name with --dsn-env");
    return EXIT_USAGE;
}

char **
opt_split_list(const char *arg, int *n)
{
    char **list;
    int count = 1, i = 0;
    const char *p, *start;

    for (p = arg; *p; p++)
        if (*p == ',')
            count++;
    list = xcalloc((size_t)count + 1, sizeof(char *));
    start = arg;
    for (p = arg;; p++) {
        if (*p == ',' || *p == '\0') {
            const char *s = start, *e = p;

            while (s < e && isspace((unsigned char)*s))
                s++;
            while (e > s && isspace((unsigned char)e[-1]))
                e--;
            list[i++] = xstrndup(s, (size_t)(e - s));
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
    *n = i;
    return list;
}

void
opt_free_list(char **list)
{
    if (list == NULL)
        return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

int
opt_parse_level(const char *arg, int *out)
{
    int64_t n;
    int rc = opt_parse_int64(arg, "--level", -131072, 22, &n);

    if (rc == 0)
        *out = (int)n;
    return rc;
}

int
opt_parse_max_row(const char *arg, size_t *out)
{
    int64_t n;
    int rc = opt_parse_size(arg, "--max-row-bytes", 1, INT64_MAX, &n);

    if (rc == 0)
        *out = (size_t)n;
    return rc;
}
