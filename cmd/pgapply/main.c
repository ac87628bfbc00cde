/*
 * pgapply: the last stage of a run. It reads a change stream (rowdiff's
 * output) to its trailer, then writes it to one target table in batched
 * transactions, with per-change records and checkpoints in the state schema.
 * It also installs that schema and keeps the runs table for scripts.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "err.h"
#include "io.h"
#include "mem.h"
#include "opt.h"
#include "pgapply.h"
#include "state.h"

/* The connection a signal cancels (db_cancel is safe in a handler). */
static struct db *volatile cancel_db;

enum mode { MODE_APPLY, MODE_INSTALL, MODE_PRINT_SQL, MODE_BEGIN_RUN, MODE_END_RUN };

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
    long long end_id;
    const char *status;
    int64_t exit_code;
    int have_exit_code;
    const char *counts_json;
};

static void
usage(void)
{
    printf("Usage: pgapply [OPTION]... [CHANGES]\n"
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
           "      --phase PHASE        upsert, delete or all (default all)\n"
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
           "Run bookkeeping, for scripts (nothing is applied):\n"
           "      --install-state      create or upgrade the state schema and exit\n"
           "      --print-state-sql    print the state schema's SQL and exit\n"
           "      --begin-run          add a run and print its id; with --tables LIST,\n"
           "                           --resumed, --source-dsn-env NAME\n"
           "      --end-run ID         close run ID; with --status S (ok, rejects, failed,\n"
           "                           interrupted), --exit-code N, --counts-json FILE\n"
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
                o->phases = PHASE_DELETE;
            else if (strcmp(optarg, "all") == 0)
                o->phases = PHASE_ALL;
            else
                return opt_usage_error("invalid value for --phase: '%s' (upsert, delete or all)",
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
        default:
            return opt_getopt_error(c, argv);
        }
    }
    if (modes > 1)
        return opt_usage_error("--install-state, --print-state-sql, --begin-run and --end-run "
                               "exclude each other");
    if (ro->mode == MODE_APPLY) {
        if (argc - optind > 1)
            return opt_usage_error("too many arguments (first extra is '%s')", argv[optind + 1]);
        if (optind < argc)
            o->input = argv[optind];
        if (ro->tables || ro->resumed || ro->source_dsn_env || ro->status || ro->have_exit_code ||
            ro->counts_json)
            return opt_usage_error("--tables, --resumed, --source-dsn-env, --status, "
                                   "--exit-code and --counts-json go with --begin-run or "
                                   "--end-run");
    } else {
        if (optind < argc)
            return opt_usage_error("unexpected argument '%s'", argv[optind]);
        if (ro->mode == MODE_END_RUN && (ro->status == NULL || !ro->have_exit_code))
            return opt_usage_error("--end-run needs --status and --exit-code");
        if (ro->mode != MODE_END_RUN && (ro->status || ro->have_exit_code || ro->counts_json))
            return opt_usage_error("--status, --exit-code and --counts-json go with --end-run");
        if (ro->mode != MODE_BEGIN_RUN && (ro->tables || ro->resumed || ro->source_dsn_env))
            return opt_usage_error("--tables, --resumed and --source-dsn-env go with "
                                   "--begin-run");
    }
    return 0;
}

