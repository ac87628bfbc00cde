/*
 * The row-stream codec: a writer and a reader over zstd streaming compression.
 * Layout inside the one zstd frame (little-endian, varints are LEB128):
 *   "DLRS" version(1) header, then records 'r' values..., then trailer
 *   't' varint(count) u64(XXH3-64 of every byte before the trailer tag).
 * A value is varint(len + 1) then len bytes; varint 0 is SQL NULL.
 */
#include "rs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "err.h"
#include "io.h"
#include "mem.h"

#define MAGIC      "DLRS"
#define TAG_RECORD 'r'
#define TAG_TRAIL  't'
#define MAX_NAME   65536 /* header strings */
#define MAX_COLS   4096

/* ---- header ---- */

void
rs_header_init(struct rs_header *h, char kind, const char *table)
{
    memset(h, 0, sizeof(*h));
    h->kind = kind;
    h->table = xstrdup(table ? table : "");
    h->encoding = xstrdup("");
}

int
rs_header_add_column(struct rs_header *h, const char *name, const char *type, char role, char order)
{
    struct rs_column *c;

    h->cols = xrealloc(h->cols, sizeof(*h->cols) * (size_t)(h->ncols + 1));
    c = &h->cols[h->ncols];
    c->name = xstrdup(name);
    c->type = xstrdup(type ? type : "text");
    c->role = role;
    c->order = role == RS_ROLE_KEY ? order : RS_ORDER_NONE;
    return h->ncols++;
}

void
rs_header_add_hashed(struct rs_header *h, const char *name)
{
    h->hashed = xrealloc(h->hashed, sizeof(char *) * (size_t)(h->nhashed + 1));
    h->hashed[h->nhashed++] = xstrdup(name);
}

void
rs_header_set_meta(struct rs_header *h, const char *key, const char *value)
{
    for (int i = 0; i < h->nmeta; i++) {
        if (strcmp(h->meta[i].key, key) == 0) {
            free(h->meta[i].value);
            h->meta[i].value = xstrdup(value);
            return;
        }
    }
    h->meta = xrealloc(h->meta, sizeof(*h->meta) * (size_t)(h->nmeta + 1));
    h->meta[h->nmeta].key = xstrdup(key);
    h->meta[h->nmeta].value = xstrdup(value);
    h->nmeta++;
}

const char *
rs_header_meta(const struct rs_header *h, const char *key)
{
    for (int i = 0; i < h->nmeta; i++)
        if (strcmp(h->meta[i].key, key) == 0)
            return h->meta[i].value;
    return NULL;
}

int
rs_header_find(const struct rs_header *h, const char *name)
{
    for (int i = 0; i < h->ncols; i++)
        if (strcmp(h->cols[i].name, name) == 0)
            return i;
    return -1;
}

void
rs_header_copy(struct rs_header *dst, const struct rs_header *src)
{
    rs_header_init(dst, src->kind, src->table);
    free(dst->encoding);
    dst->encoding = xstrdup(src->encoding);
    dst->server_version = src->server_version;
    for (int i = 0; i < src->ncols; i++)
        rs_header_add_column(dst, src->cols[i].name, src->cols[i].type, src->cols[i].role,
                             src->cols[i].order);
    for (int i = 0; i < src->nhashed; i++)
        rs_header_add_hashed(dst, src->hashed[i]);
    for (int i = 0; i < src->nmeta; i++)
        rs_header_set_meta(dst, src->meta[i].key, src->meta[i].value);
}

void
rs_header_free(struct rs_header *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < h->ncols; i++) {
        free(h->cols[i].name);
        free(h->cols[i].type);
    }
    for (int i = 0; i < h->nhashed; i++)
        free(h->hashed[i]);
    for (int i = 0; i < h->nmeta; i++) {
        free(h->meta[i].key);
        free(h->meta[i].value);
    }
    free(h->cols);
    free(h->hashed);
    free(h->meta);
    free(h->table);
    free(h->encoding);
    memset(h, 0, sizeof(*h));
}

/* Index of the n-th key column, or -1. */
static int
key_column(const struct rs_header *h, int n)
{
    for (int i = 0; i < h->ncols; i++)
        if (h->cols[i].role == RS_ROLE_KEY && n-- == 0)
            return i;
    return -1;
}

static int
key_count(const struct rs_header *h)
{
    int n = 0;

    for (int i = 0; i < h->ncols; i++)
        if (h->cols[i].role == RS_ROLE_KEY)
            n++;
    return n;
}

static void
describe_keys(const struct rs_header *h, struct buf *b)
{
    int first = 1;

    buf_putc(b, '(');
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        buf_printf(b, "%s%s %c", first ? "" : ", ", h->cols[i].name, h->cols[i].order);
        first = 0;
    }
    buf_putc(b, ')');
}

