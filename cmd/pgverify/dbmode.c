/*
 * Database mode: a table both sides share unchanged is dumped from each side
 * exactly as pgdump-rows dumps it (common/dump.c: REPEATABLE READ, READ ONLY,
 * the key emitted and ordered alike), each by a thread into a socket pair,
 * and the two streams are compared as in stream mode. Memory stays at one
 * record per side.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db.h"
#include "dump.h"
#include "err.h"
#include "io.h"
#include "pgverify.h"

struct dumper {
    const char *what; /* "source", "target" */
    const char *env;
    struct db *db;
    struct dump_opts o;
    struct dump_plan plan;
    int fds[2]; /* [0] read by the comparison, [1] written by the thread */
    pthread_t thread;
    int started;
    int rc;
    atomic_int finished; /* set before the thread closes its end */
    char name[600];
};

static void *
dump_thread(void *arg)
{
    struct dumper *d = arg;
    int rc;

    rc = dump_copy_rows(d->db, &d->o, &d->plan, d->fds[1], d->name);
    if (rc == 0)
        rc = db_exec(d->db, "COMMIT");
    d->rc = dump_refused_by_policy(d->db, rc);
    atomic_store(&d->finished, 1);
    /* EOF for the reader: after a trailer, or to show it the stream ended short. */
    close(d->fds[1]);
    d->fds[1] = -1;
    return NULL;
}

static int
open_side(struct dumper *d, int i, const char *table, int skip_null_keys)
{
    int rc;

    d->fds[0] = d->fds[1] = -1;
    d->o.table = table;
    d->o.keys = opt.keys;
    d->o.nkeys = opt.nkeys;
    d->o.columns = opt.columns;
    d->o.ncolumns = opt.ncolumns;
    d->o.snapshot = i == 0 ? opt.snap_source : opt.snap_target;
    d->o.side = d->what;
    d->o.skip_null_keys = skip_null_keys;
    d->o.allow_row_security = opt.allow_row_security;
    d->o.level = RS_LEVEL_PIPE;
    d->o.max_row = opt.max_row;
    if ((rc = db_connect(&d->db, d->env, d->what, DB_SESSION_READ, 0)) != 0)
        return rc;
    db_cancel_on_signal(d->db);
    if ((rc = dump_begin(d->db, &d->o)) != 0 || (rc = dump_plan_build(d->db, &d->o, &d->plan)) != 0)
        return dump_refused_by_policy(d->db, rc);
    rs_header_set_meta(&d->plan.h, "source", db_describe(d->db));
    snprintf(d->name, sizeof(d->name), "%s %s", d->what, d->plan.h.table);
    return 0;
}

/*
 * Start the dump thread. SIGINT and SIGTERM stay with the main thread, and
 * SIGPIPE is blocked so that a comparison that stops early gives the thread
 * EPIPE instead of killing the process.
 */
static int
start_side(struct dumper *d)
{
    sigset_t block, old;
    int e;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, d->fds) != 0)
        return err_sys(EXIT_IO, "%s: could not create a socket pair", d->name);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    e = pthread_create(&d->thread, NULL, dump_thread, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        errno = e;
        return err_sys(EXIT_INTERNAL, "%s: could not start a thread", d->name);
    }
    d->started = 1;
    return 0;
}

/* Stop a side: cancel its COPY, close our end, wait for the thread. Returns its code. */
static int
stop_side(struct dumper *d, int cancel)
{
    if (d->started) {
        if (cancel)
            db_cancel(d->db);
        if (d->fds[0] >= 0) {
            close(d->fds[0]);
            d->fds[0] = -1;
        }
        pthread_join(d->thread, NULL);
        d->started = 0;
    }
    return d->rc;
}

/*
 * Wait until the side's stream has its first byte, or ended without one: a
 * dump refused before it wrote anything (a permission, a policy) is reported
 * by the thread alone, not again as an empty stream.
 */
static int
wait_first_byte(struct dumper *d)
{
    char c;
    ssize_t n;

    do
        n = recv(d->fds[0], &c, 1, MSG_PEEK);
    while (n < 0 && errno == EINTR && !io_interrupted);
    if (n > 0)
        return 0;
    if (n < 0)
        return err_sys(EXIT_IO, "%s: could not read", d->name);
    return stop_side(d, 0) != 0 ? d->rc : err_msg(EXIT_INTERNAL, "%s: no stream", d->name);
}

int
pv_database(void)
{
    struct dumper side[2];
    struct pv_input in[2];
    struct pv_result res;
    struct pv_layout l;
    int rc, trc;

    memset(side, 0, sizeof(side));
    memset(in, 0, sizeof(in));
    memset(&res, 0, sizeof(res));
    side[0].what = "source";
    side[0].env = opt.source_env;
    side[1].what = "target";
    side[1].env = opt.target_env;
    side[0].fds[0] = side[0].fds[1] = side[1].fds[0] = side[1].fds[1] = -1;

    /* Connections, catalogs and layouts first: no stream flows before all are right. */
    if ((rc = open_side(&side[0], 0, opt.source_table, 0)) != 0)
        goto done;
    /* Target rows whose key is NULL were born in the target: not compared. */
    if ((rc = open_side(&side[1], 1, opt.target_table != NULL ? opt.target_table : opt.source_table,
                        1)) != 0)
        goto done;
    rc = pv_layout_build(&side[0].plan.h, &side[1].plan.h, &l);
    pv_layout_free(&l);
    if (rc != 0)
        goto done;
    res.table = xstrdup(opt.table != NULL ? opt.table : side[1].plan.h.table);

    for (int i = 0; i < 2; i++)
        if ((rc = start_side(&side[i])) != 0)
            goto done;
    for (int i = 0; i < 2; i++) {
        in[i].what = side[i].what;
        in[i].name = side[i].name;
        in[i].fd = side[i].fds[0];
        if ((rc = wait_first_byte(&side[i])) != 0)
            goto done;
        if ((rc = rs_reader_open(&in[i].r, side[i].fds[0], side[i].name)) != 0)
            goto done;
        rs_reader_set_max_row(in[i].r, opt.max_row);
    }
    rc = pv_compare(&in[0], &in[1], NULL, &res);
done:
    /*
     * A thread that had already failed is the cause, and the comparison's
     * truncated stream its echo; a thread stopped because we stopped is the echo.
     */
    for (int i = 0; i < 2; i++)
        if (side[i].started && atomic_load(&side[i].finished) && side[i].rc != 0)
            rc = side[i].rc;
    for (int i = 0; i < 2; i++) {
        trc = stop_side(&side[i], rc != 0);
        if (rc == 0)
            rc = trc;
    }
    if (rc == 0 && !io_interrupted) {
        if ((rc = pv_report(&res)) == 0)
            rc = pv_result_differs(&res) ? EXIT_DIFF : EXIT_OK;
    }
    for (int i = 0; i < 2; i++) {
        if (in[i].r != NULL)
            rs_reader_free(in[i].r);
        db_cancel_forget(side[i].db);
        if (side[i].fds[1] >= 0)
            close(side[i].fds[1]);
        dump_plan_free(&side[i].plan);
        db_close(side[i].db);
    }
    pv_result_free(&res);
    return rc;
}