/* DRIFTLESS_FAILPOINT=pgapply:after-commit:N (a test hook, see pgapply(1)). */
static int
parse_failpoint(struct options *o)
{
    const char *fp = getenv("DRIFTLESS_FAILPOINT");
    static const char prefix[] = "pgapply:after-commit:";
    int64_t v;

    if (fp == NULL || *fp == '\0' || strncmp(fp, "pgapply:", 8) != 0)
        return 0;
    if (strncmp(fp, prefix, sizeof(prefix) - 1) != 0)
        return err_msg(EXIT_USAGE, "DRIFTLESS_FAILPOINT: unknown failpoint '%s'", fp);
    if (opt_parse_int64(fp + sizeof(prefix) - 1, "DRIFTLESS_FAILPOINT", 1, INT64_MAX, &v) != 0)
        return EXIT_USAGE;
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
        run.program = "pgapply";
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

static void
on_signal(int sig)
{
    int saved = errno;

    io_interrupted = sig;
    if (cancel_db != NULL)
        db_cancel(cancel_db);
    errno = saved;
}

/* SIGINT and SIGTERM cancel the running statement; the batch then rolls back. */
static void
cancel_on_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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

static int
apply(const struct options *o)
{
    struct spool s;
    struct target t;
    struct counts cnt;
    struct db *d = NULL;
    struct buf json;
    long long run_id = o->run_id;
    int own_run = 0, version = 0, rc, rc2;
    double t0 = now();

    memset(&t, 0, sizeof(t));
    memset(&cnt, 0, sizeof(cnt));
    buf_init(&json);
    /* Everything is read and checked before the first connection. */
    if ((rc = spool_load(&s, o)) != 0)
        goto done;
    if ((rc = db_connect(&d, o->dsn_env, "target", DB_SESSION_WRITE, o->allow_pooler)) != 0)
        goto done;
    cancel_db = d;
    /* Notices (ours, or a target trigger's) could carry row values. */
    if ((rc = db_exec(d, "SET client_min_messages = warning")) != 0)
        goto done;
    if (!o->dry_run) {
        struct db_result *r = NULL;
        const char *p[1];
        struct buf lock;

        if ((rc = state_install(d, o->schema)) != 0)
            goto done;
        version = STATE_VERSION;
        /* One pgapply per table at a time; the lock goes with the session. */
        buf_init(&lock);
        buf_printf(&lock, "driftless.apply:%s", s.hdr.table);
        p[0] = lock.data;
        rc = db_query(d, &r, s.hdr.table,
                      "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended($1, 0))",
                      1, p);
        buf_free(&lock);
        if (rc == 0 && (db_ntuples(r) != 1 || strcmp(db_value(r, 0, 0), "t") != 0))
            rc = err_msg(EXIT_LOCKED, "table %s: another pgapply is applying it", s.hdr.table);
        db_result_free(r);
        if (rc != 0)
            goto done;
    } else if ((rc = state_version(d, o->schema, &version)) != 0) {
        goto done;
    }
    if ((rc = target_describe(d, &t, &s, o, version)) != 0)
        goto done;
    if (!o->dry_run) {
        if (run_id > 0) {
            if ((rc = state_run_exists(d, o->schema, run_id)) != 0)
                goto done;
        } else {
            struct state_run run;
            char fp[33];
            char *tables[1];

            tables[0] = t.name;
            if ((rc = state_fingerprint(d, tables, 1, NULL, fp)) != 0)
                goto done;
            memset(&run, 0, sizeof(run));
            run.program = "pgapply";
            run.tables = tables;
            run.ntables = 1;
            run.target_fp = fp;
            if ((rc = state_run_begin(d, o->schema, &run, &run_id)) != 0)
                goto done;
            own_run = 1;
        }
    }
    rc = apply_run(d, o, &s, &t, run_id, &cnt);
    stats_json(&json, s.hdr.table, &cnt, now() - t0, o->dry_run);
    if (own_run) {
        const char *status = rc == 0           ? STATE_RUN_OK
                             : rc == EXIT_DIFF ? STATE_RUN_REJECTS
                             : io_interrupted  ? STATE_RUN_INTERRUPTED
                                               : STATE_RUN_FAILED;
        int code = io_interrupted ? 128 + (int)io_interrupted : rc;

        rc2 = state_run_end(d, o->schema, run_id, status, code, json.data, cnt.skipped_batches > 0);
        if (rc == 0 || rc == EXIT_DIFF)
            rc = rc2 != 0 ? rc2 : rc;
    }
    if (o->dry_run && (rc == 0 || rc == EXIT_DIFF))
        printf("table %s: would insert %llu, update %llu, delete %llu; %llu rejected, "
               "%llu not found, %llu not owned; %llu committed batches skipped\n",
               t.name, (unsigned long long)cnt.inserted, (unsigned long long)cnt.updated,
               (unsigned long long)cnt.deleted, (unsigned long long)cnt.failed,
               (unsigned long long)cnt.not_found, (unsigned long long)cnt.not_owned,
               (unsigned long long)cnt.skipped_batches);
    if (o->stats_file != NULL && json.len > 0) {
        rc2 = write_stats(o->stats_file, json.data);
        if (rc == 0 || rc == EXIT_DIFF)
            rc = rc2 != 0 ? rc2 : rc;
    }
done:
    cancel_db = NULL;
    buf_free(&json);
    target_free(&t);
    db_close(d);
    spool_free(&s);
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
    cancel_on_signals();
    atexit(io_close_stdout);
    if ((rc = parse_options(argc, argv, &o, &ro)) != 0)
        return rc;
    if (ro.mode != MODE_APPLY)
        return run_bookkeeping(&o, &ro);
    if ((rc = parse_failpoint(&o)) != 0)
        return rc;
    rc = apply(&o);
    if (io_interrupted) {
        /* Die by the signal, as the caller expects of an interrupted filter. */
        int sig = (int)io_interrupted;

        fflush(stdout);
        signal(sig, SIG_DFL);
        raise(sig);
    }
    return rc;
}
