/* An SD card that stalls on cache flushes, for the benchmark and the tests (LD_PRELOAD).

   Every fsync and fdatasync of the process first waits SLOW_FSYNC_MS milliseconds (default
   500). With FSYNC_GATE=<path> set, it also waits while that file does not exist, and marks
   the wait by creating <path>.held (removed when the wait ends): a test can hold the disk
   "stuck" for as long as it wants and see that a flush is stuck right now. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
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

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    stall();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    stall();
    return real(fd);
}
