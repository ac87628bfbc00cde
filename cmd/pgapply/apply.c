/*
 * The batches. Each batch is one transaction: COPY into a temp table, lock
 * and read the before-images (FOR UPDATE), refuse what would change a UUID
 * or touch a row born in the target, then set-based UPDATE ... FROM, INSERT
 * ... SELECT (new UUIDs and their crosswalk rows) or DELETE ... USING, each
 * writing its per-change records through RETURNING, and the checkpoint.
 * A data error bisects the batch under savepoints until the bad rows stand
 * alone; they are rejected and the rest commits.
 */
#include <errno.h>
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
#include "pgapply.h"
#include "state.h"
#include "utf8.h"

#define MAX_RETRIES 5

enum phase { PH_UPSERT, PH_DELETE, PH_RETRY };
static const char *const phase_names[] = { "upsert", "delete", "retry" };

/* Outcome of a statement that failed, by SQLSTATE. */
enum failure { F_RETRY = 1, F_DATA, F_UNIQUE, F_OTHER };

struct reject {
    uint64_t ord;
    char *key;
    char *reason;
};

/* A batch committed before this process started (resume). */
struct done {
    int phase;
    int batch;
    uint64_t first, last;
    long long rows;
    int nrejects;
    struct reject *rejects;
};

struct ctx {
    struct db *d;
    const struct options *o;
    struct spool *s;
    struct target *t;
    struct counts *c;
    char *qs; /* quoted state schema */
    char run[24];
    int have_state; /* the state schema exists (always, unless dry run) */
    int registered;
    int dry;
    int outer;    /* the batches run inside a group's transaction (savepoints) */
    char *tbatch; /* the session's temp tables of this table */
    char *tbefore;
    const char *import; /* --register --import-map */

    /* statements */
    char *sql_copy, *sql_lock, *sql_lock_del, *sql_check, *sql_update, *sql_insert;
    char *sql_delete, *sql_not_owned, *sql_checkpoint, *sql_resolve;
    char *sql_fast;  /* the upsert in one statement (see fast_upsert_sql), or NULL */
    int no_fast;     /* the batch takes the careful path: fast_upsert refused it */
    int lock_delete; /* the delete phase locks its rows in a pass of their own */
    char **sql_children, **sql_children_all;

    /* the current batch */
    enum phase phase;
    int batch_no;
    struct buf copy;
    uint64_t *ords;
    char **keys;
    char *pre; /* per record: rejected before the COPY (bad encoding) */
    char **pre_reason;
    int n, cap;
    long long b_ins, b_upd, b_del, b_not_owned;
    uint64_t *b_deferred;
    int nb_deferred, capb_deferred;
    struct reject *b_rejects;
    int nb_rejects, capb_rejects;

    /* the run */
    uint64_t *deferred; /* ordinals set aside for the retry phase */
    size_t ndeferred, capdeferred;
    struct reject *rejects;
    size_t nrejects, caprejects;
    struct done *done;
    int ndone;
    long long commits;
    double started, last_progress;
    uint64_t applied;
};

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- SQL text helpers ---- */

/* Stream column i of the batch table: c0..c(k-1) keys, then the data columns. */
static void
bcol(struct buf *b, const char *alias, int i)
{
    buf_printf(b, "%s.c%d", alias, i);
}

/* (b.cI)::type of key k. */
static void
key_b(struct buf *b, const struct ctx *c, const char *alias, int k)
{
    buf_puts(b, "(");
    bcol(b, alias, k);
    buf_printf(b, ")::%s", c->t->key_cast[k]);
}

/*
 * The target row ta of batch row ba: t.k1 = (b.c0)::type AND ...; for a key
 * kept in the crosswalk only, the UUID that the batch's _cx resolved.
 */
static void
join_cond(struct buf *b, const struct ctx *c, const char *ta, const char *ba)
{
    if (c->t->crosswalk_keys) {
        buf_printf(b, "%s.%s = %s._cx", ta, c->t->cols[c->t->uuid_tcol].qname, ba);
        return;
    }
    for (int k = 0; k < c->s->nkeys; k++) {
        buf_printf(b, "%s%s.%s = ", k > 0 ? " AND " : "", ta, c->t->cols[c->t->key_tcol[k]].qname);
        key_b(b, c, ba, k);
    }
}

static void key_text_b(struct buf *b, const struct ctx *c, const char *ba);

/* The legacy-key text of target row ta (from the crosswalk when the table has no key column). */
static void
key_text_t(struct buf *b, const struct ctx *c, const char *ta)
{
    const char **ex;
    struct buf *parts;

    if (c->t->crosswalk_keys) {
        buf_printf(b,
                   "(SELECT cw.legacy_key FROM %s.crosswalk AS cw WHERE cw.table_name = %s"
                   " AND cw.uuid = %s.%s)",
                   c->qs, c->t->lname, ta, c->t->cols[c->t->uuid_tcol].qname);
        return;
    }
    ex = xcalloc((size_t)c->s->nkeys, sizeof(char *));
    parts = xcalloc((size_t)c->s->nkeys, sizeof(struct buf));
    for (int k = 0; k < c->s->nkeys; k++) {
        buf_init(&parts[k]);
        buf_printf(&parts[k], "%s.%s", ta, c->t->cols[c->t->key_tcol[k]].qname);
        ex[k] = parts[k].data;
    }
    state_legacy_key_sql(b, ex, c->s->nkeys);
    for (int k = 0; k < c->s->nkeys; k++)
        buf_free(&parts[k]);
    free(parts);
    free(ex);
}

/* The legacy-key text of target row ta joined (join_cond) to batch row ba. */
static void
key_text_row(struct buf *b, const struct ctx *c, const char *ta, const char *ba)
{
    if (c->t->crosswalk_keys)
        key_text_b(b, c, ba);
    else
        key_text_t(b, c, ta);
}

static void
key_text_b(struct buf *b, const struct ctx *c, const char *ba)
{
    const char **ex = xcalloc((size_t)c->s->nkeys, sizeof(char *));
    struct buf *parts = xcalloc((size_t)c->s->nkeys, sizeof(struct buf));

    for (int k = 0; k < c->s->nkeys; k++) {
        buf_init(&parts[k]);
        key_b(&parts[k], c, ba, k);
        ex[k] = parts[k].data;
    }
    state_legacy_key_sql(b, ex, c->s->nkeys);
    for (int k = 0; k < c->s->nkeys; k++)
        buf_free(&parts[k]);
    free(parts);
    free(ex);
}

static void
uuid_t(struct buf *b, const struct ctx *c, const char *ta)
{
    if (c->t->uuid_tcol >= 0)
        buf_printf(b, "%s.%s", ta, c->t->cols[c->t->uuid_tcol].qname);
    else
        buf_puts(b, "NULL::uuid");
}

/* The stream's UUID value as uuid (only when the stream carries the column). */
static void
uuid_b(struct buf *b, const struct ctx *c, const char *ba)
{
    for (int j = 0; j < c->s->ndata; j++)
        if (c->s->data_cols[j] == c->t->uuid_scol) {
            buf_puts(b, "(");
            bcol(b, ba, c->s->nkeys + j);
            buf_puts(b, ")::uuid");
            return;
        }
}

static void
keys_not_null(struct buf *b, const struct ctx *c, const char *ta)
{
    for (int k = 0; k < c->s->nkeys; k++)
        buf_printf(b, "%s%s.%s IS NOT NULL", k > 0 ? " AND " : "", ta,
                   c->t->cols[c->t->key_tcol[k]].qname);
}

/* The crosswalk of this table as a relation (legacy_key, uuid). */
static void
crosswalk_rel(struct buf *b, const struct ctx *c)
{
    if (c->registered) {
        buf_printf(b, "(SELECT legacy_key, uuid FROM %s.crosswalk WHERE table_name = $3)", c->qs);
        return;
    }
    /* Dry run of a first run: the crosswalk would be filled from the table itself. */
    buf_puts(b, "(SELECT ");
    key_text_t(b, c, "cw");
    buf_puts(b, " AS legacy_key, ");
    uuid_t(b, c, "cw");
    buf_printf(b, " AS uuid FROM %s AS cw WHERE $3::text IS NOT NULL AND ", c->t->qname);
    keys_not_null(b, c, "cw");
    buf_puts(b, ")");
}

/* Is the key of row ta among the keys that came from the source? */
static void
owned_expr(struct buf *b, const struct ctx *c, const char *ta, const char *ba)
{
    if (!c->t->integer_mode) {
        buf_puts(b, "true");
    } else if (c->registered) {
        buf_printf(
            b, "EXISTS (SELECT 1 FROM %s.owned_keys o WHERE o.table_name = $3 AND o.legacy_key = ",
            c->qs);
        key_text_t(b, c, ta);
        buf_puts(b, ")");
    } else {
        /* First run: keys on both sides are migrated; keys only in the target are not. */
        buf_printf(b, "(%s._op <> 'D' AND $3::text IS NOT NULL)", ba);
    }
}

static int
is_uuid_data(const struct ctx *c, int j)
{
    return c->s->data_cols[j] == c->t->uuid_scol;
}

static int
needs_overriding(const struct ctx *c)
{
    for (int k = 0; k < c->s->nkeys; k++)
        if (c->t->key_tcol[k] >= 0 && c->t->cols[c->t->key_tcol[k]].identity == 'a')
            return 1;
    for (int j = 0; j < c->s->ndata; j++)
        if (!is_uuid_data(c, j) && c->t->cols[c->t->data_tcol[j]].identity == 'a')
            return 1;
    return c->t->uuid_tcol >= 0 && c->t->cols[c->t->uuid_tcol].identity == 'a';
}

/* The SET list of an update from batch row ba: never the UUID column, never a key column. */
static void
set_list(struct buf *b, const struct ctx *c, const char *ba)
{
    int nset = 0;

    for (int j = 0; j < c->s->ndata; j++) {
        const struct tcol *tc = &c->t->cols[c->t->data_tcol[j]];

        if (is_uuid_data(c, j) || tc->identity == 'a' || c->t->data_tcol[j] == c->t->uuid_tcol)
            continue;
        buf_printf(b, "%s%s = (", nset++ > 0 ? ", " : "", tc->qname);
        bcol(b, ba, c->s->nkeys + j);
        buf_printf(b, ")::%s", tc->cast);
    }
    if (nset == 0) {
        /* nothing but the key: a no-op that still locks and reports the row */
        const struct tcol *kc =
            c->t->crosswalk_keys ? &c->t->cols[c->t->uuid_tcol] : &c->t->cols[c->t->key_tcol[0]];

        buf_printf(b, "%s = t.%s", kc->qname, kc->qname);
    }
}

/* The column list of an insert (without the key columns when they live in the crosswalk). */
static void
insert_cols(struct buf *b, const struct ctx *c)
{
    int n = 0;

    if (c->t->uuid_tcol >= 0) {
        buf_puts(b, c->t->cols[c->t->uuid_tcol].qname);
        n++;
    }
    for (int k = 0; k < c->s->nkeys && !c->t->crosswalk_keys; k++)
        buf_printf(b, "%s%s", n++ > 0 ? ", " : "", c->t->cols[c->t->key_tcol[k]].qname);
    for (int j = 0; j < c->s->ndata; j++)
        if (!is_uuid_data(c, j) && c->t->data_tcol[j] != c->t->uuid_tcol)
            buf_printf(b, "%s%s", n++ > 0 ? ", " : "", c->t->cols[c->t->data_tcol[j]].qname);
}

/* The values of insert_cols: the new UUID u, then keys from ka and data from da. */
static void
insert_vals(struct buf *b, const struct ctx *c, const char *u, const char *ka, const char *da)
{
    int n = 0;

    if (c->t->uuid_tcol >= 0) {
        buf_puts(b, u);
        n++;
    }
    for (int k = 0; k < c->s->nkeys && !c->t->crosswalk_keys; k++) {
        buf_puts(b, n++ > 0 ? ", " : "");
        key_b(b, c, ka, k);
    }
    for (int j = 0; j < c->s->ndata; j++) {
        if (is_uuid_data(c, j) || c->t->data_tcol[j] == c->t->uuid_tcol)
            continue;
        buf_puts(b, n++ > 0 ? ", (" : "(");
        bcol(b, da, c->s->nkeys + j);
        buf_printf(b, ")::%s", c->t->cols[c->t->data_tcol[j]].cast);
    }
}

/*
 * Rows of a child table, born in the target, that reference a parent the
 * batch deletes: (record, the parent's legacy key, the child's identity).
 * locked: only the parents locked in the batch; else every parent the batch
 * table names that driftless owns (the check before the first write).
 */
static char *
children_sql(const struct ctx *c, const struct fkref *fk, int locked)
{
    struct buf b;

    buf_init(&b);
    buf_puts(&b, "SELECT b._rec, ");
    key_text_row(&b, c, "p", "b");
    buf_puts(&b, ", ");
    if (fk->nident > 0) {
        buf_puts(&b, "pg_catalog.concat_ws(', '");
        for (int i = 0; i < fk->nident; i++)
            buf_printf(&b, ", (ch.%s)::text", fk->ident[i]);
        buf_puts(&b, ")");
    } else {
        buf_puts(&b, "(ch.ctid)::text");
    }
    buf_printf(&b, " FROM %s AS b", c->tbatch);
    if (locked)
        buf_printf(&b, " JOIN %s AS x ON x._rec = b._rec", c->tbefore);
    buf_printf(&b, " JOIN %s AS p ON ", c->t->qname);
    join_cond(&b, c, "p", "b");
    buf_printf(&b, " JOIN %s AS ch ON ", fk->qchild);
    for (int i = 0; i < fk->ncols; i++)
        buf_printf(&b, "%sch.%s = p.%s", i > 0 ? " AND " : "", fk->child_cols[i],
                   fk->parent_cols[i]);
    buf_puts(&b, " WHERE b._rec >= $1 AND b._rec < $2");
    if (!locked) {
        buf_puts(&b, " AND ");
        owned_expr(&b, c, "p", "b");
    }
    if (fk->nlegacy > 0) {
        buf_puts(&b, " AND (");
        for (int i = 0; i < fk->nlegacy; i++)
            buf_printf(&b, "%sch.%s IS NULL", i > 0 ? " OR " : "", fk->legacy[i]);
        buf_puts(&b, ")");
    } else if (fk->cw_uuid != NULL) {
        buf_printf(&b,
                   " AND NOT EXISTS (SELECT 1 FROM %s.crosswalk AS cw WHERE cw.table_name = %s"
                   " AND cw.uuid = ch.%s)",
                   c->qs, fk->cw_name, fk->cw_uuid);
    }
    buf_puts(&b, " ORDER BY 1 LIMIT 10");
    return b.data;
}

static const char changes_cols[] =
    "(run_id, table_name, stream_checksum, phase, batch, op, legacy_key, uuid, before_image,"
    " after_hash)";

/* 1 if a unique index of the target covers the UUID column alone. */
static int
uuid_unique(const struct ctx *c)
{
    for (int i = 0; i < c->t->nuindex; i++)
        if (c->t->uindex[i].ncols == 1 &&
            strcmp(c->t->uindex[i].cols[0], c->t->cols[c->t->uuid_tcol].name) == 0)
            return 1;
    return 0;
}

/*
 * The upsert of a batch in one statement, for a UUID table whose legacy key
 * is a column: lock and read the before-images (x, FOR UPDATE), update the
 * locked rows (u), insert the others (i) with their crosswalk rows (w),
 * record every change (ch). The update pulls x row by row, so each row's
 * pages are still in the buffers when it is written, where the separate
 * lock, check and write passes read them three times over.
 * A row that check_batch would refuse is left out, not written, and the
 * counts returned (updated, inserted, locked, locked keys, batch rows) then
 * disagree; a UUID already taken fails on its unique index. Either way the
 * caller rolls the statement back and takes the careful path, which names
 * the refusal, rejects rows by splitting, or sets them aside.
 */
