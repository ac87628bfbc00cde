/*
 * What pgapply must know of the target table before it writes: its columns
 * (generated, identity, the type to cast to), the UUID column or the integer
 * key rule, its unique indexes, and the foreign keys that reference it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "err.h"
#include "mem.h"
#include "pgapply.h"
#include "state.h"

int
target_find(const struct target *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return i;
    return -1;
}

const struct uindex *
target_uindex(const struct target *t, const char *name)
{
    for (int i = 0; i < t->nuindex; i++)
        if (strcmp(t->uindex[i].name, name) == 0)
            return &t->uindex[i];
    return NULL;
}

/* 1 if the index's columns are exactly the set of names. */
static int
same_columns(const struct uindex *u, char *const *names, int n)
{
    if (u->ncols != n)
        return 0;
    for (int i = 0; i < n; i++) {
        int found = 0;

        for (int j = 0; j < u->ncols; j++)
            if (strcmp(u->cols[j], names[i]) == 0)
                found = 1;
        if (!found)
            return 0;
    }
    return 1;
}

static char **
key_names(const struct spool *s)
{
    char **names = xcalloc((size_t)s->nkeys + 1, sizeof(char *));

    for (int k = 0; k < s->nkeys; k++)
        names[k] = s->hdr.cols[s->key_cols[k]].name;
    return names;
}

int
target_is_legacy_index(const struct target *t, const struct spool *s, const char *name)
{
    const struct uindex *u = target_uindex(t, name);
    char **names;
    int r;

    if (u == NULL)
        return 0;
    names = key_names(s);
    r = same_columns(u, names, s->nkeys);
    free(names);
    return r;
}

static int
load_columns(struct db *d, struct target *t, const char *oid)
{
    static const char sql[] =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL), a.attgenerated <> '',"
        " a.attidentity::text"
        " FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
    struct db_result *r = NULL;
    const char *params[1] = { oid };
    int rc;

    if ((rc = db_query(d, &r, t->name, sql, 1, params)) != 0)
        return rc;
    t->ncols = db_ntuples(r);
    t->cols = xcalloc((size_t)t->ncols + 1, sizeof(struct tcol));
    for (int i = 0; i < t->ncols; i++) {
        struct tcol *c = &t->cols[i];
        const char *ident = db_value(r, i, 3);

        c->name = xstrdup(db_value(r, i, 0));
        c->qname = db_quote_ident(d, c->name);
        c->cast = xstrdup(db_value(r, i, 1));
        c->generated = strcmp(db_value(r, i, 2), "t") == 0;
        c->identity = ident != NULL && ident[0] != '\0' ? ident[0] : 0;
    }
    db_result_free(r);
    return 0;
}

/* Unique indexes without expressions or predicates, with their columns in order. */
static int
load_uindexes(struct db *d, const char *context, const char *oid, struct uindex **out, int *n)
{
    static const char sql[] =
        "SELECT ic.relname, i.indisprimary, a.attname"
        " FROM pg_catalog.pg_index i"
        " JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid"
        " CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, o)"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = $1::oid AND i.indisunique AND i.indexprs IS NULL"
        "   AND i.indpred IS NULL"
        " ORDER BY ic.relname, k.o";
    struct db_result *r = NULL;
    const char *params[1] = { oid };
    struct uindex *u = NULL;
    int count = 0, rc;

    *out = NULL;
    *n = 0;
    if ((rc = db_query(d, &r, context, sql, 1, params)) != 0)
        return rc;
    u = xcalloc((size_t)db_ntuples(r) + 1, sizeof(*u));
    for (int i = 0; i < db_ntuples(r); i++) {
        const char *name = db_value(r, i, 0);
        struct uindex *cur;

        if (count == 0 || strcmp(u[count - 1].name, name) != 0) {
            cur = &u[count++];
            cur->name = xstrdup(name);
            cur->primary = strcmp(db_value(r, i, 1), "t") == 0;
            cur->cols = xcalloc((size_t)db_ntuples(r) + 1, sizeof(char *));
        }
        cur = &u[count - 1];
        cur->cols[cur->ncols++] = xstrdup(db_value(r, i, 2));
    }
    db_result_free(r);
    *out = u;
    *n = count;
    return 0;
}

