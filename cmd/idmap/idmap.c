/*
 * idmap: turn a source table's rows stream (projected to the target's column
 * names) into target form: each row gets the UUID the target knows it by
 * (from the table's map, or a new random one), and foreign keys holding a
 * parent's legacy key become the parent's UUID. Sits between pgdump-rows and
 * rowhash on the source side; its --map-out is what the children read next.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "err.h"
#include "io.h"
#include "map.h"
#include "mem.h"
#include "opt.h"
#include "rs.h"

#define UUID_TYPE       "uuid"
#define UUID_LEN        36
#define MAP_UUID_COLUMN "uuid"
#define MAP_NEW_COLUMN  "new"
/* Rows named per foreign key when references dangle. */
#define MAX_EXAMPLES 10
#define KEYBUF       512

enum policy { POLICY_ERROR, POLICY_NULL, POLICY_SKIP, NPOLICIES };

static const char *const policy_name[NPOLICIES] = { "error", "null", "skip" };

/* A parent's map, loaded once however many foreign keys use it. */
struct parent {
    char *path;
    struct map *m;
    int nkeys;
    char *kinds;
    struct parent *next;
};

struct fk {
    char *spec;  /* as given, for messages */
    char **cols; /* the foreign-key columns, in the parent key's order */
    int ncols;
    char *name; /* the output column */
    char *path; /* the parent's map; NULL for self */
    int policy;

    /* Set up once the input's header is known. */
    int *pos;
    struct map *m;
    const char *kinds;
    struct rs_value *key;
    char uuid[UUID_LEN + 1];
    size_t found; /* this row's parent entry, or MAP_NONE */
    uint64_t dangling;
    int nexamples;
    char *examples[MAX_EXAMPLES];
};

static struct {
    const char *input;
    const char *output;
    const char *uuid_col;
    const char *map;
    const char *map_out;
    const char *self_keys;
    const char *table;
    const char *stats;
    struct fk *fks;
    int nfks;
    int has_self;
    int quiet;
    int level;
    size_t max_row;
} opt;

/* An input stream besides the rows. */
struct input {
    const char *path;
    const char *name;
    int fd;
    struct rs_reader *r;
    const struct rs_header *h;
};

/* Where an output column comes from. */
enum { SRC_COPY, SRC_UUID, SRC_FK };

struct outcol {
    int kind;
    int idx; /* input column (SRC_COPY) or foreign key (SRC_FK) */
};

/* Everything one run works with. */
struct run {
    const char *table; /* the output's table name, used in messages */
    const struct rs_header *h;
    const char *in_name;
    int nkeys;
    int *keypos;
    char *kinds;
    struct rs_value *rowkey;

    struct outcol *plan;
    int nout;

    struct parent *parents;
    struct map *own;     /* this table's map, with --fk COL=self */
    struct input own_in; /* --map streamed alongside the rows, otherwise */
    const struct rs_value *own_cur;
    unsigned char own_uuid[16]; /* own_cur's UUID */
    int own_uuid_col;

    uint64_t rows, written, mapped, fresh, skipped;
    uint64_t dangling[NPOLICIES];
    uint64_t self_missing;
};

static void
usage(void)
{
    printf("Usage: idmap [OPTION]... [FILE]\n"
           "Give each row of a rows stream its target UUID and turn foreign keys that\n"
           "hold a parent's legacy key into the parent's UUID. With no FILE, or when\n"
           "FILE is -, read standard input.\n"
           "\n"
           "Options:\n"
           "  -u, --uuid-column NAME   add column NAME (type uuid) after the key columns:\n"
           "                           the row's UUID from --map, or a new random one\n"
           "  -m, --map FILE           this table's existing map (legacy key -> uuid)\n"
           "      --map-out FILE       write this table's map of every written row (key,\n"
           "                           uuid, new); children read it as their parent map\n"
           "  -f, --fk SPEC            translate a foreign key (repeatable; see below)\n"
           "      --self-keys FILE     keys-only stream of this table, same snapshot;\n"
           "                           needed by --fk COL=self\n"
           "  -t, --table NAME         table named in the output (default: the input's)\n"
           "  -o, --output FILE        write to FILE (through a temp file and a rename)\n"
           "      --stats FILE         write the counts to FILE as one JSON line\n"
           "  -q, --quiet              no summary line on standard error\n"
           "      --level N            zstd level (default: 3 for files, -5 for pipes)\n"
           "      --max-row-bytes SIZE refuse records larger than SIZE (default 256M)\n"
           "  -h, --help               display this help and exit\n"
           "  -V, --version            output version information and exit\n"
           "\n"
           "Foreign keys: SPEC is COLS[=>NAME]=MAP[:POLICY]\n"
           "  COLS    the column holding the parent's legacy key, or a comma list of\n"
           "          columns for a composite key (in the order of the parent's key)\n"
           "  NAME    the uuid column that replaces them (default: the column itself;\n"
           "          required for a composite key)\n"
           "  MAP     the parent's map (its --map-out), or \"self\" for this table\n"
           "  POLICY  for a value not in the parent's map: error (the default: exit 4,\n"
           "          no trailer), null (write NULL) or skip (leave the row out)\n"
           "A NULL in any of the columns gives NULL. Columns not named by --fk pass\n"
           "through untouched (a reference to a table outside the map, auth.users).\n"
           "Example: --fk customer_id=customers.map \\\n"
           "         --fk 'shop_id,region=>shop=shops.map:null'\n"
           "\n" OPT_EXIT_HELP);
}

static void
fk_free(struct fk *fk)
{
    opt_free_list(fk->cols);
    free(fk->spec);
    free(fk->name);
    free(fk->path);
    free(fk->pos);
    free(fk->key);
    for (int i = 0; i < fk->nexamples; i++)
        free(fk->examples[i]);
}