static char *
fast_upsert_sql(const struct ctx *c)
{
    struct buf b, su, sn;
    const char *uq;

    if (c->dry || !c->registered || c->t->integer_mode || c->t->crosswalk_keys ||
        c->t->uuid_tcol < 0)
        return NULL;
    uq = c->t->cols[c->t->uuid_tcol].qname;
    buf_init(&b);
    buf_init(&su);
    buf_init(&sn);
    /* the stream's UUID for rows of x and of n, or NULL when it carries none */
    if (c->t->uuid_scol >= 0) {
        uuid_b(&su, c, "x");
        uuid_b(&sn, c, "n");
    } else {
        buf_puts(&su, "NULL::uuid");
        buf_puts(&sn, "NULL::uuid");
    }
    buf_printf(&b, "WITH x AS (SELECT b.*, %s AS _img, t.%s AS _u, ", c->t->img, uq);
    key_text_t(&b, c, "t");
    buf_printf(&b, " AS _lk FROM %s AS t JOIN %s AS b ON ", c->t->qname, c->tbatch);
    join_cond(&b, c, "t", "b");
    buf_puts(&b, " WHERE b._rec >= $1 AND b._rec < $2 FOR UPDATE OF t), ");

    /*
     * codes 2, 3 and 4 of the check. A stream that carries the UUID took it
     * from the crosswalk (idmap) in the run's snapshot; an entry changes only
     * by scripts/rollback, which deletes it with the row it issued. The row's
     * UUID is checked against the stream's (code 2), and the crosswalk is
     * read again only for an insert that found its key taken (code 4) or a
     * record without a UUID, not once an update; the careful path still
     * checks code 3 for every row.
     */
    buf_printf(&b, "u AS (UPDATE %s AS t SET ", c->t->qname);
    set_list(&b, c, "x");
    buf_printf(&b,
               " FROM x LEFT JOIN LATERAL (SELECT cw.uuid FROM %s.crosswalk AS cw"
               " WHERE cw.table_name = $3 AND cw.legacy_key = x._lk",
               c->qs);
    if (c->t->uuid_scol >= 0)
        buf_printf(&b, " AND (x._op = 'I' OR %s IS NULL)", su.data);
    buf_puts(&b, " LIMIT 1) AS cx ON true WHERE ");
    /* by key, not ctid: a ctid names a row of one partition only */
    join_cond(&b, c, "t", "x");
    buf_printf(&b,
               " AND NOT ((%s <> x._u) IS TRUE OR (cx.uuid <> x._u) IS TRUE"
               " OR (x._op = 'I' AND cx.uuid IS NULL)) RETURNING x._img AS img, t.%s AS u, ",
               su.data, uq);
    key_text_t(&b, c, "t");
    buf_puts(&b, " AS lk, ");
    buf_printf(&b, STATE_ROW_HASH_SQL, c->t->img);
    buf_puts(&b, " AS h), ");

    /* the rows not found, with their crosswalk UUID; code 5 of the check */
    buf_puts(&b, "n AS (SELECT b.*, cx.uuid AS _cu");
    buf_printf(&b,
               " FROM %s AS b LEFT JOIN LATERAL (SELECT cw.uuid FROM %s.crosswalk AS cw"
               " WHERE cw.table_name = $3 AND cw.legacy_key = ",
               c->tbatch, c->qs);
    key_text_b(&b, c, "b");
    buf_puts(&b, " LIMIT 1) AS cx ON true WHERE b._rec >= $1 AND b._rec < $2"
                 " AND NOT EXISTS (SELECT 1 FROM x WHERE x._rec = b._rec)), ");
    buf_printf(&b, "i AS (INSERT INTO %s AS t (", c->t->qname);
    insert_cols(&b, c);
    buf_puts(&b, needs_overriding(c) ? ") OVERRIDING SYSTEM VALUE SELECT " : ") SELECT ");
    {
        struct buf u;

        buf_init(&u);
        buf_printf(&u, "COALESCE(%s, n._cu, pg_catalog.gen_random_uuid())", sn.data);
        insert_vals(&b, c, u.data, "n", "n");
        buf_free(&u);
    }
    buf_printf(&b, " FROM n WHERE (%s <> n._cu) IS NOT TRUE", sn.data);
    /* code 6: without a unique index on the UUID, nothing else would stop it */
    if (!uuid_unique(c))
        buf_printf(&b, " AND NOT EXISTS (SELECT 1 FROM %s AS t2 WHERE t2.%s = COALESCE(%s, n._cu))",
                   c->t->qname, uq, sn.data);
    buf_printf(&b, " RETURNING t.%s AS u, ", uq);
    key_text_t(&b, c, "t");
    buf_puts(&b, " AS lk, ");
    buf_printf(&b, STATE_ROW_HASH_SQL, c->t->img);
    buf_puts(&b, " AS h), ");
    /* code 7: a UUID the crosswalk holds under another key fails on driftless_crosswalk_uuid */
    buf_printf(&b,
               "w AS (INSERT INTO %s.crosswalk (table_name, legacy_key, uuid, run_id)"
               " SELECT $3, i.lk, i.u, $4::bigint FROM i"
               " ON CONFLICT ON CONSTRAINT driftless_crosswalk_pkey DO NOTHING), ",
               c->qs);
    buf_printf(&b,
               "ch AS (INSERT INTO %s.changes %s"
               " SELECT $4::bigint, $3, $5, $6, $7::integer, 'U', u.lk, u.u, u.img, u.h FROM u"
               " UNION ALL SELECT $4::bigint, $3, $5, $6, $7::integer, 'I', i.lk, i.u, NULL, i.h"
               " FROM i) ",
               c->qs, changes_cols);
    /* u first: it drives x, row by row */
    buf_printf(
        &b,
        "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM i), (SELECT count(*) FROM x),"
        " (SELECT count(DISTINCT x._rec) FROM x),"
        " (SELECT count(*) FROM %s AS b WHERE b._rec >= $1 AND b._rec < $2)",
        c->tbatch);
    buf_free(&su);
    buf_free(&sn);
    return b.data;
}

static void
build_statements(struct ctx *c)
{
    struct buf b;
    int ncols = c->s->nkeys + c->s->ndata;

    buf_init(&b);
    buf_printf(&b, "COPY %s (_rec, _op", c->tbatch);
    for (int i = 0; i < ncols; i++)
        buf_printf(&b, ", c%d", i);
    buf_puts(&b, ") FROM STDIN");
    c->sql_copy = xstrdup(b.data);

    /* A key kept in the crosswalk only: resolve each batch row's UUID once. */
    if (c->t->crosswalk_keys) {
        buf_reset(&b);
        buf_printf(&b,
                   "UPDATE %s AS b SET _cx = cw.uuid FROM %s.crosswalk AS cw"
                   " WHERE cw.table_name = $1 AND cw.legacy_key = ",
                   c->tbatch, c->qs);
        key_text_b(&b, c, "b");
        c->sql_resolve = xstrdup(b.data);
    }

    /* Lock and read the before-images. */
    for (int del = 0; del < 2; del++) {
        buf_reset(&b);
        buf_printf(&b, "INSERT INTO %s (_rec, img, u, lk, owned) SELECT b._rec, %s, ", c->tbefore,
                   c->t->img);
        uuid_t(&b, c, "t");
        buf_puts(&b, ", ");
        key_text_row(&b, c, "t", "b");
        buf_puts(&b, ", ");
        owned_expr(&b, c, "t", "b");
        buf_printf(&b, " FROM %s AS t JOIN %s AS b ON ", c->t->qname, c->tbatch);
        join_cond(&b, c, "t", "b");
        buf_puts(&b, " WHERE b._rec >= $1 AND b._rec < $2");
        if (del && c->t->integer_mode) {
            /* the application's rows are not even locked */
            buf_puts(&b, " AND ");
            owned_expr(&b, c, "t", "b");
        }
        if (!c->dry)
            buf_puts(&b, " FOR UPDATE OF t");
        if (del)
            c->sql_lock_del = xstrdup(b.data);
        else
            c->sql_lock = xstrdup(b.data);
    }

    /*
     * What must stop the run (exit 6), with a reason code per record; one
     * probe of the crosswalk per record (see print_refusal for the codes).
     */
    buf_reset(&b);
    buf_printf(&b,
               "SELECT x._rec, 1 FROM %s AS x WHERE x._rec >= $1 AND x._rec < $2"
               " GROUP BY x._rec HAVING count(*) > 1",
               c->tbefore);
    if (c->t->integer_mode) {
        buf_printf(&b,
                   " UNION ALL SELECT x._rec, 8 FROM %s AS x"
                   " WHERE x._rec >= $1 AND x._rec < $2 AND NOT x.owned",
                   c->tbefore);
    } else {
        struct buf u;

        /* the stream's UUID, or NULL when it carries none */
        buf_init(&u);
        if (c->t->uuid_scol >= 0)
            uuid_b(&u, c, "b");
        else
            buf_puts(&u, "NULL::uuid");
        buf_puts(&b, " UNION ALL SELECT q._rec, q.code FROM (SELECT b._rec, CASE"
                     " WHEN x._rec IS NOT NULL THEN CASE");
        buf_printf(&b, " WHEN %s IS NOT NULL AND %s <> x.u THEN 2", u.data, u.data);
        buf_puts(&b, " WHEN cx.uuid <> x.u THEN 3"
                     " WHEN b._op = 'I' AND cx.uuid IS NULL THEN 4 END"
                     " ELSE CASE");
        buf_printf(&b, " WHEN %s <> cx.uuid THEN 5", u.data);
        buf_printf(&b,
                   " WHEN EXISTS (SELECT 1 FROM %s AS t2 WHERE t2.%s = COALESCE(%s, cx.uuid))"
                   " THEN 6",
                   c->t->qname, c->t->cols[c->t->uuid_tcol].qname, u.data);
        if (c->t->uuid_scol >= 0) {
            buf_puts(&b, " WHEN EXISTS (SELECT 1 FROM ");
            crosswalk_rel(&b, c);
            buf_printf(&b, " AS c2 WHERE c2.uuid = %s AND c2.legacy_key <> ", u.data);
            key_text_b(&b, c, "b");
            buf_puts(&b, ") THEN 7");
        }
        buf_printf(&b, " END END AS code FROM %s AS b LEFT JOIN %s AS x ON x._rec = b._rec",
                   c->tbatch, c->tbefore);
        if (c->registered) {
            /*
             * One index probe per record (LATERAL): a join would let the
             * planner hash the table's whole crosswalk for every batch.
             */
            buf_printf(&b,
                       " LEFT JOIN LATERAL (SELECT cw.uuid FROM %s.crosswalk AS cw"
                       " WHERE cw.table_name = $3 AND cw.legacy_key = COALESCE(x.lk, ",
                       c->qs);
            key_text_b(&b, c, "b");
            buf_puts(&b, ") LIMIT 1) AS cx ON true"); /* LIMIT: not pulled up into a join */
        } else {
            buf_puts(&b, " LEFT JOIN ");
            crosswalk_rel(&b, c);
            buf_puts(&b, " AS cx ON cx.legacy_key = COALESCE(x.lk, ");
            key_text_b(&b, c, "b");
            buf_puts(&b, ")");
        }
        buf_puts(&b, " WHERE b._rec >= $1 AND b._rec < $2) AS q WHERE q.code IS NOT NULL");
        buf_free(&u);
    }
    buf_puts(&b, " ORDER BY 1, 2 LIMIT 20");
    c->sql_check = xstrdup(b.data);

    /* UPDATE ... FROM: the locked rows, never the UUID column, never a key column. */
    buf_reset(&b);
    buf_printf(&b, "WITH u AS (UPDATE %s AS t SET ", c->t->qname);
    set_list(&b, c, "b");
    buf_printf(&b, " FROM %s AS b JOIN %s AS x ON x._rec = b._rec WHERE ", c->tbatch, c->tbefore);
    join_cond(&b, c, "t", "b");
    buf_puts(&b, " AND b._rec >= $1 AND b._rec < $2 RETURNING b._rec AS rec, ");
    uuid_t(&b, c, "t");
    buf_puts(&b, " AS u, ");
    key_text_row(&b, c, "t", "b");
    buf_puts(&b, " AS lk, ");
    buf_printf(&b, STATE_ROW_HASH_SQL, c->t->img);
    buf_printf(&b,
               " AS h) INSERT INTO %s.changes %s SELECT $4::bigint, $3, $5, $6, $7::integer, 'U',"
               " u.lk, u.u, x.img, u.h FROM u JOIN %s AS x ON x._rec = u.rec",
               c->qs, changes_cols, c->tbefore);
    c->sql_update = xstrdup(b.data);

    /*
     * INSERT ... SELECT the rows that were not found. A key kept in the
     * crosswalk only is no column: the new rows' keys come back through their
     * UUIDs, chosen first in a CTE (s) and joined to what was inserted (j).
     */
    buf_reset(&b);
    {
        int cw = c->t->crosswalk_keys;
        const char *src = cw ? "s" : "b", *res = cw ? "j" : "i";
        struct buf u;

        /* the new row's UUID: the stream's, else the crosswalk's, else a new one */
        buf_init(&u);
        if (c->t->uuid_tcol >= 0) {
            buf_puts(&u, "COALESCE(");
            if (c->t->uuid_scol >= 0) {
                uuid_b(&u, c, "b");
                buf_puts(&u, ", ");
            }
            if (cw) {
                buf_puts(&u, "b._cx");
            } else {
                buf_puts(&u, "(SELECT cx.uuid FROM ");
                crosswalk_rel(&u, c);
                buf_puts(&u, " AS cx WHERE cx.legacy_key = ");
                key_text_b(&u, c, "b");
                buf_puts(&u, ")");
            }
            buf_puts(&u, ", pg_catalog.gen_random_uuid())");
        }
        buf_puts(&b, "WITH ");
        if (cw) {
            buf_puts(&b, "s AS MATERIALIZED (SELECT b.*, ");
            key_text_b(&b, c, "b");
            buf_printf(&b, " AS _lk, %s AS _u", u.data);
            buf_printf(&b,
                       " FROM %s AS b WHERE b._rec >= $1 AND b._rec < $2"
                       " AND NOT EXISTS (SELECT 1 FROM %s AS x WHERE x._rec = b._rec)), ",
                       c->tbatch, c->tbefore);
        }
        buf_printf(&b, "i AS (INSERT INTO %s AS t (", c->t->qname);
        insert_cols(&b, c);
        buf_puts(&b, needs_overriding(c) ? ") OVERRIDING SYSTEM VALUE SELECT " : ") SELECT ");
        insert_vals(&b, c, cw ? "s._u" : u.data, "b", src);
        if (cw)
            buf_puts(&b, " FROM s RETURNING ");
        else
            buf_printf(&b,
                       " FROM %s AS b WHERE b._rec >= $1 AND b._rec < $2"
                       " AND NOT EXISTS (SELECT 1 FROM %s AS x WHERE x._rec = b._rec) RETURNING ",
                       c->tbatch, c->tbefore);
        uuid_t(&b, c, "t");
        buf_puts(&b, " AS u, ");
        if (!cw) {
            key_text_t(&b, c, "t");
            buf_puts(&b, " AS lk, ");
        }
        buf_printf(&b, STATE_ROW_HASH_SQL, c->t->img);
        buf_puts(&b, " AS h)");
        if (cw)
            buf_puts(&b, ", j AS (SELECT s._lk AS lk, i.u, i.h FROM i JOIN s ON s._u = i.u)");
        if (c->t->integer_mode)
            buf_printf(&b,
                       ", w AS (INSERT INTO %s.owned_keys (table_name, legacy_key, run_id)"
                       " SELECT $3, i.lk, $4::bigint FROM i"
                       " ON CONFLICT ON CONSTRAINT driftless_owned_keys_pkey DO NOTHING)",
                       c->qs);
        else
            buf_printf(&b,
                       ", w AS (INSERT INTO %s.crosswalk (table_name, legacy_key, uuid, run_id)"
                       " SELECT $3, %s.lk, %s.u, $4::bigint FROM %s"
                       " ON CONFLICT ON CONSTRAINT driftless_crosswalk_pkey DO NOTHING)",
                       c->qs, res, res, res);
        buf_printf(&b,
                   " INSERT INTO %s.changes %s SELECT $4::bigint, $3, $5, $6, $7::integer, 'I',"
                   " %s.lk, %s.u, NULL, %s.h FROM %s",
                   c->qs, changes_cols, res, res, res, res);
        buf_free(&u);
    }
    c->sql_insert = xstrdup(b.data);
    c->sql_fast = fast_upsert_sql(c);

    /*
     * DELETE ... USING the locked rows. The delete itself locks its rows and
     * returns their before-images; a pass of its own locks them first only
     * when something must be checked under the lock (target-born children,
     * the application's rows) or, in a dry run, counted.
     */
    c->lock_delete = c->dry || c->t->nfk > 0 || c->t->integer_mode;
    buf_reset(&b);
    buf_printf(&b, "WITH d AS (DELETE FROM %s AS t USING %s AS b", c->t->qname, c->tbatch);
    if (c->lock_delete)
        buf_printf(&b, " JOIN %s AS x ON x._rec = b._rec", c->tbefore);
    buf_puts(&b, " WHERE ");
    join_cond(&b, c, "t", "b");
    buf_puts(&b, " AND b._rec >= $1 AND b._rec < $2 RETURNING ");
    uuid_t(&b, c, "t");
    buf_puts(&b, " AS u, ");
    key_text_row(&b, c, "t", "b");
    buf_printf(&b, " AS lk, %s AS img)", c->t->img);
    if (c->t->integer_mode)
        buf_printf(&b,
                   ", o AS (DELETE FROM %s.owned_keys AS o USING d"
                   " WHERE o.table_name = $3 AND o.legacy_key = d.lk)",
                   c->qs);
    buf_printf(&b,
               " INSERT INTO %s.changes %s SELECT $4::bigint, $3, $5, $6, $7::integer, 'D',"
               " d.lk, d.u, d.img, NULL FROM d",
               c->qs, changes_cols);
    c->sql_delete = xstrdup(b.data);

    /* Integer keys: deletes of the application's rows are counted, never done. */
    buf_reset(&b);
    buf_printf(&b, "SELECT count(*) FROM %s AS t JOIN %s AS b ON ", c->t->qname, c->tbatch);
    join_cond(&b, c, "t", "b");
    buf_puts(&b, " WHERE b._rec >= $1 AND b._rec < $2 AND NOT ");
    owned_expr(&b, c, "t", "b");
    c->sql_not_owned = xstrdup(b.data);

    /* Rows born in the target that a delete would cascade into or be blocked by. */
    c->sql_children = xcalloc((size_t)c->t->nfk + 1, sizeof(char *));
    c->sql_children_all = xcalloc((size_t)c->t->nfk + 1, sizeof(char *));
    for (int f = 0; f < c->t->nfk; f++) {
        c->sql_children[f] = children_sql(c, &c->t->fk[f], 1);
        c->sql_children_all[f] = children_sql(c, &c->t->fk[f], 0);
    }

    buf_reset(&b);
    buf_printf(&b,
               "INSERT INTO %s.batches (stream_checksum, table_name, phase, batch, run_id,"
               " first_record, last_record, rows, inserted, updated, deleted, rejected, deferred,"
               " rejects, xid) VALUES ($1, $2, $3, $4::integer, $5::bigint, $6::bigint, $7::bigint,"
               " $8::integer, $9::integer, $10::integer, $11::integer, $12::integer,"
               " $13::bigint[], $14::jsonb, pg_catalog.txid_current())",
               c->qs);
    c->sql_checkpoint = xstrdup(b.data);
    buf_free(&b);
}

