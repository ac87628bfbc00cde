/*
 * rowcat: the human and spreadsheet view of a row stream. Prints a stream as
 * COPY CSV (byte for byte what psql's \copy ... TO STDOUT CSV writes), COPY
 * text, an aligned table, its header or its record count; with --from-csv it
 * turns a CSV file (a legacy id mapping, say) into a row stream.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csvin.h"
#include "emit.h"
#include "err.h"
#include "io.h"
#include "mem.h"
#include "opt.h"
#include "out.h"
#include "rs.h"
#include "table.h"

/* zstd's level range (ZSTD_minCLevel() .. ZSTD_maxCLevel()). */
#define DEFAULT_WIDTH 40

enum mode { MODE_CSV, MODE_TSV, MODE_TABLE, MODE_HEADER, MODE_COUNT, MODE_FROM_CSV };

/* Long options without a short form. */
enum {
    OPT_CSV = 256,
    OPT_TSV,
    OPT_TABLE,
    OPT_HEADER,
    OPT_COUNT,
    OPT_HEADER_ROW,
    OPT_NULL,
    OPT_WIDTH,
    OPT_FROM_CSV,
    OPT_TYPES,
    OPT_KEY,
    OPT_LEVEL,
    OPT_MAX_ROW,
};

static struct {
    const char *input;
    const char *output;
    enum mode mode;
    const char *mode_name; /* the option that chose the mode, NULL for the default */
    int header_row;
    const char *null_str;
    int width;
    int width_set;
    const char *table;
    const char *types;
    const char *keys;
    int level;
    int level_set;
    size_t max_row;
} opt;

static void
usage(void)
{
    printf("Usage: rowcat [--csv | --tsv | --table | --header | --count] [OPTION]... [FILE]\n"
           "       rowcat --from-csv [OPTION]... [FILE]\n"
           "Print a row stream as CSV, COPY text or a table, or turn a CSV into a stream.\n"
           "With no FILE, or when FILE is -, read standard input.\n"
           "\n"
           "Stream to text:\n"
           "      --csv                CSV exactly as psql's \\copy ... TO STDOUT CSV\n"
           "                           (the default): NULL is an empty field, '' is \"\"\n"
           "      --tsv                COPY text format: tabs, \\N for NULL, \\ escapes\n"
           "      --table              an aligned table for people\n"
           "      --header             the stream's header, one item per line\n"
           "      --count              the number of records (the stream is verified)\n"
           "      --header-row         with --csv or --tsv, the column names first\n"
           "      --null STR           with --table, show NULL as STR (default: empty)\n"
           "      --width N            with --table, cut values at N columns\n"
           "                           (default 40, 0 never)\n"
           "\n"
           "CSV to stream (the CSV has a header row):\n"
           "      --from-csv           read CSV, write a row stream\n"
           "      --table NAME         the stream's table (default: FILE's base name)\n"
           "      --types COL:TYPE,... PostgreSQL types of columns (default text)\n"
           "      --key COL[,COL]      key columns, in header order; the CSV must be\n"
           "                           sorted by them, with no key twice\n"
           "      --level N            zstd level (default: 3 for files, -5 for pipes)\n"
           "\n"
           "Common:\n"
           "  -o, --output FILE        write to FILE (through a temp file and a rename)\n"
           "      --max-row-bytes SIZE refuse records larger than SIZE (default 256M)\n"
           "  -h, --help               display this help and exit\n"
           "  -V, --version            output version information and exit\n"
           "\n"
           "See rowcat(1) for the CSV rules and the --header format.\n"
           "\n" OPT_EXIT_HELP);
}

static int
set_mode(enum mode m, const char *name)
{
    if (opt.mode_name != NULL && opt.mode != m)
        return opt_usage_error("%s and %s cannot be used together", opt.mode_name, name);
    opt.mode = m;
    opt.mode_name = name;
    return 0;
}

/*
 * --table is the table format when printing and takes the table's name with
 * --from-csv, so the option table depends on whether --from-csv is present.
 */
static int
has_from_csv(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--from-csv") == 0)
            return 1;
    }
    return 0;
}

