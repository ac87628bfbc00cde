/*
 * pgapply: the last stage of a run. It reads a change stream (rowdiff's
 * output) to its trailer, then writes it to one target table in batched
 * transactions, with per-change records and checkpoints in the state schema;
 * or the streams of a foreign-key cycle, together. It also installs that
 * schema, registers tables (their crosswalk filled before the first compute)
 * and keeps the runs table for scripts.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "err.h"
#include "io.h"
#include "mem.h"
#include "opt.h"
#include "pgapply.h"
#include "state.h"

enum mode {
    MODE_APPLY,
    MODE_INSTALL,
    MODE_PRINT_SQL,
    MODE_BEGIN_RUN,
    MODE_END_RUN,
    MODE_REGISTER,
    MODE_CREATE,
    MODE_DECLARE,
};

enum {
    OPT_DSN_ENV = 256,
    OPT_TABLE,
    OPT_UUID_COLUMN,
    OPT_RUN_ID,
    OPT_SPOOL,
    OPT_PHASE,
    OPT_BATCH_ROWS,
    OPT_BATCH_BYTES,
    OPT_LOCK_TIMEOUT,
    OPT_DRY_RUN,
    OPT_REJECT_FILE,
    OPT_STATS,
    OPT_STATE_SCHEMA,
    OPT_PROGRESS,
    OPT_ALLOW_POOLER,
    OPT_INSTALL_STATE,
    OPT_PRINT_STATE_SQL,
    OPT_BEGIN_RUN,
    OPT_TABLES,
    OPT_RESUMED,
    OPT_SOURCE_DSN_ENV,
    OPT_END_RUN,
    OPT_STATUS,
    OPT_EXIT_CODE,
    OPT_COUNTS_JSON,
    OPT_REGISTER,
    OPT_LEGACY_KEY,
    OPT_IMPORT_MAP,
    OPT_STREAM,
    OPT_GROUP_MAX_ROWS,
    OPT_CREATE_TABLES,
    OPT_PROGRAM,
    OPT_APP_ROWS,
    OPT_DECLARE_MIGRATED,
};

static const struct option long_options[] = {
    { "dsn-env", required_argument, NULL, OPT_DSN_ENV },
    { "table", required_argument, NULL, OPT_TABLE },
    { "uuid-column", required_argument, NULL, OPT_UUID_COLUMN },
    { "run-id", required_argument, NULL, OPT_RUN_ID },
    { "spool", required_argument, NULL, OPT_SPOOL },
    { "phase", required_argument, NULL, OPT_PHASE },
    { "batch-rows", required_argument, NULL, OPT_BATCH_ROWS },
    { "batch-bytes", required_argument, NULL, OPT_BATCH_BYTES },
    { "lock-timeout", required_argument, NULL, OPT_LOCK_TIMEOUT },
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "reject-file", required_argument, NULL, OPT_REJECT_FILE },
    { "stats", required_argument, NULL, OPT_STATS },
    { "state-schema", required_argument, NULL, OPT_STATE_SCHEMA },
    { "progress", no_argument, NULL, OPT_PROGRESS },
    { "allow-pooler", no_argument, NULL, OPT_ALLOW_POOLER },
    { "install-state", no_argument, NULL, OPT_INSTALL_STATE },
    { "print-state-sql", no_argument, NULL, OPT_PRINT_STATE_SQL },
    { "begin-run", no_argument, NULL, OPT_BEGIN_RUN },
    { "tables", required_argument, NULL, OPT_TABLES },
    { "resumed", no_argument, NULL, OPT_RESUMED },
    { "source-dsn-env", required_argument, NULL, OPT_SOURCE_DSN_ENV },
    { "end-run", required_argument, NULL, OPT_END_RUN },
    { "status", required_argument, NULL, OPT_STATUS },
    { "exit-code", required_argument, NULL, OPT_EXIT_CODE },
    { "counts-json", required_argument, NULL, OPT_COUNTS_JSON },
    { "register", no_argument, NULL, OPT_REGISTER },
    { "legacy-key", required_argument, NULL, OPT_LEGACY_KEY },
    { "import-map", required_argument, NULL, OPT_IMPORT_MAP },
    { "stream", required_argument, NULL, OPT_STREAM },
    { "group-max-rows", required_argument, NULL, OPT_GROUP_MAX_ROWS },
    { "create-tables", required_argument, NULL, OPT_CREATE_TABLES },
    { "program", required_argument, NULL, OPT_PROGRAM },
    { "app-rows", required_argument, NULL, OPT_APP_ROWS },
    { "declare-migrated", no_argument, NULL, OPT_DECLARE_MIGRATED },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

/* Options of the bookkeeping modes. */
struct run_options {
    enum mode mode;
    const char *tables;
    int resumed;
    const char *source_dsn_env;
    const char *program; /* --begin-run: runs.program (default pgapply) */
    long long end_id;
    const char *status;
    int64_t exit_code;
    int have_exit_code;
    const char *counts_json;
    const char *ddl_file; /* --create-tables */
    int app_rows;         /* --app-rows given */
    /* a cycle group: --stream TABLE=FILE, --uuid-column [TABLE=]COL, both repeatable */
    int nstreams;
    char **stream_table, **stream_file;
    int nuuid;
    char **uuid_specs;
    /* --declare-migrated KEY... */
    int nkeys;
    char **keys;
};