/* The highest $n in sql: the statements number their parameters from $1 without gaps. */
static int
nparams(const char *sql)
{
    int max = 0;

    for (const char *p = sql; (p = strchr(p, '$')) != NULL; p++) {
        int v = 0;

        while (p[1] >= '0' && p[1] <= '9')
            v = v * 10 + (*++p - '0');
        if (v > max)
            max = v;
    }
    return max;
}

/* ---- error handling ---- */

static enum failure
classify(const char *st)
{
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0)
        return F_RETRY;
    if (strcmp(st, "23505") == 0)
        return F_UNIQUE;
    if (strncmp(st, "22", 2) == 0 || strcmp(st, "23502") == 0 || strcmp(st, "23514") == 0 ||
        strcmp(st, "23503") == 0)
        return F_DATA;
    return F_OTHER;
}

static const char *
condition_name(const char *st)
{
    static const struct {
        const char *code, *name;
    } names[] = {
        { "22001", "string_data_right_truncation" },
        { "22003", "numeric_value_out_of_range" },
        { "22007", "invalid_datetime_format" },
        { "22008", "datetime_field_overflow" },
        { "22012", "division_by_zero" },
        { "22021", "character_not_in_repertoire" },
        { "22023", "invalid_parameter_value" },
        { "22P02", "invalid_text_representation" },
        { "22P05", "untranslatable_character" },
        { "23502", "not_null_violation" },
        { "23503", "foreign_key_violation" },
        { "23505", "unique_violation" },
        { "23514", "check_violation" },
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i].code, st) == 0)
            return names[i].name;
    return strncmp(st, "22", 2) == 0 ? "data_exception" : "error";
}

/*
 * The reason a row was refused. A class 22 message may quote the value
 * (customer data), so only the condition is named; class 23 messages name
 * the constraint and never a value.
 */
static char *
reason_text(struct db *d)
{
    const char *st = db_last_sqlstate(d);
    struct buf b;

    buf_init(&b);
    buf_printf(&b, "%s (%s)", condition_name(st), st);
    if (strncmp(st, "23", 2) == 0)
        buf_printf(&b, ": %s", db_last_message(d));
    else if (db_last_constraint(d)[0] != '\0')
        buf_printf(&b, ": constraint \"%s\"", db_last_constraint(d));
    return b.data;
}

/* Run one of our statements; failures are recorded, printed by the caller. */
static int
stmt(struct ctx *c, const char *sql, const char *const *params, long long *tuples,
     struct db_result **res)
{
    struct db_result *r = NULL;
    int rc;

    rc = db_query(c->d, &r, c->t->name, sql, nparams(sql), params);
    if (rc == 0) {
        if (tuples != NULL)
            *tuples = db_cmd_tuples(r);
        if (res != NULL)
            *res = r;
        else
            db_result_free(r);
    }
    return rc;
}

/* A statement failure that is not a row's fault: print it with the batch. */
static int
batch_error(struct ctx *c, const char *what)
{
    const char *st = db_last_sqlstate(c->d);

    if (strncmp(st, "22", 2) == 0)
        err_msg(EXIT_DB, "table %s: %s batch %d: could not %s: %s (SQLSTATE %s)", c->t->name,
                phase_names[c->phase], c->batch_no, what, condition_name(st), st);
    else
        err_msg(EXIT_DB, "table %s: %s batch %d: could not %s: %s (SQLSTATE %s)", c->t->name,
                phase_names[c->phase], c->batch_no, what, db_last_message(c->d),
                st[0] ? st : "none");
    return EXIT_DB;
}

/* ---- the batch ---- */

static void
batch_reset(struct ctx *c)
{
    buf_reset(&c->copy);
    for (int i = 0; i < c->n; i++) {
        free(c->keys[i]);
        free(c->pre_reason[i]);
    }
    c->n = 0;
}

static void
results_reset(struct ctx *c)
{
    c->b_ins = c->b_upd = c->b_del = c->b_not_owned = 0;
    c->nb_deferred = 0;
    for (int i = 0; i < c->nb_rejects; i++) {
        free(c->b_rejects[i].key);
        free(c->b_rejects[i].reason);
    }
    c->nb_rejects = 0;
}

static void
add_batch_reject(struct ctx *c, int i, char *reason)
{
    if (c->nb_rejects == c->capb_rejects) {
        c->capb_rejects = c->capb_rejects ? c->capb_rejects * 2 : 16;
        c->b_rejects = xrealloc(c->b_rejects, (size_t)c->capb_rejects * sizeof(struct reject));
    }
    c->b_rejects[c->nb_rejects].ord = c->ords[i];
    c->b_rejects[c->nb_rejects].key = xstrdup(c->keys[i]);
    c->b_rejects[c->nb_rejects].reason = reason;
    c->nb_rejects++;
}

static void
add_batch_deferred(struct ctx *c, int i)
{
    if (c->nb_deferred == c->capb_deferred) {
        c->capb_deferred = c->capb_deferred ? c->capb_deferred * 2 : 16;
        c->b_deferred = xrealloc(c->b_deferred, (size_t)c->capb_deferred * sizeof(uint64_t));
    }
    c->b_deferred[c->nb_deferred++] = c->ords[i];
}

static void
add_run_reject(struct ctx *c, uint64_t ord, const char *key, const char *reason)
{
    if (c->nrejects == c->caprejects) {
        c->caprejects = c->caprejects ? c->caprejects * 2 : 16;
        c->rejects = xrealloc(c->rejects, c->caprejects * sizeof(struct reject));
    }
    c->rejects[c->nrejects].ord = ord;
    c->rejects[c->nrejects].key = xstrdup(key);
    c->rejects[c->nrejects].reason = xstrdup(reason);
    c->nrejects++;
}

static void
add_run_deferred(struct ctx *c, uint64_t ord)
{
    if (c->ndeferred == c->capdeferred) {
        c->capdeferred = c->capdeferred ? c->capdeferred * 2 : 64;
        c->deferred = xrealloc(c->deferred, c->capdeferred * sizeof(uint64_t));
    }
    c->deferred[c->ndeferred++] = ord;
}

/* COPY text: backslash escapes for the four bytes that would end a field or row. */
static void
copy_escape(struct buf *b, const struct rs_value *v)
{
    const char *p = v->data, *end, *run;

    if (v->data == NULL) {
        buf_append(b, "\\N", 2);
        return;
    }
    end = p + v->len;
    buf_reserve(b, v->len + 16);
    for (run = p; p < end; p++) {
        const char *esc;

        switch (*p) {
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            continue;
        }
        buf_append(b, run, (size_t)(p - run));
        buf_append(b, esc, 2);
        run = p + 1;
    }
    buf_append(b, run, (size_t)(end - run));
}

/* Add a record to the batch. */
static void
batch_add(struct ctx *c, const struct rs_value *v, uint64_t ord)
{
    const struct spool *s = c->s;
    char key[512];
    int i = c->n;

    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->ords = xrealloc(c->ords, (size_t)c->cap * sizeof(uint64_t));
        c->keys = xrealloc(c->keys, (size_t)c->cap * sizeof(char *));
        c->pre = xrealloc(c->pre, (size_t)c->cap);
        c->pre_reason = xrealloc(c->pre_reason, (size_t)c->cap * sizeof(char *));
    }
    rs_key_format(&s->hdr, v, key, sizeof(key));
    c->ords[i] = ord;
    c->keys[i] = xstrdup(key);
    c->pre[i] = 0;
    c->pre_reason[i] = NULL;
    c->n++;
    for (int k = 0; k < s->nkeys + s->ndata; k++) {
        int col = k < s->nkeys ? s->key_cols[k] : s->data_cols[k - s->nkeys];
        const struct rs_value *x = &v[col];

        if (x->data != NULL && !utf8_valid_text((const unsigned char *)x->data, x->len)) {
            struct buf r;

            buf_init(&r);
            buf_printf(&r, "character_not_in_repertoire (22021): column \"%s\" is not valid UTF-8",
                       s->hdr.cols[col].name);
            c->pre[i] = 1;
            c->pre_reason[i] = r.data;
            return;
        }
    }
    buf_printf(&c->copy, "%d\t%c", i, v[s->op_col].data[0]);
    for (int k = 0; k < s->nkeys + s->ndata; k++) {
        int col = k < s->nkeys ? s->key_cols[k] : s->data_cols[k - s->nkeys];

        buf_putc(&c->copy, '\t');
        copy_escape(&c->copy, &v[col]);
    }
    buf_putc(&c->copy, '\n');
}

static int
copy_batch(struct ctx *c)
{
    int rc;

    if ((rc = db_copy_in_begin(c->d, c->t->name, c->sql_copy)) != 0)
        return rc;
    rc = db_copy_in_put(c->d, c->copy.data != NULL ? c->copy.data : "", c->copy.len);
    if (rc != 0) {
        db_copy_in_end(c->d, "pgapply could not send the batch");
        return rc;
    }
    return db_copy_in_end(c->d, NULL);
}

/* Params $1..$7: lo, hi, table, run, checksum, phase, batch. */
static void
fill_params(struct ctx *c, const char **p, char *lo, char *hi, char *bn, int from, int to)
{
    snprintf(lo, 16, "%d", from);
    snprintf(hi, 16, "%d", to);
    snprintf(bn, 16, "%d", c->batch_no);
    p[0] = lo;
    p[1] = hi;
    p[2] = c->t->name;
    p[3] = c->run;
    p[4] = c->s->checksum;
    p[5] = phase_names[c->phase];
    p[6] = bn;
}

/* The key of the row that holds the unique value record i wanted. */
static char *
other_key(struct ctx *c, int i, const char *constraint)
{
    const struct uindex *u = target_uindex(c->t, constraint);
    struct db_result *r = NULL;
    struct buf b;
    const char *params[1];
    char rec[16];
    char *out = NULL;

    if (u == NULL)
        return NULL;
    buf_init(&b);
    buf_puts(&b, "SELECT ");
    key_text_t(&b, c, "t2");
    buf_puts(&b, ", (");
    uuid_t(&b, c, "t2");
    buf_printf(&b, ")::text FROM %s AS t2 JOIN %s AS b ON ", c->t->qname, c->tbatch);
    for (int k = 0; k < u->ncols; k++) {
        int sc = -1;

        for (int j = 0; j < c->s->nkeys + c->s->ndata; j++) {
            int col = j < c->s->nkeys ? c->s->key_cols[j] : c->s->data_cols[j - c->s->nkeys];

            if (strcmp(c->s->hdr.cols[col].name, u->cols[k]) == 0)
                sc = j;
        }
        if (sc < 0) {
            /* the value comes from a default or a trigger: it cannot be matched here */
            buf_free(&b);
            return NULL;
        }
        {
            int tc = target_find(c->t, u->cols[k]);

            buf_printf(&b, "%st2.%s = (", k > 0 ? " AND " : "", c->t->cols[tc].qname);
            bcol(&b, "b", sc);
            buf_printf(&b, ")::%s", c->t->cols[tc].cast);
        }
    }
    buf_puts(&b, " WHERE b._rec = $1::integer AND (");
    join_cond(&b, c, "t2", "b");
    buf_puts(&b, ") IS NOT TRUE LIMIT 1");
    snprintf(rec, sizeof(rec), "%d", i);
    params[0] = rec;
    if (db_query(c->d, &r, c->t->name, b.data, 1, params) == 0 && db_ntuples(r) == 1) {
        struct buf o;

        buf_init(&o);
        if (db_value(r, 0, 0) != NULL) {
            buf_puts(&o, "key (");
            for (int k = 0; k < c->s->nkeys; k++)
                buf_printf(&o, "%s%s", k > 0 ? ", " : "", c->s->hdr.cols[c->s->key_cols[k]].name);
            buf_printf(&o, ")=(%s)", db_value(r, 0, 0));
        } else {
            buf_printf(&o, "a row born in the target (%s)=(%s)",
                       c->t->uuid_tcol >= 0 ? c->t->cols[c->t->uuid_tcol].name : "ctid",
                       db_value(r, 0, 1) != NULL ? db_value(r, 0, 1) : "?");
        }
        out = o.data;
    }
    db_result_free(r);
    buf_free(&b);
    return out;
}

/*
 * Apply records [lo, hi) of the batch under a savepoint; on a row's error,
 * split until the bad rows stand alone. Returns 0, F_RETRY (the whole batch
 * must be retried) or an exit code.
 */
