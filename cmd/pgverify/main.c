/*
 * pgverify: prove that a target table matches its source, after a migration
 * or a sync. Compares two row streams (target form, keyed by the legacy key),
 * or dumps a table both databases share, or compares two catalogs (--schema)
 * before any data moves. Reports per table; exit 1 on any discrepancy.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "err.h"
#include "io.h"
#include "opt.h"
#include "pgverify.h"

#define SHOW_MAX 1000000

enum {
    O_CROSSWALK = 256,
    O_UUID_COL,
    O_SOURCE_ENV,
    O_TARGET_ENV,
    O_SOURCE_TABLE,
    O_TARGET_TABLE,
    O_SNAP_SOURCE,
    O_SNAP_TARGET,
    O_ALLOW_RLS,
    O_SCHEMA,
    O_MAP_COLUMNS,
    O_EXPR,
    O_FK,
    O_IGNORE,
    O_SOURCE_TABLES,
    O_SHOW,
    O_VALUES,
    O_JSON,
    O_MAX_ROW,
};

struct pv_opts opt;

static void
usage(void)
{
    printf("Usage: pgverify [OPTION]... SOURCE TARGET\n"
           "  or:  pgverify [OPTION]... --source-env NAME --target-env NAME\n"
           "                --table SCHEMA.TABLE --key COL[,COL]\n"
           "  or:  pgverify --schema --source-env NAME --target-env NAME\n"
           "                --source-table SCHEMA.TABLE [MAP OPTION]...\n"
           "  or:  pgverify --schema --source-env NAME --source-tables LIST\n"
           "Check that a target table matches its source: counts, keys missing in the\n"
           "target, extra in the target, rows that differ (and in which columns).\n"
           "SOURCE and TARGET are row streams, hashed or not, in the same form and\n"
           "keyed alike; either may be - (standard input), not both.\n"
           "\n"
           "Streams:\n"
           "      --crosswalk FILE       the target's crosswalk as a stream (its legacy\n"
           "                             key columns and \"uuid\"): each target row's\n"
           "                             UUID must be its crosswalk entry\n"
           "      --uuid-column NAME     the target's UUID column (for --crosswalk)\n"
           "  -t, --table NAME           the table named in the report\n"
           "\n"
           "Database (a table both sides share unchanged):\n"
           "      --source-env NAME      environment variable holding the source's\n"
           "                             connection string\n"
           "      --target-env NAME      the same for the target\n"
           "  -t, --table SCHEMA.TABLE   the table to compare\n"
           "      --target-table NAME    the target's table, if named otherwise\n"
           "  -k, --key COL[,COL]        the key both sides are joined by\n"
           "  -c, --columns COL[,COL]    the columns to compare (default: all)\n"
           "      --snapshot-source ID   read the source in this exported snapshot\n"
           "      --snapshot-target ID   read the target in this exported snapshot\n"
           "      --allow-row-security   compare what policies let the roles see\n"
           "\n"
           "Catalogs (--schema; exit 6 on schema drift):\n"
           "      --schema               compare catalogs, not rows\n"
           "      --source-table NAME    the source table (also -t, --table)\n"
           "      --target-table NAME    the target table (default: the same name)\n"
           "      --map-columns T=S,...  target column T is filled from source column S\n"
           "      --expr COL[,COL]       the map has an expression for these target\n"
           "                             columns (a changed type is expected)\n"
           "      --fk COL[+COL][,...]   foreign keys the map translates (target names)\n"
           "      --ignore COL[,COL]     columns of either side left out of the check\n"
           "      --uuid-column NAME     the target's UUID column, filled by driftless\n"
           "      --source-tables LIST   the map's source tables: report other tables of\n"
           "                             their schemas, missing from the map\n"
           "\n"
           "Report:\n"
           "      --show N               list the first N keys of each kind (default 10)\n"
           "      --values               show the differing values (customer data)\n"
           "      --json FILE            write one JSON object per table (- for stdout,\n"
           "                             instead of the report)\n"
           "  -q, --quiet                no report on standard output\n"
           "      --max-row-bytes SIZE   refuse records larger than SIZE (default 256M)\n"
           "  -h, --help                 display this help and exit\n"
           "  -V, --version              output version information and exit\n"
           "\n"
           "Equal hashes mean equal rows; where they differ the values are compared\n"
           "column by column. Without --values no value but a key is ever printed.\n"
           "A password in an argument is refused: argv is visible through ps.\n"
           "\n" OPT_EXIT_HELP);
}

/* A list option: "a,b" into a new list, refusing empty and repeated names. */
static int
parse_list(const char *arg, const char *name, char ***list, int *n)
{
    int rc;

    if ((rc = opt_refuse_password(arg, name)) != 0)
        return rc;
    opt_free_list(*list);
    *list = opt_split_list(arg, n);
    for (int i = 0; i < *n; i++) {
        if ((*list)[i][0] == '\0')
            return opt_usage_error("%s: empty column name", name);
        for (int j = 0; j < i; j++)
            if (strcmp((*list)[i], (*list)[j]) == 0)
                return opt_usage_error("%s: column \"%s\" named twice", name, (*list)[i]);
    }
    return 0;
}