static void
describe_hashed(const struct rs_header *h, struct buf *b)
{
    buf_putc(b, '(');
    for (int i = 0; i < h->nhashed; i++)
        buf_printf(b, "%s%s", i ? ", " : "", h->hashed[i]);
    buf_putc(b, ')');
}

int
rs_header_check_compatible(const struct rs_header *a, const struct rs_header *b, const char *what)
{
    int nk = key_count(a), same = nk == key_count(b);
    struct buf da, db;

    for (int k = 0; same && k < nk; k++) {
        const struct rs_column *ca = &a->cols[key_column(a, k)];
        const struct rs_column *cb = &b->cols[key_column(b, k)];

        same = strcmp(ca->name, cb->name) == 0 && ca->order == cb->order;
    }
    buf_init(&da);
    buf_init(&db);
    if (!same) {
        describe_keys(a, &da);
        describe_keys(b, &db);
        err_msg(EXIT_DATA, "%s: key columns differ: %s vs %s", what, da.data, db.data);
        goto fail;
    }
    same = a->nhashed == b->nhashed;
    for (int i = 0; same && i < a->nhashed; i++)
        same = strcmp(a->hashed[i], b->hashed[i]) == 0;
    if (!same) {
        describe_hashed(a, &da);
        describe_hashed(b, &db);
        err_msg(EXIT_DATA, "%s: hashed column lists differ: %s vs %s", what, da.data, db.data);
        goto fail;
    }
    return 0;
fail:
    buf_free(&da);
    buf_free(&db);
    return EXIT_DATA;
}

/* ---- keys ---- */