static int
apply_range(struct ctx *c, int lo, int hi)
{
    const char *p[7];
    char a[16], b[16], bn[16];
    long long n1 = 0, n2 = 0;
    enum failure f;
    char *st, *cons, *reason;
    int rc;

    if (hi <= lo)
        return 0;
    fill_params(c, p, a, b, bn, lo, hi);
    if ((rc = db_exec(c->d, "SAVEPOINT driftless_range")) != 0)
        return classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                           : batch_error(c, "start a savepoint");
    if (c->phase == PH_DELETE) {
        rc = stmt(c, c->sql_delete, p, &n1, NULL);
    } else {
        rc = stmt(c, c->sql_update, p, &n1, NULL);
        if (rc == 0)
            rc = stmt(c, c->sql_insert, p, &n2, NULL);
    }
    if (rc == 0) {
        if ((rc = db_exec(c->d, "RELEASE SAVEPOINT driftless_range")) != 0)
            return classify(db_last_sqlstate(c->d)) == F_RETRY
                       ? F_RETRY
                       : batch_error(c, "release a savepoint");
        if (c->phase == PH_DELETE) {
            c->b_del += n1;
        } else {
            c->b_upd += n1;
            c->b_ins += n2;
        }
        return 0;
    }
    st = xstrdup(db_last_sqlstate(c->d));
    cons = xstrdup(db_last_constraint(c->d));
    f = classify(st);
    if (f == F_RETRY) {
        free(st);
        free(cons);
        return F_RETRY;
    }
    if (f == F_OTHER) {
        batch_error(c, c->phase == PH_DELETE ? "delete" : "upsert");
        err_note("detail: records %llu to %llu of the stream", (unsigned long long)c->ords[lo] + 1,
                 (unsigned long long)c->ords[hi - 1] + 1);
        free(st);
        free(cons);
        return EXIT_DB;
    }
    reason = reason_text(c->d);
    if ((rc = db_exec(c->d, "ROLLBACK TO SAVEPOINT driftless_range")) != 0 ||
        (rc = db_exec(c->d, "RELEASE SAVEPOINT driftless_range")) != 0) {
        rc = classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                         : batch_error(c, "roll back a savepoint");
        goto out;
    }
    if (f == F_UNIQUE &&
        (strncmp(cons, "driftless_", 10) == 0 || target_is_legacy_index(c->t, c->s, cons) ||
         (c->t->uuid_tcol >= 0 && target_uindex(c->t, cons) != NULL &&
          target_uindex(c->t, cons)->ncols == 1 &&
          strcmp(target_uindex(c->t, cons)->cols[0], c->t->cols[c->t->uuid_tcol].name) == 0))) {
        /* Not a row's fault: a key or UUID is already taken. Find the row, then stop. */
        if (hi - lo > 1) {
            int mid = lo + (hi - lo) / 2;

            if ((rc = apply_range(c, lo, mid)) == 0)
                rc = apply_range(c, mid, hi);
            if (rc == 0)
                rc = err_msg(EXIT_REFUSED, "table %s: refused: %s (constraint \"%s\") in batch %d",
                             c->t->name, reason, cons, c->batch_no);
            goto out;
        }
        if (strncmp(cons, "driftless_", 10) == 0)
            rc = err_msg(EXIT_REFUSED,
                         "table %s: key %s: refused: the state already records this change or "
                         "mapping (constraint \"%s\")",
                         c->t->name, c->keys[lo], cons);
        else
            rc = err_msg(EXIT_REFUSED,
                         "table %s: key %s: refused: its legacy key or UUID is already taken in "
                         "the target (constraint \"%s\")",
                         c->t->name, c->keys[lo], cons);
        goto out;
    }
    if (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;

        if ((rc = apply_range(c, lo, mid)) == 0)
            rc = apply_range(c, mid, hi);
        goto out;
    }
    /* One row. */
    if ((f == F_UNIQUE || strcmp(st, "23503") == 0) && c->phase == PH_UPSERT) {
        /*
         * Perhaps a row the delete phase removes holds the value, or the parent is
         * itself set aside until then: try again after it.
         */
        add_batch_deferred(c, lo);
    } else if (f == F_UNIQUE) {
        char *other = other_key(c, lo, cons);
        struct buf r;

        buf_init(&r);
        buf_printf(&r, "unique_violation (23505): constraint \"%s\", value held by %s", cons,
                   other != NULL ? other : "another row");
        free(other);
        add_batch_reject(c, lo, r.data);
    } else {
        add_batch_reject(c, lo, reason);
        reason = NULL;
    }
    rc = 0;
out:
    free(reason);
    free(st);
    free(cons);
    return rc;
}

static void
print_refusal(struct ctx *c, int code, int i)
{
    static const char *const why[] = {
        "",
        "more than one target row has this legacy key",
        "the stream's UUID differs from the row's (a UUID is never rewritten)",
        "the crosswalk maps this key to another UUID than the row's",
        "an insert meets an existing row with this legacy key under another UUID",
        "the stream's UUID differs from the crosswalk's for this key",
        "its UUID is already used by another row of the target",
        "the crosswalk maps this UUID to another key",
        "a row with this key was created by the application, not migrated",
    };

    err_msg(EXIT_REFUSED, "table %s: key %s: refused: %s", c->t->name, c->keys[i],
            code > 0 && code < (int)(sizeof(why) / sizeof(why[0])) ? why[code] : "?");
}

/* "(legacy_id)=(5)" from a legacy_key text (a JSON array for a composite key). */
static char *
format_key_text(const struct ctx *c, const char *lk)
{
    struct buf b;

    buf_init(&b);
    buf_puts(&b, "(");
    for (int k = 0; k < c->s->nkeys; k++)
        buf_printf(&b, "%s%s", k > 0 ? ", " : "", c->s->hdr.cols[c->s->key_cols[k]].name);
    if (c->s->nkeys == 1)
        buf_printf(&b, ")=(%s)", lk != NULL ? lk : "?");
    else
        buf_printf(&b, ")=%s", lk != NULL ? lk : "?");
    return b.data;
}

/* Name the target-born children found by a children query; EXIT_REFUSED if any. */
static int
report_children(const struct ctx *c, const struct fkref *fk, const struct db_result *r)
{
    for (int i = 0; i < db_ntuples(r); i++) {
        char *key = format_key_text(c, db_value(r, i, 1));
        struct buf id;

        buf_init(&id);
        if (fk->nident > 0) {
            buf_puts(&id, "(");
            for (int k = 0; k < fk->nident; k++)
                buf_printf(&id, "%s%s", k > 0 ? ", " : "", fk->ident_names[k]);
            buf_printf(&id, ")=(%s)", db_value(r, i, 2));
        } else {
            buf_printf(&id, "(ctid)=(%s)", db_value(r, i, 2));
        }
        err_msg(EXIT_REFUSED,
                "table %s: key %s: refused: the delete would cascade into, or be blocked by, "
                "row %s of %s, born in the target (constraint \"%s\")",
                c->t->name, key, id.data, fk->child, fk->conname);
        buf_free(&id);
        free(key);
    }
    return db_ntuples(r) > 0 ? EXIT_REFUSED : 0;
}