/* Parse COLS[=>NAME]=MAP[:POLICY] into fk. Returns 0 or EXIT_USAGE after printing. */
static int
parse_fk(const char *arg, struct fk *fk)
{
    const char *p, *eq = NULL, *arrow = NULL, *rest, *colon;
    size_t restlen;

    memset(fk, 0, sizeof(*fk));
    fk->spec = xstrdup(arg);
    /* The columns end at the first '=' that does not begin "=>". */
    for (p = arg; *p != '\0'; p++) {
        if (p[0] == '=' && p[1] == '>' && arrow == NULL) {
            arrow = p++;
            continue;
        }
        if (*p == '=') {
            eq = p;
            break;
        }
    }
    if (eq == NULL || eq == arg || arrow == arg)
        return opt_usage_error("--fk: expected COLS[=>NAME]=MAP[:POLICY], got '%s'", arg);
    {
        char *cols = xstrndup(arg, (size_t)((arrow != NULL ? arrow : eq) - arg));

        fk->cols = opt_split_list(cols, &fk->ncols);
        free(cols);
    }
    for (int i = 0; i < fk->ncols; i++) {
        if (fk->cols[i][0] == '\0')
            return opt_usage_error("--fk: empty column name in '%s'", arg);
        for (int j = 0; j < i; j++)
            if (strcmp(fk->cols[i], fk->cols[j]) == 0)
                return opt_usage_error("--fk: column \"%s\" is given twice in '%s'", fk->cols[i],
                                       arg);
    }
    if (arrow != NULL) {
        fk->name = xstrndup(arrow + 2, (size_t)(eq - arrow - 2));
        if (fk->name[0] == '\0')
            return opt_usage_error("--fk: empty name after '=>' in '%s'", arg);
    } else if (fk->ncols > 1) {
        return opt_usage_error("--fk: a composite foreign key needs '=>NAME' for its uuid "
                               "column: '%s'",
                               arg);
    } else {
        fk->name = xstrdup(fk->cols[0]);
    }

    /* A suffix after the last ':' is a policy only when it names one: paths may hold ':'. */
    rest = eq + 1;
    restlen = strlen(rest);
    fk->policy = POLICY_ERROR;
    colon = strrchr(rest, ':');
    if (colon != NULL) {
        for (int i = 0; i < NPOLICIES; i++) {
            if (strcmp(colon + 1, policy_name[i]) == 0) {
                fk->policy = i;
                restlen = (size_t)(colon - rest);
            }
        }
    }
    if (restlen == 0)
        return opt_usage_error("--fk: no map file in '%s'", arg);
    fk->path = xstrndup(rest, restlen);
    if (strcmp(fk->path, "self") == 0) {
        free(fk->path);
        fk->path = NULL;
        opt.has_self = 1;
    }
    return 0;
}

static int
parse_options(int argc, char **argv)
{
    enum { O_MAP_OUT = 256, O_SELF_KEYS, O_STATS, O_LEVEL, O_MAX_ROW };
    static const struct option longopts[] = {
        { "uuid-column", required_argument, NULL, 'u' },
        { "map", required_argument, NULL, 'm' },
        { "map-out", required_argument, NULL, O_MAP_OUT },
        { "fk", required_argument, NULL, 'f' },
        { "self-keys", required_argument, NULL, O_SELF_KEYS },
        { "table", required_argument, NULL, 't' },
        { "output", required_argument, NULL, 'o' },
        { "stats", required_argument, NULL, O_STATS },
        { "quiet", no_argument, NULL, 'q' },
        { "level", required_argument, NULL, O_LEVEL },
        { "max-row-bytes", required_argument, NULL, O_MAX_ROW },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *stdin_user = NULL;
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:u:m:f:t:o:qhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            if (optarg[0] == '\0')
                return opt_usage_error("--uuid-column: empty column name");
            opt.uuid_col = optarg;
            break;
        case 'm':
            opt.map = optarg;
            break;
        case O_MAP_OUT:
            opt.map_out = optarg;
            break;
        case 'f':
            opt.fks = xrealloc(opt.fks, (size_t)(opt.nfks + 1) * sizeof(*opt.fks));
            rc = parse_fk(optarg, &opt.fks[opt.nfks]);
            opt.nfks++;
            if (rc != 0)
                return rc;
            break;
        case O_SELF_KEYS:
            opt.self_keys = optarg;
            break;
        case 't':
            opt.table = optarg;
            break;
        case 'o':
            opt.output = optarg;
            break;
        case O_STATS:
            opt.stats = optarg;
            break;
        case 'q':
            opt.quiet = 1;
            break;
        case O_LEVEL:
            if ((rc = opt_parse_level(optarg, &opt.level)) != 0)
                return rc;
            break;
        case O_MAX_ROW:
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

    if (opt.uuid_col == NULL) {
        if (opt.map != NULL)
            return opt_usage_error("--map needs --uuid-column");
        if (opt.map_out != NULL)
            return opt_usage_error("--map-out needs --uuid-column");
        if (opt.has_self)
            return opt_usage_error("--fk COL=self needs --uuid-column");
    }
    if (opt.has_self && opt.self_keys == NULL)
        return opt_usage_error("--fk COL=self needs --self-keys: a row may refer to one "
                               "that comes later");
    if (!opt.has_self && opt.self_keys != NULL)
        return opt_usage_error("--self-keys is only used with --fk COL=self");

    /* Every input is read at once: only one of them can be standard input. */
    {
        const char *inputs[4] = { opt.input, opt.map, opt.self_keys, NULL };
        const char *what[4] = { "the rows", "--map", "--self-keys", NULL };

        for (int i = 0; i < 3; i++) {
            if (i > 0 && inputs[i] == NULL)
                continue;
            if (inputs[i] != NULL && strcmp(inputs[i], "-") != 0)
                continue;
            if (stdin_user != NULL)
                return opt_usage_error("%s and %s cannot both read standard input", stdin_user,
                                       what[i]);
            stdin_user = what[i];
        }
        for (int i = 0; i < opt.nfks; i++) {
            if (opt.fks[i].path == NULL || strcmp(opt.fks[i].path, "-") != 0)
                continue;
            if (stdin_user != NULL)
                return opt_usage_error("%s and --fk %s cannot both read standard input", stdin_user,
                                       opt.fks[i].spec);
            stdin_user = "--fk";
        }
    }
    return 0;
}

/* ---- keys ---- */

/* Fill pos[] with the key columns' positions in key order and kinds[]; returns the count. */
static int
key_layout(const struct rs_header *h, int *pos, char *kinds)
{
    int n = 0;

    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        if (pos != NULL)
            pos[n] = i;
        if (kinds != NULL)
            kinds[n] = h->cols[i].order;
        n++;
    }
    return n;
}