static int
parse_options(int argc, char **argv)
{
    struct option longopts[] = {
        { "csv", no_argument, NULL, OPT_CSV },
        { "tsv", no_argument, NULL, OPT_TSV },
        { "table", no_argument, NULL, OPT_TABLE },
        { "header", no_argument, NULL, OPT_HEADER },
        { "count", no_argument, NULL, OPT_COUNT },
        { "header-row", no_argument, NULL, OPT_HEADER_ROW },
        { "null", required_argument, NULL, OPT_NULL },
        { "width", required_argument, NULL, OPT_WIDTH },
        { "from-csv", no_argument, NULL, OPT_FROM_CSV },
        { "types", required_argument, NULL, OPT_TYPES },
        { "key", required_argument, NULL, OPT_KEY },
        { "level", required_argument, NULL, OPT_LEVEL },
        { "output", required_argument, NULL, 'o' },
        { "max-row-bytes", required_argument, NULL, OPT_MAX_ROW },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int from_csv = has_from_csv(argc, argv);
    int64_t n;
    int c, rc;

    if (from_csv)
        longopts[2].has_arg = required_argument;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:o:hV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CSV:
            rc = set_mode(MODE_CSV, "--csv");
            break;
        case OPT_TSV:
            rc = set_mode(MODE_TSV, "--tsv");
            break;
        case OPT_TABLE:
            if (from_csv)
                opt.table = optarg;
            rc = from_csv ? 0 : set_mode(MODE_TABLE, "--table");
            break;
        case OPT_HEADER:
            rc = set_mode(MODE_HEADER, "--header");
            break;
        case OPT_COUNT:
            rc = set_mode(MODE_COUNT, "--count");
            break;
        case OPT_FROM_CSV:
            rc = set_mode(MODE_FROM_CSV, "--from-csv");
            break;
        case OPT_HEADER_ROW:
            opt.header_row = 1;
            rc = 0;
            break;
        case OPT_NULL:
            opt.null_str = optarg;
            rc = 0;
            break;
        case OPT_WIDTH:
            rc = opt_parse_int64(optarg, "--width", 0, 1000000, &n);
            if (rc == 0 && n > 0 && n < 4)
                rc = opt_usage_error("invalid value for --width: %s is below 4 (0 never cuts)",
                                     optarg);
            opt.width = (int)n;
            opt.width_set = 1;
            break;
        case OPT_TYPES:
            opt.types = optarg;
            rc = 0;
            break;
        case OPT_KEY:
            opt.keys = optarg;
            rc = 0;
            break;
        case OPT_LEVEL:
            rc = opt_parse_level(optarg, &opt.level);
            opt.level_set = 1;
            break;
        case 'o':
            opt.output = optarg;
            rc = 0;
            break;
        case OPT_MAX_ROW:
            rc = opt_parse_max_row(optarg, &opt.max_row);
            break;
        case 'h':
            usage();
            exit(EXIT_OK);
        case 'V':
            opt_print_version();
            exit(EXIT_OK);
        default:
            /* getopt names a long option's unwanted argument by its value: ours are not chars. */
            if (c == '?' && optopt >= OPT_CSV)
                return opt_usage_error("option '%s' doesn't allow an argument", argv[optind - 1]);
            return opt_getopt_error(c, argv);
        }
        if (rc != 0)
            return rc;
    }
    if (argc - optind > 1)
        return opt_usage_error("too many arguments (first extra is '%s')", argv[optind + 1]);
    if (optind < argc)
        opt.input = argv[optind];
    if (from_csv && opt.mode != MODE_FROM_CSV)
        return opt_usage_error("'--from-csv' was taken as the argument of another option");

    if (opt.mode == MODE_FROM_CSV) {
        if (opt.header_row || opt.null_str != NULL || opt.width_set)
            return opt_usage_error("--header-row, --null and --width do not apply to "
                                   "--from-csv");
    } else {
        if (opt.types != NULL || opt.keys != NULL || opt.level_set)
            return opt_usage_error("--types, --key and --level need --from-csv");
        if (opt.header_row && opt.mode != MODE_CSV && opt.mode != MODE_TSV)
            return opt_usage_error("--header-row needs --csv or --tsv");
        if ((opt.null_str != NULL || opt.width_set) && opt.mode != MODE_TABLE)
            return opt_usage_error("--null and --width need --table");
    }
    return 0;
}