/* Checks that stop the run (exit 6) before anything of the batch is written. */
static int
check_batch(struct ctx *c, const char **p)
{
    struct db_result *r = NULL;
    int rc;

    if (c->phase != PH_DELETE) {
        if ((rc = stmt(c, c->sql_check, p, NULL, &r)) != 0)
            return rc;
        for (int i = 0; i < db_ntuples(r); i++)
            print_refusal(c, atoi(db_value(r, i, 1)), atoi(db_value(r, i, 0)));
        rc = db_ntuples(r) > 0 ? EXIT_REFUSED : 0;
        db_result_free(r);
        return rc;
    }
    for (int f = 0; f < c->t->nfk; f++) {
        if ((rc = stmt(c, c->sql_children[f], p, NULL, &r)) != 0)
            return rc;
        rc = report_children(c, &c->t->fk[f], r);
        db_result_free(r);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* JSON string with the escapes JSON requires. */
static void
json_str(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_putc(b, (char)*p);
    }
    buf_putc(b, '"');
}

static int
checkpoint(struct ctx *c)
{
    const char *p[14];
    char bn[16], first[24], last[24], rows[16], ins[24], upd[24], del[24], rej[16];
    struct buf deferred, rejects;
    int rc;

    buf_init(&deferred);
    buf_init(&rejects);
    buf_putc(&deferred, '{');
    for (int i = 0; i < c->nb_deferred; i++)
        buf_printf(&deferred, "%s%llu", i > 0 ? "," : "", (unsigned long long)c->b_deferred[i]);
    buf_putc(&deferred, '}');
    buf_putc(&rejects, '[');
    for (int i = 0; i < c->nb_rejects; i++) {
        buf_printf(&rejects, "%s{\"record\": %llu, \"key\": ", i > 0 ? ", " : "",
                   (unsigned long long)c->b_rejects[i].ord);
        json_str(&rejects, c->b_rejects[i].key);
        buf_puts(&rejects, ", \"reason\": ");
        json_str(&rejects, c->b_rejects[i].reason);
        buf_putc(&rejects, '}');
    }
    buf_putc(&rejects, ']');
    snprintf(bn, sizeof(bn), "%d", c->batch_no);
    snprintf(first, sizeof(first), "%llu", (unsigned long long)c->ords[0]);
    snprintf(last, sizeof(last), "%llu", (unsigned long long)c->ords[c->n - 1]);
    snprintf(rows, sizeof(rows), "%d", c->n);
    snprintf(ins, sizeof(ins), "%lld", c->b_ins);
    snprintf(upd, sizeof(upd), "%lld", c->b_upd);
    snprintf(del, sizeof(del), "%lld", c->b_del);
    snprintf(rej, sizeof(rej), "%d", c->nb_rejects);
    p[0] = c->s->checksum;
    p[1] = c->t->name;
    p[2] = phase_names[c->phase];
    p[3] = bn;
    p[4] = c->run;
    p[5] = first;
    p[6] = last;
    p[7] = rows;
    p[8] = ins;
    p[9] = upd;
    p[10] = del;
    p[11] = rej;
    p[12] = deferred.data;
    p[13] = rejects.data;
    rc = db_query(c->d, NULL, c->t->name, c->sql_checkpoint, 14, p);
    buf_free(&deferred);
    buf_free(&rejects);
    return rc;
}

/*
 * The batch's upsert in one statement (fast_upsert_sql). *done = 1 when it
 * applied the whole batch; else the careful path (lock, check, apply_range)
 * takes the batch. Returns 0, F_RETRY or a code.
 * In a batch's own transaction there is no savepoint: the rows then carry
 * the transaction's xid, which the checkpoint records (batches.xid) for the
 * next incremental compare. A refused batch sets no_fast and returns
 * F_RETRY: the batch is rolled back and try_batch starts it again on the
 * careful path.
 * Inside a group's transaction a savepoint takes the statement back.
 */
static int
fast_upsert(struct ctx *c, const char **p, int *done)
{
    struct db_result *r = NULL;

    *done = 0;
    if (c->outer && db_exec(c->d, "SAVEPOINT driftless_fast") != 0)
        return classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                           : batch_error(c, "start a savepoint");
    if (stmt(c, c->sql_fast, p, NULL, &r) == 0) {
        long long upd = atoll(db_value(r, 0, 0)), ins = atoll(db_value(r, 0, 1));
        long long locked = atoll(db_value(r, 0, 2)), keys = atoll(db_value(r, 0, 3));
        long long rows = atoll(db_value(r, 0, 4));

        db_result_free(r);
        if (locked == keys && upd == locked && ins == rows - keys) {
            if (c->outer && db_exec(c->d, "RELEASE SAVEPOINT driftless_fast") != 0)
                return classify(db_last_sqlstate(c->d)) == F_RETRY
                           ? F_RETRY
                           : batch_error(c, "release a savepoint");
            c->b_upd = upd;
            c->b_ins = ins;
            *done = 1;
            return 0;
        }
    } else if (classify(db_last_sqlstate(c->d)) == F_RETRY) {
        return F_RETRY;
    }
    if (!c->outer) {
        c->no_fast = 1;
        return F_RETRY;
    }
    if (db_exec(c->d, "ROLLBACK TO SAVEPOINT driftless_fast") != 0 ||
        db_exec(c->d, "RELEASE SAVEPOINT driftless_fast") != 0)
        return classify(db_last_sqlstate(c->d)) == F_RETRY
                   ? F_RETRY
                   : batch_error(c, "roll back a savepoint");
    return 0;
}

/*
 * Start the batch: its own transaction, or, inside a group's transaction,
 * emptied temp tables (ON COMMIT DELETE ROWS only empties them at a commit).
 */
static int
batch_begin(struct ctx *c)
{
    char sql[256];
    int rc;

    if (c->outer) {
        /* TRUNCATE leaves no dead rows for the next batches to scan; a read-only one can't */
        snprintf(sql, sizeof(sql), c->dry ? "DELETE FROM %s; DELETE FROM %s" : "TRUNCATE %s, %s",
                 c->tbatch, c->tbefore);
        if ((rc = db_exec(c->d, sql)) != 0)
            return classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                               : batch_error(c, "empty the batch");
        return 0;
    }
    if ((rc = db_exec(c->d, c->dry ? "BEGIN TRANSACTION READ ONLY" : "BEGIN")) != 0)
        return batch_error(c, "begin");
    snprintf(sql, sizeof(sql), "SET LOCAL lock_timeout = %lld", (long long)c->o->lock_timeout_ms);
    if ((rc = db_exec(c->d, sql)) != 0 ||
        (rc = db_exec(c->d, "SET CONSTRAINTS ALL IMMEDIATE")) != 0) {
        rc = batch_error(c, "set up the transaction");
        db_exec(c->d, "ROLLBACK");
        return rc;
    }
    return 0;
}

/*
 * Returns 0, F_RETRY or an exit code; the transaction is closed either way
 * (inside a group's, the group closes it).
 */
static int
try_batch_quiet(struct ctx *c)
{
    const char *p[7];
    char a[16], b[16], bn[16];
    long long locked = 0;
    int rc;

    results_reset(c);
    for (int i = 0; i < c->n; i++)
        if (c->pre[i])
            add_batch_reject(c, i, xstrdup(c->pre_reason[i]));
    fill_params(c, p, a, b, bn, 0, c->n);
    if ((rc = batch_begin(c)) != 0)
        return rc;
    if ((rc = copy_batch(c)) != 0) {
        rc = batch_error(c, "copy the batch");
        goto fail;
    }
    if (c->sql_resolve != NULL) {
        const char *q[1] = { c->t->name };

        if ((rc = stmt(c, c->sql_resolve, q, NULL, NULL)) != 0) {
            rc = classify(db_last_sqlstate(c->d)) == F_RETRY
                     ? F_RETRY
                     : batch_error(c, "find the rows in the crosswalk");
            goto fail;
        }
    }
    if (c->phase != PH_DELETE && c->sql_fast != NULL && !c->no_fast) {
        int done = 0;

        if ((rc = fast_upsert(c, p, &done)) != 0)
            goto fail;
        if (done)
            goto applied;
    }
    if ((c->phase != PH_DELETE || c->lock_delete) &&
        (rc = stmt(c, c->phase == PH_DELETE ? c->sql_lock_del : c->sql_lock, p, &locked, NULL)) !=
            0) {
        rc =
            classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY : batch_error(c, "lock the rows");
        goto fail;
    }
    if ((rc = check_batch(c, p)) != 0) {
        if (rc == EXIT_DB)
            rc = classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                             : batch_error(c, "check the batch");
        goto fail;
    }
    if (c->phase == PH_DELETE && c->t->integer_mode) {
        struct db_result *r = NULL;

        if ((rc = stmt(c, c->sql_not_owned, p, NULL, &r)) != 0) {
            rc = classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                             : batch_error(c, "count the rows");
            goto fail;
        }
        c->b_not_owned = atoll(db_value(r, 0, 0));
        db_result_free(r);
    }
    if (c->dry) {
        int valid = 0;

        for (int i = 0; i < c->n; i++)
            valid += !c->pre[i];
        if (c->phase == PH_DELETE) {
            c->b_del = locked;
        } else {
            c->b_upd = locked;
            c->b_ins = valid - locked;
        }
        if (!c->outer)
            db_exec(c->d, "ROLLBACK");
        return 0;
    }
    if ((rc = apply_range(c, 0, c->n)) != 0)
        goto fail;
applied:
    if ((rc = checkpoint(c)) != 0) {
        rc = classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY
                                                         : batch_error(c, "write the checkpoint");
        goto fail;
    }
    if (!c->outer && (rc = db_exec(c->d, "COMMIT")) != 0) {
        rc = classify(db_last_sqlstate(c->d)) == F_RETRY ? F_RETRY : batch_error(c, "commit");
        goto fail;
    }
    return 0;
fail:
    if (!c->outer)
        db_exec(c->d, "ROLLBACK");
    return rc;
}

/*
 * The batch's statements report their own errors: libpq's DETAIL of a
 * constraint violation quotes the row, which is customer data.
 */
static int
try_batch(struct ctx *c)
{
    int fast = !c->no_fast, rc;

    db_set_quiet(c->d, 1);
    rc = try_batch_quiet(c);
    /* The one-statement upsert refused the batch (fast_upsert): the careful path, at once. */
    if (rc == F_RETRY && fast && c->no_fast)
        rc = try_batch_quiet(c);
    db_set_quiet(c->d, 0);
    return rc;
}

static void
progress(struct ctx *c, int force)
{
    double t = now();

    if (!c->o->progress || (!force && t - c->last_progress < 0.5))
        return;
    c->last_progress = t;
    err_note("table %s: %s batch %d: %llu rows applied (%.0f rows/s)", c->t->name,
             phase_names[c->phase], c->batch_no, (unsigned long long)c->applied,
             t > c->started ? (double)c->applied / (t - c->started) : 0.0);
}

static int
failpoint(struct ctx *c)
{
    if (c->o->fail_after_commit > 0 && c->commits == c->o->fail_after_commit) {
        /* Test hook: die as a killed pipeline would, the whole process group at once. */
        kill(0, SIGKILL);
        pause();
    }
    return 0;
}

static int
flush_batch(struct ctx *c)
{
    int rc = 0;

    if (c->n == 0)
        return 0;
    if (io_interrupted) {
        batch_reset(c);
        return err_msg(EXIT_IO, "interrupted");
    }
    for (int attempt = 0;; attempt++) {
        rc = try_batch(c);
        if (rc != F_RETRY || c->outer)
            break; /* a group retries its whole transaction */
        if (attempt == MAX_RETRIES) {
            rc =
                err_msg(EXIT_DB, "table %s: %s batch %d: gave up after %d retries (%s)", c->t->name,
                        phase_names[c->phase], c->batch_no, MAX_RETRIES, db_last_message(c->d));
            break;
        }
        /* A deadlock or serialization failure: back off a little and try again. */
        usleep((useconds_t)(100000 * (attempt + 1)));
    }
    c->no_fast = 0;
    if (rc == 0) {
        c->c->inserted += (uint64_t)c->b_ins;
        c->c->updated += (uint64_t)c->b_upd;
        c->c->deleted += (uint64_t)c->b_del;
        c->c->not_owned += (uint64_t)c->b_not_owned;
        if (c->phase == PH_DELETE)
            c->c->not_found += (uint64_t)(c->n - c->b_del - c->b_not_owned - c->nb_rejects);
        c->c->batches++;
        c->applied += (uint64_t)(c->b_ins + c->b_upd + c->b_del);
        for (int i = 0; i < c->nb_rejects; i++) {
            /* a group's are printed once its transaction commits */
            if (!c->dry && !c->outer)
                err_msg(EXIT_DIFF, "table %s: key %s: rejected: %s", c->t->name,
                        c->b_rejects[i].key, c->b_rejects[i].reason);
            add_run_reject(c, c->b_rejects[i].ord, c->b_rejects[i].key, c->b_rejects[i].reason);
        }
        for (int i = 0; i < c->nb_deferred; i++)
            add_run_deferred(c, c->b_deferred[i]);
        c->c->deferred += (uint64_t)c->nb_deferred;
        if (!c->dry && !c->outer)
            c->commits++;
        progress(c, 0);
        if (!c->dry && !c->outer)
            failpoint(c);
    }
    batch_reset(c);
    results_reset(c);
    return rc;
}

static struct done *
find_done(const struct ctx *c, int phase, int batch)
{
    for (int i = 0; i < c->ndone; i++)
        if (c->done[i].phase == phase && c->done[i].batch == batch)
            return &c->done[i];
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* One phase: its records in stream order, in batches; committed batches skipped. */
static int
run_phase(struct ctx *c, enum phase ph)
{
    struct spool_iter it;
    const struct rs_value *v = NULL;
    uint64_t ord = 0;
    size_t di = 0;
    int rc;

    c->phase = ph;
    c->batch_no = 1;
    if (ph == PH_RETRY) {
        if (c->ndeferred == 0)
            return 0;
        qsort(c->deferred, c->ndeferred, sizeof(uint64_t), cmp_u64);
    }
    if ((rc = spool_iter_open(&it, c->s)) != 0)
        return rc;
    for (;;) {
        /* the next record of this phase */
        for (;;) {
            if ((rc = spool_iter_next(&it, &v, &ord)) != 0 || v == NULL)
                break;
            if (ph == PH_RETRY) {
                while (di < c->ndeferred && c->deferred[di] < ord)
                    di++;
                if (di < c->ndeferred && c->deferred[di] == ord)
                    break;
                if (di == c->ndeferred) {
                    v = NULL;
                    break;
                }
                continue;
            }
            if ((v[c->s->op_col].data[0] == 'D') == (ph == PH_DELETE))
                break;
        }
        if (rc != 0 || v == NULL)
            break;
        if (c->n == 0) {
            const struct done *dn = find_done(c, ph, c->batch_no);

            if (dn != NULL) {
                if (dn->first != ord) {
                    rc = err_msg(EXIT_INTERNAL,
                                 "table %s: %s batch %d: its checkpoint starts at record %llu, "
                                 "the stream at %llu",
                                 c->t->name, phase_names[ph], c->batch_no,
                                 (unsigned long long)dn->first + 1, (unsigned long long)ord + 1);
                    break;
                }
                /* Committed before: skip its records, keep its rejects. */
                c->c->skipped_batches++;
                c->c->skipped_rows += (uint64_t)dn->rows;
                for (int i = 0; i < dn->nrejects; i++)
                    add_run_reject(c, dn->rejects[i].ord, dn->rejects[i].key,
                                   dn->rejects[i].reason);
                c->batch_no++;
                while (v != NULL && ord < dn->last) {
                    if ((rc = spool_iter_next(&it, &v, &ord)) != 0)
                        break;
                }
                if (rc != 0)
                    break;
                continue;
            }
        }
        batch_add(c, v, ord);
        if (c->n >= c->o->batch_rows || (int64_t)c->copy.len >= c->o->batch_bytes) {
            if ((rc = flush_batch(c)) != 0)
                break;
            c->batch_no++;
        }
    }
    if (rc == 0)
        rc = flush_batch(c);
    batch_reset(c);
    spool_iter_close(&it);
    progress(c, 1);
    return rc;
}

/* ---- before the batches ---- */

static int
load_done(struct ctx *c)
{
    struct db_result *r = NULL;
    const char *p[2] = { c->s->checksum, c->t->name };
    struct buf sql;
    int rc;

    buf_init(&sql);
    buf_printf(&sql,
               "SELECT phase, batch, first_record, last_record, rows FROM %s.batches"
               " WHERE stream_checksum = $1 AND table_name = $2 ORDER BY phase, batch",
               c->qs);
    if ((rc = db_query(c->d, &r, c->t->name, sql.data, 2, p)) != 0)
        goto done;
    c->ndone = db_ntuples(r);
    c->done = xcalloc((size_t)c->ndone + 1, sizeof(struct done));
    for (int i = 0; i < c->ndone; i++) {
        struct done *dn = &c->done[i];
        const char *ph = db_value(r, i, 0);

        dn->phase = strcmp(ph, "upsert") == 0   ? PH_UPSERT
                    : strcmp(ph, "delete") == 0 ? PH_DELETE
                                                : PH_RETRY;
        dn->batch = atoi(db_value(r, i, 1));
        dn->first = strtoull(db_value(r, i, 2), NULL, 10);
        dn->last = strtoull(db_value(r, i, 3), NULL, 10);
        dn->rows = atoll(db_value(r, i, 4));
    }
    db_result_free(r);
    r = NULL;

    buf_reset(&sql);
    buf_printf(&sql,
               "SELECT phase, batch, (j->>'record')::bigint, j->>'key', j->>'reason'"
               " FROM %s.batches, pg_catalog.jsonb_array_elements(rejects) AS j"
               " WHERE stream_checksum = $1 AND table_name = $2",
               c->qs);
    if ((rc = db_query(c->d, &r, c->t->name, sql.data, 2, p)) != 0)
        goto done;
    for (int i = 0; i < db_ntuples(r); i++) {
        const char *ph = db_value(r, i, 0);
        int phase = strcmp(ph, "upsert") == 0   ? PH_UPSERT
                    : strcmp(ph, "delete") == 0 ? PH_DELETE
                                                : PH_RETRY;
        struct done *dn = find_done(c, phase, atoi(db_value(r, i, 1)));

        if (dn == NULL)
            continue;
        dn->rejects = xrealloc(dn->rejects, (size_t)(dn->nrejects + 1) * sizeof(struct reject));
        dn->rejects[dn->nrejects].ord = strtoull(db_value(r, i, 2), NULL, 10);
        dn->rejects[dn->nrejects].key = xstrdup(db_value(r, i, 3) ? db_value(r, i, 3) : "");
        dn->rejects[dn->nrejects].reason = xstrdup(db_value(r, i, 4) ? db_value(r, i, 4) : "");
        dn->nrejects++;
    }
    db_result_free(r);
    r = NULL;

    /* Rows the upsert phase set aside wait for the retry phase, whoever committed them. */
    buf_reset(&sql);
    buf_printf(&sql,
               "SELECT pg_catalog.unnest(deferred) FROM %s.batches"
               " WHERE stream_checksum = $1 AND table_name = $2 AND phase = 'upsert'",
               c->qs);
    if ((rc = db_query(c->d, &r, c->t->name, sql.data, 2, p)) != 0)
        goto done;
    for (int i = 0; i < db_ntuples(r); i++)
        add_run_deferred(c, strtoull(db_value(r, i, 0), NULL, 10));
    c->c->deferred += (uint64_t)db_ntuples(r);
done:
    db_result_free(r);
    buf_free(&sql);
    return rc;
}

static int
is_registered(struct ctx *c, int *reg)
{
    struct db_result *r = NULL;
    const char *p[1] = { c->t->name };
    struct buf sql;
    int rc;

    *reg = 0;
    if (!c->have_state)
        return 0;
    buf_init(&sql);
    buf_printf(&sql, "SELECT 1 FROM %s.tables WHERE table_name = $1", c->qs);
    rc = db_query(c->d, &r, c->t->name, sql.data, 1, p);
    if (rc == 0)
        *reg = db_ntuples(r) > 0;
    db_result_free(r);
    buf_free(&sql);
    return rc;
}

/* Copy the stream's delete keys into the batch table (first run of an integer-key table). */
static int
copy_delete_keys(struct ctx *c)
{
    struct spool_iter it;
    const struct rs_value *v;
    uint64_t ord;
    struct buf b, sql;
    int rc, n = 0;

    buf_init(&b);
    buf_init(&sql);
    buf_printf(&sql, "COPY %s (_rec, _op", c->tbatch);
    for (int k = 0; k < c->s->nkeys; k++)
        buf_printf(&sql, ", c%d", k);
    buf_puts(&sql, ") FROM STDIN");
    if ((rc = spool_iter_open(&it, c->s)) != 0)
        goto out;
    if ((rc = db_copy_in_begin(c->d, c->t->name, sql.data)) != 0) {
        spool_iter_close(&it);
        goto out;
    }
    while ((rc = spool_iter_next(&it, &v, &ord)) == 0 && v != NULL) {
        if (v[c->s->op_col].data[0] != 'D')
            continue;
        buf_printf(&b, "%d\tD", n++);
        for (int k = 0; k < c->s->nkeys; k++) {
            buf_putc(&b, '\t');
            copy_escape(&b, &v[c->s->key_cols[k]]);
        }
        buf_putc(&b, '\n');
        if (b.len >= 1 << 20) {
            if ((rc = db_copy_in_put(c->d, b.data, b.len)) != 0)
                break;
            buf_reset(&b);
        }
    }
    if (rc == 0 && b.len > 0)
        rc = db_copy_in_put(c->d, b.data, b.len);
    if (rc == 0)
        rc = db_copy_in_end(c->d, NULL);
    else
        db_copy_in_end(c->d, "pgapply could not read the stream");
    spool_iter_close(&it);
out:
    buf_free(&b);
    buf_free(&sql);
    return rc;
}

/* ---- importing a mapping kept outside the table ---- */

#define NAME_IMPORT "pg_temp.driftless_import"
#define UUID_RE     "'^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$'"

/* "record N (line N+1 of a CSV with a header)" */
static void
record_ref(struct buf *b, unsigned long long rec)
{
    buf_printf(b, "record %llu (line %llu of a CSV with a header)", rec, rec + 1);
}

/* Copy the map stream into the import table, each record with its number (from 1). */
static int
import_copy(struct ctx *c, struct rs_reader *r, const int *kcols, int ucol)
{
    const struct rs_header *h = rs_reader_header(r);
    const struct rs_value *v;
    struct buf b, msg;
    unsigned long long rec = 0;
    char key[512];
    int rc;

    buf_init(&b);
    buf_init(&msg);
    buf_puts(&msg, "COPY " NAME_IMPORT " (_rec, u");
    for (int k = 0; k < c->s->nkeys; k++)
        buf_printf(&msg, ", c%d", k);
    buf_puts(&msg, ") FROM STDIN");
    if ((rc = db_copy_in_begin(c->d, c->t->name, msg.data)) != 0)
        goto out;
    while ((rc = rs_reader_next(r, &v)) == 0 && v != NULL) {
        rec++;
        buf_reset(&msg);
        for (int k = 0; k < c->s->nkeys && msg.len == 0; k++) {
            const struct rs_value *x = &v[kcols[k]];
            int64_t i64;

            if (x->data == NULL)
                buf_printf(&msg, "key column %s is NULL", h->cols[kcols[k]].name);
            else if (!utf8_valid_text((const unsigned char *)x->data, x->len))
                buf_printf(&msg, "key column %s is not valid UTF-8", h->cols[kcols[k]].name);
            else if (h->cols[kcols[k]].order == RS_ORDER_INT &&
                     rs_parse_int64(x->data, x->len, &i64) != 0)
                buf_printf(&msg, "key column %s is not an integer", h->cols[kcols[k]].name);
        }
        if (msg.len == 0 && v[ucol].data != NULL &&
            !utf8_valid_text((const unsigned char *)v[ucol].data, v[ucol].len))
            buf_puts(&msg, "malformed UUID");
        if (msg.len > 0) {
            struct buf where;

            buf_init(&where);
            record_ref(&where, rec);
            rs_key_format(h, v, key, sizeof(key));
            rc = err_msg(EXIT_DATA, "table %s: map %s: %s, key %s: %s", c->t->name, c->import,
                         where.data, key, msg.data);
            buf_free(&where);
            break;
        }
        buf_printf(&b, "%llu\t", rec);
        copy_escape(&b, &v[ucol]);
        for (int k = 0; k < c->s->nkeys; k++) {
            buf_putc(&b, '\t');
            copy_escape(&b, &v[kcols[k]]);
        }
        buf_putc(&b, '\n');
        if (b.len >= 1 << 20) {
            if ((rc = db_copy_in_put(c->d, b.data, b.len)) != 0)
                break;
            buf_reset(&b);
        }
    }
    if (rc == 0 && b.len > 0)
        rc = db_copy_in_put(c->d, b.data, b.len);
    if (rc == 0)
        rc = db_copy_in_end(c->d, NULL);
    else
        db_copy_in_end(c->d, "pgapply: the map stream is not usable");
out:
    buf_free(&b);
    buf_free(&msg);
    return rc;
}

/*
 * One check of the imported map: rows (record, legacy key text, a record it
 * clashes with or NULL, the count of all rows). Prints each; *bad += count.
 */
static int
import_check(struct ctx *c, const char *sql, const char *problem, long long *bad)
{
    struct db_result *r = NULL;
    const char *p[1] = { c->t->name };
    int rc;

    if ((rc = db_query(c->d, &r, c->t->name, sql, nparams(sql), p)) != 0)
        return rc;
    for (int i = 0; i < db_ntuples(r); i++) {
        char *key = format_key_text(c, db_value(r, i, 1));
        struct buf where;

        buf_init(&where);
        record_ref(&where, strtoull(db_value(r, i, 0), NULL, 10));
        if (db_value(r, i, 2) != NULL) {
            unsigned long long first = strtoull(db_value(r, i, 2), NULL, 10);

            err_msg(EXIT_DATA, "table %s: map %s: %s, key %s: %s (first in record %llu, line %llu)",
                    c->t->name, c->import, where.data, key, problem, first, first + 1);
        } else {
            err_msg(EXIT_DATA, "table %s: map %s: %s, key %s: %s", c->t->name, c->import,
                    where.data, key, problem);
        }
        if (i == db_ntuples(r) - 1 && atoll(db_value(r, i, 3)) > db_ntuples(r))
            err_note("table %s: map %s: ... and %lld more with this problem", c->t->name, c->import,
                     atoll(db_value(r, i, 3)) - db_ntuples(r));
        buf_free(&where);
        free(key);
    }
    if (db_ntuples(r) > 0)
        *bad += atoll(db_value(r, 0, 3));
    db_result_free(r);
    return 0;
}

/*
 * --import-map: the map stream into a temp table, checked (a malformed
 * UUID, a UUID twice, a UUID the table does not hold, a disagreement with the
 * crosswalk or the table's own key), then into the crosswalk. Any problem:
 * EXIT_DATA, and the caller rolls back. A key twice the reader refuses.
 */
static int
import_map(struct ctx *c, long long *migrated)
{
    struct rs_reader *r = NULL;
    const struct rs_header *h;
    struct db_result *res = NULL;
    struct buf sql, key, u;
    int *kcols = xcalloc((size_t)c->s->nkeys + 1, sizeof(int));
    int fd, ucol, nk = 0, rc;
    long long bad = 0;
    const char *tu = c->t->cols[c->t->uuid_tcol].qname;

    buf_init(&sql);
    buf_init(&key);
    buf_init(&u);
    fd = io_open_input(c->import);
    if (fd < 0) {
        free(kcols);
        return EXIT_IO;
    }
    if ((rc = rs_reader_open(&r, fd, c->import)) != 0)
        goto out;
    h = rs_reader_header(r);
    if (h->kind != RS_KIND_MAP && h->kind != RS_KIND_ROWS) {
        rc = err_msg(EXIT_DATA, "%s: not a map or rows stream (kind '%c')", c->import, h->kind);
        goto out;
    }
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        if (nk >= c->s->nkeys ||
            strcmp(h->cols[i].name, c->s->hdr.cols[c->s->key_cols[nk]].name) != 0) {
            nk = -1;
            break;
        }
        kcols[nk++] = i;
    }
    if (nk != c->s->nkeys) {
        rc = err_msg(EXIT_DATA, "%s: its key columns are not the legacy key of %s", c->import,
                     c->t->name);
        goto out;
    }
    ucol = rs_header_find(h, "uuid");
    if (ucol < 0 || h->cols[ucol].role != RS_ROLE_DATA) {
        rc = err_msg(EXIT_DATA, "%s: no \"uuid\" data column", c->import);
        goto out;
    }
    buf_puts(&sql, "CREATE TEMP TABLE driftless_import (_rec bigint NOT NULL, u text");
    for (int k = 0; k < c->s->nkeys; k++)
        buf_printf(&sql, ", c%d text", k);
    buf_puts(&sql, ") ON COMMIT DROP");
    if ((rc = db_exec(c->d, sql.data)) != 0)
        goto out;
    if ((rc = import_copy(c, r, kcols, ucol)) != 0)
        goto out;
    if ((rc = db_exec(c->d, "ANALYZE " NAME_IMPORT)) != 0)
        goto out;

    key_text_b(&key, c, "i");
    /* the UUID as uuid once it is well-formed, else NULL (no failing cast) */
    buf_printf(&u, "(CASE WHEN i.u ~ %s THEN (i.u)::uuid END)", UUID_RE);
    db_set_quiet(c->d, 1);
#define CHECK(problem, ...)                                                                        \
    do {                                                                                           \
        buf_reset(&sql);                                                                           \
        buf_printf(&sql, __VA_ARGS__);                                                             \
        if ((rc = import_check(c, sql.data, problem, &bad)) != 0)                                  \
            goto checked;                                                                          \
    } while (0)
    CHECK("malformed UUID",
          "SELECT i._rec, %s, NULL, count(*) OVER () FROM " NAME_IMPORT " AS i"
          " WHERE %s IS NULL ORDER BY 1 LIMIT 10",
          key.data, u.data);
    CHECK("UUID given twice",
          "SELECT q._rec, q.k, q.first, count(*) OVER () FROM (SELECT i._rec, %s AS k,"
          " min(i._rec) OVER (PARTITION BY %s) AS first FROM " NAME_IMPORT " AS i"
          " WHERE %s IS NOT NULL) AS q WHERE q._rec <> q.first ORDER BY 1 LIMIT 10",
          key.data, u.data, u.data);
    CHECK("no row of the table has this UUID",
          "SELECT i._rec, %s, NULL, count(*) OVER () FROM " NAME_IMPORT " AS i"
          " WHERE %s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM %s AS t WHERE t.%s = %s)"
          " ORDER BY 1 LIMIT 10",
          key.data, u.data, c->t->qname, tu, u.data);
    CHECK("the crosswalk already maps this key to another UUID",
          "SELECT i._rec, %s, NULL, count(*) OVER () FROM " NAME_IMPORT " AS i"
          " JOIN %s.crosswalk AS cw ON cw.table_name = $1 AND cw.legacy_key = %s"
          " WHERE %s IS NOT NULL AND cw.uuid <> %s ORDER BY 1 LIMIT 10",
          key.data, c->qs, key.data, u.data, u.data);
    CHECK("the crosswalk already maps this UUID to another key",
          "SELECT i._rec, %s, NULL, count(*) OVER () FROM " NAME_IMPORT " AS i"
          " JOIN %s.crosswalk AS cw ON cw.table_name = $1 AND cw.uuid = %s"
          " WHERE cw.legacy_key <> %s ORDER BY 1 LIMIT 10",
          key.data, c->qs, u.data, key.data);
    if (!c->t->crosswalk_keys) {
        struct buf tk;

        buf_init(&tk);
        key_text_t(&tk, c, "t");
        buf_reset(&sql);
        buf_printf(&sql,
                   "SELECT i._rec, %s, NULL, count(*) OVER () FROM " NAME_IMPORT " AS i"
                   " JOIN %s AS t ON t.%s = %s WHERE %s IS DISTINCT FROM %s ORDER BY 1 LIMIT 10",
                   key.data, c->t->qname, tu, u.data, tk.data, key.data);
        buf_free(&tk);
        if ((rc = import_check(c, sql.data, "the table's row with this UUID has another legacy key",
                               &bad)) != 0)
            goto checked;
    }
#undef CHECK
checked:
    db_set_quiet(c->d, 0);
    if (rc != 0) {
        if (strncmp(db_last_sqlstate(c->d), "22", 2) == 0)
            rc = err_msg(EXIT_DATA,
                         "table %s: map %s: a legacy key does not fit the type of the "
                         "table's key column (SQLSTATE %s)",
                         c->t->name, c->import, db_last_sqlstate(c->d));
        else
            rc = err_msg(EXIT_DB, "table %s: map %s: could not check it: %s (SQLSTATE %s)",
                         c->t->name, c->import, db_last_message(c->d), db_last_sqlstate(c->d));
        goto out;
    }
    if (bad > 0) {
        rc = err_msg(EXIT_DATA, "table %s: map %s: %lld problem%s; nothing was written", c->t->name,
                     c->import, bad, bad == 1 ? "" : "s");
        goto out;
    }
    buf_reset(&sql);
    buf_printf(&sql,
               "INSERT INTO %s.crosswalk (table_name, legacy_key, uuid, run_id)"
               " SELECT $1, %s, %s, $2::bigint FROM " NAME_IMPORT " AS i ORDER BY i._rec"
               " ON CONFLICT ON CONSTRAINT driftless_crosswalk_pkey DO NOTHING",
               c->qs, key.data, u.data);
    {
        const char *p[2] = { c->t->name, strcmp(c->run, "0") == 0 ? NULL : c->run };

        if ((rc = db_query(c->d, &res, c->t->name, sql.data, 2, p)) != 0)
            goto out;
    }
    *migrated += db_cmd_tuples(res);
out:
    db_result_free(res);
    rs_reader_free(r);
    if (fd != 0)
        close(fd);
    buf_free(&sql);
    buf_free(&key);
    buf_free(&u);
    free(kcols);
    return rc;
}

/*
 * First run on a table (or --register): fill the crosswalk from the
 * mapping the earlier migration kept (--import-map) and from the table's
 * legacy key columns, if it has them (UUID tables), or take the keys present
 * on both sides as migrated (integer keys); register the table; all in one
 * transaction.
 */
static int
register_table(struct ctx *c)
{
    struct db_result *r = NULL;
    const char *p[6];
    struct buf sql, keys;
    long long migrated = 0, app = 0;
    char mbuf[24], abuf[24];
    int rc, reg;

    buf_init(&sql);
    buf_init(&keys);
    if ((rc = db_exec(c->d, "BEGIN")) != 0)
        goto out;
    p[0] = c->t->name;
    buf_printf(&sql, "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended("
                     "'driftless.register:' || $1, 0))");
    if ((rc = db_query(c->d, NULL, c->t->name, sql.data, 1, p)) != 0)
        goto fail;
    if ((rc = is_registered(c, &reg)) != 0)
        goto fail;
    if (reg) {
        db_exec(c->d, "ROLLBACK");
        c->registered = 1;
        goto out;
    }
    p[1] = strcmp(c->run, "0") == 0 ? NULL : c->run; /* --register without a run */
    if (!c->t->integer_mode && c->import != NULL && (rc = import_map(c, &migrated)) != 0)
        goto fail;
    if (!c->t->integer_mode && !c->t->crosswalk_keys) {
        int unique = 0;

        for (int i = 0; i < c->t->nuindex; i++)
            if (target_is_legacy_index(c->t, c->s, c->t->uindex[i].name))
                unique = 1;
        if (!unique) {
            buf_reset(&sql);
            buf_puts(&sql, "SELECT ");
            key_text_t(&sql, c, "t");
            buf_printf(&sql, " FROM %s AS t WHERE ", c->t->qname);
            keys_not_null(&sql, c, "t");
            buf_puts(&sql, " GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 10");
            if ((rc = db_query(c->d, &r, c->t->name, sql.data, 0, NULL)) != 0)
                goto fail;
            for (int i = 0; i < db_ntuples(r); i++)
                err_msg(EXIT_REFUSED,
                        "table %s: refused: legacy key %s is held by more than one row", c->t->name,
                        db_value(r, i, 0));
            rc = db_ntuples(r) > 0 ? EXIT_REFUSED : 0;
            db_result_free(r);
            r = NULL;
            if (rc != 0)
                goto fail;
        }
        /* A crosswalk loaded before (a mapping CSV) must agree with the table. */
        buf_reset(&sql);
        buf_printf(&sql, "SELECT cx.legacy_key FROM %s.crosswalk AS cx JOIN %s AS t ON ", c->qs,
                   c->t->qname);
        key_text_t(&sql, c, "t");
        buf_puts(&sql, " = cx.legacy_key WHERE cx.table_name = $1 AND cx.uuid <> ");
        uuid_t(&sql, c, "t");
        buf_puts(&sql, " ORDER BY 1 LIMIT 10");
        if ((rc = db_query(c->d, &r, c->t->name, sql.data, 1, p)) != 0)
            goto fail;
        for (int i = 0; i < db_ntuples(r); i++)
            err_msg(EXIT_REFUSED,
                    "table %s: refused: the crosswalk maps legacy key %s to another UUID than "
                    "the table's row",
                    c->t->name, db_value(r, i, 0));
        rc = db_ntuples(r) > 0 ? EXIT_REFUSED : 0;
        db_result_free(r);
        r = NULL;
        if (rc != 0)
            goto fail;
        buf_reset(&sql);
        buf_printf(&sql,
                   "INSERT INTO %s.crosswalk (table_name, legacy_key, uuid, run_id) SELECT $1, ",
                   c->qs);
        key_text_t(&sql, c, "t");
        buf_puts(&sql, ", ");
        uuid_t(&sql, c, "t");
        buf_printf(&sql, ", $2::bigint FROM %s AS t WHERE ", c->t->qname);
        keys_not_null(&sql, c, "t");
        buf_puts(&sql, " ON CONFLICT ON CONSTRAINT driftless_crosswalk_pkey DO NOTHING");
        if ((rc = db_query(c->d, &r, c->t->name, sql.data, 2, p)) != 0) {
            if (strcmp(db_last_sqlstate(c->d), "23505") == 0)
                rc = err_msg(EXIT_REFUSED,
                             "table %s: refused: the crosswalk already maps one of "
                             "the table's UUIDs to another legacy key",
                             c->t->name);
            goto fail;
        }
        migrated += db_cmd_tuples(r);
        db_result_free(r);
        r = NULL;
    }
    if (!c->t->integer_mode) {
        /* The batches join it at once: give the planner its size. */
        buf_reset(&sql);
        buf_printf(&sql, "ANALYZE %s.crosswalk", c->qs);
        if ((rc = db_exec(c->d, sql.data)) != 0)
            goto fail;
    } else {
        /* app_rows = none (--register): every key is migrated; no stream tells otherwise. */
        int all = c->o->app_rows_none;

        if (!all && (rc = copy_delete_keys(c)) != 0)
            goto fail;
        buf_reset(&sql);
        buf_printf(&sql, "INSERT INTO %s.owned_keys (table_name, legacy_key, run_id) SELECT $1, ",
                   c->qs);
        key_text_t(&sql, c, "t");
        buf_printf(&sql, ", $2::bigint FROM %s AS t", c->t->qname);
        if (!all) {
            buf_printf(&sql, " WHERE NOT EXISTS (SELECT 1 FROM %s AS b WHERE ", c->tbatch);
            join_cond(&sql, c, "t", "b");
            buf_puts(&sql, ")");
        }
        buf_puts(&sql, " ON CONFLICT ON CONSTRAINT driftless_owned_keys_pkey DO NOTHING");
        if ((rc = db_query(c->d, &r, c->t->name, sql.data, 2, p)) != 0)
            goto fail;
        migrated = db_cmd_tuples(r);
        db_result_free(r);
        r = NULL;
        buf_reset(&sql);
        buf_printf(&sql, "ANALYZE %s.owned_keys", c->qs);
        if ((rc = db_exec(c->d, sql.data)) != 0)
            goto fail;
        if (!all) {
            buf_reset(&sql);
            buf_puts(&sql, "SELECT ");
            key_text_t(&sql, c, "t");
            buf_printf(&sql, " FROM %s AS t JOIN %s AS b ON ", c->t->qname, c->tbatch);
            join_cond(&sql, c, "t", "b");
            buf_puts(&sql, " ORDER BY b._rec");
            if ((rc = db_query(c->d, &r, c->t->name, sql.data, 0, NULL)) != 0)
                goto fail;
            app = db_ntuples(r);
            for (int i = 0; i < db_ntuples(r) && i < 10; i++)
                buf_printf(&keys, "%s%s", i > 0 ? ", " : "", db_value(r, i, 0));
            db_result_free(r);
            r = NULL;
        }
    }
    snprintf(mbuf, sizeof(mbuf), "%lld", migrated);
    snprintf(abuf, sizeof(abuf), "%lld", app);
    {
        struct buf arr;
        char **names = xcalloc((size_t)c->s->nkeys + 1, sizeof(char *));

        for (int k = 0; k < c->s->nkeys; k++)
            names[k] = c->s->hdr.cols[c->s->key_cols[k]].name;
        buf_init(&arr);
        state_text_array(&arr, names, c->s->nkeys);
        free(names);
        buf_reset(&sql);
        buf_printf(&sql,
                   "INSERT INTO %s.tables (table_name, key_columns, uuid_column, run_id,"
                   " migrated_rows, application_rows)"
                   " VALUES ($1, $3::text[], $4, $2::bigint, $5::bigint, $6::bigint)",
                   c->qs);
        p[2] = arr.data;
        p[3] = c->t->uuid_tcol >= 0 ? c->t->cols[c->t->uuid_tcol].name : NULL;
        p[4] = mbuf;
        p[5] = abuf;
        rc = db_query(c->d, NULL, c->t->name, sql.data, 6, p);
        buf_free(&arr);
        if (rc != 0)
            goto fail;
    }
    if ((rc = db_exec(c->d, "COMMIT")) != 0)
        goto out;
    c->registered = 1;
    if (app > 0) {
        err_note("table %s: first run: %lld rows found only in the target are taken as the "
                 "application's and will never be updated or deleted (keys %s%s)",
                 c->t->name, app, keys.data, app > 10 ? ", ..." : "");
        err_note("hint: if the earlier migration copied them, declare them migrated: pgapply "
                 "--declare-migrated --table %s KEY... (each key as listed, quoted for the "
                 "shell; - reads them from standard input); the next run then deletes those "
                 "the source lacks",
                 c->t->name);
    }
    goto out;
fail:
    db_exec(c->d, "ROLLBACK");
out:
    db_result_free(r);
    buf_free(&sql);
    buf_free(&keys);
    return rc;
}

static int
create_temp_tables(struct ctx *c)
{
    struct buf b;
    int rc;

    buf_init(&b);
    buf_printf(&b, "CREATE TEMP TABLE %s (_rec integer NOT NULL, _op text NOT NULL, _cx uuid",
               c->tbatch + 8);
    for (int i = 0; i < c->s->nkeys + c->s->ndata; i++)
        buf_printf(&b, ", c%d text", i);
    buf_printf(&b,
               ") ON COMMIT DELETE ROWS;"
               " CREATE TEMP TABLE %s (_rec integer NOT NULL, img jsonb, u uuid,"
               " lk text, owned boolean) ON COMMIT DELETE ROWS",
               c->tbefore + 8);
    rc = db_exec(c->d, b.data);
    buf_free(&b);
    return rc;
}

/*
 * Before the first write: no delete of the stream may cascade into, or be
 * blocked by, a row born in the target (DESIGN.md). Each delete batch checks
 * again under its locks.
 */
static int
preflight_children(struct ctx *c)
{
    const char *p[3] = { "0", "2147483647", c->t->name };
    struct db_result *r = NULL;
    int rc, bad = 0;

    if (c->t->nfk == 0 || c->s->n_delete == 0 || !(c->o->phases & PHASE_DELETE))
        return 0;
    if ((rc = db_exec(c->d, "BEGIN TRANSACTION READ ONLY")) != 0)
        return rc;
    if ((rc = copy_delete_keys(c)) != 0)
        goto out;
    if (c->sql_resolve != NULL && (rc = stmt(c, c->sql_resolve, p + 2, NULL, NULL)) != 0)
        goto out;
    for (int f = 0; f < c->t->nfk; f++) {
        if ((rc = stmt(c, c->sql_children_all[f], p, NULL, &r)) != 0)
            goto out;
        if (report_children(c, &c->t->fk[f], r) != 0)
            bad = 1;
        db_result_free(r);
        r = NULL;
    }
    rc = bad ? EXIT_REFUSED : 0;
out:
    db_exec(c->d, "ROLLBACK");
    return rc;
}

/* ---- the reject stream ---- */

static int
cmp_reject(const void *a, const void *b)
{
    const struct reject *x = a, *y = b;

    return x->ord < y->ord ? -1 : x->ord > y->ord;
}

/* The rejected records, in stream order (so in key order), with a _reason column. */
static int
write_rejects(struct ctx *c)
{
    struct io_atomic out = { -1, NULL, NULL };
    struct rs_writer *w = NULL;
    struct rs_header h;
    struct spool_iter it;
    const struct rs_value *v;
    struct rs_value *row = NULL;
    uint64_t ord;
    size_t ri = 0;
    int rc, reason_col, ncols;

    rs_header_copy(&h, &c->s->hdr);
    reason_col = rs_header_find(&h, "_reason");
    if (reason_col < 0)
        reason_col = rs_header_add_column(&h, "_reason", "text", RS_ROLE_DATA, RS_ORDER_NONE);
    ncols = h.ncols;
    row = xcalloc((size_t)ncols, sizeof(struct rs_value));
    if (c->nrejects > 0)
        qsort(c->rejects, c->nrejects, sizeof(struct reject), cmp_reject);
    if ((rc = io_atomic_open(&out, c->o->reject_file)) != 0)
        goto done;
    if ((rc = rs_writer_open(&w, out.fd, c->o->reject_file, &h, RS_LEVEL_AUTO)) != 0)
        goto done;
    if (c->nrejects > 0) {
        if ((rc = spool_iter_open(&it, c->s)) != 0)
            goto done;
        while (ri < c->nrejects && (rc = spool_iter_next(&it, &v, &ord)) == 0 && v != NULL) {
            if (ord != c->rejects[ri].ord)
                continue;
            for (int i = 0; i < c->s->hdr.ncols; i++)
                row[i] = v[i];
            row[reason_col].data = c->rejects[ri].reason;
            row[reason_col].len = strlen(c->rejects[ri].reason);
            if ((rc = rs_writer_put(w, row)) != 0)
                break;
            /* the same record can be listed twice only by a bug; write it once */
            while (ri < c->nrejects && c->rejects[ri].ord == ord)
                ri++;
        }
        spool_iter_close(&it);
        if (rc != 0)
            goto done;
    }
    if ((rc = rs_writer_finish(w)) != 0)
        goto done;
    rc = io_atomic_commit(&out);
done:
    rs_writer_free(w);
    if (rc != 0)
        io_atomic_abort(&out);
    rs_header_free(&h);
    free(row);
    return rc;
}

/* ---- the run ---- */

/* Set up c for one table; slot >= 0 gives a group member temp tables of its own. */
static int
ctx_open(struct ctx *c, struct db *d, const struct options *o, struct spool *s, struct target *t,
         long long run_id, struct counts *cnt, int slot)
{
    struct buf b;
    int version = 0, rc;

    memset(c, 0, sizeof(*c));
    c->d = d;
    c->o = o;
    c->s = s;
    c->t = t;
    c->c = cnt;
    c->dry = o->dry_run;
    c->qs = db_quote_ident(d, o->schema);
    snprintf(c->run, sizeof(c->run), "%lld", run_id);
    buf_init(&c->copy);
    buf_init(&b);
    buf_printf(&b, "pg_temp.driftless_batch");
    if (slot >= 0)
        buf_printf(&b, "_%d", slot);
    c->tbatch = xstrdup(b.data);
    buf_reset(&b);
    buf_printf(&b, "pg_temp.driftless_before");
    if (slot >= 0)
        buf_printf(&b, "_%d", slot);
    c->tbefore = b.data;
    c->started = now();
    c->last_progress = c->started;

    if ((rc = state_version(d, o->schema, &version)) != 0)
        return rc;
    c->have_state = version > 0;
    if ((rc = is_registered(c, &c->registered)) != 0)
        return rc;
    if ((rc = create_temp_tables(c)) != 0)
        return rc;
    /*
     * The batches' estimates can pass jit_above_cost: compiling then costs
     * more than the statement (tens of ms to seconds a batch).
     */
    if ((rc = db_exec(d,
                      "SELECT pg_catalog.set_config(name, 'off', false) FROM pg_catalog.pg_settings"
                      " WHERE name = 'jit'")) != 0)
        return rc;
    if (!c->dry && !c->registered && (rc = register_table(c)) != 0)
        return rc;
    build_statements(c);
    if (c->have_state && (rc = load_done(c)) != 0)
        return rc;
    return preflight_children(c);
}

/* Rejects: the file; the code: 0, or EXIT_DIFF when there were any. */
static int
ctx_finish(struct ctx *c)
{
    int rc;

    c->c->failed = c->nrejects;
    if (c->o->reject_file != NULL && !c->dry && (rc = write_rejects(c)) != 0)
        return rc;
    return c->nrejects > 0 ? EXIT_DIFF : 0;
}

static void
ctx_free(struct ctx *c)
{
    if (c->c != NULL)
        c->c->failed = c->nrejects;
    batch_reset(c);
    results_reset(c);
    buf_free(&c->copy);
    free(c->ords);
    free(c->keys);
    free(c->pre);
    free(c->pre_reason);
    free(c->b_deferred);
    free(c->b_rejects);
    free(c->deferred);
    for (size_t i = 0; i < c->nrejects; i++) {
        free(c->rejects[i].key);
        free(c->rejects[i].reason);
    }
    free(c->rejects);
    for (int i = 0; i < c->ndone; i++) {
        for (int j = 0; j < c->done[i].nrejects; j++) {
            free(c->done[i].rejects[j].key);
            free(c->done[i].rejects[j].reason);
        }
        free(c->done[i].rejects);
    }
    free(c->done);
    free(c->sql_copy);
    free(c->sql_resolve);
    free(c->sql_lock);
    free(c->sql_lock_del);
    free(c->sql_check);
    free(c->sql_update);
    free(c->sql_insert);
    free(c->sql_fast);
    free(c->sql_delete);
    free(c->sql_not_owned);
    free(c->sql_checkpoint);
    if (c->sql_children != NULL)
        for (int f = 0; f < c->t->nfk; f++)
            free(c->sql_children[f]);
    if (c->sql_children_all != NULL)
        for (int f = 0; f < c->t->nfk; f++)
            free(c->sql_children_all[f]);
    free(c->sql_children);
    free(c->sql_children_all);
    free(c->tbatch);
    free(c->tbefore);
    free(c->qs);
    memset(c, 0, sizeof(*c));
}

int
apply_run(struct db *d, const struct options *o, struct spool *s, struct target *t,
          long long run_id, struct counts *cnt)
{
    struct ctx c;
    int rc;

    if ((rc = ctx_open(&c, d, o, s, t, run_id, cnt, -1)) != 0)
        goto done;
    if (o->phases & PHASE_UPSERT) {
        if ((rc = run_phase(&c, PH_UPSERT)) != 0)
            goto done;
    }
    if (o->phases & PHASE_DELETE) {
        if ((rc = run_phase(&c, PH_DELETE)) != 0)
            goto done;
    }
    /* A separate retry lets a script retry parents before children, after all deletes. */
    if (o->phases & PHASE_RETRY) {
        if ((rc = run_phase(&c, PH_RETRY)) != 0)
            goto done;
    }
    rc = ctx_finish(&c);
done:
    ctx_free(&c);
    return rc;
}

/* What a group's phase changes in a member, to undo when its transaction rolls back. */
struct saved {
    struct counts counts;
    size_t nrejects, ndeferred;
    uint64_t applied;
};

static void
save_ctx(const struct ctx *c, struct saved *sv)
{
    sv->counts = *c->c;
    sv->nrejects = c->nrejects;
    sv->ndeferred = c->ndeferred;
    sv->applied = c->applied;
}

static void
restore_ctx(struct ctx *c, const struct saved *sv)
{
    *c->c = sv->counts;
    for (size_t i = sv->nrejects; i < c->nrejects; i++) {
        free(c->rejects[i].key);
        free(c->rejects[i].reason);
    }
    c->nrejects = sv->nrejects;
    c->ndeferred = sv->ndeferred;
    c->applied = sv->applied;
}

/*
 * Name the rows of a group's table whose foreign key cons references a row
 * that is not there (the query built from the catalog, identifiers quoted
 * by format('%I')). Best effort: it only adds to the refusal's message.
 */
static void
dangling_rows(struct ctx *cs, int n, const char *cons)
{
    static const char catalog[] =
        "SELECT pg_catalog.format('%I.%I', cn.nspname, cc.relname), cn.nspname || '.' || "
        "cc.relname,"
        " pg_catalog.format('%I.%I', pn.nspname, pc.relname),"
        " (SELECT pg_catalog.string_agg(pg_catalog.format('ch.%I IS NOT NULL', a.attname), ' AND ')"
        "  FROM pg_catalog.unnest(k.conkey) AS x(n)"
        "  JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.n),"
        " (SELECT pg_catalog.string_agg(pg_catalog.format('p.%I = ch.%I', pa.attname, ca.attname),"
        "  ' AND ') FROM ROWS FROM (pg_catalog.unnest(k.conkey), pg_catalog.unnest(k.confkey))"
        "  AS u(ck, pk)"
        "  JOIN pg_catalog.pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.ck"
        "  JOIN pg_catalog.pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.pk),"
        " coalesce((SELECT pg_catalog.string_agg(pg_catalog.format('(ch.%I)::text', a.attname),"
        "  ', ' ORDER BY x.o) FROM pg_catalog.pg_index i,"
        "  pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS x(n, o)"
        "  JOIN pg_catalog.pg_attribute a ON a.attnum = x.n"
        "  WHERE i.indrelid = k.conrelid AND i.indisprimary AND a.attrelid = k.conrelid),"
        "  '(ch.ctid)::text'),"
        " coalesce((SELECT pg_catalog.string_agg(a.attname, ', ' ORDER BY x.o)"
        "  FROM pg_catalog.pg_index i,"
        "  pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS x(n, o)"
        "  JOIN pg_catalog.pg_attribute a ON a.attnum = x.n"
        "  WHERE i.indrelid = k.conrelid AND i.indisprimary AND a.attrelid = k.conrelid), 'ctid'),"
        " pn.nspname || '.' || pc.relname"
        " FROM pg_catalog.pg_constraint k"
        " JOIN pg_catalog.pg_class cc ON cc.oid = k.conrelid"
        " JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace"
        " JOIN pg_catalog.pg_class pc ON pc.oid = k.confrelid"
        " JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace"
        " WHERE k.contype = 'f' AND k.conname = $1 AND k.conrelid = ANY (ARRAY("
        "  SELECT pg_catalog.to_regclass(x) FROM pg_catalog.unnest($2::text[]) AS x))";
    struct db *d = cs[0].d;
    struct db_result *r = NULL, *rows = NULL;
    char **names = xcalloc((size_t)n + 1, sizeof(char *));
    const char *params[2];
    struct buf arr, q;

    for (int i = 0; i < n; i++)
        names[i] = cs[i].t->qname;
    buf_init(&arr);
    buf_init(&q);
    state_text_array(&arr, names, n);
    params[0] = cons;
    params[1] = arr.data;
    if (db_query(d, &r, "group", catalog, 2, params) != 0)
        goto done;
    for (int i = 0; i < db_ntuples(r); i++) {
        buf_reset(&q);
        buf_printf(&q,
                   "SELECT pg_catalog.concat_ws(', ', %s) FROM %s AS ch WHERE %s AND NOT EXISTS"
                   " (SELECT 1 FROM %s AS p WHERE %s) ORDER BY 1 LIMIT 10",
                   db_value(r, i, 5), db_value(r, i, 0), db_value(r, i, 3), db_value(r, i, 2),
                   db_value(r, i, 4));
        if (db_query(d, &rows, "group", q.data, 0, NULL) != 0)
            break;
        for (int k = 0; k < db_ntuples(rows); k++)
            err_msg(EXIT_REFUSED,
                    "group: row (%s)=(%s) of %s references a row of %s that is not there "
                    "(constraint \"%s\")",
                    db_value(r, i, 6), db_value(rows, k, 0), db_value(r, i, 1), db_value(r, i, 7),
                    cons);
        db_result_free(rows);
        rows = NULL;
    }
done:
    db_result_free(rows);
    db_result_free(r);
    buf_free(&arr);
    buf_free(&q);
    free(names);
}

/*
 * After the group's statements: check the deferred constraints now, under a
 * savepoint, so that a violation can still be explained before the rollback.
 */
static int
group_check_deferred(struct ctx *cs, int n)
{
    struct db *d = cs[0].d;
    char *cons;
    int rc;

    if ((rc = db_exec(d, "SAVEPOINT driftless_group")) != 0)
        return rc;
    if (db_exec(d, "SET CONSTRAINTS ALL IMMEDIATE") == 0)
        return db_exec(d, "RELEASE SAVEPOINT driftless_group");
    if (classify(db_last_sqlstate(d)) == F_RETRY)
        return F_RETRY;
    cons = xstrdup(db_last_constraint(d));
    if (strcmp(db_last_sqlstate(d), "23503") != 0 || cons[0] == '\0') {
        rc = err_msg(EXIT_DB, "group: could not check the deferred constraints: %s (SQLSTATE %s)",
                     db_last_message(d), db_last_sqlstate(d));
        free(cons);
        return rc;
    }
    db_exec(d, "ROLLBACK TO SAVEPOINT driftless_group");
    dangling_rows(cs, n, cons);
    err_msg(EXIT_REFUSED,
            "group: refused: the group's changes would leave a dangling foreign key "
            "(constraint \"%s\"); nothing of this phase was committed",
            cons);
    free(cons);
    return EXIT_REFUSED;
}

/* One phase of every member in one transaction; retried whole on a deadlock. */
static int
group_phase(struct ctx *cs, const int *order, int n, enum phase ph, long long *commits)
{
    struct db *d = cs[0].d;
    const struct options *o = cs[0].o;
    struct saved *sv = xcalloc((size_t)n, sizeof(*sv));
    char sql[96];
    int rc = 0, any = 0;

    for (int i = 0; i < n; i++) {
        const struct spool *s = cs[i].s;

        any |= ph == PH_UPSERT   ? s->n_insert + s->n_update > 0
               : ph == PH_DELETE ? s->n_delete > 0
                                 : cs[i].ndeferred > 0;
    }
    if (!any)
        goto out;
    for (int attempt = 0;; attempt++) {
        for (int i = 0; i < n; i++)
            save_ctx(&cs[i], &sv[i]);
        db_set_quiet(d, 1);
        rc = db_exec(d, o->dry_run ? "BEGIN TRANSACTION READ ONLY" : "BEGIN");
        snprintf(sql, sizeof(sql), "SET LOCAL lock_timeout = %lld", (long long)o->lock_timeout_ms);
        if (rc == 0)
            rc = db_exec(d, sql);
        if (rc == 0)
            rc = db_exec(d, "SET CONSTRAINTS ALL DEFERRED");
        db_set_quiet(d, 0);
        if (rc != 0) {
            rc = err_msg(EXIT_DB, "group: could not begin: %s (SQLSTATE %s)", db_last_message(d),
                         db_last_sqlstate(d));
            db_exec(d, "ROLLBACK");
            break;
        }
        /* upserts parents first, deletes children first */
        for (int k = 0; k < n && rc == 0; k++) {
            struct ctx *c = &cs[order[ph == PH_DELETE ? n - 1 - k : k]];

            c->outer = 1;
            rc = run_phase(c, ph);
            c->outer = 0;
        }
        db_set_quiet(d, 1);
        if (rc == 0 && !o->dry_run)
            rc = group_check_deferred(cs, n);
        if (rc == 0 && !o->dry_run && db_exec(d, "COMMIT") != 0)
            rc = classify(db_last_sqlstate(d)) == F_RETRY
                     ? F_RETRY
                     : err_msg(EXIT_DB, "group: could not commit: %s (SQLSTATE %s)",
                               db_last_message(d), db_last_sqlstate(d));
        db_set_quiet(d, 0);
        if (rc == 0 && o->dry_run)
            db_exec(d, "ROLLBACK");
        if (rc == 0)
            break;
        db_exec(d, "ROLLBACK");
        for (int i = 0; i < n; i++)
            restore_ctx(&cs[i], &sv[i]);
        if (rc != F_RETRY)
            break;
        if (attempt == MAX_RETRIES) {
            rc = err_msg(EXIT_DB, "group: %s phase: gave up after %d retries (%s)", phase_names[ph],
                         MAX_RETRIES, db_last_message(d));
            break;
        }
        usleep((useconds_t)(100000 * (attempt + 1)));
    }
    if (rc == 0 && !o->dry_run) {
        for (int i = 0; i < n; i++)
            for (size_t j = sv[i].nrejects; j < cs[i].nrejects; j++)
                err_msg(EXIT_DIFF, "table %s: key %s: rejected: %s", cs[i].t->name,
                        cs[i].rejects[j].key, cs[i].rejects[j].reason);
        (*commits)++;
        if (o->fail_after_commit > 0 && *commits == o->fail_after_commit) {
            kill(0, SIGKILL);
            pause();
        }
    }
out:
    free(sv);
    return rc;
}

int
apply_group(struct db *d, const struct options *o, struct spool *s, struct target *t,
            const int *order, int n, long long run_id, struct counts *cnt)
{
    struct ctx *cs = xcalloc((size_t)n, sizeof(*cs));
    long long commits = 0;
    int rc = 0, any_rejects = 0;

    for (int i = 0; i < n && rc == 0; i++)
        rc = ctx_open(&cs[i], d, &o[i], &s[i], &t[i], run_id, &cnt[i], i);
    if (rc == 0 && (o[0].phases & PHASE_UPSERT))
        rc = group_phase(cs, order, n, PH_UPSERT, &commits);
    if (rc == 0 && (o[0].phases & PHASE_DELETE))
        rc = group_phase(cs, order, n, PH_DELETE, &commits);
    if (rc == 0 && (o[0].phases & PHASE_RETRY))
        rc = group_phase(cs, order, n, PH_RETRY, &commits);
    for (int i = 0; i < n && rc == 0; i++) {
        int r = ctx_finish(&cs[i]);

        if (r == EXIT_DIFF)
            any_rejects = 1;
        else if (r != 0)
            rc = r;
    }
    if (rc == 0 && any_rejects)
        rc = EXIT_DIFF;
    for (int i = 0; i < n; i++)
        if (cs[i].d != NULL)
            ctx_free(&cs[i]);
    free(cs);
    return rc;
}

int
apply_register(struct db *d, const struct options *o, struct spool *s, struct target *t,
               long long run_id)
{
    struct counts cnt;
    struct ctx c;
    int rc;

    memset(&c, 0, sizeof(c));
    memset(&cnt, 0, sizeof(cnt));
    c.d = d;
    c.o = o;
    c.s = s;
    c.t = t;
    c.c = &cnt;
    c.qs = db_quote_ident(d, o->schema);
    c.have_state = 1;
    c.import = o->import_map;
    c.tbatch = xstrdup("pg_temp.driftless_batch");
    c.tbefore = xstrdup("pg_temp.driftless_before");
    snprintf(c.run, sizeof(c.run), "%lld", run_id);
    buf_init(&c.copy);
    rc = register_table(&c);
    ctx_free(&c);
    return rc;
}

/* ---- --declare-migrated ---- */

#define NAME_DECLARE "pg_temp.driftless_declare"

static int
hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Four hex digits at p, or -1. */
static long
hex4(const char *p)
{
    long v = 0;

    for (int i = 0; i < 4; i++) {
        int h = hex_value((unsigned char)p[i]);

        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static void
put_utf8(struct buf *b, long cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(b, u, n);
}

/* One JSON string at *pp (after its opening quote), decoded into v; 0 or -1. */
static int
json_string(const char **pp, struct buf *v)
{
    const char *p = *pp;

    for (;;) {
        char ch = *p++;
        long cp;

        if (ch == '\0')
            return -1;
        if (ch == '"')
            break;
        if (ch != '\\') {
            buf_putc(v, ch);
            continue;
        }
        switch (ch = *p++) {
        case '"':
        case '\\':
        case '/':
            buf_putc(v, ch);
            break;
        case 'b':
            buf_putc(v, '\b');
            break;
        case 'f':
            buf_putc(v, '\f');
            break;
        case 'n':
            buf_putc(v, '\n');
            break;
        case 'r':
            buf_putc(v, '\r');
            break;
        case 't':
            buf_putc(v, '\t');
            break;
        case 'u':
            if ((cp = hex4(p)) <= 0)
                return -1;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                long lo = p[0] == '\\' && p[1] == 'u' ? hex4(p + 2) : -1;

                if (lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return -1;
            }
            put_utf8(v, cp);
            break;
        default:
            return -1;
        }
    }
    *pp = p;
    return 0;
}

/*
 * A key as messages print it (key_text_t): one column's value as is, or for
 * n columns a JSON array of n strings (numbers allowed). Appends the values
 * to out as COPY fields, each after a tab. 0, or -1 when it is malformed.
 */
static int
declare_fields(struct buf *out, const char *in, int n)
{
    const char *p = in;
    struct buf v;
    int k = 0, rc = -1;

    if (n == 1) {
        struct rs_value one = { in, strlen(in) };

        buf_putc(out, '\t');
        copy_escape(out, &one);
        return 0;
    }
    buf_init(&v);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p++ != '[')
        goto out;
    for (;;) {
        struct rs_value one;

        while (*p == ' ' || *p == '\t')
            p++;
        buf_reset(&v);
        if (*p == '"') {
            p++;
            if (json_string(&p, &v) != 0)
                goto out;
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            while (*p == '-' || *p == '+' || *p == '.' || *p == 'e' || *p == 'E' ||
                   (*p >= '0' && *p <= '9'))
                buf_putc(&v, *p++);
        } else {
            goto out;
        }
        one.data = v.data;
        one.len = v.len;
        buf_putc(out, '\t');
        copy_escape(out, &one);
        k++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != ']')
            goto out;
        break;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    rc = *p == '\0' && k == n ? 0 : -1;
out:
    buf_free(&v);
    return rc;
}

/* Target row ta holds the key of declared row da: (t.k)::text = d.cK, for each key column. */
static void
declare_cond(struct buf *b, const struct ctx *c, const char *ta, const char *da)
{
    for (int k = 0; k < c->s->nkeys; k++)
        buf_printf(b, "%s(%s.%s)::text = %s.c%d", k > 0 ? " AND " : "", ta,
                   c->t->cols[c->t->key_tcol[k]].qname, da, k);
}

/* COPY row n of the declared keys: n, the key as given, its fields. 0 or EXIT_DATA. */
static int
declare_row(struct ctx *c, struct buf *b, long long n, const char *key, const char *where)
{
    struct rs_value given = { key, strlen(key) };
    size_t mark = b->len;

    buf_printf(b, "%lld\t", n);
    copy_escape(b, &given);
    if (declare_fields(b, key, c->s->nkeys) != 0) {
        b->len = mark;
        return err_msg(EXIT_DATA,
                       "table %s: %s: not a key of %d columns (a JSON array of their values, "
                       "e.g. [\"a\", \"b\"])",
                       c->t->name, where, c->s->nkeys);
    }
    buf_putc(b, '\n');
    return 0;
}

/* Send the declared keys (the arguments; "-" reads standard input) into NAME_DECLARE. */
static int
declare_copy(struct ctx *c, char *const *keys, int nkeys)
{
    struct buf b, where;
    char *line = NULL;
    size_t cap = 0;
    long long n = 0;
    int rc = 0;

    buf_init(&b);
    buf_init(&where);
    if ((rc = db_copy_in_begin(c->d, c->t->name, "COPY " NAME_DECLARE " FROM STDIN")) != 0)
        goto out;
    for (int i = 0; i < nkeys && rc == 0; i++) {
        if (strcmp(keys[i], "-") != 0) {
            buf_reset(&where);
            buf_printf(&where, "key %s", keys[i]);
            rc = declare_row(c, &b, n++, keys[i], where.data);
        } else {
            ssize_t len;
            long long lineno = 0;

            while (rc == 0 && (len = getline(&line, &cap, stdin)) >= 0) {
                lineno++;
                while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                    line[--len] = '\0';
                if (len == 0)
                    continue;
                buf_reset(&where);
                buf_printf(&where, "standard input, line %lld", lineno);
                rc = declare_row(c, &b, n++, line, where.data);
            }
            if (rc == 0 && ferror(stdin))
                rc = err_sys(EXIT_IO, "could not read standard input");
        }
        if (rc == 0 && b.len >= 1 << 20) {
            rc = db_copy_in_put(c->d, b.data, b.len);
            buf_reset(&b);
        }
    }
    if (rc == 0 && b.len > 0)
        rc = db_copy_in_put(c->d, b.data, b.len);
    if (rc == 0)
        rc = db_copy_in_end(c->d, NULL);
    else
        db_copy_in_end(c->d, "pgapply could not read the keys");
out:
    free(line);
    buf_free(&b);
    buf_free(&where);
    return rc;
}

int
apply_declare(struct db *d, const struct options *o, struct spool *s, struct target *t,
              long long run_id, char *const *keys, int nkeys)
{
    struct db_result *r = NULL;
    struct ctx c;
    struct buf sql;
    const char *p[2];
    long long declared, matched;
    int rc;

    memset(&c, 0, sizeof(c));
    c.d = d;
    c.o = o;
    c.s = s;
    c.t = t;
    c.qs = db_quote_ident(d, o->schema);
    snprintf(c.run, sizeof(c.run), "%lld", run_id);
    p[0] = t->name;
    p[1] = run_id > 0 ? c.run : NULL;
    buf_init(&sql);
    if ((rc = db_exec(d, "BEGIN")) != 0)
        goto out;
    /* Not while a pgapply applies the table: it reads the owned keys batch by batch. */
    if ((rc = db_query(d, &r, t->name,
                       "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended("
                       "'driftless.apply:' || $1, 0))",
                       1, p)) != 0)
        goto fail;
    if (strcmp(db_value(r, 0, 0), "t") != 0) {
        rc = err_msg(EXIT_LOCKED, "table %s: another pgapply is applying it", t->name);
        goto fail;
    }
    db_result_free(r);
    r = NULL;
    buf_puts(&sql, "CREATE TEMP TABLE " NAME_DECLARE " (n bigint, key text");
    for (int k = 0; k < s->nkeys; k++)
        buf_printf(&sql, ", c%d text", k);
    buf_puts(&sql, ") ON COMMIT DROP");
    if ((rc = db_exec(d, sql.data)) != 0 || (rc = declare_copy(&c, keys, nkeys)) != 0)
        goto fail;
    /* Every key must name a row: a typo must not pass for a declaration. */
    buf_reset(&sql);
    buf_printf(&sql,
               "SELECT d.key FROM " NAME_DECLARE " AS d WHERE NOT EXISTS (SELECT 1 FROM %s AS t"
               " WHERE ",
               t->qname);
    declare_cond(&sql, &c, "t", "d");
    buf_puts(&sql, ") ORDER BY d.n LIMIT 10");
    if ((rc = db_query(d, &r, t->name, sql.data, 0, NULL)) != 0)
        goto fail;
    for (int i = 0; i < db_ntuples(r); i++)
        err_msg(EXIT_DATA, "table %s: key %s: no row of the table has it", t->name,
                db_value(r, i, 0));
    if (db_ntuples(r) > 0) {
        err_note("table %s: nothing declared", t->name);
        rc = EXIT_DATA;
        goto fail;
    }
    db_result_free(r);
    r = NULL;
    buf_reset(&sql);
    buf_printf(&sql, "INSERT INTO %s.owned_keys (table_name, legacy_key, run_id) SELECT $1, ",
               c.qs);
    key_text_t(&sql, &c, "t");
    buf_printf(&sql,
               ", $2::bigint FROM %s AS t WHERE EXISTS (SELECT 1 FROM " NAME_DECLARE " AS d WHERE ",
               t->qname);
    declare_cond(&sql, &c, "t", "d");
    buf_puts(&sql, ") ON CONFLICT ON CONSTRAINT driftless_owned_keys_pkey DO NOTHING");
    if ((rc = db_query(d, &r, t->name, sql.data, 2, p)) != 0)
        goto fail;
    declared = db_cmd_tuples(r);
    db_result_free(r);
    r = NULL;
    buf_reset(&sql);
    buf_printf(&sql,
               "SELECT pg_catalog.count(*) FROM %s AS t WHERE EXISTS (SELECT 1 FROM " NAME_DECLARE
               " AS d WHERE ",
               t->qname);
    declare_cond(&sql, &c, "t", "d");
    buf_puts(&sql, ")");
    if ((rc = db_query(d, &r, t->name, sql.data, 0, NULL)) != 0)
        goto fail;
    matched = atoll(db_value(r, 0, 0));
    db_result_free(r);
    r = NULL;
    if ((rc = db_exec(d, "COMMIT")) != 0)
        goto out;
    printf("table %s: %lld keys declared migrated, %lld already driftless's\n", t->name, declared,
           matched - declared);
    goto out;
fail:
    db_exec(d, "ROLLBACK");
out:
    db_result_free(r);
    buf_free(&sql);
    free(c.qs);
    return rc;
}