/* Repeatable list options are joined with ','. */
static int
add_list(struct buf *b, const char *arg, const char *name)
{
    int rc;

    if ((rc = opt_refuse_password(arg, name)) != 0)
        return rc;
    if (arg[0] == '\0')
        return opt_usage_error("%s: empty column name", name);
    if (b->len > 0)
        buf_putc(b, ',');
    buf_puts(b, arg);
    return 0;
}

/* The name of an environment variable, never a connection string (not echoed). */
static int
env_name(const char *arg, const char *name, const char **out)
{
    int rc;

    if ((rc = opt_refuse_password(arg, name)) != 0)
        return rc;
    for (const char *p = arg; *p != '\0'; p++)
        if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (p > arg && *p >= '0' && *p <= '9')))
            return opt_usage_error("%s takes the name of an environment variable, not a "
                                   "connection string",
                                   name);
    if (arg[0] == '\0')
        return opt_usage_error("%s: empty name", name);
    *out = arg;
    return 0;
}

/* A snapshot ID is hex digits and dashes ("00000003-0000001B-1"); nothing else. */
static int
snapshot_id(const char *arg, const char *name, const char **out)
{
    if (*arg == '\0' || strlen(arg) > 64 || strspn(arg, "0123456789ABCDEF-") != strlen(arg))
        return opt_usage_error("%s: not a snapshot ID (hex digits and dashes)", name);
    *out = arg;
    return 0;
}

static int
string_arg(const char *arg, const char *name, const char **out)
{
    int rc;

    if ((rc = opt_refuse_password(arg, name)) != 0)
        return rc;
    if (arg[0] == '\0')
        return opt_usage_error("%s: empty value", name);
    *out = arg;
    return 0;
}

/* Which options belong to which mode; a misplaced one is a usage error. */
static int
check_modes(int nargs, char **args)
{
    int db = opt.source_env != NULL || opt.target_env != NULL;
    int schema_only = opt.map_columns.len > 0 || opt.expr.len > 0 || opt.fk.len > 0 ||
                      opt.ignore.len > 0 || opt.source_tables != NULL;

    if (opt.schema) {
        if (nargs > 0)
            return opt_usage_error("--schema takes no file arguments");
        if (opt.crosswalk != NULL || opt.keys != NULL || opt.columns != NULL ||
            opt.snap_source != NULL || opt.snap_target != NULL)
            return opt_usage_error("--schema compares catalogs: --crosswalk, --key, --columns "
                                   "and --snapshot-* do not apply");
        if (opt.source_env == NULL)
            return opt_usage_error("--schema needs --source-env");
        if (opt.source_table == NULL && opt.source_tables == NULL)
            return opt_usage_error("--schema needs --source-table or --source-tables");
        if (opt.source_table != NULL && opt.target_env == NULL)
            return opt_usage_error("--schema --source-table needs --target-env");
        if (opt.source_table != NULL && strchr(opt.source_table, '.') == NULL)
            return opt_usage_error("--source-table needs a schema-qualified name");
        if (opt.target_table != NULL && strchr(opt.target_table, '.') == NULL)
            return opt_usage_error("--target-table needs a schema-qualified name");
        return 0;
    }
    if (schema_only)
        return opt_usage_error("--map-columns, --expr, --fk, --ignore and --source-tables "
                               "are for --schema");
    if (db) {
        if (nargs > 0)
            /* Not echoed: a stray argument may be a connection string. */
            return opt_usage_error("unexpected argument (the database mode takes options only)");
        if (opt.source_env == NULL || opt.target_env == NULL)
            return opt_usage_error("the database mode needs --source-env and --target-env");
        if (opt.source_table == NULL)
            return opt_usage_error("--table is required");
        if (strchr(opt.source_table, '.') == NULL ||
            (opt.target_table != NULL && strchr(opt.target_table, '.') == NULL))
            return opt_usage_error("--table needs a schema-qualified name (SCHEMA.TABLE)");
        if (opt.keys == NULL)
            return opt_usage_error("--key is required");
        if (opt.crosswalk != NULL || opt.uuid_col != NULL)
            return opt_usage_error("--crosswalk and --uuid-column are for streams (a table "
                                   "both sides share has no crosswalk)");
        opt.table = NULL;
        return 0;
    }
    if (opt.keys != NULL || opt.columns != NULL || opt.target_table != NULL ||
        opt.snap_source != NULL || opt.snap_target != NULL || opt.allow_row_security)
        return opt_usage_error("--key, --columns, --target-table, --snapshot-* and "
                               "--allow-row-security need --source-env and --target-env");
    if (nargs < 2)
        return opt_usage_error(nargs == 0 ? "missing SOURCE and TARGET" : "missing TARGET");
    if (nargs > 2)
        return opt_usage_error("too many arguments (first extra is '%s')", args[2]);
    opt.source = args[0];
    opt.target = args[1];
    opt.table = opt.source_table;
    opt.source_table = NULL;
    if (strcmp(opt.source, "-") == 0 && strcmp(opt.target, "-") == 0)
        return opt_usage_error("SOURCE and TARGET cannot both be standard input");
    if ((opt.crosswalk != NULL) != (opt.uuid_col != NULL))
        return opt_usage_error("--crosswalk and --uuid-column go together");
    if (opt.crosswalk != NULL && strcmp(opt.crosswalk, "-") == 0 &&
        (strcmp(opt.source, "-") == 0 || strcmp(opt.target, "-") == 0))
        return opt_usage_error("only one input can be standard input");
    return 0;
}

