/*
 * The change stream is read to its trailer before anything is written: a pipe
 * is first copied to a spool file, then every record is decoded and checked
 * once. The apply passes read the verified file again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "mem.h"
#include "pgapply.h"

/* Copy everything from fd into a new file path (mode 0600). */
static int
copy_to(int fd, const char *name, const char *path)
{
    char *buf = xmalloc(1 << 17);
    int out, rc = 0;
    ssize_t n;

    out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        free(buf);
        return err_sys(EXIT_IO, "could not create spool file \"%s\"", path);
    }
    while ((n = io_read_full(fd, buf, 1 << 17)) > 0) {
        if (io_write_full(out, buf, (size_t)n) != 0) {
            rc = err_sys(EXIT_IO, "could not write spool file \"%s\"", path);
            break;
        }
    }
    if (n < 0 && rc == 0)
        rc = err_sys(EXIT_IO, "could not read %s", name);
    if (close(out) != 0 && rc == 0)
        rc = err_sys(EXIT_IO, "could not write spool file \"%s\"", path);
    free(buf);
    return rc;
}

/* A file name made of the table name: no slash, no leading dot. */
static void
safe_name(struct buf *b, const char *table)
{
    for (const char *p = table; *p; p++)
        buf_putc(b, (*p == '/' || (p == table && *p == '.')) ? '_' : *p);
}

static int
check_header(struct spool *s, const char *name)
{
    const struct rs_header *h = &s->hdr;

    if (h->kind != RS_KIND_CHANGES)
        return err_msg(EXIT_DATA, "%s: not a change stream (kind '%c')", name, h->kind);
    s->op_col = -1;
    s->key_cols = xcalloc((size_t)h->ncols, sizeof(int));
    s->data_cols = xcalloc((size_t)h->ncols, sizeof(int));
    for (int i = 0; i < h->ncols; i++) {
        const struct rs_column *c = &h->cols[i];

        if (c->role == RS_ROLE_OP) {
            if (s->op_col >= 0)
                return err_msg(EXIT_DATA, "%s: more than one operation column", name);
            s->op_col = i;
        } else if (c->role == RS_ROLE_KEY) {
            s->key_cols[s->nkeys++] = i;
        } else if (c->role == RS_ROLE_DATA && strcmp(c->name, "_reason") != 0) {
            /* _reason: the column a reject stream adds; it never goes to the target */
            s->data_cols[s->ndata++] = i;
        }
    }
    if (s->op_col < 0)
        return err_msg(EXIT_DATA, "%s: the change stream has no operation column", name);
    if (s->nkeys == 0)
        return err_msg(EXIT_DATA, "%s: the change stream has no key column", name);
    return 0;
}

/* Decode every record: ops, keys, the trailer and its checksum. */
static int
verify(struct spool *s, const char *name)
{
    struct spool_iter it;
    const struct rs_value *v;
    uint64_t ord;
    char key[256];
    int rc;

    if ((rc = spool_iter_open(&it, s)) != 0)
        return rc;
    for (;;) {
        if ((rc = spool_iter_next(&it, &v, &ord)) != 0 || v == NULL)
            break;
        const struct rs_value *op = &v[s->op_col];

        if (op->data == NULL || op->len != 1 ||
            (op->data[0] != 'I' && op->data[0] != 'U' && op->data[0] != 'D')) {
            rs_key_format(&s->hdr, v, key, sizeof(key));
            rc = err_msg(EXIT_DATA, "%s: record %llu, key %s: invalid operation", name,
                         (unsigned long long)ord + 1, key);
            break;
        }
        for (int k = 0; k < s->nkeys; k++) {
            if (v[s->key_cols[k]].data == NULL) {
                rc = err_msg(EXIT_DATA, "%s: record %llu: key column %s is NULL", name,
                             (unsigned long long)ord + 1, s->hdr.cols[s->key_cols[k]].name);
                break;
            }
        }
        if (rc != 0)
            break;
        if (op->data[0] == 'I')
            s->n_insert++;
        else if (op->data[0] == 'U')
            s->n_update++;
        else
            s->n_delete++;
    }
    if (rc == 0) {
        s->nrecords = rs_reader_count(it.r);
        snprintf(s->checksum, sizeof(s->checksum), "%s", rs_reader_checksum(it.r));
    }
    spool_iter_close(&it);
    return rc;
}