int
rs_parse_int64(const char *s, size_t len, int64_t *out)
{
    uint64_t v = 0, limit = (uint64_t)INT64_MAX;
    size_t i = 0;
    int neg = 0;

    if (s == NULL || len == 0)
        return -1;
    if (s[0] == '-' || s[0] == '+') {
        neg = s[0] == '-';
        if (neg)
            limit++;
        i = 1;
    }
    if (i == len)
        return -1;
    for (; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';

        if (d > 9 || v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int
bytes_cmp(const struct rs_value *a, const struct rs_value *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c;

    /* NULL sorts first; keys are never NULL in a valid stream. */
    if (a->data == NULL || b->data == NULL)
        return (a->data != NULL) - (b->data != NULL);
    c = n ? memcmp(a->data, b->data, n) : 0;
    if (c != 0)
        return c;
    return (a->len > b->len) - (a->len < b->len);
}

static int
value_cmp(char order, const struct rs_value *a, const struct rs_value *b)
{
    if (order == RS_ORDER_INT) {
        int64_t x, y;

        if (rs_parse_int64(a->data, a->len, &x) == 0 && rs_parse_int64(b->data, b->len, &y) == 0)
            return (x > y) - (x < y);
    }
    return bytes_cmp(a, b);
}

int
rs_key_cmp(const struct rs_header *h, const struct rs_value *a, const struct rs_value *b)
{
    for (int i = 0; i < h->ncols; i++) {
        int c;

        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        c = value_cmp(h->cols[i].order, &a[i], &b[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

int
rs_key_cmp2(const struct rs_header *ha, const struct rs_value *a, const struct rs_header *hb,
            const struct rs_value *b)
{
    int ia = -1, ib = -1;

    for (;;) {
        int c;

        do
            ia++;
        while (ia < ha->ncols && ha->cols[ia].role != RS_ROLE_KEY);
        do
            ib++;
        while (ib < hb->ncols && hb->cols[ib].role != RS_ROLE_KEY);
        if (ia >= ha->ncols || ib >= hb->ncols)
            return 0;
        c = value_cmp(ha->cols[ia].order, &a[ia], &b[ib]);
        if (c != 0)
            return c;
    }
}

void
rs_key_format(const struct rs_header *h, const struct rs_value *v, char *out, size_t outsz)
{
    struct buf b;
    int first = 1;

    buf_init(&b);
    buf_putc(&b, '(');
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        buf_printf(&b, "%s%s", first ? "" : ", ", h->cols[i].name);
        first = 0;
    }
    buf_puts(&b, ")=(");
    first = 1;
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        if (!first)
            buf_puts(&b, ", ");
        first = 0;
        if (v[i].data == NULL) {
            buf_puts(&b, "NULL");
            continue;
        }
        /* Keys identify rows and may be printed; control bytes are escaped. */
        for (size_t k = 0; k < v[i].len && k < 200; k++) {
            unsigned char ch = (unsigned char)v[i].data[k];

            if (ch < 0x20 || ch == 0x7f)
                buf_printf(&b, "\\x%02x", ch);
            else
                buf_putc(&b, (char)ch);
        }
        if (v[i].len > 200)
            buf_puts(&b, "...");
    }
    buf_putc(&b, ')');
    snprintf(out, outsz, "%s", b.data);
    buf_free(&b);
}

/*
 * Key-order state shared by writer and reader: a copy of the previous key.
 */
struct order_check {
    int on;
    int have;
    struct buf bytes;
    struct rs_value *prev; /* ncols entries; only key entries used */
};

static void
order_init(struct order_check *oc, const struct rs_header *h)
{
    memset(oc, 0, sizeof(*oc));
    oc->on = key_count(h) > 0;
    buf_init(&oc->bytes);
    oc->prev = xcalloc((size_t)(h->ncols ? h->ncols : 1), sizeof(struct rs_value));
}

static void
order_free(struct order_check *oc)
{
    buf_free(&oc->bytes);
    free(oc->prev);
}

/* Returns 0, or EXIT_DATA after printing (who: "stream NAME: table T"). */
static int
order_step(struct order_check *oc, const struct rs_header *h, const struct rs_value *v,
           uint64_t recno, const char *who)
{
    size_t off = 0;

    if (!oc->on)
        return 0;
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role == RS_ROLE_KEY && v[i].data == NULL) {
            char key[512];

            rs_key_format(h, v, key, sizeof(key));
            return err_msg(EXIT_DATA, "%s: record %llu: NULL in key column \"%s\": %s", who,
                           (unsigned long long)recno, h->cols[i].name, key);
        }
    }
    if (oc->have) {
        int c = rs_key_cmp(h, oc->prev, v);

        if (c >= 0) {
            char key[512], prev[512];

            rs_key_format(h, v, key, sizeof(key));
            rs_key_format(h, oc->prev, prev, sizeof(prev));
            if (c == 0)
                return err_msg(EXIT_DATA, "%s: record %llu: duplicate key %s", who,
                               (unsigned long long)recno, key);
            return err_msg(EXIT_DATA, "%s: record %llu: key order violation: %s after %s", who,
                           (unsigned long long)recno, key, prev);
        }
    }
    buf_reset(&oc->bytes);
    for (int i = 0; i < h->ncols; i++)
        if (h->cols[i].role == RS_ROLE_KEY)
            buf_append(&oc->bytes, v[i].data, v[i].len);
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        oc->prev[i].data = oc->bytes.data + off;
        oc->prev[i].len = v[i].len;
        off += v[i].len;
    }
    oc->have = 1;
    return 0;
}

/* ---- varints ---- */

static size_t
varint_put(unsigned char *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

/* Returns bytes used, 0 when more input is needed, -1 when malformed. */
static int
varint_get(const unsigned char *p, size_t avail, uint64_t *v)
{
    uint64_t x = 0;

    for (size_t i = 0; i < 10; i++) {
        if (i >= avail)
            return 0;
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            if (i == 9 && p[i] > 1)
                return -1;
            *v = x;
            return (int)i + 1;
        }
    }
    return -1;
}

/* ---- writer ---- */

struct rs_writer {
    int fd;
    char *name;
    char *who; /* "table T" for messages */
    struct rs_header h;
    ZSTD_CCtx *cctx;
    unsigned char *stage; /* uncompressed bytes not yet handed to zstd */
    size_t stage_len, stage_cap;
    unsigned char *zout;
    size_t zout_cap;
    XXH3_state_t *sum;
    uint64_t count;
    size_t max_row;
    struct order_check oc;
    int failed;
};

static int
writer_compress(struct rs_writer *w, const void *src, size_t len, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer in = { src, len, 0 };

    for (;;) {
        ZSTD_outBuffer out = { w->zout, w->zout_cap, 0 };
        size_t left = ZSTD_compressStream2(w->cctx, &out, &in, mode);

        if (ZSTD_isError(left))
            return err_msg(EXIT_INTERNAL, "%s: could not compress: %s", w->name,
                           ZSTD_getErrorName(left));
        if (out.pos > 0 && io_write_full(w->fd, w->zout, out.pos) != 0)
            return err_sys(EXIT_IO, "could not write to %s", w->name);
        if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size)
            return 0;
    }
}

static int
writer_flush(struct rs_writer *w)
{
    int rc = 0;

    /* The checksum runs over whole staged buffers: per-field updates cost ~9%. */
    if (w->stage_len > 0) {
        XXH3_64bits_update(w->sum, w->stage, w->stage_len);
        rc = writer_compress(w, w->stage, w->stage_len, ZSTD_e_continue);
    }
    w->stage_len = 0;
    return rc;
}

/* Append bytes to the stream; the checksum is taken as staged bytes are flushed. */
static int
writer_emit(struct rs_writer *w, const void *p, size_t n)
{
    if (w->stage_len + n > w->stage_cap) {
        int rc = writer_flush(w);

        if (rc != 0)
            return rc;
        if (n > w->stage_cap) {
            XXH3_64bits_update(w->sum, p, n);
            return writer_compress(w, p, n, ZSTD_e_continue);
        }
    }
    memcpy(w->stage + w->stage_len, p, n);
    w->stage_len += n;
    return 0;
}

static int
writer_emit_varint(struct rs_writer *w, uint64_t v)
{
    unsigned char tmp[10];

    return writer_emit(w, tmp, varint_put(tmp, v));
}

static int
writer_emit_str(struct rs_writer *w, const char *s)
{
    size_t n = strlen(s);
    int rc = writer_emit_varint(w, n);

    return rc ? rc : writer_emit(w, s, n);
}

static int
choose_level(int fd, int level)
{
    struct stat st;

    if (level != RS_LEVEL_AUTO)
        return level;
    if (fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
        return RS_LEVEL_PIPE;
    return RS_LEVEL_FILE;
}

int
rs_writer_open(struct rs_writer **wp, int fd, const char *name, const struct rs_header *h,
               int level)
{
    struct rs_writer *w = xcalloc(1, sizeof(*w));
    unsigned char ver = RS_FORMAT_VERSION;
    int rc = 0;

    *wp = w;
    w->fd = fd;
    w->name = xstrdup(name ? name : "stdout");
    rs_header_copy(&w->h, h);
    {
        struct buf who;

        buf_init(&who);
        buf_printf(&who, "table %s", w->h.table);
        w->who = who.data;
    }
    w->max_row = RS_DEFAULT_MAX_ROW_BYTES;
    order_init(&w->oc, &w->h);
    w->stage_cap = 128 * 1024;
    w->stage = xmalloc(w->stage_cap);
    w->zout_cap = ZSTD_CStreamOutSize();
    w->zout = xmalloc(w->zout_cap);
    w->sum = XXH3_createState();
    w->cctx = ZSTD_createCCtx();
    if (w->sum == NULL || w->cctx == NULL)
        return err_msg(EXIT_INTERNAL, "out of memory (zstd or xxhash state)");
    XXH3_64bits_reset(w->sum);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, choose_level(fd, level));
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);

    if ((rc = writer_emit(w, MAGIC, 4)) || (rc = writer_emit(w, &ver, 1)) ||
        (rc = writer_emit(w, &w->h.kind, 1)) || (rc = writer_emit_str(w, w->h.table)) ||
        (rc = writer_emit_varint(w,
                                 (uint64_t)(w->h.server_version > 0 ? w->h.server_version : 0))) ||
        (rc = writer_emit_str(w, w->h.encoding)) ||
        (rc = writer_emit_varint(w, (uint64_t)w->h.ncols)))
        return rc;
    for (int i = 0; i < w->h.ncols; i++) {
        const struct rs_column *c = &w->h.cols[i];

        if ((rc = writer_emit_str(w, c->name)) || (rc = writer_emit_str(w, c->type)) ||
            (rc = writer_emit(w, &c->role, 1)) || (rc = writer_emit(w, &c->order, 1)))
            return rc;
    }
    if ((rc = writer_emit_varint(w, (uint64_t)w->h.nhashed)))
        return rc;
    for (int i = 0; i < w->h.nhashed; i++)
        if ((rc = writer_emit_str(w, w->h.hashed[i])))
            return rc;
    if ((rc = writer_emit_varint(w, (uint64_t)w->h.nmeta)))
        return rc;
    for (int i = 0; i < w->h.nmeta; i++)
        if ((rc = writer_emit_str(w, w->h.meta[i].key)) ||
            (rc = writer_emit_str(w, w->h.meta[i].value)))
            return rc;
    return 0;
}