static int
parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "crosswalk", required_argument, NULL, O_CROSSWALK },
        { "uuid-column", required_argument, NULL, O_UUID_COL },
        { "table", required_argument, NULL, 't' },
        { "source-env", required_argument, NULL, O_SOURCE_ENV },
        { "target-env", required_argument, NULL, O_TARGET_ENV },
        { "source-table", required_argument, NULL, O_SOURCE_TABLE },
        { "target-table", required_argument, NULL, O_TARGET_TABLE },
        { "key", required_argument, NULL, 'k' },
        { "columns", required_argument, NULL, 'c' },
        { "snapshot-source", required_argument, NULL, O_SNAP_SOURCE },
        { "snapshot-target", required_argument, NULL, O_SNAP_TARGET },
        { "allow-row-security", no_argument, NULL, O_ALLOW_RLS },
        { "schema", no_argument, NULL, O_SCHEMA },
        { "map-columns", required_argument, NULL, O_MAP_COLUMNS },
        { "expr", required_argument, NULL, O_EXPR },
        { "fk", required_argument, NULL, O_FK },
        { "ignore", required_argument, NULL, O_IGNORE },
        { "source-tables", required_argument, NULL, O_SOURCE_TABLES },
        { "show", required_argument, NULL, O_SHOW },
        { "values", no_argument, NULL, O_VALUES },
        { "json", required_argument, NULL, O_JSON },
        { "quiet", no_argument, NULL, 'q' },
        { "max-row-bytes", required_argument, NULL, O_MAX_ROW },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c, rc = 0;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:t:k:c:qhV", longopts, NULL)) != -1) {
        /* Every string argument could carry a password: none is echoed if it does. */
        switch (c) {
        case O_CROSSWALK:
            rc = string_arg(optarg, "--crosswalk", &opt.crosswalk);
            break;
        case O_UUID_COL:
            rc = string_arg(optarg, "--uuid-column", &opt.uuid_col);
            break;
        case 't':
        case O_SOURCE_TABLE:
            rc = string_arg(optarg, c == 't' ? "--table" : "--source-table", &opt.source_table);
            break;
        case O_TARGET_TABLE:
            rc = string_arg(optarg, "--target-table", &opt.target_table);
            break;
        case O_SOURCE_ENV:
            rc = env_name(optarg, "--source-env", &opt.source_env);
            break;
        case O_TARGET_ENV:
            rc = env_name(optarg, "--target-env", &opt.target_env);
            break;
        case 'k':
            rc = parse_list(optarg, "--key", &opt.keys, &opt.nkeys);
            break;
        case 'c':
            rc = parse_list(optarg, "--columns", &opt.columns, &opt.ncolumns);
            break;
        case O_SNAP_SOURCE:
            rc = snapshot_id(optarg, "--snapshot-source", &opt.snap_source);
            break;
        case O_SNAP_TARGET:
            rc = snapshot_id(optarg, "--snapshot-target", &opt.snap_target);
            break;
        case O_ALLOW_RLS:
            opt.allow_row_security = 1;
            break;
        case O_SCHEMA:
            opt.schema = 1;
            break;
        case O_MAP_COLUMNS:
            rc = add_list(&opt.map_columns, optarg, "--map-columns");
            break;
        case O_EXPR:
            rc = add_list(&opt.expr, optarg, "--expr");
            break;
        case O_FK:
            rc = add_list(&opt.fk, optarg, "--fk");
            break;
        case O_IGNORE:
            rc = add_list(&opt.ignore, optarg, "--ignore");
            break;
        case O_SOURCE_TABLES:
            rc = string_arg(optarg, "--source-tables", &opt.source_tables);
            break;
        case O_SHOW:
            rc = opt_parse_int64(optarg, "--show", 0, SHOW_MAX, &opt.show);
            break;
        case O_VALUES:
            opt.values = 1;
            break;
        case O_JSON:
            rc = string_arg(optarg, "--json", &opt.json);
            break;
        case 'q':
            opt.quiet = 1;
            break;
        case O_MAX_ROW:
            rc = opt_parse_max_row(optarg, &opt.max_row);
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
        if (rc != 0)
            return rc;
    }
    for (int i = optind; i < argc; i++)
        if ((rc = opt_refuse_password(argv[i], "argument")) != 0)
            return rc;
    return check_modes(argc - optind, argv + optind);
}