static void
usage(void)
{
    printf("Usage: pgapply [OPTION]... [CHANGES]\n"
           "  or:  pgapply [OPTION]... --stream TABLE=CHANGES --stream TABLE=CHANGES...\n"
           "  or:  pgapply --register --table TABLE [--uuid-column COL]\n"
           "               [--legacy-key COL[,COL]] [--import-map MAP] [--app-rows WHICH]\n"
           "  or:  pgapply --declare-migrated --table TABLE KEY... (- reads standard input)\n"
           "Apply a change stream (rowdiff's output) to one target table in batched\n"
           "transactions, recording every change in the state schema.\n"
           "With no CHANGES, or when CHANGES is -, read standard input.\n"
           "\n"
           "Options:\n"
           "      --dsn-env NAME       environment variable holding the target's\n"
           "                           connection string (else libpq's PG* variables)\n"
           "      --table SCHEMA.TABLE the target table (default: the stream's)\n"
           "      --uuid-column COL    the table's UUID key column (default: a one-column\n"
           "                           uuid primary key; none for integer-key tables)\n"
           "      --run-id ID          record the changes under run ID (default: a new run)\n"
           "      --spool DIR          copy a piped stream into DIR and keep it there\n"
           "                           (default: a temporary directory, removed)\n"
           "      --phase PHASE        upsert, delete (then retry), delete-only, retry\n"
           "                           or all (default all)\n"
           "      --batch-rows N       close a batch at N rows (default 5000)\n"
           "      --batch-bytes SIZE   close a batch at SIZE bytes of data (default 64M)\n"
           "      --lock-timeout MS    lock_timeout of each batch (default 10000)\n"
           "      --dry-run            check everything and print what would be done;\n"
           "                           write nothing\n"
           "      --reject-file FILE   write rejected rows to FILE (a change stream with a\n"
           "                           _reason column)\n"
           "      --stats FILE         write the counts to FILE as one JSON line\n"
           "      --state-schema NAME  driftless's state schema (default driftless)\n"
           "      --progress           report batches on standard error\n"
           "      --allow-pooler       connect even through a transaction pooler\n"
           "  -h, --help               display this help and exit\n"
           "  -V, --version            output version information and exit\n"
           "\n"
           "A foreign-key cycle, applied as one group (each phase one transaction):\n"
           "      --stream TABLE=FILE  a table of the group and its change stream\n"
           "                           (repeat for every table of the cycle)\n"
           "      --uuid-column TABLE=COL  a member's UUID column (or COL for all)\n"
           "      --reject-file FILE   FILE must hold {table}, replaced by each table\n"
           "      --group-max-rows N   refuse a group of more than N changes\n"
           "                           (default 1000000)\n"
           "\n"
           "Registering a table (before the first compute; nothing is applied):\n"
           "      --register           register --table and fill its crosswalk, in one\n"
           "                           transaction; a registered table is left as is\n"
           "      --legacy-key COLS    the legacy key columns (default: the map's keys)\n"
           "      --import-map MAP     fill the crosswalk from MAP, a map or rows stream\n"
           "                           (legacy key columns, uuid), checked first\n"
           "      --app-rows none      a table that kept its keys: every row the target\n"
           "                           holds came from the earlier migration and is\n"
           "                           driftless's (default keys-only-in-target: its\n"
           "                           first apply registers it, taking the keys only\n"
           "                           the target has as the application's)\n"
           "\n"
           "Declaring application rows migrated (a table that kept its keys):\n"
           "      --declare-migrated   add each KEY (as the first run reported it: a\n"
           "                           value, or a JSON array for a composite key; - for\n"
           "                           standard input, one key a line) to the keys\n"
           "                           driftless owns, in one transaction: later runs\n"
           "                           update them, and delete those the source lacks\n"
           "\n"
           "Run bookkeeping, for scripts (nothing is applied):\n"
           "      --install-state      create or upgrade the state schema and exit\n"
           "      --print-state-sql    print the state schema's SQL and exit\n"
           "      --begin-run          add a run and print its id; with --tables LIST,\n"
           "                           --resumed, --source-dsn-env NAME, --program NAME\n"
           "                           (what the runs table names, default pgapply)\n"
           "      --end-run ID         close run ID; with --status S (ok, rejects, failed,\n"
           "                           interrupted), --exit-code N, --counts-json FILE\n"
           "\n"
           "Creating tables (migrate --create-missing):\n"
           "      --create-tables FILE apply FILE, the reviewed DDL of analyze --ddl, in\n"
           "                           one transaction with --run-id ID: its shape is\n"
           "                           checked first (exit 4), what exists is skipped,\n"
           "                           created tables are recorded; with --dry-run,\n"
           "                           print what would run\n"
           "\n" OPT_EXIT_HELP);
}

