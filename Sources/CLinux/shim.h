#ifndef VDE_SUPERVISOR_CLINUX_SHIM_H
#define VDE_SUPERVISOR_CLINUX_SHIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

/// prctl is variadic, which Swift cannot call: one wrapper per use.
static inline int clinux_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

/// A close-on-exec pipe whose capacity is shrunk to `capacity` bytes (rounded up to a page by the
/// kernel; a failed shrink keeps the default and is not an error). Returns 0, or -1 with errno.
/// Small pipes matter to callers that size their read buffers by the pipe's capacity.
static inline int clinux_small_pipe(int fds[2], int capacity) {
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    (void)fcntl(fds[0], F_SETPIPE_SZ, capacity);
    return 0;
}

/// Sets O_NONBLOCK on `fd`. Returns 0, or -1 with errno.
static inline int clinux_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}
#endif
