/*
 * The comparison: a merge join of source and target by key. Equal hashes
 * (XXH3-128) mean equal rows; where they differ the values are compared
 * column by column and the differing columns named. The target's UUIDs are
 * checked against the crosswalk in the same pass. Memory holds one record per
 * input plus the first --show keys of each kind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "hash.h"
#include "io.h"
#include "pgverify.h"

#define KEYBUF         1024
#define MAP_UUID       "uuid"
#define SHOW_VALUE_MAX 200

/* A description of a header's key columns for messages: "(id int, k text)". */
static void
describe_keys(const struct rs_header *h, struct buf *b)
{
    int first = 1;

    buf_putc(b, '(');
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        buf_printf(b, "%s%s %s", first ? "" : ", ", h->cols[i].name,
                   h->cols[i].order == RS_ORDER_INT ? "int" : "text");
        first = 0;
    }
    buf_putc(b, ')');
}

static int
count_role(const struct rs_header *h, char role, int *pos)
{
    int n = 0;

    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != role)
            continue;
        if (pos != NULL)
            pos[n] = i;
        n++;
    }
    return n;
}

/* Refuse change streams and streams with two hash columns; find the hash. */
static int
check_kind(const struct rs_header *h, const char *what, int *hash)
{
    *hash = -1;
    if (h->kind == RS_KIND_CHANGES)
        return err_msg(EXIT_DATA, "%s: table %s: a change stream cannot be verified", what,
                       h->table);
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role == RS_ROLE_OP)
            return err_msg(EXIT_DATA, "%s: table %s: a change stream cannot be verified", what,
                           h->table);
        if (h->cols[i].role != RS_ROLE_HASH)
            continue;
        if (*hash >= 0)
            return err_msg(EXIT_DATA, "%s: table %s: more than one hash column", what, h->table);
        *hash = i;
    }
    return 0;
}

