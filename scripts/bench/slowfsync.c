/* An SD card that stalls on cache flushes, for the benchmark and the tests (LD_PRELOAD).

   Every fsync and fdatasync of the process first waits SLOW_FSYNC_MS milliseconds (default
   500). With FSYNC_GATE=<path> set, it also waits while that file does not exist, and marks
   the wait by creating <path>.held (removed when the wait ends): a test can hold the disk
   "stuck" for as long as it wants and see that a flush is stuck right now.

   With POWERCUT_DIR=<dir> set, each flush also keeps a copy of the file as it was when the
   flush was asked for, <dir>/<file name>.durable, renamed into place once the flush returned:
   what a power cut would leave of the file. A test simulates the cut by killing the process
   and putting those copies in place of the files. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {}
}

static void stall(void) {
    const char *gate = getenv("FSYNC_GATE");
    if (gate != NULL && access(gate, F_OK) != 0) {
        char held[4096];
        snprintf(held, sizeof held, "%s.held", gate);
        int fd = open(held, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
        while (access(gate, F_OK) != 0) pause_ms(1);
        unlink(held);
    }
    const char *s = getenv("SLOW_FSYNC_MS");
    pause_ms(s != NULL ? atol(s) : 500);
}

/* Copy the file behind fd to <POWERCUT_DIR>/<name>.tmp.<tid>; returns 1 if a copy was made. */
static int snapshot(int fd, char *tmp, size_t tmp_len, char *dest, size_t dest_len) {
    const char *dir = getenv("POWERCUT_DIR");
    if (dir == NULL) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    snprintf(dest, dest_len, "%s/%s.durable", dir, name);
    snprintf(tmp, tmp_len, "%s/%s.tmp.%ld", dir, name, (long)syscall(SYS_gettid));
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) return 0;
    int out = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (out < 0) { close(in); return 0; }
    char buf[65536];
    ssize_t got;
    while ((got = read(in, buf, sizeof buf)) > 0) {
        if (write(out, buf, (size_t)got) != got) break;
    }
    close(in);
    close(out);
    return 1;
}

static int flush(int fd, int (*real)(int)) {
    char tmp[4200], dest[4200];
    int copied = snapshot(fd, tmp, sizeof tmp, dest, sizeof dest);
    stall();
    int rc = real(fd);
    if (copied) {
        if (rc == 0) rename(tmp, dest);
        else unlink(tmp);
    }
    return rc;
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return flush(fd, real);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return flush(fd, real);
}