/* The default table name for --from-csv: FILE without directory and extension. */
static char *
default_table(const char *input)
{
    const char *base, *dot;

    if (input == NULL || strcmp(input, "-") == 0)
        return xstrdup("stdin");
    base = strrchr(input, '/');
    base = base != NULL ? base + 1 : input;
    dot = strrchr(base, '.');
    if (dot == NULL || dot == base)
        return xstrdup(base);
    return xstrndup(base, (size_t)(dot - base));
}

static int
from_csv(const char *in_name, int out_fd, const char *out_name)
{
    struct csvin_opts o;
    char *table = opt.table != NULL ? xstrdup(opt.table) : default_table(opt.input);
    int rc;

    memset(&o, 0, sizeof(o));
    o.input = opt.input;
    o.in_name = in_name;
    o.table = table;
    o.types = opt.types;
    o.keys = opt.keys;
    o.level = opt.level;
    o.max_row = opt.max_row;
    o.out_fd = out_fd;
    o.out_name = out_name;
    rc = csvin_check_options(&o);
    if (rc == 0)
        rc = csvin_run(&o);
    free(table);
    return rc;
}

static int
to_text(const char *in_name, int out_fd, const char *out_name)
{
    struct rs_reader *r = NULL;
    struct out o;
    int in_fd, rc;

    if ((in_fd = io_open_input(opt.input)) < 0)
        return EXIT_IO;
    out_init(&o, out_fd, out_name);
    if ((rc = rs_reader_open(&r, in_fd, in_name)) != 0)
        goto done;
    rs_reader_set_max_row(r, opt.max_row);
    switch (opt.mode) {
    case MODE_CSV:
        rc = emit_rows(r, &o, EMIT_CSV, opt.header_row);
        break;
    case MODE_TSV:
        rc = emit_rows(r, &o, EMIT_TSV, opt.header_row);
        break;
    case MODE_TABLE:
        table_init_locale();
        rc = table_print(r, &o, opt.null_str != NULL ? opt.null_str : "",
                         opt.width_set ? opt.width : DEFAULT_WIDTH);
        break;
    case MODE_HEADER:
        emit_header(rs_reader_header(r), &o);
        rc = out_flush(&o);
        break;
    case MODE_COUNT:
        rc = emit_count(r, &o);
        break;
    case MODE_FROM_CSV:
        rc = err_msg(EXIT_INTERNAL, "internal error: unexpected mode");
        break;
    }
done:
    if (rc == 0)
        rc = out_flush(&o);
    out_free(&o);
    if (r != NULL)
        rs_reader_free(r);
    if (in_fd > STDIN_FILENO)
        close(in_fd);
    return rc;
}

int
main(int argc, char **argv)
{
    struct io_atomic out = { .fd = -1 };
    const char *in_name, *out_name = "stdout";
    int out_fd = STDOUT_FILENO, rc;

    err_init("rowcat");
    io_signals_init();
    atexit(io_close_stdout);
    opt.mode = MODE_CSV;
    opt.level = RS_LEVEL_AUTO;
    opt.max_row = RS_DEFAULT_MAX_ROW_BYTES;
    if ((rc = parse_options(argc, argv)) != 0)
        goto done;

    in_name = (opt.input == NULL || strcmp(opt.input, "-") == 0) ? "stdin" : opt.input;
    if (opt.output != NULL && strcmp(opt.output, "-") != 0) {
        if ((rc = io_atomic_open(&out, opt.output)) != 0)
            goto done;
        out_fd = out.fd;
        out_name = opt.output;
    }
    if (opt.mode == MODE_FROM_CSV)
        rc = from_csv(in_name, out_fd, out_name);
    else
        rc = to_text(in_name, out_fd, out_name);
    /* Only a complete output replaces FILE; a failed one leaves it as it was. */
    if (rc == 0 && io_interrupted == 0 && out.fd >= 0)
        rc = io_atomic_commit(&out);
done:
    io_atomic_abort(&out);
    if (io_interrupted) {
        /* Die by the signal, so the shell and the caller see what happened. */
        signal(io_interrupted, SIG_DFL);
        raise(io_interrupted);
    }
    return rc;
}