static void
free_uindexes(struct uindex *u, int n)
{
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < u[i].ncols; j++)
            free(u[i].cols[j]);
        free(u[i].cols);
        free(u[i].name);
    }
    free(u);
}

/*
 * A registered child whose legacy key is no column of its own: its rows born
 * in the target are those whose UUID the crosswalk does not hold.
 */
static int
child_crosswalk(struct db *d, struct fkref *f, const struct options *o)
{
    struct db_result *r = NULL;
    const char *params[1] = { f->child };
    struct buf sql;
    char *qs = db_quote_ident(d, o->schema);
    int rc;

    for (int i = 0; i < f->nlegacy; i++)
        free(f->legacy[i]);
    f->nlegacy = 0;
    buf_init(&sql);
    buf_printf(&sql, "SELECT uuid_column FROM %s.tables WHERE table_name = $1", qs);
    rc = db_query(d, &r, f->child, sql.data, 1, params);
    if (rc == 0 && db_ntuples(r) == 1 && db_value(r, 0, 0) != NULL) {
        f->cw_uuid = db_quote_ident(d, db_value(r, 0, 0));
        f->cw_name = db_quote_literal(d, f->child);
    }
    db_result_free(r);
    buf_free(&sql);
    free(qs);
    return rc;
}

/*
 * A child table's legacy key: the state's registry if it knows the table,
 * else columns named like the parent's legacy key if it has them all, else
 * none (every row of the child was born in the target).
 */