static int
same_names(char **a, int na, char **b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

/* The position of the non-key, non-hash column name, or -1. */
static int
find_data(const struct rs_header *h, const char *name)
{
    for (int i = 0; i < h->ncols; i++)
        if (h->cols[i].role == RS_ROLE_DATA && strcmp(h->cols[i].name, name) == 0)
            return i;
    return -1;
}

static int
check_keys(const struct rs_header *s, const struct rs_header *t, struct pv_layout *l)
{
    int ns = count_role(s, RS_ROLE_KEY, NULL), nt = count_role(t, RS_ROLE_KEY, NULL);
    int same = ns == nt && ns > 0;
    struct buf ds, dt;

    l->skey = xcalloc((size_t)ns + 1, sizeof(int));
    l->tkey = xcalloc((size_t)nt + 1, sizeof(int));
    count_role(s, RS_ROLE_KEY, l->skey);
    count_role(t, RS_ROLE_KEY, l->tkey);
    l->nkeys = ns;
    for (int k = 0; same && k < ns; k++) {
        const struct rs_column *a = &s->cols[l->skey[k]], *b = &t->cols[l->tkey[k]];

        same = strcmp(a->name, b->name) == 0 && a->order == b->order;
    }
    if (same)
        return 0;
    if (ns == 0 || nt == 0)
        return err_msg(EXIT_DATA, "%s: table %s: stream has no key columns to join by",
                       ns == 0 ? "source" : "target", ns == 0 ? s->table : t->table);
    buf_init(&ds);
    buf_init(&dt);
    describe_keys(s, &ds);
    describe_keys(t, &dt);
    err_msg(EXIT_DATA, "source and target: key columns differ: %s vs %s", ds.data, dt.data);
    buf_free(&ds);
    buf_free(&dt);
    return EXIT_DATA;
}

/* The data columns must be the same names in the same order. */
static int
check_data(const struct rs_header *s, const struct rs_header *t)
{
    int i = 0, j = 0;

    for (;;) {
        while (i < s->ncols && s->cols[i].role != RS_ROLE_DATA)
            i++;
        while (j < t->ncols && t->cols[j].role != RS_ROLE_DATA)
            j++;
        if (i >= s->ncols && j >= t->ncols)
            return 0;
        if (i >= s->ncols)
            return err_msg(EXIT_DATA,
                           "source and target: data columns differ: target column \"%s\" "
                           "is not in the source",
                           t->cols[j].name);
        if (j >= t->ncols)
            return err_msg(EXIT_DATA,
                           "source and target: data columns differ: source column \"%s\" "
                           "is not in the target",
                           s->cols[i].name);
        if (strcmp(s->cols[i].name, t->cols[j].name) != 0) {
            if (find_data(t, s->cols[i].name) < 0)
                return err_msg(EXIT_DATA,
                               "source and target: data columns differ: source column \"%s\" "
                               "is not in the target",
                               s->cols[i].name);
            if (find_data(s, t->cols[j].name) < 0)
                return err_msg(EXIT_DATA,
                               "source and target: data columns differ: target column \"%s\" "
                               "is not in the source",
                               t->cols[j].name);
            return err_msg(EXIT_DATA,
                           "source and target: data columns differ: \"%s\" and \"%s\" are in "
                           "another order",
                           s->cols[i].name, t->cols[j].name);
        }
        i++;
        j++;
    }
}

int
pv_layout_build(const struct rs_header *s, const struct rs_header *t, struct pv_layout *l)
{
    const struct rs_header *hashed = NULL;
    int rc;

    memset(l, 0, sizeof(*l));
    l->shash = l->thash = -1;
    if ((rc = check_kind(s, "source", &l->shash)) != 0 ||
        (rc = check_kind(t, "target", &l->thash)) != 0 || (rc = check_keys(s, t, l)) != 0 ||
        (rc = check_data(s, t)) != 0)
        return rc;

    if (l->shash >= 0 && l->thash >= 0) {
        /* As rowdiff: two hashes over different columns cannot be compared. */
        if (!same_names(s->hashed, s->nhashed, t->hashed, t->nhashed))
            return rs_header_check_compatible(s, t, "source and target");
        if (strcmp(s->cols[l->shash].type, t->cols[l->thash].type) != 0)
            return err_msg(EXIT_DATA, "source and target: hash types differ (%s, %s)",
                           s->cols[l->shash].type, t->cols[l->thash].type);
        hashed = s;
        l->stream_hash = 1;
    } else if (l->shash >= 0) {
        hashed = s;
    } else if (l->thash >= 0) {
        hashed = t;
    }

    /* The compared columns: what the hash covers, or every data column. */
    if (hashed != NULL) {
        l->ncmp = hashed->nhashed;
        l->cmp_names = xcalloc((size_t)l->ncmp + 1, sizeof(char *));
        for (int i = 0; i < l->ncmp; i++)
            l->cmp_names[i] = hashed->hashed[i];
    } else {
        l->ncmp = count_role(s, RS_ROLE_DATA, NULL);
        l->cmp_names = xcalloc((size_t)l->ncmp + 1, sizeof(char *));
        for (int i = 0, n = 0; i < s->ncols; i++)
            if (s->cols[i].role == RS_ROLE_DATA)
                l->cmp_names[n++] = s->cols[i].name;
    }
    l->scmp = xcalloc((size_t)l->ncmp + 1, sizeof(int));
    l->tcmp = xcalloc((size_t)l->ncmp + 1, sizeof(int));
    l->have_values = 1;
    for (int i = 0; i < l->ncmp; i++) {
        l->scmp[i] = find_data(s, l->cmp_names[i]);
        l->tcmp[i] = find_data(t, l->cmp_names[i]);
        if (l->scmp[i] < 0 || l->tcmp[i] < 0)
            l->have_values = 0;
    }
    /* One side's hash is reused for the other only if we can compute it alike. */
    if (!l->stream_hash && !l->have_values)
        return err_msg(EXIT_DATA,
                       "source and target: only one stream is hashed, and the other lacks "
                       "hashed columns to hash it alike (a --keys-only stream?)");
    return 0;
}

void
pv_layout_free(struct pv_layout *l)
{
    free(l->skey);
    free(l->tkey);
    free(l->cmp_names);
    free(l->scmp);
    free(l->tcmp);
    memset(l, 0, sizeof(*l));
}

/* ---- the result ---- */

void
pv_result_free(struct pv_result *res)
{
    for (int k = 0; k < PV_NKINDS; k++) {
        for (int i = 0; i < res->list[k].n; i++) {
            free(res->list[k].items[i].text);
            free(res->list[k].items[i].json);
        }
        free(res->list[k].items);
    }
    free(res->table);
    memset(res, 0, sizeof(*res));
}

int
pv_result_differs(const struct pv_result *res)
{
    for (int k = 0; k < PV_NKINDS; k++)
        if (res->list[k].count > 0)
            return 1;
    return 0;
}

/* Count one discrepancy; 1 when it is among the first opt.show (to be listed). */
static int
tally(struct pv_result *res, int kind)
{
    res->list[kind].count++;
    return res->list[kind].count <= (uint64_t)opt.show;
}

static void
add_item(struct pv_result *res, int kind, struct buf *text, struct buf *json)
{
    struct pv_list *l = &res->list[kind];

    l->items = xrealloc(l->items, sizeof(*l->items) * (size_t)(l->n + 1));
    l->items[l->n].text = text->data;
    l->items[l->n].json = json->data;
    l->n++;
    buf_init(text);
    buf_init(json);
}

/* The key as a JSON object {"col": "value", ...}. */
static void
key_json(struct buf *b, const struct rs_header *h, const struct rs_value *v)
{
    int first = 1;

    buf_putc(b, '{');
    for (int i = 0; i < h->ncols; i++) {
        if (h->cols[i].role != RS_ROLE_KEY)
            continue;
        if (!first)
            buf_putc(b, ',');
        first = 0;
        buf_json_string(b, h->cols[i].name, strlen(h->cols[i].name));
        buf_putc(b, ':');
        buf_json_string(b, v[i].data, v[i].len);
    }
    buf_putc(b, '}');
}

static void
key_text(struct buf *b, const struct rs_header *h, const struct rs_value *v)
{
    char key[KEYBUF];

    rs_key_format(h, v, key, sizeof(key));
    buf_puts(b, key);
}

static void
list_key(struct pv_result *res, int kind, const struct rs_header *h, const struct rs_value *v)
{
    struct buf text, json;

    if (!tally(res, kind))
        return;
    buf_init(&text);
    buf_init(&json);
    key_text(&text, h, v);
    key_json(&json, h, v);
    add_item(res, kind, &text, &json);
}

static int
same_value(const struct rs_value *a, const struct rs_value *b)
{
    if (a->data == NULL || b->data == NULL)
        return a->data == NULL && b->data == NULL;
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Two rows whose hashes differ: name the columns whose values differ. */
static void
list_different(struct pv_result *res, const struct pv_layout *l, const struct rs_header *ht,
               const struct rs_value *s, const struct rs_value *t)
{
    struct buf text, json, vals;
    int ndiff = 0;

    if (!tally(res, PV_DIFFERENT))
        return;
    buf_init(&text);
    buf_init(&json);
    buf_init(&vals);
    key_text(&text, ht, t);
    buf_puts(&json, "{\"key\":");
    key_json(&json, ht, t);
    buf_puts(&json, ",\"columns\":[");
    if (opt.values)
        buf_putc(&vals, '{');
    for (int i = 0; l->have_values && i < l->ncmp; i++) {
        const struct rs_value *a = &s[l->scmp[i]], *b = &t[l->tcmp[i]];

        if (same_value(a, b))
            continue;
        buf_puts(&text, ndiff ? ", " : ": ");
        buf_puts(&text, l->cmp_names[i]);
        if (ndiff) {
            buf_putc(&json, ',');
            if (opt.values)
                buf_putc(&vals, ',');
        }
        buf_json_string(&json, l->cmp_names[i], strlen(l->cmp_names[i]));
        if (opt.values) {
            buf_json_string(&vals, l->cmp_names[i], strlen(l->cmp_names[i]));
            buf_puts(&vals, ":{\"source\":");
            buf_json_string(&vals, a->data, a->len);
            buf_puts(&vals, ",\"target\":");
            buf_json_string(&vals, b->data, b->len);
            buf_putc(&vals, '}');
        }
        ndiff++;
    }
    buf_putc(&json, ']');
    if (!l->have_values) {
        buf_puts(&text, ": hashes differ (the streams hold no values to compare)");
        buf_puts(&json, ",\"note\":\"hashes differ; no values to compare\"");
    } else if (ndiff == 0) {
        /* Only the streams' own hashes can disagree with equal values. */
        buf_puts(&text, ": hashes differ, values equal (a hash computed otherwise?)");
        buf_puts(&json, ",\"note\":\"hashes differ; values equal\"");
    }
    if (opt.values && l->have_values) {
        buf_putc(&vals, '}');
        buf_puts(&json, ",\"values\":");
        buf_puts(&json, vals.data);
        for (int i = 0; i < l->ncmp; i++) {
            const struct rs_value *a = &s[l->scmp[i]], *b = &t[l->tcmp[i]];

            if (same_value(a, b))
                continue;
            buf_printf(&text, "\n      %s: source ", l->cmp_names[i]);
            pv_text_value(&text, a->data, a->len, SHOW_VALUE_MAX);
            buf_puts(&text, ", target ");
            pv_text_value(&text, b->data, b->len, SHOW_VALUE_MAX);
        }
    }
    buf_putc(&json, '}');
    buf_free(&vals);
    add_item(res, PV_DIFFERENT, &text, &json);
}

/* A UUID as the server prints it and as a CSV may hold it: case does not count. */
static int
same_uuid(const struct rs_value *a, const struct rs_value *b)
{
    if (a->data == NULL || b->data == NULL || a->len != b->len)
        return 0;
    for (size_t i = 0; i < a->len; i++) {
        char x = a->data[i], y = b->data[i];

        if (x >= 'A' && x <= 'F')
            x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'F')
            y = (char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

static void
list_uuid(struct pv_result *res, const struct rs_header *ht, const struct rs_value *t,
          const struct rs_value *tu, const struct rs_value *xu)
{
    struct buf text, json;
    const char *reason = xu == NULL ? "not in the crosswalk" : "reissued";

    if (!tally(res, PV_UUID))
        return;
    buf_init(&text);
    buf_init(&json);
    key_text(&text, ht, t);
    if (xu == NULL)
        buf_printf(&text, ": uuid not in the crosswalk (column %s)", opt.uuid_col);
    else
        buf_printf(&text, ": uuid reissued (column %s is not the crosswalk's)", opt.uuid_col);
    buf_puts(&json, "{\"key\":");
    key_json(&json, ht, t);
    buf_puts(&json, ",\"reason\":");
    buf_json_string(&json, reason, strlen(reason));
    if (opt.values) {
        buf_puts(&text, ": target ");
        pv_text_value(&text, tu->data, tu->len, SHOW_VALUE_MAX);
        buf_puts(&json, ",\"target_uuid\":");
        buf_json_string(&json, tu->data, tu->len);
        if (xu != NULL) {
            buf_puts(&text, ", crosswalk ");
            pv_text_value(&text, xu->data, xu->len, SHOW_VALUE_MAX);
            buf_puts(&json, ",\"crosswalk_uuid\":");
            buf_json_string(&json, xu->data, xu->len);
        }
    }
    buf_putc(&json, '}');
    add_item(res, PV_UUID, &text, &json);
}

/* The crosswalk's layout against the target's: same keys, a uuid column. */
static int
check_crosswalk(const struct rs_header *ht, const struct rs_header *hx, int *tu, int *xu)
{
    int nt = count_role(ht, RS_ROLE_KEY, NULL), nx = count_role(hx, RS_ROLE_KEY, NULL);
    int *kt = xcalloc((size_t)nt + 1, sizeof(int)), *kx = xcalloc((size_t)nx + 1, sizeof(int));
    int same = nt == nx, rc = 0;

    count_role(ht, RS_ROLE_KEY, kt);
    count_role(hx, RS_ROLE_KEY, kx);
    for (int k = 0; same && k < nt; k++)
        same = strcmp(ht->cols[kt[k]].name, hx->cols[kx[k]].name) == 0 &&
               ht->cols[kt[k]].order == hx->cols[kx[k]].order;
    free(kt);
    free(kx);
    if (!same) {
        struct buf dt, dx;

        buf_init(&dt);
        buf_init(&dx);
        describe_keys(ht, &dt);
        describe_keys(hx, &dx);
        rc = err_msg(EXIT_DATA, "target and crosswalk: key columns differ: %s vs %s", dt.data,
                     dx.data);
        buf_free(&dt);
        buf_free(&dx);
        return rc;
    }
    *xu = find_data(hx, MAP_UUID);
    if (*xu < 0)
        return err_msg(EXIT_DATA, "crosswalk: table %s: no \"%s\" column", hx->table, MAP_UUID);
    *tu = find_data(ht, opt.uuid_col);
    if (*tu < 0)
        return err_msg(EXIT_DATA, "target: table %s: no column \"%s\" (--uuid-column)", ht->table,
                       opt.uuid_col);
    return 0;
}

/* The hash of a record: the stream's own, or one computed over the compared columns. */
static void
row_hash(const struct pv_layout *l, const struct rs_value *v, int hash_col, const int *cols,
         char out[HASH_HEX_LEN + 1], struct rs_value *hv)
{
    if (l->stream_hash) {
        *hv = v[hash_col];
        return;
    }
    hash_row(v, cols, l->ncmp, out);
    hv->data = out;
    hv->len = HASH_HEX_LEN;
}

int
pv_compare(struct pv_input *src, struct pv_input *tgt, struct pv_input *xw, struct pv_result *res)
{
    const struct rs_header *hs = rs_reader_header(src->r), *ht = rs_reader_header(tgt->r);
    const struct rs_header *hx = xw != NULL ? rs_reader_header(xw->r) : NULL;
    const struct rs_value *s = NULL, *t = NULL, *x = NULL;
    struct pv_layout l;
    char sh[HASH_HEX_LEN + 1], th[HASH_HEX_LEN + 1];
    int tu = -1, xu = -1, rc;

    if ((rc = pv_layout_build(hs, ht, &l)) != 0)
        goto done;
    if (hx != NULL && (rc = check_crosswalk(ht, hx, &tu, &xu)) != 0)
        goto done;
    if (res->table == NULL)
        res->table = xstrdup(opt.table != NULL ? opt.table : ht->table);

    if ((rc = rs_reader_next(src->r, &s)) != 0 || (rc = rs_reader_next(tgt->r, &t)) != 0)
        goto done;
    if (hx != NULL && (rc = rs_reader_next(xw->r, &x)) != 0)
        goto done;
    while (s != NULL || t != NULL) {
        int cmp;

        if (io_interrupted) {
            rc = EXIT_IO;
            goto done;
        }
        if (s == NULL)
            cmp = 1;
        else if (t == NULL)
            cmp = -1;
        else
            cmp = rs_key_cmp2(hs, s, ht, t);

        if (t != NULL && cmp >= 0 && hx != NULL) {
            /* Every target row's UUID against its crosswalk entry. */
            int c = -1;

            while (x != NULL && (c = rs_key_cmp2(hx, x, ht, t)) < 0)
                if ((rc = rs_reader_next(xw->r, &x)) != 0)
                    goto done;
            if (x == NULL || c > 0)
                list_uuid(res, ht, t, &t[tu], NULL);
            else if (!same_uuid(&t[tu], &x[xu]))
                list_uuid(res, ht, t, &t[tu], &x[xu]);
        }
        if (cmp < 0) {
            list_key(res, PV_MISSING, hs, s);
        } else if (cmp > 0) {
            list_key(res, PV_EXTRA, ht, t);
        } else {
            struct rs_value a, b;

            row_hash(&l, s, l.shash, l.scmp, sh, &a);
            row_hash(&l, t, l.thash, l.tcmp, th, &b);
            if (a.data != NULL && same_value(&a, &b))
                res->matched++;
            else
                list_different(res, &l, ht, s, t);
        }
        if (cmp <= 0 && (rc = rs_reader_next(src->r, &s)) != 0)
            goto done;
        if (cmp >= 0 && (rc = rs_reader_next(tgt->r, &t)) != 0)
            goto done;
    }
    /* The crosswalk is read to its trailer too: a damaged one proves nothing. */
    while (x != NULL)
        if ((rc = rs_reader_next(xw->r, &x)) != 0)
            goto done;
    res->source_rows = rs_reader_count(src->r);
    res->target_rows = rs_reader_count(tgt->r);
done:
    pv_layout_free(&l);
    return rc;
}
