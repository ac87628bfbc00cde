/*
 * rowdiff: merge join of two hashed, key-ordered row streams (source and
 * target) into a change stream of inserts, updates and deletes, for pgapply.
 * Guards stop a change that is too large for its table before anything can
 * apply it: the output gets its trailer only when both inputs verified and
 * every guard passed.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
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

#define PCT_MAX   1000000.0
#define OP_COLUMN "_op"

enum { OP_INSERT, OP_UPDATE, OP_DELETE, NOPS };

static const char *const op_code[NOPS] = { RS_OP_INSERT, RS_OP_UPDATE, RS_OP_DELETE };
static const char *const op_one[NOPS] = { "insert", "update", "delete" };
static const char *const op_many[NOPS] = { "inserts", "updates", "deletes" };

static struct {
    const char *source;
    const char *target;
    const char *table;
    const char *output;
    const char *stats;
    int quiet;
    int level;
    size_t max_row;
    double guard_pct;
    int64_t guard_min;
    double op_pct[NOPS]; /* < 0: use guard_pct */
    int allow[NOPS];
    int64_t outside; /* equal rows the streams leave out (an incremental compare) */
} opt;

/* The two inputs and what the merge needs to know about their layouts. */
struct side {
    const char *name; /* "source", "target" */
    const char *path; /* as given, "-" for stdin */
    int fd;
    struct rs_reader *r;
    const struct rs_header *h;
    int hash_col;
};

static void
usage(void)
{
    printf("Usage: rowdiff [OPTION]... SOURCE TARGET\n"
           "Compare two hashed row streams by key and write the changes that make\n"
           "TARGET equal to SOURCE: inserts, updates and deletes. Either file may be -\n"
           "(standard input), not both.\n"
           "\n"
           "Options:\n"
           "  -o, --output FILE        write to FILE (through a temp file and a rename)\n"
           "      --table NAME         table named in the output (default: SOURCE's)\n"
           "      --stats FILE         write the counts to FILE as one JSON line\n"
           "  -q, --quiet              no summary line on standard error\n"
           "      --unchanged-outside N  N equal rows are left out of both streams\n"
           "                           (an incremental compare): they count as\n"
           "                           unchanged and in both row counts, guards too\n"
           "      --level N            zstd level (default: 3 for files, -5 for pipes)\n"
           "      --max-row-bytes SIZE refuse records larger than SIZE (default 256M)\n"
           "\n"
           "Guards (an operation trips when its count exceeds both limits; the base\n"
           "is TARGET's row count, the migrated rows):\n"
           "      --guard-pct P        share of the base, in percent (default 10)\n"
           "      --guard-min N        number of rows (default 100)\n"
           "      --max-inserts-pct P  the share for inserts (default: --guard-pct)\n"
           "      --max-updates-pct P  the share for updates (default: --guard-pct)\n"
           "      --max-deletes-pct P  the share for deletes (default: --guard-pct)\n"
           "      --allow-inserts      no guard on inserts\n"
           "      --allow-updates      no guard on updates\n"
           "      --allow-deletes      no guard on deletes\n"
           "      --allow-all          no guards (a planned large change)\n"
           "\n"
           "  -h, --help               display this help and exit\n"
           "  -V, --version            output version information and exit\n"
           "\n"
           "A tripped guard exits 6 and leaves the output without its trailer.\n"
           "\n" OPT_EXIT_HELP);
}

static int
parse_pct(const char *arg, const char *name, double *out)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (arg[0] == '\0' || end == arg || *end != '\0' || errno == ERANGE || !isfinite(v))
        return opt_usage_error("invalid value for %s: '%s' is not a number", name, arg);
    if (v < 0 || v > PCT_MAX)
        return opt_usage_error("invalid value for %s: %s is outside 0..%g", name, arg, PCT_MAX);
    *out = v;
    return 0;
}