void
rs_writer_no_order_check(struct rs_writer *w)
{
    w->oc.on = 0;
}

void
rs_writer_set_max_row(struct rs_writer *w, size_t max)
{
    w->max_row = max;
}

static int
writer_check_size(struct rs_writer *w, const struct rs_value *vals)
{
    size_t total = 0, big = 0;
    int bigcol = 0;

    for (int i = 0; i < w->h.ncols; i++) {
        if (vals[i].data == NULL)
            continue;
        total += vals[i].len;
        if (vals[i].len > big) {
            big = vals[i].len;
            bigcol = i;
        }
    }
    if (total <= w->max_row)
        return 0;
    {
        char key[512];

        rs_key_format(&w->h, vals, key, sizeof(key));
        return err_msg(EXIT_DATA,
                       "table %s: row %s: record of %zu bytes exceeds --max-row-bytes %zu "
                       "(largest column \"%s\", %zu bytes)",
                       w->h.table, key, total, w->max_row, w->h.cols[bigcol].name, big);
    }
}

int
rs_writer_put(struct rs_writer *w, const struct rs_value *vals)
{
    unsigned char tag = TAG_RECORD;
    int rc;

    if (w->failed)
        return w->failed;
    if ((rc = writer_check_size(w, vals)) != 0)
        return w->failed = rc;
    if (w->oc.on && (rc = order_step(&w->oc, &w->h, vals, w->count + 1, w->who)) != 0)
        return w->failed = rc;
    if ((rc = writer_emit(w, &tag, 1)) != 0)
        return w->failed = rc;
    for (int i = 0; i < w->h.ncols; i++) {
        const struct rs_value *v = &vals[i];

        if (v->data == NULL) {
            rc = writer_emit_varint(w, 0);
        } else {
            rc = writer_emit_varint(w, (uint64_t)v->len + 1);
            if (rc == 0 && v->len > 0)
                rc = writer_emit(w, v->data, v->len);
        }
        if (rc != 0)
            return w->failed = rc;
    }
    w->count++;
    return 0;
}

