/*
 * pgdump-rows: dump one table or query as a row stream, projected and ordered
 * by its key, through COPY inside one REPEATABLE READ transaction. The head
 * of every compare pipeline; --export-snapshot holds the snapshot that all
 * dumps of one side share.
 */
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "dump.h"
#include "err.h"
#include "io.h"
#include "mem.h"
#include "opt.h"

/* zstd's level range (ZSTD_minCLevel() .. ZSTD_maxCLevel()). */

enum {
    OPT_DSN_ENV = 256,
    OPT_SKIP_NULL_KEYS,
    OPT_SNAPSHOT,
    OPT_EXPORT_SNAPSHOT,
    OPT_ALLOW_RLS,
    OPT_LEVEL,
    OPT_MAX_ROW,
    OPT_PROGRESS,
    OPT_KEY_SET,
};

/* What the dump needs, and what only this program's main uses. */
static struct {
    struct dump_opts d;
    const char *dsn_env;
    const char *output;
    int export_snapshot;
} opt;

static void
usage(void)
{
    printf("Usage: pgdump-rows [OPTION]... --table SCHEMA.TABLE --key COL[,COL]\n"
           "  or:  pgdump-rows [OPTION]... --query SQL --key COL[,COL]\n"
           "  or:  pgdump-rows [--dsn-env NAME] --export-snapshot\n"
           "Dump a table or a query as a row stream, ordered by its key, through COPY.\n"
           "\n"
           "Options:\n"
           "      --dsn-env NAME         take the connection string from environment\n"
           "                             variable NAME (default: libpq's PG* variables)\n"
           "  -t, --table SCHEMA.TABLE   the table to dump (quote a dot: '\"a.b\".c')\n"
           "  -q, --query SQL            dump the rows of a query instead\n"
           "  -n, --name NAME            the stream's table name for --query (default\n"
           "                             \"query\")\n"
           "  -k, --key COL[,COL]        the key: emitted first, in this order; rows are\n"
           "                             ordered by it, and it must be unique, not NULL\n"
           "  -c, --columns COL[,COL]    the other columns to dump (default: all of them,\n"
           "                             generated ones too, in table order)\n"
           "  -w, --where SQL            only the rows matching this condition\n"
           "      --skip-null-keys       leave out rows whose key is NULL\n"
           "      --key-set FILE         only the rows whose key is in FILE, a row\n"
           "                             stream with the same key (looked up by\n"
           "                             key in chunks, not a scan of the table)\n"
           "      --snapshot ID          read in this snapshot (from --export-snapshot)\n"
           "      --export-snapshot      export a snapshot, print its ID (and on a\n"
           "                             second line its xmin, a 64-bit transaction\n"
           "                             ID), and hold it until standard input reaches\n"
           "                             EOF, or SIGTERM\n"
           "      --allow-row-security   dump what row security policies let the role\n"
           "                             see, instead of refusing\n"
           "  -o, --output FILE          write FILE (through a temp file and a rename)\n"
           "      --level N              zstd level (default: 3 for files, -5 for pipes)\n"
           "      --max-row-bytes SIZE   refuse rows larger than SIZE (default 256M)\n"
           "      --progress             report rows and rows/s on standard error\n"
           "  -h, --help                 display this help and exit\n"
           "  -V, --version              output version information and exit\n"
           "\n"
           "Integer keys (smallint, integer, bigint) are ordered as numbers; any other\n"
           "key is emitted and ordered as (col)::text COLLATE \"C\". The session pins\n"
           "DateStyle ISO, IntervalStyle postgres, extra_float_digits 3, TimeZone UTC\n"
           "and bytea_output hex, and turns row_security off unless\n"
           "--allow-row-security: a --table under row security, or a --query that a\n"
           "policy would filter, is refused (exit 6). A password in an argument is\n"
           "refused: argv is visible to every user through ps.\n"
           "\n" OPT_EXIT_HELP);
}

/* A list option: "a,b" into a new list; empty names are refused by the plan. */
static int
parse_list(const char *arg, const char *name, char ***list, int *n)
{
    int rc;

    if ((rc = opt_refuse_password(arg, name)) != 0)
        return rc;
    opt_free_list(*list);
    *list = opt_split_list(arg, n);
    return 0;
}

/* A snapshot ID is hex digits and dashes ("00000003-0000001B-1"); nothing else. */
static int
valid_snapshot(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s != '\0'; s++)
        if (strchr("0123456789ABCDEF-", *s) == NULL)
            return 0;
    return 1;
}

/* Refuse a list naming a column twice, or an empty name. */
static int
check_list(char **list, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (list[i][0] == '\0')
            return opt_usage_error("%s: empty column name", name);
        for (int j = 0; j < i; j++)
            if (strcmp(list[i], list[j]) == 0)
                return opt_usage_error("%s: column \"%s\" named twice", name, list[i]);
    }
    return 0;
}