static int
open_input(struct pv_input *in, const char *what, const char *path)
{
    int rc;

    in->what = what;
    in->name = strcmp(path, "-") == 0 ? "stdin" : path;
    if ((in->fd = io_open_input(path)) < 0)
        return EXIT_IO;
    if ((rc = rs_reader_open(&in->r, in->fd, in->name)) != 0)
        return rc;
    rs_reader_set_max_row(in->r, opt.max_row);
    return 0;
}

static void
close_input(struct pv_input *in)
{
    if (in->r != NULL)
        rs_reader_free(in->r);
    if (in->fd > STDIN_FILENO)
        close(in->fd);
}

static int
streams(void)
{
    struct pv_input in[3];
    struct pv_result res;
    int rc;

    memset(in, 0, sizeof(in));
    memset(&res, 0, sizeof(res));
    for (int i = 0; i < 3; i++)
        in[i].fd = -1;
    if ((rc = open_input(&in[0], "source", opt.source)) != 0 ||
        (rc = open_input(&in[1], "target", opt.target)) != 0)
        goto done;
    if (opt.crosswalk != NULL && (rc = open_input(&in[2], "crosswalk", opt.crosswalk)) != 0)
        goto done;
    if ((rc = pv_compare(&in[0], &in[1], opt.crosswalk != NULL ? &in[2] : NULL, &res)) != 0)
        goto done;
    if (io_interrupted)
        goto done;
    if ((rc = pv_report(&res)) == 0)
        rc = pv_result_differs(&res) ? EXIT_DIFF : EXIT_OK;
done:
    for (int i = 0; i < 3; i++)
        close_input(&in[i]);
    pv_result_free(&res);
    return rc;
}

int
main(int argc, char **argv)
{
    int rc;

    err_init("pgverify");
    io_signals_init();
    atexit(io_close_stdout);
    opt.show = 10;
    opt.max_row = RS_DEFAULT_MAX_ROW_BYTES;
    buf_init(&opt.map_columns);
    buf_init(&opt.expr);
    buf_init(&opt.fk);
    buf_init(&opt.ignore);
    if ((rc = parse_options(argc, argv)) != 0)
        goto done;
    if (opt.schema)
        rc = pv_schema();
    else if (opt.source_env != NULL)
        rc = pv_database();
    else
        rc = streams();
    /* The JSON is written whenever a report was made, discrepancies or not. */
    {
        int jrc = pv_json_flush(rc == EXIT_OK || rc == EXIT_DIFF || rc == EXIT_REFUSED);

        if (jrc != 0)
            rc = jrc;
    }
done:
    opt_free_list(opt.keys);
    opt_free_list(opt.columns);
    buf_free(&opt.map_columns);
    buf_free(&opt.expr);
    buf_free(&opt.fk);
    buf_free(&opt.ignore);
    if (io_interrupted) {
        /* Die by the signal, so the shell and the caller see what happened. */
        signal(io_interrupted, SIG_DFL);
        raise(io_interrupted);
    }
    return rc;
}