static int
parse_options(int argc, char **argv, struct options *o, struct run_options *ro)
{
    int c, modes = 0;

    memset(o, 0, sizeof(*o));
    memset(ro, 0, sizeof(*ro));
    o->schema = STATE_DEFAULT_SCHEMA;
    o->phases = PHASE_ALL;
    o->batch_rows = 5000;
    o->batch_bytes = 64LL * 1024 * 1024;
    o->lock_timeout_ms = 10000;
    o->group_max_rows = 1000000;
    ro->stream_table = xcalloc((size_t)argc + 1, sizeof(char *));
    ro->stream_file = xcalloc((size_t)argc + 1, sizeof(char *));
    ro->uuid_specs = xcalloc((size_t)argc + 1, sizeof(char *));
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            exit(EXIT_OK);
        case 'V':
            opt_print_version();
            exit(EXIT_OK);
        case OPT_DSN_ENV:
            if (opt_refuse_password(optarg, "--dsn-env") != 0)
                return EXIT_USAGE;
            o->dsn_env = optarg;
            break;
        case OPT_TABLE:
            o->table = optarg;
            break;
        case OPT_UUID_COLUMN:
            o->uuid_column = optarg;
            ro->uuid_specs[ro->nuuid++] = optarg;
            break;
        case OPT_RUN_ID: {
            int64_t v;

            if (opt_parse_int64(optarg, "--run-id", 1, INT64_MAX, &v) != 0)
                return EXIT_USAGE;
            o->run_id = v;
            break;
        }
        case OPT_SPOOL:
            o->spool_dir = optarg;
            break;
        case OPT_PHASE:
            if (strcmp(optarg, "upsert") == 0)
                o->phases = PHASE_UPSERT;
            else if (strcmp(optarg, "delete") == 0)
                o->phases = PHASE_DELETE | PHASE_RETRY;
            else if (strcmp(optarg, "delete-only") == 0)
                o->phases = PHASE_DELETE;
            else if (strcmp(optarg, "retry") == 0)
                o->phases = PHASE_RETRY;
            else if (strcmp(optarg, "all") == 0)
                o->phases = PHASE_ALL;
            else
                return opt_usage_error("invalid value for --phase: '%s' (upsert, delete, "
                                       "delete-only, retry or all)",
                                       optarg);
            break;
        case OPT_BATCH_ROWS:
            if (opt_parse_int64(optarg, "--batch-rows", 1, 10000000, &o->batch_rows) != 0)
                return EXIT_USAGE;
            break;
        case OPT_BATCH_BYTES:
            if (opt_parse_size(optarg, "--batch-bytes", 1, 1024LL * 1024 * 1024, &o->batch_bytes) !=
                0)
                return EXIT_USAGE;
            break;
        case OPT_LOCK_TIMEOUT:
            if (opt_parse_int64(optarg, "--lock-timeout", 0, 3600000, &o->lock_timeout_ms) != 0)
                return EXIT_USAGE;
            break;
        case OPT_DRY_RUN:
            o->dry_run = 1;
            break;
        case OPT_REJECT_FILE:
            o->reject_file = optarg;
            break;
        case OPT_STATS:
            o->stats_file = optarg;
            break;
        case OPT_STATE_SCHEMA:
            if (!state_schema_name_ok(optarg))
                return opt_usage_error("invalid value for --state-schema: '%s' (not public or "
                                       "a system schema)",
                                       optarg);
            o->schema = optarg;
            break;
        case OPT_PROGRESS:
            o->progress = 1;
            break;
        case OPT_ALLOW_POOLER:
            o->allow_pooler = 1;
            break;
        case OPT_INSTALL_STATE:
            ro->mode = MODE_INSTALL;
            modes++;
            break;
        case OPT_PRINT_STATE_SQL:
            ro->mode = MODE_PRINT_SQL;
            modes++;
            break;
        case OPT_BEGIN_RUN:
            ro->mode = MODE_BEGIN_RUN;
            modes++;
            break;
        case OPT_TABLES:
            ro->tables = optarg;
            break;
        case OPT_RESUMED:
            ro->resumed = 1;
            break;
        case OPT_SOURCE_DSN_ENV:
            if (opt_refuse_password(optarg, "--source-dsn-env") != 0)
                return EXIT_USAGE;
            ro->source_dsn_env = optarg;
            break;
        case OPT_END_RUN: {
            int64_t v;

            if (opt_parse_int64(optarg, "--end-run", 1, INT64_MAX, &v) != 0)
                return EXIT_USAGE;
            ro->end_id = v;
            ro->mode = MODE_END_RUN;
            modes++;
            break;
        }
        case OPT_STATUS:
            if (!state_status_valid(optarg))
                return opt_usage_error("invalid value for --status: '%s' (running, ok, "
                                       "rejects, failed or interrupted)",
                                       optarg);
            ro->status = optarg;
            break;
        case OPT_EXIT_CODE:
            if (opt_parse_int64(optarg, "--exit-code", 0, 255, &ro->exit_code) != 0)
                return EXIT_USAGE;
            ro->have_exit_code = 1;
            break;
        case OPT_COUNTS_JSON:
            ro->counts_json = optarg;
            break;
        case OPT_REGISTER:
            ro->mode = MODE_REGISTER;
            modes++;
            break;
        case OPT_CREATE_TABLES:
            ro->mode = MODE_CREATE;
            ro->ddl_file = optarg;
            modes++;
            break;
        case OPT_LEGACY_KEY:
            o->legacy_key = optarg;
            break;
        case OPT_IMPORT_MAP:
            o->import_map = optarg;
            break;
        case OPT_STREAM: {
            char *eq = strchr(optarg, '=');

            if (eq == NULL || eq == optarg || eq[1] == '\0')
                return opt_usage_error("invalid value for --stream: '%s' (TABLE=FILE)", optarg);
            *eq = '\0';
            for (int i = 0; i < ro->nstreams; i++)
                if (strcmp(ro->stream_table[i], optarg) == 0)
                    return opt_usage_error("--stream: table %s given twice", optarg);
            ro->stream_table[ro->nstreams] = optarg;
            ro->stream_file[ro->nstreams++] = eq + 1;
            break;
        }
        case OPT_GROUP_MAX_ROWS:
            if (opt_parse_int64(optarg, "--group-max-rows", 1, INT64_MAX, &o->group_max_rows) != 0)
                return EXIT_USAGE;
            break;
        case OPT_APP_ROWS:
            if (strcmp(optarg, "none") == 0)
                o->app_rows_none = 1;
            else if (strcmp(optarg, "keys-only-in-target") == 0)
                o->app_rows_none = 0;
            else
                return opt_usage_error("invalid value for --app-rows: '%s' (none or "
                                       "keys-only-in-target)",
                                       optarg);
            ro->app_rows = 1;
            break;
        case OPT_DECLARE_MIGRATED:
            ro->mode = MODE_DECLARE;
            modes++;
            break;
        case OPT_PROGRAM:
            if (optarg[0] == '\0' || strlen(optarg) > 64)
                return opt_usage_error("invalid value for --program: '%s' (1 to 64 characters)",
                                       optarg);
            ro->program = optarg;
            break;
        default:
            return opt_getopt_error(c, argv);
        }
    }
    if (modes > 1)
        return opt_usage_error("--install-state, --print-state-sql, --begin-run, --end-run, "
                               "--register, --create-tables and --declare-migrated exclude "
                               "each other");
    if ((o->legacy_key || o->import_map) && ro->mode != MODE_REGISTER)
        return opt_usage_error("--legacy-key and --import-map go with --register");
    if (ro->app_rows && ro->mode != MODE_REGISTER)
        return opt_usage_error("--app-rows goes with --register (the table map's app_rows)");
    if (ro->nstreams > 0 && ro->mode != MODE_APPLY)
        return opt_usage_error("--stream goes with applying, not with another mode");
    if ((ro->mode == MODE_APPLY || ro->mode == MODE_REGISTER || ro->mode == MODE_CREATE ||
         ro->mode == MODE_DECLARE) &&
        (ro->tables || ro->resumed || ro->source_dsn_env || ro->program || ro->status ||
         ro->have_exit_code || ro->counts_json))
        return opt_usage_error("--tables, --resumed, --source-dsn-env, --program, --status, "
                               "--exit-code and --counts-json go with --begin-run or "
                               "--end-run");
    if (ro->mode == MODE_CREATE) {
        if (optind < argc)
            return opt_usage_error("unexpected argument '%s'", argv[optind]);
        if (o->run_id <= 0 && !o->dry_run)
            return opt_usage_error("--create-tables needs --run-id or --dry-run");
    } else if (ro->mode == MODE_DECLARE) {
        if (o->table == NULL)
            return opt_usage_error("--declare-migrated needs --table");
        if (optind >= argc)
            return opt_usage_error("--declare-migrated needs a KEY (or - to read keys from "
                                   "standard input)");
        if (o->dry_run || o->uuid_column != NULL)
            return opt_usage_error("--dry-run and --uuid-column do not go with "
                                   "--declare-migrated");
        ro->keys = argv + optind;
        ro->nkeys = argc - optind;
    } else if (ro->mode == MODE_REGISTER) {
        if (optind < argc)
            return opt_usage_error("unexpected argument '%s'", argv[optind]);
        if (o->table == NULL)
            return opt_usage_error("--register needs --table");
        if (o->legacy_key == NULL && o->import_map == NULL)
            return opt_usage_error("--register needs --legacy-key or --import-map");
        if (ro->nuuid > 1)
            return opt_usage_error("--register takes one --uuid-column");
    } else if (ro->mode == MODE_APPLY && ro->nstreams > 0) {
        if (optind < argc)
            return opt_usage_error("unexpected argument '%s' (a group's streams are given "
                                   "with --stream)",
                                   argv[optind]);
        if (o->table != NULL)
            return opt_usage_error("--table and --stream exclude each other");
        if (o->reject_file != NULL && strstr(o->reject_file, "{table}") == NULL)
            return opt_usage_error("with --stream, --reject-file must hold {table}");
        for (int i = 0; i < ro->nuuid; i++) {
            const char *eq = strchr(ro->uuid_specs[i], '=');
            int found = eq == NULL && ro->nuuid == 1;

            for (int j = 0; j < ro->nstreams && eq != NULL; j++)
                if (strlen(ro->stream_table[j]) == (size_t)(eq - ro->uuid_specs[i]) &&
                    strncmp(ro->stream_table[j], ro->uuid_specs[i],
                            (size_t)(eq - ro->uuid_specs[i])) == 0)
                    found = 1;
            if (!found)
                return opt_usage_error("invalid value for --uuid-column: '%s' (with --stream: "
                                       "TABLE=COL naming a --stream table, or one COL for all)",
                                       ro->uuid_specs[i]);
        }
    } else if (ro->mode == MODE_APPLY) {
        if (argc - optind > 1)
            return opt_usage_error("too many arguments (first extra is '%s')", argv[optind + 1]);
        if (optind < argc)
            o->input = argv[optind];
    } else {
        if (optind < argc)
            return opt_usage_error("unexpected argument '%s'", argv[optind]);
        if (ro->mode == MODE_END_RUN && (ro->status == NULL || !ro->have_exit_code))
            return opt_usage_error("--end-run needs --status and --exit-code");
        if (ro->mode != MODE_END_RUN && (ro->status || ro->have_exit_code || ro->counts_json))
            return opt_usage_error("--status, --exit-code and --counts-json go with --end-run");
        if (ro->mode != MODE_BEGIN_RUN &&
            (ro->tables || ro->resumed || ro->source_dsn_env || ro->program))
            return opt_usage_error("--tables, --resumed, --source-dsn-env and --program go "
                                   "with --begin-run");
    }
    return 0;
}