static int
child_legacy(struct db *d, struct fkref *f, const char *child_oid, const struct spool *s,
             const struct options *o, int state_version)
{
    struct db_result *r = NULL;
    const char *params[2];
    int rc;

    if (state_version > 0) {
        struct buf sql;
        char *qs = db_quote_ident(d, o->schema);

        buf_init(&sql);
        buf_printf(
            &sql, "SELECT pg_catalog.unnest(key_columns) FROM %s.tables WHERE table_name = $1", qs);
        params[0] = f->child;
        rc = db_query(d, &r, f->child, sql.data, 1, params);
        buf_free(&sql);
        free(qs);
        if (rc != 0)
            return rc;
        if (db_ntuples(r) > 0) {
            int missing = 0;

            f->legacy = xcalloc((size_t)db_ntuples(r) + 1, sizeof(char *));
            for (int i = 0; i < db_ntuples(r); i++) {
                struct db_result *a = NULL;

                params[0] = child_oid;
                params[1] = db_value(r, i, 0);
                rc = db_query(d, &a, f->child,
                              "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = $1::oid"
                              " AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                              2, params);
                if (rc != 0) {
                    db_result_free(r);
                    return rc;
                }
                missing += db_ntuples(a) == 0;
                db_result_free(a);
                f->legacy[f->nlegacy++] = db_quote_ident(d, db_value(r, i, 0));
            }
            db_result_free(r);
            r = NULL;
            if (missing > 0)
                return child_crosswalk(d, f, o);
            return 0;
        }
        db_result_free(r);
        r = NULL;
    }
    f->legacy = xcalloc((size_t)s->nkeys + 1, sizeof(char *));
    for (int k = 0; k < s->nkeys; k++) {
        params[0] = child_oid;
        params[1] = s->hdr.cols[s->key_cols[k]].name;
        rc = db_query(d, &r, f->child,
                      "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = $1::oid"
                      " AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                      2, params);
        if (rc != 0)
            return rc;
        if (db_ntuples(r) == 0) {
            db_result_free(r);
            for (int i = 0; i < f->nlegacy; i++)
                free(f->legacy[i]);
            f->nlegacy = 0;
            return 0;
        }
        db_result_free(r);
        r = NULL;
        f->legacy[f->nlegacy++] = db_quote_ident(d, params[1]);
    }
    return 0;
}

static int
load_fks(struct db *d, struct target *t, const char *oid, const struct spool *s,
         const struct options *o, int state_version)
{
    static const char sql[] =
        "SELECT k.oid, k.conname, cn.nspname, cc.relname, ca.attname, pa.attname, cc.oid"
        " FROM pg_catalog.pg_constraint k"
        " JOIN pg_catalog.pg_class cc ON cc.oid = k.conrelid"
        " JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace"
        " CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(k.conkey), pg_catalog.unnest(k.confkey))"
        " WITH ORDINALITY AS u(ck, pk, o)"
        " JOIN pg_catalog.pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.ck"
        " JOIN pg_catalog.pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.pk"
        " WHERE k.contype = 'f' AND k.confrelid = $1::oid AND k.conparentid = 0"
        " ORDER BY k.oid, u.o";
    struct db_result *r = NULL;
    const char *params[1] = { oid };
    int rc, n;

    if ((rc = db_query(d, &r, t->name, sql, 1, params)) != 0)
        return rc;
    n = db_ntuples(r);
    t->fk = xcalloc((size_t)n + 1, sizeof(struct fkref));
    for (int i = 0; i < n; i++) {
        struct fkref *f;

        if (i == 0 || strcmp(db_value(r, i, 0), db_value(r, i - 1, 0)) != 0) {
            struct buf b;

            f = &t->fk[t->nfk++];
            f->conname = xstrdup(db_value(r, i, 1));
            buf_init(&b);
            buf_printf(&b, "%s.%s", db_value(r, i, 2), db_value(r, i, 3));
            f->child = b.data;
            {
                char *qs = db_quote_ident(d, db_value(r, i, 2));
                char *qt = db_quote_ident(d, db_value(r, i, 3));

                buf_init(&b);
                buf_printf(&b, "%s.%s", qs, qt);
                f->qchild = b.data;
                free(qs);
                free(qt);
            }
            f->child_cols = xcalloc((size_t)n + 1, sizeof(char *));
            f->parent_cols = xcalloc((size_t)n + 1, sizeof(char *));
            if ((rc = child_legacy(d, f, db_value(r, i, 6), s, o, state_version)) != 0)
                break;
            {
                struct uindex *u = NULL;
                int nu = 0;

                if ((rc = load_uindexes(d, f->child, db_value(r, i, 6), &u, &nu)) != 0)
                    break;
                for (int j = 0; j < nu; j++) {
                    if (!u[j].primary)
                        continue;
                    f->ident = xcalloc((size_t)u[j].ncols + 1, sizeof(char *));
                    f->ident_names = xcalloc((size_t)u[j].ncols + 1, sizeof(char *));
                    for (int c = 0; c < u[j].ncols; c++) {
                        f->ident[c] = db_quote_ident(d, u[j].cols[c]);
                        f->ident_names[c] = xstrdup(u[j].cols[c]);
                    }
                    f->nident = u[j].ncols;
                }
                free_uindexes(u, nu);
            }
        }
        f = &t->fk[t->nfk - 1];
        f->child_cols[f->ncols] = db_quote_ident(d, db_value(r, i, 4));
        f->parent_cols[f->ncols] = db_quote_ident(d, db_value(r, i, 5));
        f->ncols++;
    }
    db_result_free(r);
    return rc;
}

/* The UUID column, or the integer-key rule (DESIGN.md "State in the target"). */
static int
choose_key_mode(struct target *t, const struct spool *s, const struct options *o)
{
    char **keys = key_names(s);
    const struct uindex *pk = NULL;
    int rc = 0;

    for (int i = 0; i < t->nuindex; i++)
        if (t->uindex[i].primary)
            pk = &t->uindex[i];
    t->uuid_tcol = -1;
    t->uuid_scol = -1;
    if (o->uuid_column != NULL) {
        t->uuid_tcol = target_find(t, o->uuid_column);
        if (t->uuid_tcol < 0) {
            rc = err_msg(EXIT_DB, "table %s: column \"%s\" (--uuid-column) does not exist", t->name,
                         o->uuid_column);
            goto done;
        }
    } else if (!t->crosswalk_keys && pk != NULL && same_columns(pk, keys, s->nkeys)) {
        t->integer_mode = 1;
    } else if (pk != NULL && pk->ncols == 1 &&
               strcmp(t->cols[target_find(t, pk->cols[0])].cast, "uuid") == 0) {
        t->uuid_tcol = target_find(t, pk->cols[0]);
    } else {
        rc = err_msg(EXIT_USAGE,
                     "table %s: cannot tell its UUID column (the primary key is neither one "
                     "uuid column nor the legacy key); give --uuid-column",
                     t->name);
        goto done;
    }
    if (t->uuid_tcol >= 0) {
        const char *u = t->cols[t->uuid_tcol].name;

        for (int k = 0; k < s->nkeys; k++)
            if (strcmp(keys[k], u) == 0) {
                rc = err_msg(EXIT_USAGE,
                             "table %s: the UUID column \"%s\" is a key column of "
                             "the stream; the key must be the legacy key",
                             t->name, u);
                goto done;
            }
        for (int j = 0; j < s->ndata; j++)
            if (strcmp(s->hdr.cols[s->data_cols[j]].name, u) == 0)
                t->uuid_scol = s->data_cols[j];
    }
    if (t->registered && t->uuid_tcol >= 0 && t->reg_uuid != NULL &&
        strcmp(t->reg_uuid, t->cols[t->uuid_tcol].name) != 0) {
        rc = err_msg(EXIT_REFUSED,
                     "table %s: refused: its UUID column is registered as \"%s\", not \"%s\"",
                     t->name, t->reg_uuid, t->cols[t->uuid_tcol].name);
        goto done;
    }
done:
    free(keys);
    return rc;
}

/* What the state's registry says of the table (t->registered and the rest). */
static int
load_registry(struct db *d, struct target *t, const struct spool *s, const struct options *o,
              int state_version)
{
    struct db_result *r = NULL;
    const char *params[2];
    struct buf sql, arr;
    char **names;
    char *qs;
    int rc;

    if (state_version <= 0)
        return 0;
    names = key_names(s);
    buf_init(&arr);
    state_text_array(&arr, names, s->nkeys);
    free(names);
    qs = db_quote_ident(d, o->schema);
    buf_init(&sql);
    buf_printf(&sql,
               "SELECT key_columns = $2::text[], uuid_column,"
               " pg_catalog.array_to_string(key_columns, ', ')"
               " FROM %s.tables WHERE table_name = $1",
               qs);
    params[0] = t->name;
    params[1] = arr.data;
    rc = db_query(d, &r, t->name, sql.data, 2, params);
    if (rc == 0 && db_ntuples(r) == 1) {
        t->registered = 1;
        t->reg_same_keys = strcmp(db_value(r, 0, 0), "t") == 0;
        t->reg_uuid = db_value(r, 0, 1) != NULL ? xstrdup(db_value(r, 0, 1)) : NULL;
        t->reg_keys = xstrdup(db_value(r, 0, 2) != NULL ? db_value(r, 0, 2) : "");
    }
    db_result_free(r);
    buf_free(&sql);
    buf_free(&arr);
    free(qs);
    return rc;
}

/*
 * Map the stream's key columns to the table's. All of them columns: the usual
 * case. None: the key lives in the crosswalk only, which the table's
 * registration must have filled (--register --import-map).
 */
static int
map_keys(struct target *t, const struct spool *s, const struct options *o)
{
    int found = 0, missing = -1;

    t->key_tcol = xcalloc((size_t)s->nkeys + 1, sizeof(int));
    t->key_cast = xcalloc((size_t)s->nkeys + 1, sizeof(char *));
    for (int k = 0; k < s->nkeys; k++) {
        t->key_tcol[k] = target_find(t, s->hdr.cols[s->key_cols[k]].name);
        if (t->key_tcol[k] >= 0)
            found++;
        else if (missing < 0)
            missing = k;
    }
    if (found == s->nkeys) {
        for (int k = 0; k < s->nkeys; k++)
            t->key_cast[k] = xstrdup(t->cols[t->key_tcol[k]].cast);
        return 0;
    }
    if (found > 0)
        return err_msg(EXIT_DB, "table %s: key column \"%s\" does not exist", t->name,
                       s->hdr.cols[s->key_cols[missing]].name);
    /* The text form the crosswalk keeps: integers as numbers (007 is 7), the rest as is. */
    t->crosswalk_keys = 1;
    for (int k = 0; k < s->nkeys; k++)
        t->key_cast[k] =
            xstrdup(s->hdr.cols[s->key_cols[k]].order == RS_ORDER_INT ? "bigint" : "text");
    if (!t->registered) {
        if (o->registering && o->import_map != NULL)
            return 0;
        err_msg(EXIT_REFUSED,
                "table %s: refused: its legacy key (%s) is no column of the table, and the "
                "table is not registered: the crosswalk does not know its rows",
                t->name, s->hdr.cols[s->key_cols[0]].name);
        err_note("hint: import the earlier migration's mapping first: pgapply --register "
                 "--table %s --uuid-column COL --import-map MAP.rs (see pgapply(1))",
                 t->name);
        return EXIT_REFUSED;
    }
    if (!t->reg_same_keys || t->reg_uuid == NULL)
        return err_msg(EXIT_REFUSED,
                       "table %s: refused: the stream's key is not the legacy key the table "
                       "is registered with (%s)",
                       t->name, t->reg_keys);
    return 0;
}

int
target_describe(struct db *d, struct target *t, const struct spool *s, const struct options *o,
                int state_version)
{
    struct db_result *r = NULL;
    const char *params[1];
    char *oid = NULL;
    int rc;

    memset(t, 0, sizeof(*t));
    t->uuid_tcol = -1;
    t->uuid_scol = -1;
    t->name = xstrdup(s->hdr.table);
    t->qname = db_quote_qualified(d, t->name);
    if (t->qname == NULL)
        return EXIT_DATA;
    t->lname = db_quote_literal(d, t->name);
    params[0] = t->qname;
    rc = db_query(d, &r, t->name,
                  "SELECT c.oid, c.relkind::text, pg_catalog.row_security_active(c.oid)"
                  " FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
                  1, params);
    if (rc != 0)
        return rc;
    if (db_ntuples(r) != 1) {
        db_result_free(r);
        return err_msg(EXIT_DB, "table %s does not exist", t->name);
    }
    if (strcmp(db_value(r, 0, 1), "r") != 0 && strcmp(db_value(r, 0, 1), "p") != 0) {
        db_result_free(r);
        return err_msg(EXIT_DB, "%s is not a table", t->name);
    }
    if (strcmp(db_value(r, 0, 2), "t") == 0) {
        db_result_free(r);
        err_msg(EXIT_REFUSED,
                "table %s: refused: row security is active for this role; its policies could "
                "hide rows from the updates and deletes",
                t->name);
        err_note("hint: connect as the table's owner without FORCE ROW LEVEL SECURITY, or as "
                 "a role with BYPASSRLS");
        return EXIT_REFUSED;
    }
    oid = xstrdup(db_value(r, 0, 0));
    db_result_free(r);
    r = NULL;

    if ((rc = load_columns(d, t, oid)) != 0)
        goto done;
    /* A dry run on an older state records nothing: no image needed. */
    if (state_version >= STATE_IMAGE_VERSION)
        rc = state_row_image_sql(d, o->schema, oid, "t", &t->img);
    else
        t->img = xstrdup("NULL::pg_catalog.jsonb");
    if (rc != 0)
        goto done;
    if ((rc = load_registry(d, t, s, o, state_version)) != 0)
        goto done;
    if ((rc = map_keys(t, s, o)) != 0)
        goto done;
    t->data_tcol = xcalloc((size_t)s->ndata + 1, sizeof(int));
    for (int j = 0; j < s->ndata; j++) {
        const char *name = s->hdr.cols[s->data_cols[j]].name;

        t->data_tcol[j] = target_find(t, name);
        if (t->data_tcol[j] < 0) {
            rc = err_msg(EXIT_DB, "table %s: column \"%s\" does not exist", t->name, name);
            goto done;
        }
        if (t->cols[t->data_tcol[j]].generated) {
            rc = err_msg(EXIT_REFUSED,
                         "table %s: refused: column \"%s\" is generated in the target and is "
                         "never written",
                         t->name, name);
            err_note("hint: leave generated columns out of the compared columns");
            goto done;
        }
    }
    if ((rc = load_uindexes(d, t->name, oid, &t->uindex, &t->nuindex)) != 0)
        goto done;
    if ((rc = choose_key_mode(t, s, o)) != 0)
        goto done;
    rc = load_fks(d, t, oid, s, o, state_version);
done:
    free(oid);
    return rc;
}

void
target_free(struct target *t)
{
    for (int i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].qname);
        free(t->cols[i].cast);
    }
    free(t->cols);
    free(t->img);
    if (t->key_cast != NULL)
        for (int k = 0; t->key_cast[k] != NULL; k++)
            free(t->key_cast[k]);
    free(t->key_cast);
    free(t->key_tcol);
    free(t->data_tcol);
    free_uindexes(t->uindex, t->nuindex);
    for (int i = 0; i < t->nfk; i++) {
        struct fkref *f = &t->fk[i];

        for (int j = 0; j < f->ncols; j++) {
            free(f->child_cols[j]);
            free(f->parent_cols[j]);
        }
        for (int j = 0; j < f->nlegacy; j++)
            free(f->legacy[j]);
        for (int j = 0; j < f->nident; j++) {
            free(f->ident[j]);
            free(f->ident_names[j]);
        }
        free(f->child_cols);
        free(f->parent_cols);
        free(f->legacy);
        free(f->ident);
        free(f->ident_names);
        free(f->conname);
        free(f->child);
        free(f->qchild);
        free(f->cw_uuid);
        free(f->cw_name);
    }
    free(t->fk);
    free(t->name);
    free(t->qname);
    free(t->lname);
    free(t->reg_uuid);
    free(t->reg_keys);
    memset(t, 0, sizeof(*t));
}