int
spool_load(struct spool *s, const struct options *o)
{
    const char *name = (o->input == NULL || strcmp(o->input, "-") == 0) ? "stdin" : o->input;
    struct buf b;
    struct stat st;
    int fd = -1, rc = 0;

    memset(s, 0, sizeof(*s));
    s->display = xstrdup(name);
    buf_init(&b);
    fd = io_open_input(o->input);
    if (fd < 0)
        return EXIT_IO;
    if (fstat(fd, &st) != 0) {
        rc = err_sys(EXIT_IO, "could not stat %s", name);
        goto done;
    }
    if (S_ISREG(st.st_mode) && fd != STDIN_FILENO) {
        /* A file at rest is read in place: it is already what a spool would be. */
        s->path = xstrdup(o->input);
    } else {
        if (o->spool_dir != NULL) {
            /* a group spools several streams: the counter tells them apart */
            static unsigned spooled;

            buf_printf(&b, "%s/pgapply.%ld.%u.changes.tmp", o->spool_dir, (long)getpid(),
                       spooled++);
        } else {
            const char *tmp = getenv("TMPDIR");

            buf_printf(&b, "%s/pgapply.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
            if (mkdtemp(b.data) == NULL) {
                rc = err_sys(EXIT_IO, "could not create a spool directory in \"%s\"",
                             tmp != NULL && *tmp ? tmp : "/tmp");
                goto done;
            }
            s->tmpdir = xstrdup(b.data);
            buf_puts(&b, "/changes");
        }
        s->path = xstrdup(b.data);
        s->tmpfile = xstrdup(b.data);
        if ((rc = copy_to(fd, name, s->path)) != 0)
            goto done;
    }
    if (fd != STDIN_FILENO)
        close(fd);
    fd = -1;
    {
        /* Read the header once for the checks; spool_iter_open reads it again. */
        struct rs_reader *r = NULL;
        int hfd = open(s->path, O_RDONLY | O_CLOEXEC);

        if (hfd < 0) {
            rc = err_sys(EXIT_IO, "could not open \"%s\"", s->path);
            goto done;
        }
        rc = rs_reader_open(&r, hfd, name);
        if (rc == 0)
            rs_header_copy(&s->hdr, rs_reader_header(r));
        rs_reader_free(r);
        close(hfd);
        if (rc != 0)
            goto done;
    }
    if (o->table != NULL) {
        free(s->hdr.table);
        s->hdr.table = xstrdup(o->table);
    }
    if (s->hdr.table == NULL || s->hdr.table[0] == '\0') {
        rc = err_msg(EXIT_DATA, "%s: the stream names no table; give --table", name);
        goto done;
    }
    if ((rc = check_header(s, name)) != 0)
        goto done;
    if ((rc = verify(s, name)) != 0)
        goto done;
    {
        struct stat vs;

        if (stat(s->path, &vs) != 0) {
            rc = err_sys(EXIT_IO, "could not stat \"%s\"", s->path);
            goto done;
        }
        s->have_id = 1;
        s->dev = (unsigned long long)vs.st_dev;
        s->ino = (unsigned long long)vs.st_ino;
        s->size = (unsigned long long)vs.st_size;
        s->mtime_sec = (long long)vs.st_mtim.tv_sec;
        s->mtime_nsec = (long long)vs.st_mtim.tv_nsec;
    }
    if (o->spool_dir != NULL && s->tmpfile != NULL) {
        /* Kept for a resumed run; named by table and checksum. */
        buf_reset(&b);
        buf_printf(&b, "%s/", o->spool_dir);
        safe_name(&b, s->hdr.table);
        buf_printf(&b, ".%s.changes", s->checksum);
        if (rename(s->tmpfile, b.data) != 0) {
            rc = err_sys(EXIT_IO, "could not rename \"%s\" to \"%s\"", s->tmpfile, b.data);
            goto done;
        }
        free(s->path);
        free(s->tmpfile);
        s->path = xstrdup(b.data);
        s->tmpfile = NULL;
    }
done:
    if (fd >= 0 && fd != STDIN_FILENO)
        close(fd);
    buf_free(&b);
    return rc;
}

void
spool_free(struct spool *s)
{
    if (s->tmpfile != NULL)
        unlink(s->tmpfile);
    if (s->tmpdir != NULL)
        rmdir(s->tmpdir);
    free(s->tmpfile);
    free(s->tmpdir);
    free(s->path);
    free(s->display);
    free(s->key_cols);
    free(s->data_cols);
    if (s->hdr.cols != NULL || s->hdr.table != NULL)
        rs_header_free(&s->hdr);
    memset(s, 0, sizeof(*s));
}

int
spool_iter_open(struct spool_iter *it, const struct spool *s)
{
    struct stat st;
    int rc;

    it->r = NULL;
    it->next_ord = 0;
    it->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (it->fd < 0)
        return err_sys(EXIT_IO, "could not open \"%s\"", s->path);
    if (fstat(it->fd, &st) != 0) {
        rc = err_sys(EXIT_IO, "could not stat \"%s\"", s->path);
        close(it->fd);
        it->fd = -1;
        return rc;
    }
    if (s->have_id &&
        ((unsigned long long)st.st_dev != s->dev || (unsigned long long)st.st_ino != s->ino ||
         (unsigned long long)st.st_size != s->size ||
         (long long)st.st_mtim.tv_sec != s->mtime_sec ||
         (long long)st.st_mtim.tv_nsec != s->mtime_nsec)) {
        close(it->fd);
        it->fd = -1;
        return err_msg(EXIT_DATA, "%s: the file changed after it was verified", s->display);
    }
    rc = rs_reader_open(&it->r, it->fd, s->display);
    if (rc != 0) {
        close(it->fd);
        it->fd = -1;
    }
    return rc;
}

int
spool_iter_next(struct spool_iter *it, const struct rs_value **vals, uint64_t *ord)
{
    int rc = rs_reader_next(it->r, vals);

    if (rc == 0 && *vals != NULL)
        *ord = it->next_ord++;
    return rc;
}

void
spool_iter_close(struct spool_iter *it)
{
    rs_reader_free(it->r);
    it->r = NULL;
    if (it->fd >= 0)
        close(it->fd);
    it->fd = -1;
}
