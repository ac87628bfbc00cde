/*
 * The row stream: the one format every driftless program reads and writes
 * (rows, hashed rows, changes, id maps). One zstd frame holding a magic and
 * version, a header, records and a trailer; share/man/driftless-stream.5 is the
 * byte-level specification. Readers verify everything and report each kind of
 * damage with its own message and EXIT_DATA.
 */
#ifndef DRIFTLESS_RS_H
#define DRIFTLESS_RS_H

#include <stddef.h>
#include <stdint.h>

#define RS_FORMAT_VERSION 1
/* Default --max-row-bytes: a record larger than this is refused. */
#define RS_DEFAULT_MAX_ROW_BYTES ((size_t)256 * 1024 * 1024)

/* What a stream holds (header byte). */
enum rs_kind { RS_KIND_ROWS = 'R', RS_KIND_CHANGES = 'C', RS_KIND_MAP = 'M' };

/* A column's role. */
enum rs_role {
    RS_ROLE_KEY = 'k',  /* part of the comparison key, in key order */
    RS_ROLE_DATA = 'd', /* an ordinary value */
    RS_ROLE_HASH = 'h', /* a row hash (32 lowercase hex digits) */
    RS_ROLE_OP = 'o',   /* a change's operation: "I", "U" or "D" */
};

/* How a key column is ordered and compared (DESIGN.md "Keys and order"). */
enum rs_order {
    RS_ORDER_NONE = '-', /* not a key column */
    RS_ORDER_INT = 'i',  /* signed 64-bit integer */
    RS_ORDER_TEXT = 't', /* (col)::text COLLATE "C": bytes, shorter prefix first */
};

/* Change operations (the RS_ROLE_OP column's value). */
#define RS_OP_INSERT "I"
#define RS_OP_UPDATE "U"
#define RS_OP_DELETE "D"

struct rs_column {
    char *name;
    char *type; /* PostgreSQL type name as format_type() prints it */
    char role;  /* enum rs_role */
    char order; /* enum rs_order; RS_ORDER_NONE unless role is key */
};

/* Free-form metadata pairs (snapshot id, source relation, legacy key ...). */
struct rs_meta {
    char *key;
    char *value;
};

struct rs_header {
    char kind;          /* enum rs_kind */
    char *table;        /* "schema.table" or a name for a query */
    int server_version; /* server_version_num of the server the rows came from; 0 unknown */
    char *encoding;     /* server_encoding, "" unknown */
    int ncols;
    struct rs_column *cols;
    int nhashed; /* the columns a row hash covers, in hash order */
    char **hashed;
    int nmeta;
    struct rs_meta *meta;
};

/* A value: data == NULL means SQL NULL; len 0 with data != NULL is ''. */
struct rs_value {
    const char *data;
    size_t len;
};

/* Header building and access. rs_header_free releases everything it owns. */
void rs_header_init(struct rs_header *h, char kind, const char *table);
/* Append a column; returns its index. Strings are copied. */
int rs_header_add_column(struct rs_header *h, const char *name, const char *type, char role,
                         char order);
void rs_header_add_hashed(struct rs_header *h, const char *name);
void rs_header_set_meta(struct rs_header *h, const char *key, const char *value);
/* The value for key, or NULL. */
const char *rs_header_meta(const struct rs_header *h, const char *key);
/* The index of the named column, or -1. */
int rs_header_find(const struct rs_header *h, const char *name);
/* Deep copy of src into dst (dst uninitialised). */
void rs_header_copy(struct rs_header *dst, const struct rs_header *src);
void rs_header_free(struct rs_header *h);
/*
 * Check that two streams share key columns (names, order, order kinds) and
 * hashed column lists. Returns 0, or EXIT_DATA after printing what differs;
 * what names the caller's context (e.g. "source and target").
 */
int rs_header_check_compatible(const struct rs_header *a, const struct rs_header *b,
                               const char *what);

/*
 * Compare the key columns of two records of streams with header h (same
 * layout): <0, 0, >0. Integer keys that do not parse compare as text; a caller
 * that must refuse them uses rs_key_valid.
 */
int rs_key_cmp(const struct rs_header *h, const struct rs_value *a, const struct rs_value *b);
/* Compare keys of records from two compatible headers (column positions may differ). */
int rs_key_cmp2(const struct rs_header *ha, const struct rs_value *a, const struct rs_header *hb,
                const struct rs_value *b);
/* Format the key of a record as "(id, name)=(5, ab)" into out (truncated to outsz). */
void rs_key_format(const struct rs_header *h, const struct rs_value *v, char *out, size_t outsz);

/* ---- writer ---- */

/* Compression level meaning "default for files, fast for pipes and sockets". */
#define RS_LEVEL_AUTO 1000
/* The levels chosen by RS_LEVEL_AUTO. */
#define RS_LEVEL_FILE 3
#define RS_LEVEL_PIPE (-5)

struct rs_writer;

/*
 * Start a stream on fd with header h (copied). name is used in messages
 * ("stdout", a path). level is a zstd level or RS_LEVEL_AUTO. When the header
 * has key columns, rs_writer_put refuses keys that are not strictly increasing
 * (an unsorted or non-unique key), exit 4. Returns 0 or an exit code.
 */
int rs_writer_open(struct rs_writer **w, int fd, const char *name, const struct rs_header *h,
                   int level);
/* Refuse records larger than max bytes (default RS_DEFAULT_MAX_ROW_BYTES), exit 4. */
void rs_writer_set_max_row(struct rs_writer *w, size_t max);
/* Disable the key-order check (streams that are not keyed by order). */
void rs_writer_no_order_check(struct rs_writer *w);
/* Append one record of h->ncols values. Returns 0 or an exit code after printing. */
int rs_writer_put(struct rs_writer *w, const struct rs_value *vals);
/* Records written so far. */
uint64_t rs_writer_count(const struct rs_writer *w);
/* Write the trailer and end the frame. Returns 0 or an exit code. Does not close fd. */
int rs_writer_finish(struct rs_writer *w);
/* Release the writer; without a finish the stream stays without trailer (truncated). */
void rs_writer_free(struct rs_writer *w);

/* ---- reader ---- */

struct rs_reader;

/* Readers opened after this read input at most n bytes at a time (0: default). Tests use it. */
void rs_set_read_size(size_t n);

/*
 * Read the magic, version and header from fd; name is used in messages.
 * Returns 0 or EXIT_DATA/EXIT_IO after printing.
 */
int rs_reader_open(struct rs_reader **r, int fd, const char *name);
const struct rs_header *rs_reader_header(const struct rs_reader *r);
/* Refuse records larger than max bytes (default RS_DEFAULT_MAX_ROW_BYTES). */
void rs_reader_set_max_row(struct rs_reader *r, size_t max);
/* Check that keys are strictly increasing while reading (on by default for keyed streams). */
void rs_reader_set_order_check(struct rs_reader *r, int on);
/*
 * Next record: returns 0 with *vals set to h->ncols values (valid until the next
 * call), 0 with *vals == NULL at the end (trailer and checksum verified), or
 * an exit code after printing.
 */
int rs_reader_next(struct rs_reader *r, const struct rs_value **vals);
/* Records read so far. */
uint64_t rs_reader_count(const struct rs_reader *r);
/* The stream's checksum from its trailer, as 16 hex digits (valid after the end). */
const char *rs_reader_checksum(const struct rs_reader *r);
void rs_reader_free(struct rs_reader *r);

/* Parse a decimal int64 strictly; returns 0 on success, -1 otherwise. */
int rs_parse_int64(const char *s, size_t len, int64_t *out);

#endif