int
target_group_check(struct db *d, struct target *const *t, int n, int *order)
{
    static const char sql[] =
        "WITH g AS (SELECT x.i, pg_catalog.to_regclass(x.name) AS oid"
        "           FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS x(name, i))"
        " SELECT k.conname, cg.i - 1, pg.i - 1, k.condeferrable,"
        "        pg_catalog.bool_and(a.attnotnull),"
        "        pg_catalog.string_agg(a.attname, ', ' ORDER BY a.attnum)"
        " FROM pg_catalog.pg_constraint k"
        " JOIN g AS cg ON cg.oid = k.conrelid JOIN g AS pg ON pg.oid = k.confrelid"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)"
        " WHERE k.contype = 'f' AND k.conrelid <> k.confrelid AND k.conparentid = 0"
        " GROUP BY k.oid, k.conname, cg.i, pg.i, k.condeferrable ORDER BY k.conname";
    struct db_result *r = NULL;
    const char *params[1];
    char **names = xcalloc((size_t)n + 1, sizeof(char *));
    char *placed = xcalloc((size_t)n + 1, 1);
    int *parent_of = NULL, nedges = 0, rc, bad = 0;
    struct buf arr;

    for (int i = 0; i < n; i++)
        names[i] = t[i]->qname;
    buf_init(&arr);
    state_text_array(&arr, names, n);
    params[0] = arr.data;
    rc = db_query(d, &r, "group", sql, 1, params);
    if (rc != 0)
        goto done;
    parent_of = xcalloc((size_t)db_ntuples(r) * 2 + 2, sizeof(int));
    for (int i = 0; i < db_ntuples(r); i++) {
        int child = atoi(db_value(r, i, 1)), parent = atoi(db_value(r, i, 2));
        int deferrable = strcmp(db_value(r, i, 3), "t") == 0;
        int notnull = strcmp(db_value(r, i, 4), "t") == 0;

        if (!deferrable && notnull) {
            err_msg(EXIT_REFUSED,
                    "group: refused: foreign key \"%s\" of %s (%s) references %s and is "
                    "neither DEFERRABLE nor nullable: the cycle cannot be applied",
                    db_value(r, i, 0), t[child]->name, db_value(r, i, 5), t[parent]->name);
            bad = 1;
        } else if (!deferrable) {
            /* checked at each statement: its parent's rows must be there first */
            parent_of[2 * nedges] = child;
            parent_of[2 * nedges + 1] = parent;
            nedges++;
        }
    }
    if (bad) {
        err_note("hint: make the constraint DEFERRABLE (ALTER TABLE ... ALTER CONSTRAINT ... "
                 "DEFERRABLE) or its columns nullable");
        rc = EXIT_REFUSED;
        goto done;
    }
    /* Stable order: the first table whose non-deferrable parents are placed; else the first. */
    for (int k = 0; k < n; k++) {
        int pick = -1;

        for (int i = 0; i < n && pick < 0; i++) {
            int ready = !placed[i];

            for (int e = 0; e < nedges && ready; e++)
                if (parent_of[2 * e] == i && !placed[parent_of[2 * e + 1]] &&
                    parent_of[2 * e + 1] != i)
                    ready = 0;
            if (ready)
                pick = i;
        }
        for (int i = 0; i < n && pick < 0; i++)
            if (!placed[i])
                pick = i;
        placed[pick] = 1;
        order[k] = pick;
    }
done:
    db_result_free(r);
    buf_free(&arr);
    free(parent_of);
    free(placed);
    free(names);
    return rc;
}
