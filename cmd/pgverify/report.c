/*
 * The report: a summary and the listed keys for people on stdout, and one
 * JSON object per table for scripts (scripts/validate aggregates them).
 * Values appear only with --values: they are customer data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "pgverify.h"

static const char *const kind_title[PV_NKINDS] = { "missing in target", "extra in target",
                                                   "different", "uuid mismatches" };
static const char *const kind_json[PV_NKINDS] = { "missing", "extra", "different",
                                                  "uuid_mismatch" };
static const char *const kind_keys[PV_NKINDS] = { "missing_keys", "extra_keys", "different_keys",
                                                  "uuid_mismatch_keys" };

/* Everything written for --json, sent in one write at the end. */
static struct buf json_out;
static int json_used;

void
pv_text_value(struct buf *b, const char *s, size_t len, size_t max)
{
    if (s == NULL) {
        buf_puts(b, "NULL");
        return;
    }
    buf_putc(b, '"');
    for (size_t i = 0; i < len && i < max; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c == '\n')
            buf_puts(b, "\\n");
        else if (c == '\t')
            buf_puts(b, "\\t");
        else if (c == '\r')
            buf_puts(b, "\\r");
        else if (c < 0x20 || c == 0x7f)
            buf_printf(b, "\\x%02x", c);
        else
            buf_putc(b, (char)c);
    }
    buf_putc(b, '"');
    if (len > max)
        buf_printf(b, "... (%zu bytes)", len);
}

int
pv_json_write(const char *text, size_t len)
{
    if (!json_used) {
        buf_init(&json_out);
        json_used = 1;
    }
    buf_append(&json_out, text, len);
    return 0;
}

int
pv_json_flush(int write)
{
    struct io_atomic a = { .fd = -1 };
    int rc = 0;

    if (!json_used)
        return 0;
    if (!write || opt.json == NULL) {
        /* nothing to write: just let go of it */
    } else if (strcmp(opt.json, "-") == 0) {
        if (fwrite(json_out.data, 1, json_out.len, stdout) != json_out.len)
            rc = err_sys(EXIT_IO, "could not write output");
    } else if ((rc = io_atomic_open(&a, opt.json)) == 0) {
        if (io_write_full(a.fd, json_out.data, json_out.len) != 0)
            rc = err_sys(EXIT_IO, "could not write \"%s\"", a.tmp);
        else
            rc = io_atomic_commit(&a);
    }
    io_atomic_abort(&a);
    buf_free(&json_out);
    json_used = 0;
    return rc;
}

/* matched / source as a percentage, rounded down to 0.01 (100.00 only when all match). */
static void
success_rate(const struct pv_result *res, struct buf *b)
{
    unsigned long long bp = 10000;

    if (res->source_rows > 0)
        bp = (unsigned long long)((res->matched * 10000u) / res->source_rows);
    buf_printf(b, "%llu.%02llu", bp / 100, bp % 100);
}

static void
report_text(const struct pv_result *res, struct buf *b)
{
    static const char *const names[] = { "source rows", "target rows", "matched" };
    const uint64_t nums[] = { res->source_rows, res->target_rows, res->matched };
    uint64_t total = 0;
    struct buf rate;

    buf_printf(b, "table %s\n", res->table);
    for (int i = 0; i < 3; i++)
        buf_printf(b, "  %-20s %12llu\n", names[i], (unsigned long long)nums[i]);
    for (int k = 0; k < PV_NKINDS; k++) {
        buf_printf(b, "  %-20s %12llu\n", kind_title[k], (unsigned long long)res->list[k].count);
        total += res->list[k].count;
    }
    buf_init(&rate);
    success_rate(res, &rate);
    buf_putc(&rate, '%');
    buf_printf(b, "  %-20s %12s\n", "success rate", rate.data);
    buf_free(&rate);
    for (int k = 0; k < PV_NKINDS; k++) {
        const struct pv_list *l = &res->list[k];

        if (l->count == 0)
            continue;
        if ((uint64_t)l->n < l->count)
            buf_printf(b, "%s (first %d of %llu):\n", kind_title[k], l->n,
                       (unsigned long long)l->count);
        else
            buf_printf(b, "%s (%llu):\n", kind_title[k], (unsigned long long)l->count);
        for (int i = 0; i < l->n; i++)
            buf_printf(b, "  %s\n", l->items[i].text);
    }
    if (total == 0)
        buf_puts(b, "result: match\n");
    else
        buf_printf(b, "result: %llu discrepanc%s\n", (unsigned long long)total,
                   total == 1 ? "y" : "ies");
}

static void
report_json(const struct pv_result *res, struct buf *b)
{
    buf_puts(b, "{\"table\":");
    buf_json_string(b, res->table, strlen(res->table));
    buf_printf(b, ",\"source_rows\":%llu,\"target_rows\":%llu",
               (unsigned long long)res->source_rows, (unsigned long long)res->target_rows);
    for (int k = 0; k < PV_NKINDS; k++)
        buf_printf(b, ",\"%s\":%llu", kind_json[k], (unsigned long long)res->list[k].count);
    buf_printf(b, ",\"matched\":%llu,\"success_rate\":", (unsigned long long)res->matched);
    success_rate(res, b);
    buf_printf(b, ",\"result\":\"%s\"", pv_result_differs(res) ? "differs" : "match");
    for (int k = 0; k < PV_NKINDS; k++) {
        buf_printf(b, ",\"%s\":[", kind_keys[k]);
        for (int i = 0; i < res->list[k].n; i++)
            buf_printf(b, "%s%s", i ? "," : "", res->list[k].items[i].json);
        buf_putc(b, ']');
    }
    buf_puts(b, "}\n");
}

int
pv_report(const struct pv_result *res)
{
    struct buf b;

    buf_init(&b);
    if (!opt.quiet && (opt.json == NULL || strcmp(opt.json, "-") != 0)) {
        report_text(res, &b);
        if (fwrite(b.data, 1, b.len, stdout) != b.len) {
            buf_free(&b);
            return err_sys(EXIT_IO, "could not write output");
        }
    }
    if (opt.json != NULL) {
        buf_reset(&b);
        report_json(res, &b);
        pv_json_write(b.data, b.len);
    }
    buf_free(&b);
    return 0;
}
