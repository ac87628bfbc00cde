/*
 * Low-level I/O helpers.
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"

volatile sig_atomic_t io_interrupted = 0;

static void
on_signal(int sig)
{
    int saved = errno;

    io_interrupted = sig;
    errno = saved;
}

void
io_signals_init(void)
{
    struct sigaction sa;

    signal(SIGPIPE, SIG_DFL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int
io_write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t k = write(fd, p, n);

        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

ssize_t
io_read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    size_t got = 0;

    while (got < n) {
        ssize_t k = read(fd, p + got, n - got);

        if (k < 0) {
            /* A signal that asked us to stop must not wait for more input. */
            if (errno == EINTR && !io_interrupted)
                continue;
            return -1;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

void
io_close_stdout(void)
{
    int failed = ferror(stdout);

    if (fclose(stdout) != 0 || failed) {
        if (errno == 0)
            errno = EIO;
        err_sys(EXIT_IO, "could not write output");
        _exit(EXIT_IO);
    }
}

int
io_open_input(const char *path)
{
    int fd;

    if (path == NULL || strcmp(path, "-") == 0)
        return STDIN_FILENO;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        err_sys(EXIT_IO, "could not open \"%s\"", path);
    return fd;
}

int
io_open_output(const char *path)
{
    int fd;

    if (path == NULL || strcmp(path, "-") == 0)
        return STDOUT_FILENO;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        err_sys(EXIT_IO, "could not create \"%s\"", path);
    return fd;
}

int
io_atomic_open(struct io_atomic *a, const char *path)
{
    struct buf b;

    buf_init(&b);
    buf_printf(&b, "%s.tmp.%ld", path, (long)getpid());
    a->path = xstrdup(path);
    a->tmp = b.data;
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (a->fd < 0) {
        err_sys(EXIT_IO, "could not create \"%s\"", a->tmp);
        io_atomic_abort(a);
        return EXIT_IO;
    }
    return 0;
}

int
io_atomic_commit(struct io_atomic *a)
{
    int rc = 0;

    if (fsync(a->fd) != 0)
        rc = err_sys(EXIT_IO, "could not sync \"%s\"", a->tmp);
    if (close(a->fd) != 0 && rc == 0)
        rc = err_sys(EXIT_IO, "could not close \"%s\"", a->tmp);
    a->fd = -1;
    if (rc == 0 && rename(a->tmp, a->path) != 0)
        rc = err_sys(EXIT_IO, "could not rename \"%s\" to \"%s\"", a->tmp, a->path);
    if (rc == 0) {
        free(a->tmp);
        a->tmp = NULL;
    }
    io_atomic_abort(a);
    return rc;
}

void
io_atomic_abort(struct io_atomic *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    if (a->tmp != NULL)
        unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->tmp = NULL;
    a->path = NULL;
}