/*
 * The stream's order check compares an integer key that does not parse as
 * text; a map cannot, so such a key is bad input here. Returns 0 or EXIT_DATA.
 */
static int
check_int_keys(const struct rs_header *h, const struct rs_value *v, const char *who, uint64_t recno)
{
    for (int i = 0; i < h->ncols; i++) {
        int64_t x;

        if (h->cols[i].role != RS_ROLE_KEY || h->cols[i].order != RS_ORDER_INT)
            continue;
        if (rs_parse_int64(v[i].data, v[i].len, &x) != 0) {
            char key[KEYBUF];

            rs_key_format(h, v, key, sizeof(key));
            return err_msg(EXIT_DATA,
                           "%s: record %llu: integer key column \"%s\" holds a "
                           "value that is not an integer: %s",
                           who, (unsigned long long)recno, h->cols[i].name, key);
        }
    }
    return 0;
}

/*
 * Check that stream b has the same key columns (names, order kinds) as the
 * rows stream a. Returns 0 or EXIT_DATA after printing.
 */
static int
same_keys(const struct rs_header *a, const char *a_name, const struct rs_header *b,
          const char *b_name)
{
    int na = key_layout(a, NULL, NULL), nb = key_layout(b, NULL, NULL);
    int *pa = xcalloc((size_t)na + 1, sizeof(int)), *pb = xcalloc((size_t)nb + 1, sizeof(int));
    int same = na == nb, rc = 0;

    key_layout(a, pa, NULL);
    key_layout(b, pb, NULL);
    for (int k = 0; same && k < na; k++)
        same = strcmp(a->cols[pa[k]].name, b->cols[pb[k]].name) == 0 &&
               a->cols[pa[k]].order == b->cols[pb[k]].order;
    if (!same) {
        struct buf da, db;

        buf_init(&da);
        buf_init(&db);
        for (int k = 0; k < na; k++)
            buf_printf(&da, "%s%s %c", k ? ", " : "", a->cols[pa[k]].name, a->cols[pa[k]].order);
        for (int k = 0; k < nb; k++)
            buf_printf(&db, "%s%s %c", k ? ", " : "", b->cols[pb[k]].name, b->cols[pb[k]].order);
        rc = err_msg(EXIT_DATA, "%s and %s: key columns differ: (%s) vs (%s)", a_name, b_name,
                     da.data != NULL ? da.data : "", db.data != NULL ? db.data : "");
        buf_free(&da);
        buf_free(&db);
    }
    free(pa);
    free(pb);
    return rc;
}

/* "(a, b)=(1, x)" for n named values, control bytes escaped. */
static void
format_values(char **names, const struct rs_value *v, int n, char *out, size_t outsz)
{
    struct rs_header tmp;

    /* rs_key_format already prints and escapes keys: describe the values as one. */
    rs_header_init(&tmp, RS_KIND_ROWS, "");
    for (int i = 0; i < n; i++)
        rs_header_add_column(&tmp, names[i], "text", RS_ROLE_KEY, RS_ORDER_TEXT);
    rs_key_format(&tmp, v, out, outsz);
    rs_header_free(&tmp);
}

/* ---- inputs ---- */

static int
input_open(struct input *in, const char *path)
{
    int rc;

    in->path = path;
    in->name = (path == NULL || strcmp(path, "-") == 0) ? "stdin" : path;
    if ((in->fd = io_open_input(path)) < 0)
        return EXIT_IO;
    if ((rc = rs_reader_open(&in->r, in->fd, in->name)) != 0)
        return rc;
    rs_reader_set_max_row(in->r, opt.max_row);
    in->h = rs_reader_header(in->r);
    return 0;
}

static void
input_close(struct input *in)
{
    if (in->r != NULL)
        rs_reader_free(in->r);
    if (in->fd > STDIN_FILENO)
        close(in->fd);
    in->r = NULL;
    in->fd = -1;
}

/*
 * Check a map stream's header: kind 'M' (or 'R'), key columns, a "uuid"
 * column. Sets *uuid_col. Returns 0 or EXIT_DATA after printing.
 */
static int
check_map_header(const struct input *in, int *uuid_col)
{
    const struct rs_header *h = in->h;

    if (h->kind != RS_KIND_MAP && h->kind != RS_KIND_ROWS)
        return err_msg(EXIT_DATA, "map %s: not a map or rows stream (kind '%c')", in->name,
                       h->kind);
    if (key_layout(h, NULL, NULL) == 0)
        return err_msg(EXIT_DATA, "map %s: no key columns", in->name);
    *uuid_col = rs_header_find(h, MAP_UUID_COLUMN);
    if (*uuid_col < 0 || h->cols[*uuid_col].role == RS_ROLE_KEY)
        return err_msg(EXIT_DATA, "map %s: no data column \"%s\"", in->name, MAP_UUID_COLUMN);
    return 0;
}

/* Read one map record: keys checked, its UUID parsed. *vals NULL at the end. */
static int
map_next(struct input *in, int uuid_col, const struct rs_value **vals, unsigned char *uuid)
{
    int rc;

    if ((rc = rs_reader_next(in->r, vals)) != 0 || *vals == NULL)
        return rc;
    if ((rc = check_int_keys(in->h, *vals, in->name, rs_reader_count(in->r))) != 0)
        return rc;
    if (map_uuid_parse((*vals)[uuid_col].data, (*vals)[uuid_col].len, uuid) != 0) {
        char key[KEYBUF];

        rs_key_format(in->h, *vals, key, sizeof(key));
        return err_msg(EXIT_DATA, "map %s: record %llu: key %s: %s", in->name,
                       (unsigned long long)rs_reader_count(in->r), key,
                       (*vals)[uuid_col].data == NULL ? "the uuid is NULL"
                                                      : "the uuid is not a valid UUID");
    }
    return 0;
}

