/*
 * Low-level I/O: full reads and writes that survive EINTR and short counts,
 * the close of stdout that turns a full disk into exit 3, signal setup, and
 * files written through a temp name and a rename.
 */
#ifndef DRIFTLESS_IO_H
#define DRIFTLESS_IO_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

/* Set by SIGINT/SIGTERM handlers; long loops check it and take the error path. */
extern volatile sig_atomic_t io_interrupted;

/* SIGPIPE back to default (a parent may have ignored it); SIGINT/TERM set io_interrupted. */
void io_signals_init(void);

/* Write all n bytes; returns 0, or -1 with errno set. */
int io_write_full(int fd, const void *buf, size_t n);
/* Read up to n bytes, fewer only at EOF; returns the count, or -1 with errno set. */
ssize_t io_read_full(int fd, void *buf, size_t n);

/* atexit handler: flush and close stdout; on failure print and _exit(3). */
void io_close_stdout(void);

/* Open path for reading ("-" or NULL is stdin). Returns the fd, or -1 after printing. */
int io_open_input(const char *path);
/* Open path for writing, mode 0600 ("-" or NULL is stdout). Returns the fd, or -1. */
int io_open_output(const char *path);

/* A file written under "<path>.tmp.<pid>" and renamed into place on commit. */
struct io_atomic {
    int fd;
    char *path;
    char *tmp;
};
/* Returns 0 or EXIT_IO after printing. */
int io_atomic_open(struct io_atomic *a, const char *path);
/* fsync, close and rename; returns 0 or EXIT_IO after printing. */
int io_atomic_commit(struct io_atomic *a);
/* Close and remove the temp file (safe to call after commit or on an unopened one). */
void io_atomic_abort(struct io_atomic *a);

#endif