/* DRIFTLESS_FAILPOINT=pgapply:[PHASE:]after-commit:N (a test hook, see pgapply(1)). */
static int
parse_failpoint(struct options *o)
{
    const char *fp = getenv("DRIFTLESS_FAILPOINT");
    static const char prefix[] = "after-commit:";
    static const struct {
        const char *name;
        int phase;
    } only[] = { { "upsert:", PHASE_UPSERT },
                 { "delete:", PHASE_DELETE },
                 { "retry:", PHASE_RETRY } };
    const char *p;
    int phase = PHASE_ALL;
    int64_t v;

    if (fp == NULL || *fp == '\0' || strncmp(fp, "pgapply:", 8) != 0)
        return 0;
    p = fp + 8;
    /* A phase named: a pgapply that does not apply that phase is left alone. */
    for (size_t i = 0; i < sizeof(only) / sizeof(only[0]); i++)
        if (strncmp(p, only[i].name, strlen(only[i].name)) == 0) {
            phase = only[i].phase;
            p += strlen(only[i].name);
            break;
        }
    if (strncmp(p, prefix, sizeof(prefix) - 1) != 0)
        return err_msg(EXIT_USAGE, "DRIFTLESS_FAILPOINT: unknown failpoint '%s'", fp);
    if (opt_parse_int64(p + sizeof(prefix) - 1, "DRIFTLESS_FAILPOINT", 1, INT64_MAX, &v) != 0)
        return EXIT_USAGE;
    if (o->phases & phase)
        o->fail_after_commit = v;
    return 0;
}