/* Gather the key columns pos[0..n) of a record into key[]. */
static void
gather(const struct rs_value *vals, const int *pos, int n, struct rs_value *key)
{
    for (int i = 0; i < n; i++)
        key[i] = vals[pos[i]];
}

static int
map_add_checked(struct map *m, const struct rs_value *key, const unsigned char *uuid,
                unsigned flags, const char *who)
{
    int e = map_add(m, key, uuid, flags);

    if (e == MAP_EFULL)
        return err_msg(EXIT_INTERNAL, "%s: more than %zu entries in one map", who,
                       (size_t)MAP_MAX_ENTRIES);
    if (e != 0)
        return err_msg(EXIT_INTERNAL, "%s: could not add a map entry", who);
    return 0;
}

static int
freeze_checked(struct map *m, const char *who)
{
    size_t dup = 0;
    char key[KEYBUF];

    /* Unreachable for a stream that passed the order check; kept as a guard. */
    if (map_freeze(m, &dup) != 0) {
        map_key_format(m, dup, key, sizeof(key));
        return err_msg(EXIT_DATA, "%s: duplicate key (%s)", who, key);
    }
    return 0;
}

/* Load a parent's map. Returns 0 or an exit code after printing. */
static int
load_parent(const char *path, struct parent **out)
{
    struct input in = { .fd = -1 };
    struct parent *p = xcalloc(1, sizeof(*p));
    const struct rs_value *vals;
    struct rs_value *key = NULL;
    int *pos = NULL, uuid_col, rc;
    unsigned char uuid[16];
    char who[600];

    p->path = xstrdup(path);
    *out = p;
    if ((rc = input_open(&in, path)) != 0 || (rc = check_map_header(&in, &uuid_col)) != 0)
        goto done;
    snprintf(who, sizeof(who), "map %s", in.name);
    p->nkeys = key_layout(in.h, NULL, NULL);
    p->kinds = xcalloc((size_t)p->nkeys + 1, 1);
    pos = xcalloc((size_t)p->nkeys, sizeof(int));
    key = xcalloc((size_t)p->nkeys, sizeof(*key));
    key_layout(in.h, pos, p->kinds);
    p->m = map_new(p->nkeys, p->kinds);
    for (;;) {
        if (io_interrupted)
            goto done;
        if ((rc = map_next(&in, uuid_col, &vals, uuid)) != 0 || vals == NULL)
            break;
        gather(vals, pos, p->nkeys, key);
        if ((rc = map_add_checked(p->m, key, uuid, 0, who)) != 0)
            goto done;
    }
    if (rc == 0)
        rc = freeze_checked(p->m, who);
done:
    input_close(&in);
    free(pos);
    free(key);
    return rc;
}

static void
parents_free(struct parent *p)
{
    while (p != NULL) {
        struct parent *next = p->next;

        map_free(p->m);
        free(p->kinds);
        free(p->path);
        free(p);
        p = next;
    }
}

/*
 * A version 4 UUID from the system CSPRNG. getrandom is called for 256 UUIDs
 * at a time: libuuid's uuid_generate_random makes six system calls per UUID,
 * which is most of idmap's time on a table of new rows. libuuid remains the
 * fallback where getrandom is missing or fails.
 */