uint64_t
rs_writer_count(const struct rs_writer *w)
{
    return w->count;
}

int
rs_writer_finish(struct rs_writer *w)
{
    unsigned char trailer[32];
    size_t n = 0;
    uint64_t sum;
    int rc;

    if (w->failed)
        return w->failed;
    if ((rc = writer_flush(w)) != 0)
        return w->failed = rc;
    sum = XXH3_64bits_digest(w->sum);
    trailer[n++] = TAG_TRAIL;
    n += varint_put(trailer + n, w->count);
    for (int i = 0; i < 8; i++)
        trailer[n++] = (unsigned char)(sum >> (8 * i));
    /* The trailer is not part of the checksum: it goes straight to zstd. */
    if ((rc = writer_compress(w, trailer, n, ZSTD_e_end)) != 0)
        return w->failed = rc;
    return 0;
}

void
rs_writer_free(struct rs_writer *w)
{
    if (w == NULL)
        return;
    ZSTD_freeCCtx(w->cctx);
    XXH3_freeState(w->sum);
    order_free(&w->oc);
    rs_header_free(&w->h);
    free(w->stage);
    free(w->zout);
    free(w->name);
    free(w->who);
    free(w);
}

/* ---- reader ---- */

static size_t read_size_override;

struct rs_reader {
    int fd;
    char *name;
    char *who; /* "NAME: table T" for messages */
    struct rs_header h;
    ZSTD_DCtx *dctx;
    unsigned char *zin;
    size_t zin_cap;
    size_t read_size;
    ZSTD_inBuffer in;
    int in_eof;
    int frame_done;
    int started;         /* any input byte seen */
    unsigned char *obuf; /* decompressed bytes; [opos, olen) not yet parsed */
    size_t opos, olen, ocap;
    XXH3_state_t *sum;
    uint64_t count;
    size_t max_row;
    struct order_check oc;
    struct rs_value *vals;
    char checksum[17];
    int done;
    int failed;
};

static int
reader_fail(struct rs_reader *r, int code)
{
    r->failed = code;
    return code;
}

/* Read more compressed input. Returns 0 or an exit code. */
static int
reader_read_input(struct rs_reader *r)
{
    ssize_t k;

    k = io_read_full(r->fd, r->zin, r->read_size);
    if (k < 0)
        return reader_fail(r, err_sys(EXIT_IO, "%s: could not read", r->who));
    r->in.src = r->zin;
    r->in.size = (size_t)k;
    r->in.pos = 0;
    if ((size_t)k < r->read_size)
        r->in_eof = 1;
    if (!r->started && k > 0) {
        static const unsigned char zmagic[4] = { 0x28, 0xb5, 0x2f, 0xfd };

        r->started = 1;
        /* A cut inside the zstd magic is a truncation, not a foreign file. */
        if (memcmp(r->zin, zmagic, (size_t)k < 4 ? (size_t)k : 4) != 0)
            return reader_fail(r, err_msg(EXIT_DATA, "%s: not a row stream (bad magic)", r->who));
    }
    return 0;
}

/*
 * Make at least need unparsed bytes available. Returns 0 (check r->olen - r->opos:
 * fewer at the end of the data), or an exit code.
 */