static int
check_options(void)
{
    int rc;

    if (opt.export_snapshot) {
        if (opt.d.table != NULL || opt.d.query != NULL || opt.d.keys != NULL ||
            opt.d.columns != NULL || opt.d.where != NULL || opt.d.snapshot != NULL ||
            opt.output != NULL || opt.d.name != NULL || opt.d.key_set != NULL)
            return opt_usage_error("--export-snapshot takes no other option but --dsn-env");
        return 0;
    }
    if (opt.d.table == NULL && opt.d.query == NULL)
        return opt_usage_error("one of --table, --query or --export-snapshot is required");
    if (opt.d.table != NULL && opt.d.query != NULL)
        return opt_usage_error("--table and --query cannot be used together");
    if (opt.d.name != NULL && opt.d.query == NULL)
        return opt_usage_error("--name is for --query (a table's stream is named after it)");
    if (opt.d.table != NULL && strchr(opt.d.table, '.') == NULL)
        return opt_usage_error("--table needs a schema-qualified name (SCHEMA.TABLE)");
    if (opt.d.keys == NULL)
        return opt_usage_error("--key is required");
    if ((rc = check_list(opt.d.keys, opt.d.nkeys, "--key")) != 0 ||
        (rc = check_list(opt.d.columns, opt.d.ncolumns, "--columns")) != 0)
        return rc;
    if (opt.d.snapshot != NULL && !valid_snapshot(opt.d.snapshot))
        return opt_usage_error("--snapshot: not a snapshot ID (hex digits and dashes)");
    return 0;
}

static int
parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "dsn-env", required_argument, NULL, OPT_DSN_ENV },
        { "table", required_argument, NULL, 't' },
        { "query", required_argument, NULL, 'q' },
        { "name", required_argument, NULL, 'n' },
        { "key", required_argument, NULL, 'k' },
        { "columns", required_argument, NULL, 'c' },
        { "where", required_argument, NULL, 'w' },
        { "skip-null-keys", no_argument, NULL, OPT_SKIP_NULL_KEYS },
        { "key-set", required_argument, NULL, OPT_KEY_SET },
        { "snapshot", required_argument, NULL, OPT_SNAPSHOT },
        { "export-snapshot", no_argument, NULL, OPT_EXPORT_SNAPSHOT },
        { "allow-row-security", no_argument, NULL, OPT_ALLOW_RLS },
        { "output", required_argument, NULL, 'o' },
        { "level", required_argument, NULL, OPT_LEVEL },
        { "max-row-bytes", required_argument, NULL, OPT_MAX_ROW },
        { "progress", no_argument, NULL, OPT_PROGRESS },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:t:q:n:k:c:w:o:hV", longopts, NULL)) != -1) {
        /* Every string argument could carry a password (a DSN, a dblink call ...). */
        switch (c) {
        case OPT_DSN_ENV:
            if ((rc = opt_refuse_password(optarg, "--dsn-env")) != 0)
                return rc;
            opt.dsn_env = optarg;
            break;
        case 't':
            if ((rc = opt_refuse_password(optarg, "--table")) != 0)
                return rc;
            opt.d.table = optarg;
            break;
        case 'q':
            if ((rc = opt_refuse_password(optarg, "--query")) != 0)
                return rc;
            opt.d.query = optarg;
            break;
        case 'n':
            if ((rc = opt_refuse_password(optarg, "--name")) != 0)
                return rc;
            opt.d.name = optarg;
            break;
        case 'k':
            if ((rc = parse_list(optarg, "--key", &opt.d.keys, &opt.d.nkeys)) != 0)
                return rc;
            break;
        case 'c':
            if ((rc = parse_list(optarg, "--columns", &opt.d.columns, &opt.d.ncolumns)) != 0)
                return rc;
            break;
        case 'w':
            if ((rc = opt_refuse_password(optarg, "--where")) != 0)
                return rc;
            opt.d.where = optarg;
            break;
        case OPT_SKIP_NULL_KEYS:
            opt.d.skip_null_keys = 1;
            break;
        case OPT_KEY_SET:
            if ((rc = opt_refuse_password(optarg, "--key-set")) != 0)
                return rc;
            opt.d.key_set = optarg;
            break;
        case OPT_SNAPSHOT:
            if ((rc = opt_refuse_password(optarg, "--snapshot")) != 0)
                return rc;
            opt.d.snapshot = optarg;
            break;
        case OPT_EXPORT_SNAPSHOT:
            opt.export_snapshot = 1;
            break;
        case OPT_ALLOW_RLS:
            opt.d.allow_row_security = 1;
            break;
        case 'o':
            if ((rc = opt_refuse_password(optarg, "--output")) != 0)
                return rc;
            opt.output = optarg;
            break;
        case OPT_LEVEL:
            if ((rc = opt_parse_level(optarg, &opt.d.level)) != 0)
                return rc;
            break;
        case OPT_MAX_ROW:
            if ((rc = opt_parse_max_row(optarg, &opt.d.max_row)) != 0)
                return rc;
            break;
        case OPT_PROGRESS:
            opt.d.progress = 1;
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
    if (optind < argc) {
        /* Not echoed: a stray argument may be a connection string. */
        return opt_usage_error("unexpected argument (pgdump-rows takes options only)");
    }
    return check_options();
}

