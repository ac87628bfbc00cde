/*
 * rowhash: add a 128-bit hash of every compared column to each record of a
 * row stream. Sits between pgdump-rows (or idmap) and rowdiff; with
 * --keys-only it keeps just the key and the hash, which is how big tables are
 * compared cheaply.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "hash.h"
#include "io.h"
#include "mem.h"
#include "opt.h"
#include "rs.h"

/* zstd's level range (ZSTD_minCLevel() .. ZSTD_maxCLevel()). */

static struct {
    const char *input;
    const char *output;
    struct buf ignore; /* every --ignore list, joined with ',' */
    int keys_only;
    int level;
    size_t max_row;
} opt;

static void
usage(void)
{
    printf("Usage: rowhash [OPTION]... [FILE]\n"
           "Add a column \"_hash\" (XXH3-128 of every non-key column) to a row stream.\n"
           "With no FILE, or when FILE is -, read standard input.\n"
           "\n"
           "Options:\n"
           "  -i, --ignore COL[,COL]   leave these columns out of the hash (repeatable)\n"
           "  -k, --keys-only          output only the key columns and the hash\n"
           "  -o, --output FILE        write to FILE (through a temp file and a rename)\n"
           "      --level N            zstd level (default: 3 for files, -5 for pipes)\n"
           "      --max-row-bytes SIZE refuse records larger than SIZE (default 256M)\n"
           "  -h, --help               display this help and exit\n"
           "  -V, --version            output version information and exit\n"
           "\n"
           "A stream that already has a hash column is refused (exit 4).\n"
           "\n" OPT_EXIT_HELP);
}

static int
parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "ignore", required_argument, NULL, 'i' },
        { "keys-only", no_argument, NULL, 'k' },
        { "output", required_argument, NULL, 'o' },
        { "level", required_argument, NULL, 'L' },
        { "max-row-bytes", required_argument, NULL, 'M' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:i:ko:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (opt.ignore.len > 0)
                buf_putc(&opt.ignore, ',');
            buf_puts(&opt.ignore, optarg);
            break;
        case 'k':
            opt.keys_only = 1;
            break;
        case 'o':
            opt.output = optarg;
            break;
        case 'L':
            if ((rc = opt_parse_level(optarg, &opt.level)) != 0)
                return rc;
            break;
        case 'M':
            if ((rc = opt_parse_max_row(optarg, &opt.max_row)) != 0)
                return rc;
            break;
        case 'h':
            usage();
            exit(EXIT_OK);
        case 'V':
            opt_print_version();
            exit(EXIT_OK);
        default:
            return opt_getopt_error(c, argv);
        }
    }
    if (argc - optind > 1)
        return opt_usage_error("too many arguments (first extra is '%s')", argv[optind + 1]);
    if (optind < argc)
        opt.input = argv[optind];
    return 0;
}

/* 1 when name is in the --ignore list. */
static int
ignored(char **list, const char *name)
{
    for (char **p = list; p != NULL && *p != NULL; p++)
        if (strcmp(*p, name) == 0)
            return 1;
    return 0;
}

/*
 * Build the output header from the input's: the kept columns, then "_hash",
 * and the hashed list. Fills hashed[] (input positions of the hashed columns)
 * and keep[] (input position of each output column but the hash). Returns 0
 * or an exit code after printing.
 */
static int
build_header(const struct rs_header *in, const char *name, struct rs_header *out, int *hashed,
             int *nhashed, int *keep, int *nkeep)
{
    char **ignore = NULL;
    int nignore = 0;

    for (int i = 0; i < in->ncols; i++) {
        if (in->cols[i].role == RS_ROLE_HASH || strcmp(in->cols[i].name, HASH_COLUMN) == 0)
            return err_msg(EXIT_DATA, "%s: table %s: stream is already hashed (column \"%s\")",
                           name, in->table, in->cols[i].name);
    }
    if (in->nhashed > 0)
        return err_msg(EXIT_DATA,
                       "%s: table %s: stream is already hashed (it names hashed columns)", name,
                       in->table);
    if (opt.ignore.len > 0) {
        ignore = opt_split_list(opt.ignore.data, &nignore);
        for (int i = 0; i < nignore; i++) {
            if (rs_header_find(in, ignore[i]) < 0) {
                err_msg(EXIT_USAGE, "--ignore: table %s has no column \"%s\"", in->table,
                        ignore[i]);
                opt_free_list(ignore);
                return EXIT_USAGE;
            }
        }
    }

    rs_header_init(out, in->kind, in->table);
    out->server_version = in->server_version;
    free(out->encoding);
    out->encoding = xstrdup(in->encoding != NULL ? in->encoding : "");
    for (int i = 0; i < in->nmeta; i++)
        rs_header_set_meta(out, in->meta[i].key, in->meta[i].value);

    *nhashed = 0;
    *nkeep = 0;
    for (int i = 0; i < in->ncols; i++) {
        const struct rs_column *col = &in->cols[i];

        /* Keys identify the row and op columns describe a change: neither is content. */
        if (col->role != RS_ROLE_KEY && col->role != RS_ROLE_HASH && col->role != RS_ROLE_OP &&
            !ignored(ignore, col->name)) {
            hashed[(*nhashed)++] = i;
            rs_header_add_hashed(out, col->name);
        }
        if (opt.keys_only && col->role != RS_ROLE_KEY)
            continue;
        rs_header_add_column(out, col->name, col->type, col->role, col->order);
        keep[(*nkeep)++] = i;
    }
    rs_header_add_column(out, HASH_COLUMN, HASH_TYPE, RS_ROLE_HASH, RS_ORDER_NONE);
    opt_free_list(ignore);
    return 0;
}