static void
new_uuid(unsigned char *uuid)
{
    static unsigned char pool[16 * 256];
    static size_t left;

    if (left == 0) {
        size_t got = 0;

        while (got < sizeof(pool)) {
            ssize_t n = getrandom(pool + got, sizeof(pool) - got, 0);

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < sizeof(pool)) {
            uuid_generate_random(uuid);
            return;
        }
        left = sizeof(pool);
    }
    memcpy(uuid, pool + sizeof(pool) - left, 16);
    explicit_bzero(pool + sizeof(pool) - left, 16);
    left -= 16;
    uuid[6] = (unsigned char)((uuid[6] & 0x0f) | 0x40); /* version 4 */
    uuid[8] = (unsigned char)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

/*
 * With a self-reference: this table's map in memory, one entry per key of
 * --self-keys, the UUID from --map or a new one. Both streams are sorted by
 * the same key, so they merge. Returns 0 or an exit code after printing.
 */
static int
build_own_map(struct run *run)
{
    struct input sk = { .fd = -1 }, mp = { .fd = -1 };
    const struct rs_value *s = NULL, *m = NULL;
    int *spos = NULL, uuid_col = -1, rc;
    unsigned char uuid[16], muuid[16];
    char who[600];

    if ((rc = input_open(&sk, opt.self_keys)) != 0)
        goto done;
    if ((rc = same_keys(run->h, run->in_name, sk.h, sk.name)) != 0)
        goto done;
    if (opt.map != NULL) {
        if ((rc = input_open(&mp, opt.map)) != 0 || (rc = check_map_header(&mp, &uuid_col)) != 0)
            goto done;
        if ((rc = same_keys(run->h, run->in_name, mp.h, mp.name)) != 0)
            goto done;
        if ((rc = map_next(&mp, uuid_col, &m, muuid)) != 0)
            goto done;
    }
    snprintf(who, sizeof(who), "table %s: self keys %s", run->table, sk.name);
    spos = xcalloc((size_t)run->nkeys, sizeof(int));
    key_layout(sk.h, spos, NULL);
    run->own = map_new(run->nkeys, run->kinds);
    for (;;) {
        int c = 1;

        if (io_interrupted)
            goto done;
        if ((rc = rs_reader_next(sk.r, &s)) != 0)
            goto done;
        if (s == NULL)
            break;
        if ((rc = check_int_keys(sk.h, s, sk.name, rs_reader_count(sk.r))) != 0)
            goto done;
        /* Map entries below this key belong to rows gone from the source. */
        while (m != NULL && (c = rs_key_cmp2(sk.h, s, mp.h, m)) > 0)
            if ((rc = map_next(&mp, uuid_col, &m, muuid)) != 0)
                goto done;
        gather(s, spos, run->nkeys, run->rowkey);
        if (m != NULL && c == 0) {
            rc = map_add_checked(run->own, run->rowkey, muuid, 0, who);
        } else {
            new_uuid(uuid);
            rc = map_add_checked(run->own, run->rowkey, uuid, MAP_NEW, who);
        }
        if (rc != 0)
            goto done;
    }
    /* Read the map to its trailer: a truncated map would reissue UUIDs. */
    while (m != NULL)
        if ((rc = map_next(&mp, uuid_col, &m, muuid)) != 0)
            goto done;
    rc = freeze_checked(run->own, who);
done:
    input_close(&sk);
    input_close(&mp);
    free(spos);
    return rc;
}

/* ---- the output's layout ---- */

static int
fk_of_column(int col, int *which)
{
    for (int f = 0; f < opt.nfks; f++)
        for (int k = 0; k < opt.fks[f].ncols; k++)
            if (opt.fks[f].pos[k] == col) {
                *which = k;
                return f;
            }
    return -1;
}

/*
 * Resolve the --fk columns against the input's header and lay out the output:
 * the input's columns in order, the uuid column right after the last key
 * column, each foreign key's uuid column where its first column was. Fills
 * out. Returns 0 or an exit code after printing.
 */
static int
plan_output(struct run *run, struct rs_header *out)
{
    const struct rs_header *h = run->h;
    int last_key = run->keypos[run->nkeys - 1];

    for (int f = 0; f < opt.nfks; f++) {
        struct fk *fk = &opt.fks[f];

        fk->pos = xcalloc((size_t)fk->ncols, sizeof(int));
        fk->key = xcalloc((size_t)fk->ncols, sizeof(*fk->key));
        for (int k = 0; k < fk->ncols; k++)
            fk->pos[k] = -1;
    }
    for (int f = 0; f < opt.nfks; f++) {
        struct fk *fk = &opt.fks[f];

        for (int k = 0; k < fk->ncols; k++) {
            int c = rs_header_find(h, fk->cols[k]), other = -1, which;

            if (c < 0)
                return opt_usage_error("--fk %s: table %s has no column \"%s\"", fk->spec,
                                       run->table, fk->cols[k]);
            if (h->cols[c].role != RS_ROLE_DATA)
                return opt_usage_error("--fk %s: column \"%s\" is a key column; the legacy "
                                       "key stays as it is",
                                       fk->spec, fk->cols[k]);
            other = fk_of_column(c, &which);
            if (other >= 0)
                return opt_usage_error("--fk %s: column \"%s\" is already translated by "
                                       "--fk %s",
                                       fk->spec, fk->cols[k], opt.fks[other].spec);
            fk->pos[k] = c;
        }
    }

    run->plan = xcalloc((size_t)h->ncols + 2, sizeof(*run->plan));
    run->nout = 0;
    rs_header_init(out, RS_KIND_ROWS, run->table);
    out->server_version = h->server_version;
    free(out->encoding);
    out->encoding = xstrdup(h->encoding != NULL ? h->encoding : "");
    for (int i = 0; i < h->nmeta; i++)
        rs_header_set_meta(out, h->meta[i].key, h->meta[i].value);
    for (int i = 0; i < h->ncols; i++) {
        const struct rs_column *col = &h->cols[i];
        int which, f = fk_of_column(i, &which);

        if (f < 0) {
            rs_header_add_column(out, col->name, col->type, col->role, col->order);
            run->plan[run->nout++] = (struct outcol){ SRC_COPY, i };
        } else if (which == 0) {
            rs_header_add_column(out, opt.fks[f].name, UUID_TYPE, RS_ROLE_DATA, RS_ORDER_NONE);
            run->plan[run->nout++] = (struct outcol){ SRC_FK, f };
        }
        if (i == last_key && opt.uuid_col != NULL) {
            rs_header_add_column(out, opt.uuid_col, UUID_TYPE, RS_ROLE_DATA, RS_ORDER_NONE);
            run->plan[run->nout++] = (struct outcol){ SRC_UUID, 0 };
        }
    }
    for (int i = 0; i < out->ncols; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(out->cols[i].name, out->cols[j].name) == 0)
                return opt_usage_error("table %s: the output would have two columns named "
                                       "\"%s\"",
                                       run->table, out->cols[i].name);
    return 0;
}

/* Load every parent map once and tie each foreign key to its map. */
static int
attach_maps(struct run *run)
{
    int rc;

    for (int f = 0; f < opt.nfks; f++) {
        struct fk *fk = &opt.fks[f];
        struct parent *p;
        int nkeys;

        if (fk->path == NULL)
            continue;
        for (p = run->parents; p != NULL; p = p->next)
            if (strcmp(p->path, fk->path) == 0)
                break;
        if (p == NULL) {
            rc = load_parent(fk->path, &p);
            p->next = run->parents;
            run->parents = p;
            if (rc != 0)
                return rc;
        }
        nkeys = p->nkeys;
        if (nkeys != fk->ncols)
            return err_msg(EXIT_DATA,
                           "table %s: --fk %s: the map has %d key column%s, the "
                           "foreign key %d",
                           run->table, fk->spec, nkeys, nkeys == 1 ? "" : "s", fk->ncols);
        fk->m = p->m;
        fk->kinds = p->kinds;
    }
    if (opt.has_self && (rc = build_own_map(run)) != 0)
        return rc;
    for (int f = 0; f < opt.nfks; f++) {
        struct fk *fk = &opt.fks[f];

        if (fk->path != NULL)
            continue;
        if (fk->ncols != run->nkeys)
            return opt_usage_error("--fk %s: table %s has %d key column%s, the foreign key %d",
                                   fk->spec, run->table, run->nkeys, run->nkeys == 1 ? "" : "s",
                                   fk->ncols);
        fk->m = run->own;
        fk->kinds = run->kinds;
    }
    return 0;
}

/* ---- the pass over the rows ---- */

/* This row's UUID from the --map stream, which advances alongside the rows. */
static int
own_from_stream(struct run *run, const struct rs_value *row, unsigned char *uuid, int *is_new)
{
    int c = 1, rc;

    /* Map entries below this key belong to rows gone from the source. */
    while (run->own_cur != NULL && (c = rs_key_cmp2(run->h, row, run->own_in.h, run->own_cur)) > 0)
        if ((rc = map_next(&run->own_in, run->own_uuid_col, &run->own_cur, run->own_uuid)) != 0)
            return rc;
    if (run->own_cur != NULL && c == 0) {
        memcpy(uuid, run->own_uuid, 16);
        *is_new = 0;
        return 0;
    }
    new_uuid(uuid);
    *is_new = 1;
    return 0;
}

static void
note_dangling(struct run *run, struct fk *fk, const struct rs_value *row)
{
    char key[KEYBUF], val[KEYBUF];
    struct buf b;

    run->dangling[fk->policy]++;
    fk->dangling++;
    if (fk->policy != POLICY_ERROR || fk->nexamples >= MAX_EXAMPLES)
        return;
    rs_key_format(run->h, row, key, sizeof(key));
    format_values(fk->cols, fk->key, fk->ncols, val, sizeof(val));
    buf_init(&b);
    buf_printf(&b, "row %s: %s", key, val);
    fk->examples[fk->nexamples++] = b.data;
}

static int
report_dangling(struct run *run)
{
    for (int f = 0; f < opt.nfks; f++) {
        struct fk *fk = &opt.fks[f];
        struct buf cols;

        if (fk->policy != POLICY_ERROR || fk->dangling == 0)
            continue;
        buf_init(&cols);
        for (int k = 0; k < fk->ncols; k++)
            buf_printf(&cols, "%s%s", k ? "," : "", fk->cols[k]);
        err_msg(EXIT_DATA, "table %s: column %s: %llu row%s refer%s to a key not in %s", run->table,
                cols.data, (unsigned long long)fk->dangling, fk->dangling == 1 ? "" : "s",
                fk->dangling == 1 ? "s" : "",
                fk->path != NULL ? fk->path : "this table's --self-keys");
        buf_free(&cols);
        for (int i = 0; i < fk->nexamples; i++)
            err_note("detail: %s", fk->examples[i]);
        if (fk->dangling > (uint64_t)fk->nexamples)
            err_note("detail: and %llu more",
                     (unsigned long long)(fk->dangling - (uint64_t)fk->nexamples));
    }
    err_note("hint: read every parent in the same snapshot, or allow it with :null or :skip "
             "in --fk");
    return EXIT_DATA;
}

/*
 * A self-reference resolved to a row that was then left out (skipped, or in
 * --self-keys but not in the rows) would point at nothing. Returns 0 or EXIT_DATA.
 */
static int
check_self_targets(struct run *run)
{
    size_t n = map_count(run->own);
    uint64_t bad = 0;
    char key[KEYBUF];

    for (size_t i = 0; i < n; i++) {
        if ((map_flags(run->own, i) & (MAP_REF | MAP_DONE)) != MAP_REF)
            continue;
        if (bad++ < MAX_EXAMPLES) {
            map_key_format(run->own, i, key, sizeof(key));
            if (bad == 1)
                err_msg(EXIT_DATA,
                        "table %s: rows refer to rows of this table that were "
                        "not written (skipped, or not in the rows stream)",
                        run->table);
            err_note("detail: key (%s)", key);
        }
    }
    if (bad > MAX_EXAMPLES)
        err_note("detail: and %llu more", (unsigned long long)(bad - MAX_EXAMPLES));
    return bad > 0 ? EXIT_DATA : 0;
}

/* Translate one foreign key of row into fk->uuid; returns the value to write. */
static struct rs_value
translate_fk(struct run *run, struct fk *fk, const struct rs_value *row, int *skip, int *fail)
{
    gather(row, fk->pos, fk->ncols, fk->key);
    fk->found = MAP_NONE;
    /* MATCH SIMPLE: a NULL in any column means no reference. */
    for (int k = 0; k < fk->ncols; k++)
        if (fk->key[k].data == NULL)
            return (struct rs_value){ NULL, 0 };
    fk->found = map_find(fk->m, fk->key);
    if (fk->found != MAP_NONE) {
        map_uuid_format(map_uuid(fk->m, fk->found), fk->uuid);
        return (struct rs_value){ fk->uuid, UUID_LEN };
    }
    note_dangling(run, fk, row);
    if (fk->policy == POLICY_SKIP)
        *skip = 1;
    else if (fk->policy == POLICY_ERROR)
        *fail = 1;
    return (struct rs_value){ NULL, 0 };
}

static int
map_rows(struct run *run, struct rs_reader *r, struct rs_writer *w, struct rs_writer *mw)
{
    struct rs_value *ovals = xcalloc((size_t)run->nout + 1, sizeof(*ovals));
    struct rs_value *mvals = xcalloc((size_t)run->nkeys + 2, sizeof(*mvals));
    struct rs_value *fkv = xcalloc((size_t)opt.nfks + 1, sizeof(*fkv));
    unsigned char uuid[16];
    char own_text[UUID_LEN + 1];
    size_t next_own = 0;
    int failed = 0, rc = 0;

    for (;;) {
        const struct rs_value *row;
        size_t own_i = MAP_NONE;
        int is_new = 0, skip = 0;

        if (io_interrupted)
            goto done;
        if ((rc = rs_reader_next(r, &row)) != 0)
            goto done;
        if (row == NULL)
            break;
        run->rows++;
        if ((rc = check_int_keys(run->h, row, run->in_name, run->rows)) != 0)
            goto done;
        gather(row, run->keypos, run->nkeys, run->rowkey);

        if (run->own != NULL) {
            /* Rows and --self-keys share their order: the next entry is usually this row's. */
            own_i = map_find_hint(run->own, run->rowkey, next_own);
            next_own = own_i + 1;
            if (own_i == MAP_NONE) {
                char key[KEYBUF];

                rs_key_format(run->h, row, key, sizeof(key));
                rc = err_msg(EXIT_DATA,
                             "table %s: row %s is not in --self-keys %s (not the "
                             "same snapshot?)",
                             run->table, key, opt.self_keys);
                goto done;
            }
            memcpy(uuid, map_uuid(run->own, own_i), 16);
            is_new = (map_flags(run->own, own_i) & MAP_NEW) != 0;
        } else if (opt.uuid_col != NULL) {
            if ((rc = own_from_stream(run, row, uuid, &is_new)) != 0)
                goto done;
        }
        if (opt.uuid_col != NULL)
            map_uuid_format(uuid, own_text);

        for (int f = 0; f < opt.nfks; f++)
            fkv[f] = translate_fk(run, &opt.fks[f], row, &skip, &failed);
        if (skip) {
            run->skipped++;
            continue;
        }
        /* After the first dangling error nothing more is written; the rest is counted. */
        if (failed)
            continue;

        for (int i = 0; i < run->nout; i++) {
            const struct outcol *oc = &run->plan[i];

            if (oc->kind == SRC_COPY)
                ovals[i] = row[oc->idx];
            else if (oc->kind == SRC_UUID)
                ovals[i] = (struct rs_value){ own_text, UUID_LEN };
            else
                ovals[i] = fkv[oc->idx];
        }
        if ((rc = rs_writer_put(w, ovals)) != 0)
            goto done;
        run->written++;
        if (opt.uuid_col != NULL) {
            if (is_new)
                run->fresh++;
            else
                run->mapped++;
        }
        if (run->own != NULL) {
            map_set_flags(run->own, own_i, MAP_DONE);
            for (int f = 0; f < opt.nfks; f++)
                if (opt.fks[f].path == NULL && opt.fks[f].found != MAP_NONE)
                    map_set_flags(run->own, opt.fks[f].found, MAP_REF);
        }
        if (mw != NULL) {
            for (int k = 0; k < run->nkeys; k++)
                mvals[k] = run->rowkey[k];
            mvals[run->nkeys] = (struct rs_value){ own_text, UUID_LEN };
            mvals[run->nkeys + 1] = (struct rs_value){ is_new ? "t" : "f", 1 };
            if ((rc = rs_writer_put(mw, mvals)) != 0)
                goto done;
        }
    }
    /* Read the map to its trailer: a truncated map would have reissued UUIDs. */
    while (run->own_cur != NULL)
        if ((rc = map_next(&run->own_in, run->own_uuid_col, &run->own_cur, run->own_uuid)) != 0)
            goto done;
done:
    free(ovals);
    free(mvals);
    free(fkv);
    return rc;
}

/* ---- stats ---- */

static void
map_totals(const struct run *run, uint64_t *entries, uint64_t *bytes)
{
    *entries = 0;
    *bytes = 0;
    for (const struct parent *p = run->parents; p != NULL; p = p->next) {
        *entries += map_count(p->m);
        *bytes += map_peak_bytes(p->m);
    }
    if (run->own != NULL) {
        *entries += map_count(run->own);
        *bytes += map_peak_bytes(run->own);
    }
}

static int
write_stats(const struct run *run)
{
    struct io_atomic a = { .fd = -1 };
    uint64_t entries, bytes;
    struct buf b;
    int rc;

    map_totals(run, &entries, &bytes);
    buf_init(&b);
    buf_puts(&b, "{\"table\":");
    buf_json_string(&b, run->table, strlen(run->table));
    buf_printf(&b,
               ",\"rows\":%llu,\"written\":%llu,\"mapped\":%llu,\"new\":%llu,"
               "\"dangling_error\":%llu,\"dangling_null\":%llu,\"dangling_skip\":%llu,"
               "\"skipped_rows\":%llu,\"map_entries\":%llu,\"map_bytes\":%llu,"
               "\"bytes_per_entry\":%.1f}\n",
               (unsigned long long)run->rows, (unsigned long long)run->written,
               (unsigned long long)run->mapped, (unsigned long long)run->fresh,
               (unsigned long long)run->dangling[POLICY_ERROR],
               (unsigned long long)run->dangling[POLICY_NULL],
               (unsigned long long)run->dangling[POLICY_SKIP], (unsigned long long)run->skipped,
               (unsigned long long)entries, (unsigned long long)bytes,
               entries > 0 ? (double)bytes / (double)entries : 0.0);
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

static void
print_summary(const struct run *run)
{
    uint64_t entries, bytes;

    map_totals(run, &entries, &bytes);
    err_note("table %s: %llu row%s, %llu written (%llu mapped, %llu new), dangling "
             "%llu null, %llu skipped; maps %llu entries, %.1f bytes each",
             run->table, (unsigned long long)run->rows, run->rows == 1 ? "" : "s",
             (unsigned long long)run->written, (unsigned long long)run->mapped,
             (unsigned long long)run->fresh, (unsigned long long)run->dangling[POLICY_NULL],
             (unsigned long long)run->dangling[POLICY_SKIP], (unsigned long long)entries,
             entries > 0 ? (double)bytes / (double)entries : 0.0);
}

/* ---- main ---- */

static void
map_out_header(const struct run *run, struct rs_header *mh)
{
    rs_header_init(mh, RS_KIND_MAP, run->table);
    mh->server_version = run->h->server_version;
    free(mh->encoding);
    mh->encoding = xstrdup(run->h->encoding != NULL ? run->h->encoding : "");
    for (int k = 0; k < run->nkeys; k++) {
        const struct rs_column *c = &run->h->cols[run->keypos[k]];

        rs_header_add_column(mh, c->name, c->type, RS_ROLE_KEY, c->order);
    }
    rs_header_add_column(mh, MAP_UUID_COLUMN, UUID_TYPE, RS_ROLE_DATA, RS_ORDER_NONE);
    rs_header_add_column(mh, MAP_NEW_COLUMN, "boolean", RS_ROLE_DATA, RS_ORDER_NONE);
}

/* Check the rows stream's header and set up run's key layout. */
static int
check_rows_header(struct run *run)
{
    const struct rs_header *h = run->h;

    if (h->kind != RS_KIND_ROWS)
        return err_msg(EXIT_DATA, "%s: table %s: not a rows stream (kind '%c')", run->in_name,
                       h->table, h->kind);
    for (int i = 0; i < h->ncols; i++)
        if (h->cols[i].role == RS_ROLE_HASH || h->cols[i].role == RS_ROLE_OP)
            return err_msg(EXIT_DATA,
                           "%s: table %s: column \"%s\" is a hash or operation; "
                           "idmap reads plain rows (run it before rowhash)",
                           run->in_name, h->table, h->cols[i].name);
    if (h->nhashed > 0)
        return err_msg(EXIT_DATA,
                       "%s: table %s: stream is hashed; idmap reads plain rows "
                       "(run it before rowhash)",
                       run->in_name, h->table);
    run->nkeys = key_layout(h, NULL, NULL);
    if (run->nkeys == 0)
        return err_msg(EXIT_DATA, "%s: table %s: no key columns", run->in_name, h->table);
    run->keypos = xcalloc((size_t)run->nkeys, sizeof(int));
    run->kinds = xcalloc((size_t)run->nkeys + 1, 1);
    run->rowkey = xcalloc((size_t)run->nkeys, sizeof(*run->rowkey));
    key_layout(h, run->keypos, run->kinds);
    return 0;
}

static int
run_all(struct run *run, struct rs_reader *r, int out_fd, const char *out_name)
{
    struct rs_header out = { 0 }, mh = { 0 };
    struct rs_writer *w = NULL, *mw = NULL;
    struct io_atomic mo = { .fd = -1 };
    size_t extra = (size_t)(opt.nfks + 1) * (UUID_LEN + 16);
    int rc;

    if ((rc = check_rows_header(run)) != 0 || (rc = plan_output(run, &out)) != 0)
        goto done;
    if ((rc = attach_maps(run)) != 0 || io_interrupted)
        goto done;
    if (opt.map != NULL && !opt.has_self) {
        if ((rc = input_open(&run->own_in, opt.map)) != 0 ||
            (rc = check_map_header(&run->own_in, &run->own_uuid_col)) != 0 ||
            (rc = same_keys(run->h, run->in_name, run->own_in.h, run->own_in.name)) != 0)
            goto done;
        if ((rc = map_next(&run->own_in, run->own_uuid_col, &run->own_cur, run->own_uuid)) != 0)
            goto done;
    }

    if ((rc = rs_writer_open(&w, out_fd, out_name, &out, opt.level)) != 0)
        goto done;
    rs_writer_set_max_row(w, opt.max_row + extra);
    if (opt.map_out != NULL) {
        map_out_header(run, &mh);
        if ((rc = io_atomic_open(&mo, opt.map_out)) != 0 ||
            (rc = rs_writer_open(&mw, mo.fd, opt.map_out, &mh, opt.level)) != 0)
            goto done;
        rs_writer_set_max_row(mw, opt.max_row + extra);
    }

    if ((rc = map_rows(run, r, w, mw)) != 0 || io_interrupted)
        goto done;
    /* Every input is read to its verified trailer: the counts are final. */
    if (opt.stats != NULL) {
        int src = write_stats(run);

        if (src != 0) {
            rc = src;
            goto done;
        }
    }
    if (run->dangling[POLICY_ERROR] > 0) {
        rc = report_dangling(run); /* no trailer: nothing downstream can apply it */
        goto done;
    }
    if (run->own != NULL && (rc = check_self_targets(run)) != 0)
        goto done;
    if ((rc = rs_writer_finish(w)) != 0)
        goto done;
    if (mw != NULL) {
        if ((rc = rs_writer_finish(mw)) != 0 || (rc = io_atomic_commit(&mo)) != 0)
            goto done;
    }
    if (!opt.quiet)
        print_summary(run);
done:
    if (w != NULL)
        rs_writer_free(w);
    if (mw != NULL)
        rs_writer_free(mw);
    io_atomic_abort(&mo);
    rs_header_free(&out);
    rs_header_free(&mh);
    return rc;
}

static void
run_free(struct run *run)
{
    parents_free(run->parents);
    map_free(run->own);
    input_close(&run->own_in);
    free(run->keypos);
    free(run->kinds);
    free(run->rowkey);
    free(run->plan);
}

int
main(int argc, char **argv)
{
    struct run run = { .own_in = { .fd = -1 } };
    struct rs_reader *r = NULL;
    struct io_atomic out = { .fd = -1 };
    int in_fd = -1, out_fd = STDOUT_FILENO, rc;

    err_init("idmap");
    io_signals_init();
    atexit(io_close_stdout);
    opt.level = RS_LEVEL_AUTO;
    opt.max_row = RS_DEFAULT_MAX_ROW_BYTES;
    if ((rc = parse_options(argc, argv)) != 0)
        goto done;

    run.in_name = (opt.input == NULL || strcmp(opt.input, "-") == 0) ? "stdin" : opt.input;
    if ((in_fd = io_open_input(opt.input)) < 0) {
        rc = EXIT_IO;
        goto done;
    }
    if ((rc = rs_reader_open(&r, in_fd, run.in_name)) != 0)
        goto done;
    rs_reader_set_max_row(r, opt.max_row);
    run.h = rs_reader_header(r);
    run.table = opt.table != NULL ? opt.table : run.h->table;
    if (opt.output != NULL && strcmp(opt.output, "-") != 0) {
        if ((rc = io_atomic_open(&out, opt.output)) != 0)
            goto done;
        out_fd = out.fd;
    }
    rc = run_all(&run, r, out_fd, out_fd == STDOUT_FILENO ? "stdout" : opt.output);
    if (rc == 0 && io_interrupted == 0 && out.fd >= 0)
        rc = io_atomic_commit(&out);
done:
    io_atomic_abort(&out);
    run_free(&run);
    if (r != NULL)
        rs_reader_free(r);
    if (in_fd > STDIN_FILENO)
        close(in_fd);
    for (int i = 0; i < opt.nfks; i++)
        fk_free(&opt.fks[i]);
    free(opt.fks);
    if (io_interrupted) {
        /* Die by the signal, so the shell and the caller see what happened. */
        signal(io_interrupted, SIG_DFL);
        raise(io_interrupted);
    }
    return rc;
}