static int
reader_fill(struct rs_reader *r, size_t need)
{
    int rc;

    if (r->opos > 0) {
        memmove(r->obuf, r->obuf + r->opos, r->olen - r->opos);
        r->olen -= r->opos;
        r->opos = 0;
    }
    if (need > r->ocap) {
        size_t cap = r->ocap;

        while (cap < need)
            cap *= 2;
        r->obuf = xrealloc(r->obuf, cap);
        r->ocap = cap;
    }
    while (r->olen < need) {
        ZSTD_outBuffer out;
        size_t ret;

        if (r->in.pos == r->in.size) {
            if (r->in_eof)
                return 0;
            if ((rc = reader_read_input(r)) != 0)
                return rc;
            if (r->in.size == 0)
                continue;
        }
        if (r->frame_done)
            return reader_fail(r, err_msg(EXIT_DATA,
                                          "%s: corrupt stream: data after the end "
                                          "of the compressed frame",
                                          r->who));
        out.dst = r->obuf;
        out.size = r->ocap;
        out.pos = r->olen;
        ret = ZSTD_decompressStream(r->dctx, &out, &r->in);
        if (ZSTD_isError(ret))
            return reader_fail(r, err_msg(EXIT_DATA, "%s: corrupt stream: zstd: %s", r->who,
                                          ZSTD_getErrorName(ret)));
        r->olen = out.pos;
        if (ret == 0)
            r->frame_done = 1;
    }
    return 0;
}

static int
reader_truncated(struct rs_reader *r)
{
    if (!r->started)
        return reader_fail(r, err_msg(EXIT_DATA, "%s: empty input: not a row stream", r->who));
    return reader_fail(r, err_msg(EXIT_DATA,
                                  "%s: truncated stream: input ended after %llu records "
                                  "without a trailer",
                                  r->who, (unsigned long long)r->count));
}

/* Header parsing works on a fully buffered header: ask for more until it parses. */
struct cursor {
    const unsigned char *p;
    size_t avail;
    size_t pos;
    int need_more;
    int bad;
};

static uint64_t
cur_varint(struct cursor *c)
{
    uint64_t v = 0;
    int n;

    if (c->need_more || c->bad)
        return 0;
    n = varint_get(c->p + c->pos, c->avail - c->pos, &v);
    if (n == 0)
        c->need_more = 1;
    else if (n < 0)
        c->bad = 1;
    else
        c->pos += (size_t)n;
    return v;
}

static char *
cur_str(struct cursor *c)
{
    uint64_t n = cur_varint(c);

    if (c->need_more || c->bad)
        return NULL;
    if (n > MAX_NAME) {
        c->bad = 1;
        return NULL;
    }
    if (c->avail - c->pos < n) {
        c->need_more = 1;
        return NULL;
    }
    c->pos += n;
    return xstrndup((const char *)c->p + c->pos - n, n);
}

static int
cur_byte(struct cursor *c)
{
    if (c->need_more || c->bad)
        return 0;
    if (c->pos >= c->avail) {
        c->need_more = 1;
        return 0;
    }
    return c->p[c->pos++];
}

/* Parse magic, version and header from [opos, olen). */
static void
parse_header(struct rs_reader *r, struct cursor *c)
{
    struct rs_header *h = &r->h;
    char *s;
    uint64_t n;

    rs_header_free(h);
    if (c->avail < 5) {
        c->need_more = 1;
        return;
    }
    if (memcmp(c->p, MAGIC, 4) != 0) {
        c->bad = 2;
        return;
    }
    if (c->p[4] != RS_FORMAT_VERSION) {
        c->bad = 3;
        return;
    }
    c->pos = 5;
    rs_header_init(h, (char)cur_byte(c), NULL);
    free(h->table);
    h->table = cur_str(c);
    h->server_version = (int)cur_varint(c);
    free(h->encoding);
    h->encoding = cur_str(c);
    n = cur_varint(c);
    if (n > MAX_COLS)
        c->bad = 1;
    for (uint64_t i = 0; i < n && !c->need_more && !c->bad; i++) {
        char *name = cur_str(c), *type = cur_str(c);
        int role = cur_byte(c), order = cur_byte(c);

        if (!c->need_more && !c->bad)
            rs_header_add_column(h, name, type, (char)role, (char)order);
        free(name);
        free(type);
    }
    n = cur_varint(c);
    if (n > MAX_COLS)
        c->bad = 1;
    for (uint64_t i = 0; i < n && !c->need_more && !c->bad; i++) {
        s = cur_str(c);
        if (s != NULL)
            rs_header_add_hashed(h, s);
        free(s);
    }
    n = cur_varint(c);
    if (n > MAX_COLS)
        c->bad = 1;
    for (uint64_t i = 0; i < n && !c->need_more && !c->bad; i++) {
        char *k = cur_str(c), *v = cur_str(c);

        if (!c->need_more && !c->bad)
            rs_header_set_meta(h, k, v);
        free(k);
        free(v);
    }
    if (h->table == NULL)
        h->table = xstrdup("");
    if (h->encoding == NULL)
        h->encoding = xstrdup("");
}

