/* A slow or failing disk for one process, by LD_PRELOAD (tests/faults/disk.py builds and drives it).

   Every write-like call (write, pwrite, pwrite64, writev, fsync, fdatasync) on a file whose path contains
   SLOWDISK_MATCH first reads the control file SLOWDISK_CTL ("<delay ms> <errno>"): it sleeps that long, the
   way a slow device holds the calling thread in the kernel, then fails with that errno if it is not 0, else
   does the call. Reads are left alone. The control file can be rewritten while the process runs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int matches(int fd) {
    const char *match = getenv("SLOWDISK_MATCH");
    if (!match || !*match) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strstr(path, match) != NULL;
}

/* 0 to go on with the call, else the errno to fail it with (after the delay either way) */
static int fault(int fd) {
    if (!matches(fd)) return 0;
    const char *ctl = getenv("SLOWDISK_CTL");
    if (!ctl) return 0;
    static ssize_t (*real_pread)(int, void *, size_t, off_t);
    if (!real_pread) real_pread = dlsym(RTLD_NEXT, "pread");
    int c = open(ctl, O_RDONLY | O_CLOEXEC);
    if (c < 0) return 0;
    char buf[64] = {0};
    ssize_t n = real_pread(c, buf, sizeof buf - 1, 0);
    close(c);
    if (n <= 0) return 0;
    long delay_ms = 0, err = 0;
    sscanf(buf, "%ld %ld", &delay_ms, &err);
    if (delay_ms > 0) {
        struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    }
    return (int)err;
}

#define REAL(name, ret, ...) static ret (*real)(__VA_ARGS__); if (!real) real = dlsym(RTLD_NEXT, name)

ssize_t write(int fd, const void *b, size_t n) {
    REAL("write", ssize_t, int, const void *, size_t);
    int e = fault(fd);
    if (e) { errno = e; return -1; }
    return real(fd, b, n);
}

ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
    REAL("pwrite", ssize_t, int, const void *, size_t, off_t);
    int e = fault(fd);
    if (e) { errno = e; return -1; }
    return real(fd, b, n, o);
}

ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
    REAL("pwrite64", ssize_t, int, const void *, size_t, off_t);
    int e = fault(fd);
    if (e) { errno = e; return -1; }
    return real(fd, b, n, o);
}

ssize_t writev(int fd, const struct iovec *v, int n) {
    REAL("writev", ssize_t, int, const struct iovec *, int);
    int e = fault(fd);
    if (e) { errno = e; return -1; }
    return real(fd, v, n);
}

int fsync(int fd) {
    REAL("fsync", int, int);
    int e = fault(fd);
    if (e) { errno = e; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    REAL("fdatasync", int, int);
    int e = fault(fd);
    if (e) { errno = e; return -1; }
    return real(fd);
}