static int
hash_rows(struct rs_reader *r, const char *in_name, int out_fd, const char *out_name)
{
    const struct rs_header *in = rs_reader_header(r);
    struct rs_header out;
    struct rs_writer *w = NULL;
    struct rs_value *ovals = NULL;
    int *hashed = NULL, *keep = NULL;
    int nhashed = 0, nkeep = 0, rc;
    char hex[HASH_HEX_LEN + 1];

    hashed = xcalloc((size_t)in->ncols + 1, sizeof(int));
    keep = xcalloc((size_t)in->ncols + 1, sizeof(int));
    if ((rc = build_header(in, in_name, &out, hashed, &nhashed, keep, &nkeep)) != 0) {
        free(hashed);
        free(keep);
        return rc;
    }
    ovals = xcalloc((size_t)nkeep + 1, sizeof(*ovals));
    ovals[nkeep].data = hex;
    ovals[nkeep].len = HASH_HEX_LEN;
    if ((rc = rs_writer_open(&w, out_fd, out_name, &out, opt.level)) != 0)
        goto done;
    /* The reader already refuses unsorted keys; the output's keys are the same. */
    rs_writer_no_order_check(w);
    rs_writer_set_max_row(w, opt.max_row + HASH_HEX_LEN);
    for (;;) {
        const struct rs_value *vals;

        if (io_interrupted)
            goto done; /* main re-raises the signal */
        if ((rc = rs_reader_next(r, &vals)) != 0)
            goto done;
        if (vals == NULL)
            break;
        for (int i = 0; i < nkeep; i++)
            ovals[i] = vals[keep[i]];
        hash_row(vals, hashed, nhashed, hex);
        if ((rc = rs_writer_put(w, ovals)) != 0)
            goto done;
    }
    /* Only a fully read and verified input earns the output a trailer. */
    rc = rs_writer_finish(w);
done:
    if (w != NULL)
        rs_writer_free(w);
    rs_header_free(&out);
    free(ovals);
    free(hashed);
    free(keep);
    return rc;
}

int
main(int argc, char **argv)
{
    struct rs_reader *r = NULL;
    struct io_atomic out = { .fd = -1 };
    const char *in_name;
    int in_fd = -1, out_fd = STDOUT_FILENO, rc;

    err_init("rowhash");
    io_signals_init();
    atexit(io_close_stdout);
    opt.level = RS_LEVEL_AUTO;
    opt.max_row = RS_DEFAULT_MAX_ROW_BYTES;
    buf_init(&opt.ignore);
    if ((rc = parse_options(argc, argv)) != 0)
        goto done;

    in_name = (opt.input == NULL || strcmp(opt.input, "-") == 0) ? "stdin" : opt.input;
    if ((in_fd = io_open_input(opt.input)) < 0) {
        rc = EXIT_IO;
        goto done;
    }
    if ((rc = rs_reader_open(&r, in_fd, in_name)) != 0)
        goto done;
    rs_reader_set_max_row(r, opt.max_row);
    if (opt.output != NULL && strcmp(opt.output, "-") != 0) {
        if ((rc = io_atomic_open(&out, opt.output)) != 0)
            goto done;
        out_fd = out.fd;
    }
    rc = hash_rows(r, in_name, out_fd, out_fd == STDOUT_FILENO ? "stdout" : opt.output);
    if (rc == 0 && io_interrupted == 0 && out.fd >= 0)
        rc = io_atomic_commit(&out);
done:
    io_atomic_abort(&out);
    if (r != NULL)
        rs_reader_free(r);
    if (in_fd > STDIN_FILENO)
        close(in_fd);
    buf_free(&opt.ignore);
    if (io_interrupted) {
        /* Die by the signal, so the shell and the caller see what happened. */
        signal(io_interrupted, SIG_DFL);
        raise(io_interrupted);
    }
    return rc;
}