int
rs_reader_open(struct rs_reader **rp, int fd, const char *name)
{
    struct rs_reader *r = xcalloc(1, sizeof(*r));
    size_t want = 4096;
    struct buf who;
    int rc;

    *rp = r;
    r->fd = fd;
    r->name = xstrdup(name ? name : "stdin");
    r->who = xstrdup(r->name);
    r->max_row = RS_DEFAULT_MAX_ROW_BYTES;
    r->zin_cap = ZSTD_DStreamInSize();
    r->zin = xmalloc(r->zin_cap);
    r->read_size =
        read_size_override && read_size_override < r->zin_cap ? read_size_override : r->zin_cap;
    r->in.src = r->zin;
    r->ocap = 256 * 1024;
    r->obuf = xmalloc(r->ocap);
    r->dctx = ZSTD_createDCtx();
    r->sum = XXH3_createState();
    if (r->dctx == NULL || r->sum == NULL)
        return reader_fail(r, err_msg(EXIT_INTERNAL, "out of memory (zstd or xxhash state)"));
    XXH3_64bits_reset(r->sum);

    for (;;) {
        struct cursor c = { r->obuf, 0, 0, 0, 0 };

        if ((rc = reader_fill(r, want)) != 0)
            return rc;
        c.avail = r->olen;
        parse_header(r, &c);
        if (c.bad == 2 ||
            (c.need_more && r->olen > 0 && r->olen < 4 && memcmp(r->obuf, MAGIC, r->olen) != 0))
            return reader_fail(r, err_msg(EXIT_DATA, "%s: not a row stream (bad magic)", r->who));
        if (c.bad == 3)
            return reader_fail(r, err_msg(EXIT_DATA,
                                          "%s: unsupported stream format version %d (this "
                                          "program reads version %d)",
                                          r->who, r->obuf[4], RS_FORMAT_VERSION));
        if (c.bad)
            return reader_fail(r,
                               err_msg(EXIT_DATA, "%s: corrupt stream: malformed header", r->who));
        if (!c.need_more) {
            XXH3_64bits_update(r->sum, r->obuf, c.pos);
            r->opos = c.pos;
            break;
        }
        if (r->olen < want)
            return reader_truncated(r);
        if (want > (size_t)64 * 1024 * 1024)
            return reader_fail(r,
                               err_msg(EXIT_DATA, "%s: corrupt stream: header too large", r->who));
        want *= 2;
    }
    if (r->h.kind != RS_KIND_ROWS && r->h.kind != RS_KIND_CHANGES && r->h.kind != RS_KIND_MAP)
        return reader_fail(
            r, err_msg(EXIT_DATA, "%s: corrupt stream: unknown kind '%c'", r->who, r->h.kind));
    buf_init(&who);
    buf_printf(&who, "%s: table %s", r->name, r->h.table);
    free(r->who);
    r->who = who.data;
    order_init(&r->oc, &r->h);
    r->vals = xcalloc((size_t)(r->h.ncols ? r->h.ncols : 1), sizeof(struct rs_value));
    return 0;
}

const struct rs_header *
rs_reader_header(const struct rs_reader *r)
{
    return &r->h;
}

void
rs_reader_set_max_row(struct rs_reader *r, size_t max)
{
    r->max_row = max;
}

void
rs_set_read_size(size_t n)
{
    read_size_override = n;
}

void
rs_reader_set_order_check(struct rs_reader *r, int on)
{
    r->oc.on = on && key_count(&r->h) > 0;
}

/* The largest encoded record: max_row value bytes plus tag and length varints. */
static size_t
record_limit(const struct rs_reader *r)
{
    return r->max_row + 1 + 10 * (size_t)r->h.ncols;
}

/*
 * Scan one record or the trailer at [opos, olen). Returns 1 when complete
 * (*used bytes), 0 when more bytes are needed (*used = a lower bound of the
 * total), -1 when malformed.
 */
static int
scan_record(struct rs_reader *r, size_t *used)
{
    const unsigned char *p = r->obuf + r->opos;
    size_t avail = r->olen - r->opos, pos = 1;

    if (avail < 1) {
        *used = 1;
        return 0;
    }
    if (p[0] == TAG_TRAIL) {
        uint64_t count;
        int n = varint_get(p + 1, avail - 1, &count);

        if (n < 0)
            return -1;
        if (n == 0 || avail < 1 + (size_t)n + 8) {
            *used = 1 + 10 + 8;
            return 0;
        }
        *used = 1 + (size_t)n + 8;
        return 1;
    }
    if (p[0] != TAG_RECORD)
        return -1;
    for (int i = 0; i < r->h.ncols; i++) {
        uint64_t len;
        int n = varint_get(p + pos, avail - pos, &len);

        if (n < 0)
            return -1;
        if (n == 0) {
            *used = pos + 10;
            return 0;
        }
        pos += (size_t)n;
        if (len > 0) {
            if (len - 1 > r->max_row || pos + (len - 1) > record_limit(r)) {
                *used = (size_t)-1;
                return 0;
            }
            r->vals[i].data = (const char *)p + pos;
            r->vals[i].len = (size_t)(len - 1);
            pos += (size_t)(len - 1);
        } else {
            r->vals[i].data = NULL;
            r->vals[i].len = 0;
        }
        if (pos > avail) {
            *used = pos;
            return 0;
        }
    }
    *used = pos;
    return 1;
}