static int
parse_options(int argc, char **argv)
{
    enum {
        O_TABLE = 256,
        O_STATS,
        O_LEVEL,
        O_MAX_ROW,
        O_GUARD_PCT,
        O_GUARD_MIN,
        O_INS_PCT,
        O_UPD_PCT,
        O_DEL_PCT,
        O_ALLOW_INS,
        O_ALLOW_UPD,
        O_ALLOW_DEL,
        O_ALLOW_ALL,
        O_OUTSIDE,
    };
    static const struct option longopts[] = {
        { "output", required_argument, NULL, 'o' },
        { "table", required_argument, NULL, O_TABLE },
        { "stats", required_argument, NULL, O_STATS },
        { "quiet", no_argument, NULL, 'q' },
        { "unchanged-outside", required_argument, NULL, O_OUTSIDE },
        { "level", required_argument, NULL, O_LEVEL },
        { "max-row-bytes", required_argument, NULL, O_MAX_ROW },
        { "guard-pct", required_argument, NULL, O_GUARD_PCT },
        { "guard-min", required_argument, NULL, O_GUARD_MIN },
        { "max-inserts-pct", required_argument, NULL, O_INS_PCT },
        { "max-updates-pct", required_argument, NULL, O_UPD_PCT },
        { "max-deletes-pct", required_argument, NULL, O_DEL_PCT },
        { "allow-inserts", no_argument, NULL, O_ALLOW_INS },
        { "allow-updates", no_argument, NULL, O_ALLOW_UPD },
        { "allow-deletes", no_argument, NULL, O_ALLOW_DEL },
        { "allow-all", no_argument, NULL, O_ALLOW_ALL },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c, rc = 0;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:o:qhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            opt.output = optarg;
            break;
        case O_TABLE:
            if (optarg[0] == '\0')
                return opt_usage_error("--table: the name is empty");
            opt.table = optarg;
            break;
        case O_STATS:
            opt.stats = optarg;
            break;
        case 'q':
            opt.quiet = 1;
            break;
        case O_LEVEL:
            rc = opt_parse_level(optarg, &opt.level);
            break;
        case O_MAX_ROW:
            rc = opt_parse_max_row(optarg, &opt.max_row);
            break;
        case O_GUARD_PCT:
            rc = parse_pct(optarg, "--guard-pct", &opt.guard_pct);
            break;
        case O_OUTSIDE:
            rc = opt_parse_int64(optarg, "--unchanged-outside", 0, INT64_MAX, &opt.outside);
            break;
        case O_GUARD_MIN:
            rc = opt_parse_int64(optarg, "--guard-min", 0, INT64_MAX, &opt.guard_min);
            break;
        case O_INS_PCT:
            rc = parse_pct(optarg, "--max-inserts-pct", &opt.op_pct[OP_INSERT]);
            break;
        case O_UPD_PCT:
            rc = parse_pct(optarg, "--max-updates-pct", &opt.op_pct[OP_UPDATE]);
            break;
        case O_DEL_PCT:
            rc = parse_pct(optarg, "--max-deletes-pct", &opt.op_pct[OP_DELETE]);
            break;
        case O_ALLOW_INS:
            opt.allow[OP_INSERT] = 1;
            break;
        case O_ALLOW_UPD:
            opt.allow[OP_UPDATE] = 1;
            break;
        case O_ALLOW_DEL:
            opt.allow[OP_DELETE] = 1;
            break;
        case O_ALLOW_ALL:
            for (int i = 0; i < NOPS; i++)
                opt.allow[i] = 1;
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
    if (argc - optind < 2)
        return opt_usage_error(argc - optind == 0 ? "missing SOURCE and TARGET" : "missing TARGET");
    if (argc - optind > 2)
        return opt_usage_error("too many arguments (first extra is '%s')", argv[optind + 2]);
    opt.source = argv[optind];
    opt.target = argv[optind + 1];
    if (strcmp(opt.source, "-") == 0 && strcmp(opt.target, "-") == 0)
        return opt_usage_error("SOURCE and TARGET cannot both be standard input");
    return 0;
}

static int
open_side(struct side *s)
{
    int rc;

    if ((s->fd = io_open_input(s->path)) < 0)
        return EXIT_IO;
    if ((rc = rs_reader_open(&s->r, s->fd, strcmp(s->path, "-") == 0 ? "stdin" : s->path)) != 0)
        return rc;
    rs_reader_set_max_row(s->r, opt.max_row);
    s->h = rs_reader_header(s->r);
    s->hash_col = -1;
    for (int i = 0; i < s->h->ncols; i++) {
        const struct rs_column *col = &s->h->cols[i];

        if (col->role == RS_ROLE_HASH) {
            if (s->hash_col >= 0)
                return err_msg(EXIT_DATA, "%s %s: table %s: more than one hash column", s->name,
                               s->path, s->h->table);
            s->hash_col = i;
        }
        if (col->role == RS_ROLE_OP || strcmp(col->name, OP_COLUMN) == 0)
            return err_msg(EXIT_DATA,
                           "%s %s: table %s: a change stream cannot be compared "
                           "(column \"%s\")",
                           s->name, s->path, s->h->table, col->name);
    }
    if (s->hash_col < 0)
        return err_msg(EXIT_DATA,
                       "%s %s: table %s: stream is not hashed (no \"%s\" column); "
                       "run it through rowhash first",
                       s->name, s->path, s->h->table, HASH_COLUMN);
    return 0;
}

/* Layout checks beyond rs_header_check_compatible. */
static int
check_layouts(const struct side *src, const struct side *tgt, int *key_map)
{
    const struct rs_column *hs = &src->h->cols[src->hash_col];
    const struct rs_column *ht = &tgt->h->cols[tgt->hash_col];
    int nkeys = 0, rc;

    if ((rc = rs_header_check_compatible(src->h, tgt->h, "source and target")) != 0)
        return rc;
    if (strcmp(hs->type, ht->type) != 0 || strcmp(hs->name, ht->name) != 0)
        return err_msg(EXIT_DATA, "source and target: hash columns differ (%s %s, %s %s)", hs->name,
                       hs->type, ht->name, ht->type);
    for (int i = 0; i < src->h->ncols; i++) {
        key_map[i] = -1;
        if (src->h->cols[i].role != RS_ROLE_KEY)
            continue;
        nkeys++;
        key_map[i] = rs_header_find(tgt->h, src->h->cols[i].name);
        if (key_map[i] < 0 || tgt->h->cols[key_map[i]].role != RS_ROLE_KEY)
            return err_msg(EXIT_DATA, "source and target: key \"%s\" is not a target key",
                           src->h->cols[i].name);
    }
    if (nkeys == 0)
        return err_msg(EXIT_DATA, "source %s: table %s: stream has no key columns to join by",
                       src->path, src->h->table);
    return 0;
}

static void
build_header(const struct side *src, const struct side *tgt, const char *table,
             struct rs_header *out)
{
    const struct rs_header *h = src->h;

    rs_header_init(out, RS_KIND_CHANGES, table);
    out->server_version = h->server_version;
    free(out->encoding);
    out->encoding = xstrdup(h->encoding != NULL ? h->encoding : "");
    rs_header_add_column(out, OP_COLUMN, "text", RS_ROLE_OP, RS_ORDER_NONE);
    for (int i = 0; i < h->ncols; i++)
        rs_header_add_column(out, h->cols[i].name, h->cols[i].type, h->cols[i].role,
                             h->cols[i].order);
    for (int i = 0; i < h->nhashed; i++)
        rs_header_add_hashed(out, h->hashed[i]);
    for (int i = 0; i < h->nmeta; i++)
        rs_header_set_meta(out, h->meta[i].key, h->meta[i].value);
    rs_header_set_meta(out, "target_table", tgt->h->table);
}

static int
same_hash(const struct rs_value *a, const struct rs_value *b)
{
    return a->data != NULL && b->data != NULL && a->len == b->len &&
           memcmp(a->data, b->data, a->len) == 0;
}

/* Check each guard; print every one that trips. Returns 0 or EXIT_REFUSED. */
static int
check_guards(const char *table, const uint64_t *count, uint64_t base)
{
    int rc = 0;

    for (int op = 0; op < NOPS; op++) {
        double pct = opt.op_pct[op] >= 0 ? opt.op_pct[op] : opt.guard_pct;
        uint64_t c = count[op];
        const char *what = c == 1 ? op_one[op] : op_many[op];

        if (opt.allow[op] || c <= (uint64_t)opt.guard_min)
            continue;
        if (base == 0) {
            err_msg(EXIT_REFUSED,
                    "table %s: guard: %llu %s but the target has no migrated "
                    "rows (more than %lld row%s)",
                    table, (unsigned long long)c, what, (long long)opt.guard_min,
                    opt.guard_min == 1 ? "" : "s");
            err_note("hint: for a table this run created, or one meant to be filled from "
                     "empty, run again with --allow-%s",
                     op_many[op]);
            rc = EXIT_REFUSED;
            continue;
        }
        if ((double)c * 100.0 <= pct * (double)base)
            continue;
        err_msg(EXIT_REFUSED,
                "table %s: guard: %llu %s of %llu migrated row%s (%.1f%%) "
                "exceed %g%% and %lld row%s",
                table, (unsigned long long)c, what, (unsigned long long)base, base == 1 ? "" : "s",
                (double)c * 100.0 / (double)base, pct, (long long)opt.guard_min,
                opt.guard_min == 1 ? "" : "s");
        err_note("hint: if this change is planned, run again with --allow-%s (or --allow-all)",
                 op_many[op]);
        rc = EXIT_REFUSED;
    }
    return rc;
}

static int
write_stats(const char *table, uint64_t nsrc, uint64_t ntgt, const uint64_t *count, uint64_t same)
{
    struct io_atomic a = { .fd = -1 };
    struct buf b;
    int rc;

    buf_init(&b);
    buf_puts(&b, "{\"table\":");
    buf_json_string(&b, table, strlen(table));
    buf_printf(&b,
               ",\"source_rows\":%llu,\"target_rows\":%llu,\"insert\":%llu,"
               "\"update\":%llu,\"delete\":%llu,\"unchanged\":%llu}\n",
               (unsigned long long)nsrc, (unsigned long long)ntgt,
               (unsigned long long)count[OP_INSERT], (unsigned long long)count[OP_UPDATE],
               (unsigned long long)count[OP_DELETE], (unsigned long long)same);
    if ((rc = io_atomic_open(&a, opt.stats)) == 0) {
        if (io_write_full(a.fd, b.data, b.len) != 0)
            rc = err_sys(EXIT_IO, "could not write \"%s\"", a.tmp);
        else
            rc = io_atomic_commit(&a);
    }
    io_atomic_abort(&a);
    buf_free(&b);
    return rc;
}

/*
 * The merge. Each reader's record stays valid until the next call on that
 * reader, so a row is written straight from its reader's buffer: memory is
 * one record per side.
 */
static int
diff(struct side *src, struct side *tgt, const int *key_map, struct rs_writer *w, uint64_t *count,
     uint64_t *same)
{
    const struct rs_header *hs = src->h, *ht = tgt->h;
    const struct rs_value *s = NULL, *t = NULL;
    struct rs_value *ovals;
    int rc;

    ovals = xcalloc((size_t)hs->ncols + 1, sizeof(*ovals));
    if ((rc = rs_reader_next(src->r, &s)) != 0 || (rc = rs_reader_next(tgt->r, &t)) != 0)
        goto done;
    while (s != NULL || t != NULL) {
        int cmp, op;

        if (io_interrupted)
            goto done;
        if (s == NULL)
            cmp = 1;
        else if (t == NULL)
            cmp = -1;
        else
            cmp = rs_key_cmp2(hs, s, ht, t);

        if (cmp == 0 && same_hash(&s[src->hash_col], &t[tgt->hash_col])) {
            (*same)++;
            if ((rc = rs_reader_next(src->r, &s)) != 0 || (rc = rs_reader_next(tgt->r, &t)) != 0)
                goto done;
            continue;
        }
        op = cmp < 0 ? OP_INSERT : cmp == 0 ? OP_UPDATE : OP_DELETE;
        ovals[0].data = op_code[op];
        ovals[0].len = 1;
        if (op == OP_DELETE) {
            /* The target's key and hash; its other columns are not the source's to give. */
            for (int i = 0; i < hs->ncols; i++) {
                if (key_map[i] >= 0)
                    ovals[i + 1] = t[key_map[i]];
                else if (i == src->hash_col)
                    ovals[i + 1] = t[tgt->hash_col];
                else
                    ovals[i + 1] = (struct rs_value){ NULL, 0 };
            }
        } else {
            memcpy(ovals + 1, s, (size_t)hs->ncols * sizeof(*ovals));
        }
        if ((rc = rs_writer_put(w, ovals)) != 0)
            goto done;
        count[op]++;
        if (op != OP_DELETE && (rc = rs_reader_next(src->r, &s)) != 0)
            goto done;
        if (op != OP_INSERT && (rc = rs_reader_next(tgt->r, &t)) != 0)
            goto done;
    }
done:
    free(ovals);
    return rc;
}

static int
run(struct side *src, struct side *tgt, int out_fd, const char *out_name)
{
    struct rs_header out;
    struct rs_writer *w = NULL;
    uint64_t count[NOPS] = { 0 }, same = 0, nsrc, ntgt, changes;
    const char *table;
    int *key_map = NULL;
    int rc;

    key_map = xcalloc((size_t)src->h->ncols + 1, sizeof(int));
    if ((rc = check_layouts(src, tgt, key_map)) != 0) {
        free(key_map);
        return rc;
    }
    table = opt.table != NULL ? opt.table : src->h->table;
    build_header(src, tgt, table, &out);
    if ((rc = rs_writer_open(&w, out_fd, out_name, &out, opt.level)) != 0)
        goto done;
    rs_writer_set_max_row(w, opt.max_row + 1); /* the input's limit, plus the op */
    if ((rc = diff(src, tgt, key_map, w, count, &same)) != 0 || io_interrupted)
        goto done;

    /* Both inputs are read to their verified trailers: the counts are final. */
    nsrc = rs_reader_count(src->r) + (uint64_t)opt.outside;
    ntgt = rs_reader_count(tgt->r) + (uint64_t)opt.outside;
    same += (uint64_t)opt.outside;
    changes = count[OP_INSERT] + count[OP_UPDATE] + count[OP_DELETE];
    if (opt.stats != NULL && (rc = write_stats(table, nsrc, ntgt, count, same)) != 0)
        goto done;
    if ((rc = check_guards(table, count, ntgt)) != 0)
        goto done; /* no trailer: nothing downstream can apply it */
    if ((rc = rs_writer_finish(w)) != 0)
        goto done;
    if (!opt.quiet)
        err_note("table %s: %llu insert%s, %llu update%s, %llu delete%s, %llu unchanged "
                 "(source %llu rows, target %llu rows)",
                 table, (unsigned long long)count[OP_INSERT], count[OP_INSERT] == 1 ? "" : "s",
                 (unsigned long long)count[OP_UPDATE], count[OP_UPDATE] == 1 ? "" : "s",
                 (unsigned long long)count[OP_DELETE], count[OP_DELETE] == 1 ? "" : "s",
                 (unsigned long long)same, (unsigned long long)nsrc, (unsigned long long)ntgt);
    rc = changes > 0 ? EXIT_DIFF : EXIT_OK;
done:
    if (w != NULL)
        rs_writer_free(w);
    rs_header_free(&out);
    free(key_map);
    return rc;
}

int
main(int argc, char **argv)
{
    struct side src = { .name = "source", .fd = -1 };
    struct side tgt = { .name = "target", .fd = -1 };
    struct io_atomic out = { .fd = -1 };
    int out_fd = STDOUT_FILENO, rc;

    err_init("rowdiff");
    io_signals_init();
    atexit(io_close_stdout);
    opt.level = RS_LEVEL_AUTO;
    opt.max_row = RS_DEFAULT_MAX_ROW_BYTES;
    opt.guard_pct = 10;
    opt.guard_min = 100;
    for (int i = 0; i < NOPS; i++)
        opt.op_pct[i] = -1;
    if ((rc = parse_options(argc, argv)) != 0)
        goto done;

    src.path = opt.source;
    tgt.path = opt.target;
    if ((rc = open_side(&src)) != 0 || (rc = open_side(&tgt)) != 0)
        goto done;
    if (opt.output != NULL && strcmp(opt.output, "-") != 0) {
        if ((rc = io_atomic_open(&out, opt.output)) != 0)
            goto done;
        out_fd = out.fd;
    }
    rc = run(&src, &tgt, out_fd, out_fd == STDOUT_FILENO ? "stdout" : opt.output);
    if ((rc == EXIT_OK || rc == EXIT_DIFF) && io_interrupted == 0 && out.fd >= 0) {
        int crc = io_atomic_commit(&out);

        if (crc != 0)
            rc = crc;
    }
done:
    io_atomic_abort(&out);
    if (src.r != NULL)
        rs_reader_free(src.r);
    if (tgt.r != NULL)
        rs_reader_free(tgt.r);
    if (src.fd > STDIN_FILENO)
        close(src.fd);
    if (tgt.fd > STDIN_FILENO)
        close(tgt.fd);
    if (io_interrupted) {
        /* Die by the signal, so the shell and the caller see what happened. */
        signal(io_interrupted, SIG_DFL);
        raise(io_interrupted);
    }
    return rc;
}