/* A file of JSON lines as one JSON value: one line as is, several as an array. */
static int
read_counts(const char *path, char **out)
{
    struct buf b, res;
    char chunk[8192];
    ssize_t n;
    int fd, lines = 0;

    *out = NULL;
    fd = io_open_input(path);
    if (fd < 0)
        return EXIT_IO;
    buf_init(&b);
    while ((n = io_read_full(fd, chunk, sizeof(chunk))) > 0) {
        buf_append(&b, chunk, (size_t)n);
        if (b.len > 16 * 1024 * 1024) {
            n = 0;
            break;
        }
    }
    if (fd != 0)
        close(fd);
    if (n < 0) {
        buf_free(&b);
        return err_sys(EXIT_IO, "could not read \"%s\"", path);
    }
    if (b.len > 16 * 1024 * 1024) {
        buf_free(&b);
        return err_msg(EXIT_DATA, "%s: larger than 16 MiB", path);
    }
    buf_init(&res);
    buf_putc(&res, '[');
    buf_putc(&b, '\0');
    for (char *p = b.data; *p;) {
        char *e = strchr(p, '\n');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        char *q = p;

        while (q < p + len && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q < p + len) {
            if (lines++ > 0)
                buf_putc(&res, ',');
            buf_append(&res, p, len);
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    buf_putc(&res, ']');
    if (lines == 1) {
        /* one line: the value itself */
        *out = xstrndup(res.data + 1, res.len - 2);
        buf_free(&res);
    } else {
        *out = res.data;
    }
    buf_free(&b);
    return 0;
}

static int
run_bookkeeping(const struct options *o, const struct run_options *ro)
{
    struct db *d = NULL, *src = NULL;
    char tfp[33], sfp[33];
    char **tables = NULL;
    char *counts = NULL;
    int ntables = 0, rc;

    if (ro->mode == MODE_PRINT_SQL) {
        state_print_sql(stdout, o->schema);
        return 0;
    }
    if (ro->mode == MODE_END_RUN && ro->counts_json != NULL &&
        (rc = read_counts(ro->counts_json, &counts)) != 0)
        return rc;
    if ((rc = db_connect(&d, o->dsn_env, "target", DB_SESSION_WRITE, o->allow_pooler)) != 0)
        goto done;
    if ((rc = db_exec(d, "SET client_min_messages = warning")) != 0)
        goto done;
    switch (ro->mode) {
    case MODE_INSTALL:
        rc = state_install(d, o->schema);
        break;
    case MODE_BEGIN_RUN: {
        struct state_run run;
        long long id = 0;

        memset(&run, 0, sizeof(run));
        if (ro->tables != NULL)
            tables = opt_split_list(ro->tables, &ntables);
        if ((rc = state_install(d, o->schema)) != 0)
            break;
        if ((rc = state_fingerprint(d, tables, ntables, o->schema, tfp)) != 0)
            break;
        if (ro->source_dsn_env != NULL) {
            if ((rc = db_connect(&src, ro->source_dsn_env, "source", DB_SESSION_READ,
                                 o->allow_pooler)) != 0)
                break;
            if ((rc = state_fingerprint(src, NULL, 0, NULL, sfp)) != 0)
                break;
            run.source_fp = sfp;
        }
        run.program = ro->program != NULL ? ro->program : "pgapply";
        run.tables = tables;
        run.ntables = ntables;
        run.resumed = ro->resumed;
        run.target_fp = tfp;
        if ((rc = state_run_begin(d, o->schema, &run, &id)) != 0)
            break;
        printf("%lld\n", id);
        break;
    }
    case MODE_END_RUN:
        /* A bad counts file is the caller's input: say so once, as such. */
        db_set_quiet(d, 1);
        rc = state_run_end(d, o->schema, ro->end_id, ro->status, (int)ro->exit_code, counts, 0);
        db_set_quiet(d, 0);
        if (rc == EXIT_DB && strcmp(db_last_sqlstate(d), "22P02") == 0)
            rc = err_msg(EXIT_DATA, "%s: not JSON: %s", ro->counts_json, db_last_message(d));
        else if (rc == EXIT_DB)
            rc = err_msg(EXIT_DB, "run %lld: could not close it: %s (SQLSTATE %s)", ro->end_id,
                         db_last_message(d), db_last_sqlstate(d));
        break;
    default:
        rc = EXIT_INTERNAL;
    }
done:
    opt_free_list(tables);
    free(counts);
    db_close(src);
    db_close(d);
    return rc;
}

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
stats_json(struct buf *b, const char *table, const struct counts *c, double secs, int dry)
{
    uint64_t rows = c->inserted + c->updated + c->deleted;

    buf_printf(b, "{\"table\": ");
    /* table names are identifiers: escape what JSON needs */
    buf_putc(b, '"');
    for (const char *p = table; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_putc(b, '\\');
        if ((unsigned char)*p >= 0x20)
            buf_putc(b, *p);
    }
    buf_putc(b, '"');
    buf_printf(b,
               ", \"inserted\": %llu, \"updated\": %llu, \"deleted\": %llu, \"failed\": %llu,"
               " \"deferred\": %llu, \"not_found\": %llu, \"not_owned\": %llu,"
               " \"batches\": %llu, \"skipped_batches\": %llu, \"seconds\": %.3f,"
               " \"rows_per_s\": %.0f, \"dry_run\": %s}",
               (unsigned long long)c->inserted, (unsigned long long)c->updated,
               (unsigned long long)c->deleted, (unsigned long long)c->failed,
               (unsigned long long)c->deferred, (unsigned long long)c->not_found,
               (unsigned long long)c->not_owned, (unsigned long long)c->batches,
               (unsigned long long)c->skipped_batches, secs, secs > 0 ? (double)rows / secs : 0.0,
               dry ? "true" : "false");
}

static int
write_stats(const char *path, const char *json)
{
    struct io_atomic a = { -1, NULL, NULL };
    int rc;

    if ((rc = io_atomic_open(&a, path)) != 0)
        return rc;
    if (io_write_full(a.fd, json, strlen(json)) != 0 || io_write_full(a.fd, "\n", 1) != 0) {
        rc = err_sys(EXIT_IO, "could not write \"%s\"", path);
        io_atomic_abort(&a);
        return rc;
    }
    return io_atomic_commit(&a);
}

/* "a.b" and "{table}.rs" -> "a.b.rs" */
static char *
subst_table(const char *pattern, const char *table)
{
    const char *at = strstr(pattern, "{table}");
    struct buf b;

    buf_init(&b);
    if (at == NULL) {
        buf_puts(&b, pattern);
        return b.data;
    }
    buf_append(&b, pattern, (size_t)(at - pattern));
    buf_puts(&b, table);
    buf_puts(&b, at + 7);
    return b.data;
}

/*
 * Apply n streams: one table (group 0, n 1), or the tables of a cycle group,
 * whose phases are each one transaction across the group. os[i] are the
 * members' options (input, table, uuid column, reject file).
 */
static int
apply(struct options *os, int n, int group)
{
    struct spool *s = xcalloc((size_t)n, sizeof(*s));
    struct target *t = xcalloc((size_t)n, sizeof(*t));
    struct target **tp = xcalloc((size_t)n, sizeof(*tp));
    struct counts *cnt = xcalloc((size_t)n, sizeof(*cnt));
    char **names = xcalloc((size_t)n + 1, sizeof(char *));
    int *order = xcalloc((size_t)n, sizeof(int));
    const struct options *o = &os[0];
    struct db *d = NULL;
    struct buf json, lines;
    long long run_id = o->run_id;
    int own_run = 0, version = 0, rc = 0, rc2;
    int64_t total = 0;
    double t0 = now();

    buf_init(&json);
    buf_init(&lines);
    /* Everything is read and checked before the first connection. */
    for (int i = 0; i < n && rc == 0; i++) {
        rc = spool_load(&s[i], &os[i]);
        total += (int64_t)s[i].nrecords;
        for (int j = 0; j < i && rc == 0; j++)
            if (strcmp(s[i].hdr.table, s[j].hdr.table) == 0)
                rc = err_msg(EXIT_USAGE, "group: table %s given twice", s[i].hdr.table);
    }
    if (rc != 0)
        goto done;
    if (group && total > o->group_max_rows) {
        rc = err_msg(EXIT_REFUSED,
                     "group: refused: %lld changes, more than --group-max-rows (%lld): a "
                     "group is applied in one transaction per phase",
                     (long long)total, (long long)o->group_max_rows);
        err_note("hint: raise --group-max-rows if the target can hold the transaction's locks "
                 "and WAL, or apply the change in smaller runs");
        goto done;
    }
    if ((rc = db_connect(&d, o->dsn_env, "target", DB_SESSION_WRITE, o->allow_pooler)) != 0)
        goto done;
    /* SIGINT and SIGTERM cancel the running statement; the batch then rolls back. */
    db_cancel_on_signal(d);
    /* Notices (ours, or a target trigger's) could carry row values. */
    if ((rc = db_exec(d, "SET client_min_messages = warning")) != 0)
        goto done;
    if (!o->dry_run) {
        if ((rc = state_install(d, o->schema)) != 0)
            goto done;
        version = STATE_VERSION;
        /* One pgapply per table at a time; the lock goes with the session. */
        for (int i = 0; i < n && rc == 0; i++) {
            struct db_result *r = NULL;
            const char *p[1];
            struct buf lock;

            buf_init(&lock);
            buf_printf(&lock, "driftless.apply:%s", s[i].hdr.table);
            p[0] = lock.data;
            rc = db_query(
                d, &r, s[i].hdr.table,
                "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended($1, 0))", 1, p);
            buf_free(&lock);
            if (rc == 0 && (db_ntuples(r) != 1 || strcmp(db_value(r, 0, 0), "t") != 0))
                rc = err_msg(EXIT_LOCKED, "table %s: another pgapply is applying it",
                             s[i].hdr.table);
            db_result_free(r);
        }
        if (rc != 0)
            goto done;
    } else if ((rc = state_version(d, o->schema, &version)) != 0) {
        goto done;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        rc = target_describe(d, &t[i], &s[i], &os[i], version);
        tp[i] = &t[i];
        names[i] = t[i].name;
    }
    if (rc != 0)
        goto done;
    if (group && (rc = target_group_check(d, tp, n, order)) != 0)
        goto done;
    if (!o->dry_run) {
        if (run_id > 0) {
            if ((rc = state_run_exists(d, o->schema, run_id)) != 0)
                goto done;
        } else {
            struct state_run run;
            char fp[33];

            if ((rc = state_fingerprint(d, names, n, NULL, fp)) != 0)
                goto done;
            memset(&run, 0, sizeof(run));
            run.program = "pgapply";
            run.tables = names;
            run.ntables = n;
            run.target_fp = fp;
            if ((rc = state_run_begin(d, o->schema, &run, &run_id)) != 0)
                goto done;
            own_run = 1;
        }
    }
    if (group)
        rc = apply_group(d, os, s, t, order, n, run_id, cnt);
    else
        rc = apply_run(d, o, &s[0], &t[0], run_id, &cnt[0]);
    {
        uint64_t skipped = 0;

        if (n > 1)
            buf_putc(&json, '[');
        for (int i = 0; i < n; i++) {
            size_t at = json.len;

            if (i > 0)
                buf_puts(&json, ", ");
            stats_json(&json, s[i].hdr.table, &cnt[i], now() - t0, o->dry_run);
            buf_append(&lines, json.data + at + (i > 0 ? 2 : 0), json.len - at - (i > 0 ? 2 : 0));
            buf_putc(&lines, '\n');
            skipped += cnt[i].skipped_batches;
        }
        if (n > 1)
            buf_putc(&json, ']');
        if (own_run) {
            const char *status = rc == 0           ? STATE_RUN_OK
                                 : rc == EXIT_DIFF ? STATE_RUN_REJECTS
                                 : io_interrupted  ? STATE_RUN_INTERRUPTED
                                                   : STATE_RUN_FAILED;
            int code = io_interrupted ? 128 + (int)io_interrupted : rc;

            rc2 = state_run_end(d, o->schema, run_id, status, code, json.data, skipped > 0);
            if (rc == 0 || rc == EXIT_DIFF)
                rc = rc2 != 0 ? rc2 : rc;
        }
    }
    if (o->dry_run && (rc == 0 || rc == EXIT_DIFF))
        for (int i = 0; i < n; i++)
            printf("table %s: would insert %llu, update %llu, delete %llu; %llu rejected, "
                   "%llu not found, %llu not owned; %llu committed batches skipped\n",
                   t[i].name, (unsigned long long)cnt[i].inserted,
                   (unsigned long long)cnt[i].updated, (unsigned long long)cnt[i].deleted,
                   (unsigned long long)cnt[i].failed, (unsigned long long)cnt[i].not_found,
                   (unsigned long long)cnt[i].not_owned,
                   (unsigned long long)cnt[i].skipped_batches);
    if (o->stats_file != NULL && lines.len > 0) {
        lines.data[--lines.len] = '\0'; /* write_stats adds the last newline */
        rc2 = write_stats(o->stats_file, lines.data);
        if (rc == 0 || rc == EXIT_DIFF)
            rc = rc2 != 0 ? rc2 : rc;
    }
done:
    db_cancel_forget(d);
    buf_free(&json);
    buf_free(&lines);
    for (int i = 0; i < n; i++) {
        target_free(&t[i]);
        spool_free(&s[i]);
    }
    db_close(d);
    free(s);
    free(t);
    free(tp);
    free(cnt);
    free(names);
    free(order);
    return rc;
}

/* The key columns of a map stream, as a spool's header with no records. */
static int
key_spool(struct spool *s, const struct options *o)
{
    struct rs_reader *r = NULL;
    char **names = NULL;
    int n = 0, fd = -1, rc = 0;

    memset(s, 0, sizeof(*s));
    rs_header_init(&s->hdr, RS_KIND_CHANGES, o->table);
    s->display = xstrdup(o->table);
    s->op_col = rs_header_add_column(&s->hdr, "_op", "text", RS_ROLE_OP, RS_ORDER_NONE);
    if (o->legacy_key != NULL)
        names = opt_split_list(o->legacy_key, &n);
    if (o->import_map != NULL) {
        const struct rs_header *h;
        int k = 0;

        struct stat st;

        if ((fd = io_open_input(o->import_map)) < 0) {
            rc = EXIT_IO;
            goto done;
        }
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            rc = err_msg(EXIT_USAGE, "--import-map %s: not a regular file (it is read twice)",
                         o->import_map);
            goto done;
        }
        if ((rc = rs_reader_open(&r, fd, o->import_map)) != 0)
            goto done;
        h = rs_reader_header(r);
        for (int i = 0; i < h->ncols; i++) {
            if (h->cols[i].role != RS_ROLE_KEY)
                continue;
            if (names != NULL && (k >= n || strcmp(names[k], h->cols[i].name) != 0)) {
                rc = err_msg(EXIT_DATA, "%s: its key columns are not --legacy-key %s",
                             o->import_map, o->legacy_key);
                goto done;
            }
            rs_header_add_column(&s->hdr, h->cols[i].name, h->cols[i].type, RS_ROLE_KEY,
                                 h->cols[i].order);
            k++;
        }
        if (k == 0 || (names != NULL && k != n)) {
            rc = err_msg(EXIT_DATA, "%s: %s", o->import_map,
                         k == 0 ? "no key column" : "its key columns are not --legacy-key");
            goto done;
        }
    } else {
        for (int i = 0; i < n; i++)
            rs_header_add_column(&s->hdr, names[i], "text", RS_ROLE_KEY, RS_ORDER_TEXT);
    }
    s->key_cols = xcalloc((size_t)s->hdr.ncols + 1, sizeof(int));
    s->data_cols = xcalloc(1, sizeof(int));
    for (int i = 1; i < s->hdr.ncols; i++)
        s->key_cols[s->nkeys++] = i;
done:
    rs_reader_free(r);
    if (fd > 0)
        close(fd);
    opt_free_list(names);
    return rc;
}

/* --register: the table in the registry, its crosswalk filled; idempotent. */
static int
run_register(struct options *o)
{
    struct spool s;
    struct target t;
    struct db *d = NULL;
    int rc;

    memset(&t, 0, sizeof(t));
    o->registering = 1;
    if ((rc = key_spool(&s, o)) != 0)
        goto done;
    if ((rc = db_connect(&d, o->dsn_env, "target", DB_SESSION_WRITE, o->allow_pooler)) != 0)
        goto done;
    if ((rc = db_exec(d, "SET client_min_messages = warning")) != 0)
        goto done;
    if ((rc = state_install(d, o->schema)) != 0)
        goto done;
    if (o->run_id > 0 && (rc = state_run_exists(d, o->schema, o->run_id)) != 0)
        goto done;
    if ((rc = target_describe(d, &t, &s, o, STATE_VERSION)) != 0)
        goto done;
    if (t.integer_mode != o->app_rows_none) {
        /* keys-only-in-target needs the first change stream: the first apply registers. */
        rc = err_msg(EXIT_USAGE,
                     t.integer_mode ? "table %s: its primary key is the legacy key (integer keys, "
                                      "no crosswalk): it is registered by its first apply, or "
                                      "here with --app-rows none"
                                    : "table %s: --app-rows none is for a table that kept its "
                                      "keys, not one with a UUID column",
                     t.name);
        goto done;
    }
    if (t.registered) {
        if (!t.reg_same_keys)
            rc = err_msg(EXIT_REFUSED,
                         "table %s: refused: it is registered with another legacy key (%s)", t.name,
                         t.reg_keys);
        goto done;
    }
    rc = apply_register(d, o, &s, &t, o->run_id);
done:
    target_free(&t);
    db_close(d);
    spool_free(&s);
    return rc;
}

/* --declare-migrated: keys of a registered integer-key table made driftless's. */
static int
run_declare(struct options *o, const struct run_options *ro)
{
    struct spool s;
    struct target t;
    struct db *d = NULL;
    struct db_result *r = NULL;
    const char *p[1] = { o->table };
    struct buf sql;
    char *qs = NULL, *keys = NULL;
    int rc, version = 0;

    memset(&s, 0, sizeof(s));
    memset(&t, 0, sizeof(t));
    buf_init(&sql);
    if ((rc = db_connect(&d, o->dsn_env, "target", DB_SESSION_WRITE, o->allow_pooler)) != 0)
        goto done;
    db_cancel_on_signal(d);
    if ((rc = db_exec(d, "SET client_min_messages = warning")) != 0)
        goto done;
    if ((rc = state_version(d, o->schema, &version)) != 0)
        goto done;
    if (version > 0) {
        qs = db_quote_ident(d, o->schema);
        buf_printf(&sql,
                   "SELECT pg_catalog.array_to_string(key_columns, ','), uuid_column IS NULL"
                   " FROM %s.tables WHERE table_name = $1",
                   qs);
        if ((rc = db_query(d, &r, o->table, sql.data, 1, p)) != 0)
            goto done;
    }
    if (r == NULL || db_ntuples(r) != 1) {
        rc = err_msg(EXIT_REFUSED,
                     "table %s: refused: it is not registered: its first run decides which "
                     "rows are driftless's",
                     o->table);
        err_note("hint: if every row the target holds came from the earlier migration, set "
                 "app_rows = none in its table map section before the first run");
        goto done;
    }
    if (strcmp(db_value(r, 0, 1), "t") != 0) {
        rc = err_msg(EXIT_REFUSED,
                     "table %s: refused: it has a UUID column: its migrated rows are those the "
                     "crosswalk knows",
                     o->table);
        goto done;
    }
    keys = xstrdup(db_value(r, 0, 0));
    o->legacy_key = keys;
    if ((rc = key_spool(&s, o)) != 0)
        goto done;
    if ((rc = target_describe(d, &t, &s, o, version)) != 0)
        goto done;
    if (!t.integer_mode) {
        rc = err_msg(EXIT_REFUSED,
                     "table %s: refused: its primary key is no longer its registered key (%s)",
                     t.name, t.reg_keys);
        goto done;
    }
    if (o->run_id > 0 && (rc = state_run_exists(d, o->schema, o->run_id)) != 0)
        goto done;
    rc = apply_declare(d, o, &s, &t, o->run_id, ro->keys, ro->nkeys);
done:
    db_cancel_forget(d);
    db_result_free(r);
    buf_free(&sql);
    free(qs);
    target_free(&t);
    db_close(d);
    spool_free(&s);
    free(keys);
    return rc;
}

/* The group's members: each --stream with its UUID column and reject file. */
static int
apply_streams(const struct options *o, const struct run_options *ro)
{
    struct options *os = xcalloc((size_t)ro->nstreams, sizeof(*os));
    char **rejects = xcalloc((size_t)ro->nstreams + 1, sizeof(char *));
    int rc;

    for (int i = 0; i < ro->nstreams; i++) {
        size_t len = strlen(ro->stream_table[i]);

        os[i] = *o;
        os[i].table = ro->stream_table[i];
        os[i].input = ro->stream_file[i];
        os[i].uuid_column = NULL;
        for (int j = 0; j < ro->nuuid; j++) {
            const char *spec = ro->uuid_specs[j], *eq = strchr(spec, '=');

            if (eq == NULL)
                os[i].uuid_column = spec;
            else if ((size_t)(eq - spec) == len && strncmp(spec, ro->stream_table[i], len) == 0)
                os[i].uuid_column = eq + 1;
        }
        if (o->reject_file != NULL) {
            rejects[i] = subst_table(o->reject_file, ro->stream_table[i]);
            os[i].reject_file = rejects[i];
        }
    }
    rc = apply(os, ro->nstreams, 1);
    for (int i = 0; i < ro->nstreams; i++)
        free(rejects[i]);
    free(rejects);
    free(os);
    return rc;
}

int
main(int argc, char **argv)
{
    struct options o;
    struct run_options ro;
    int rc;

    err_init("pgapply");
    io_signals_init();
    atexit(io_close_stdout);
    if ((rc = parse_options(argc, argv, &o, &ro)) != 0)
        goto done;
    if (ro.mode == MODE_REGISTER) {
        rc = run_register(&o);
        goto done;
    }
    if (ro.mode == MODE_CREATE) {
        rc = create_tables(&o, ro.ddl_file);
        goto done;
    }
    if (ro.mode == MODE_DECLARE) {
        rc = run_declare(&o, &ro);
        goto done;
    }
    if (ro.mode != MODE_APPLY) {
        rc = run_bookkeeping(&o, &ro);
        goto done;
    }
    if ((rc = parse_failpoint(&o)) != 0)
        goto done;
    rc = ro.nstreams > 0 ? apply_streams(&o, &ro) : apply(&o, 1, 0);
    if (io_interrupted) {
        /* Die by the signal, as the caller expects of an interrupted filter. */
        int sig = (int)io_interrupted;

        fflush(stdout);
        signal(sig, SIG_DFL);
        raise(sig);
    }
done:
    free(ro.stream_table);
    free(ro.stream_file);
    free(ro.uuid_specs);
    return rc;
}