static int
reader_trailer(struct rs_reader *r, size_t used)
{
    const unsigned char *p = r->obuf + r->opos;
    uint64_t count = 0, want = XXH3_64bits_digest(r->sum), got = 0;
    int n = varint_get(p + 1, used - 1, &count);

    for (int i = 0; i < 8; i++)
        got |= (uint64_t)p[1 + n + i] << (8 * i);
    r->opos += used;
    snprintf(r->checksum, sizeof(r->checksum), "%016llx", (unsigned long long)got);
    if (count != r->count)
        return reader_fail(r, err_msg(EXIT_DATA,
                                      "%s: corrupt stream: trailer counts %llu records, "
                                      "%llu were read",
                                      r->who, (unsigned long long)count,
                                      (unsigned long long)r->count));
    if (got != want)
        return reader_fail(r, err_msg(EXIT_DATA,
                                      "%s: checksum mismatch: trailer says %016llx, "
                                      "content hashes to %016llx",
                                      r->who, (unsigned long long)got, (unsigned long long)want));
    /* Nothing may follow the trailer, and the zstd frame must end here. */
    if (reader_fill(r, 1) != 0)
        return r->failed;
    if (r->olen > r->opos)
        return reader_fail(
            r, err_msg(EXIT_DATA, "%s: corrupt stream: data after the trailer", r->who));
    if (!r->frame_done)
        return reader_fail(r, err_msg(EXIT_DATA,
                                      "%s: truncated stream: compressed frame ends "
                                      "early after the trailer",
                                      r->who));
    while (r->in.pos == r->in.size && !r->in_eof) {
        if (reader_read_input(r) != 0)
            return r->failed;
    }
    if (r->in.pos < r->in.size)
        return reader_fail(r, err_msg(EXIT_DATA,
                                      "%s: corrupt stream: data after the end of "
                                      "the compressed frame",
                                      r->who));
    r->done = 1;
    return 0;
}

int
rs_reader_next(struct rs_reader *r, const struct rs_value **vals)
{
    size_t used = 0;
    int rc, st;

    *vals = NULL;
    if (r->failed)
        return r->failed;
    if (r->done)
        return 0;
    for (;;) {
        st = scan_record(r, &used);
        if (st < 0)
            return reader_fail(r, err_msg(EXIT_DATA,
                                          "%s: corrupt stream: malformed record after record "
                                          "%llu",
                                          r->who, (unsigned long long)r->count));
        if (st == 1)
            break;
        if (used == (size_t)-1 || used > record_limit(r))
            return reader_fail(r, err_msg(EXIT_DATA, "%s: record %llu exceeds --max-row-bytes %zu",
                                          r->who, (unsigned long long)r->count + 1, r->max_row));
        {
            size_t have = r->olen - r->opos;

            if ((rc = reader_fill(r, used > have ? used : have + 1)) != 0)
                return rc;
            if (r->olen - r->opos <= have)
                return reader_truncated(r);
        }
    }
    if (r->obuf[r->opos] == TAG_TRAIL)
        return reader_trailer(r, used);
    XXH3_64bits_update(r->sum, r->obuf + r->opos, used);
    r->opos += used;
    r->count++;
    if (r->oc.on && (rc = order_step(&r->oc, &r->h, r->vals, r->count, r->who)) != 0)
        return reader_fail(r, rc);
    *vals = r->vals;
    return 0;
}

uint64_t
rs_reader_count(const struct rs_reader *r)
{
    return r->count;
}

const char *
rs_reader_checksum(const struct rs_reader *r)
{
    return r->checksum;
}

void
rs_reader_free(struct rs_reader *r)
{
    if (r == NULL)
        return;
    ZSTD_freeDCtx(r->dctx);
    XXH3_freeState(r->sum);
    if (r->vals != NULL)
        order_free(&r->oc);
    rs_header_free(&r->h);
    free(r->vals);
    free(r->zin);
    free(r->obuf);
    free(r->name);
    free(r->who);
    free(r);
}