/* Export a snapshot, print its ID, and hold it until stdin ends or a signal. */
static int
export_snapshot(struct db *db)
{
    struct db_result *r = NULL;
    int rc;

    if ((rc = db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")) != 0)
        return rc;
    /*
     * The snapshot's xmin, with its epoch: every transaction before it had
     * ended, so a later run reads the rows changed since this one as those
     * whose xmin is not older (migrate's incremental compare). The txid
     * functions exist on every server version driftless reads.
     */
    if ((rc = db_query(db, &r, "export snapshot",
                       "SELECT pg_catalog.pg_export_snapshot(),"
                       " pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot())",
                       0, NULL)) != 0)
        return rc;
    if (db_ntuples(r) != 1 || db_nfields(r) != 2 || db_value(r, 0, 0) == NULL ||
        db_value(r, 0, 1) == NULL) {
        db_result_free(r);
        return err_msg(EXIT_DB, "export snapshot: unexpected result");
    }
    /* Two lines, flushed now: the caller reads them while we hold the transaction. */
    if (printf("%s\n%s\n", db_value(r, 0, 0), db_value(r, 0, 1)) < 0 || fflush(stdout) != 0) {
        db_result_free(r);
        return err_sys(EXIT_IO, "could not write the snapshot ID");
    }
    db_result_free(r);
    if ((rc = db_wait_eof(db, STDIN_FILENO)) != 0)
        return rc;
    return db_exec(db, "COMMIT");
}

static int
dump(struct db *db)
{
    struct dump_plan plan;
    struct io_atomic out = { .fd = -1 };
    int fd = STDOUT_FILENO, rc;

    memset(&plan, 0, sizeof(plan));
    if ((rc = dump_begin(db, &opt.d)) != 0 || (rc = dump_plan_build(db, &opt.d, &plan)) != 0)
        goto done;
    rs_header_set_meta(&plan.h, "source", db_describe(db));
    if (opt.d.snapshot != NULL)
        rs_header_set_meta(&plan.h, "snapshot", opt.d.snapshot);
    if (opt.output != NULL && strcmp(opt.output, "-") != 0) {
        if ((rc = io_atomic_open(&out, opt.output)) != 0)
            goto done;
        fd = out.fd;
    }
    db_cancel_on_signal(db);
    if (opt.d.key_set != NULL)
        rc = dump_key_set_rows(db, &opt.d, &plan, fd, fd == STDOUT_FILENO ? "stdout" : opt.output);
    else
        rc = dump_copy_rows(db, &opt.d, &plan, fd, fd == STDOUT_FILENO ? "stdout" : opt.output);
    db_cancel_forget(db);
    if (rc != 0)
        goto done;
    if ((rc = db_exec(db, "COMMIT")) != 0)
        goto done;
    if (out.fd >= 0 && io_interrupted == 0)
        rc = io_atomic_commit(&out);
done:
    io_atomic_abort(&out);
    dump_plan_free(&plan);
    return dump_refused_by_policy(db, rc);
}

int
main(int argc, char **argv)
{
    struct db *db = NULL;
    int rc;

    err_init("pgdump-rows");
    io_signals_init();
    atexit(io_close_stdout);
    opt.d.level = RS_LEVEL_AUTO;
    opt.d.max_row = RS_DEFAULT_MAX_ROW_BYTES;
    if ((rc = parse_options(argc, argv)) != 0)
        goto done;
    /* Messages name the variable: the same program dumps either side. */
    if ((rc = db_connect(&db, opt.dsn_env, opt.dsn_env != NULL ? opt.dsn_env : "database",
                         DB_SESSION_READ, 0)) != 0)
        goto done;
    if (opt.export_snapshot) {
        rc = export_snapshot(db);
        /* A signal is the documented way to let go of the snapshot. */
        io_interrupted = 0;
    } else {
        rc = dump(db);
    }
done:
    db_close(db);
    opt_free_list(opt.d.keys);
    opt_free_list(opt.d.columns);
    if (io_interrupted) {
        /* Die by the signal, so the shell and the caller see what happened. */
        signal(io_interrupted, SIG_DFL);
        raise(io_interrupted);
    }
    return rc;
}
