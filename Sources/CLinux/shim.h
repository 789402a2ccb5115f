#ifndef VDE_SUPERVISOR_CLINUX_SHIM_H
#define VDE_SUPERVISOR_CLINUX_SHIM_H
// No _GNU_SOURCE here: it would change glibc's declarations (fd_set, for one) against the ones
// Swift's Glibc module sees, and clang refuses two different definitions. What needs it
// (pipe2, F_SETPIPE_SZ) goes through syscall(2) and the kernel's constant instead.
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031  /* F_LINUX_SPECIFIC_BASE + 7 */
#endif

/// The file system type (statfs's f_type) of `path`, or -1 with errno set. Glibc's Swift
/// module does not export statfs.
static inline long long clinux_fs_type(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return (long long)info.f_type;
}

/// prctl is variadic, which Swift cannot call: one wrapper per use.
static inline int clinux_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

/// A close-on-exec pipe whose capacity is shrunk to `capacity` bytes (rounded up to a page by the
/// kernel; a failed shrink keeps the default and is not an error). Returns 0, or -1 with errno.
/// Small pipes matter to callers that size their read buffers by the pipe's capacity.
static inline int clinux_small_pipe(int fds[2], int capacity) {
    if (syscall(SYS_pipe2, fds, O_CLOEXEC) != 0) return -1;
    (void)fcntl(fds[0], F_SETPIPE_SZ, capacity);
    return 0;
}

/// Sets O_NONBLOCK on `fd`. Returns 0, or -1 with errno.
static inline int clinux_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// Makes the persistent tap `name` with the flags `ip tuntap add mode tap` uses (IFF_TAP |
/// IFF_NO_PI) and gives it the MAC address `mac` (6 bytes), in the calling thread's network
/// namespace. An existing tap of that name would be attached to, not refused: check first.
/// Returns 0, or an errno value with `*step` naming the call that failed; a tap made before a
/// failure is left for the caller to delete.
static inline int clinux_create_tap(const char *name, const unsigned char *mac, const char **step) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (strlen(name) >= IFNAMSIZ) { *step = "name"; return ENAMETOOLONG; }
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tun < 0) { *step = "open /dev/net/tun"; return errno; }
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(tun, TUNSETIFF, &request) < 0) { int e = errno; close(tun); *step = "TUNSETIFF"; return e; }
    if (ioctl(tun, TUNSETPERSIST, 1) < 0) { int e = errno; close(tun); *step = "TUNSETPERSIST"; return e; }
    close(tun);
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) { *step = "socket"; return errno; }
    request.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(request.ifr_hwaddr.sa_data, mac, 6);
    if (ioctl(sock, SIOCSIFHWADDR, &request) < 0) { int e = errno; close(sock); *step = "SIOCSIFHWADDR"; return e; }
    close(sock);
    return 0;
}

/// pidfd_open(2) (Linux 5.3); glibc's Swift module does not export it. Returns a close-on-exec
/// descriptor, or -1 with errno.
static inline int clinux_pidfd_open(int pid) {
    return (int)syscall(434 /* SYS_pidfd_open */, pid, 0);
}

/// pidfd_getfd(2) (Linux 5.6): a close-on-exec duplicate of descriptor `fd` of the process
/// behind `pidfd` (same open file). Needs ptrace access to it. Returns the new descriptor, or -1
/// with errno.
static inline int clinux_pidfd_getfd(int pidfd, int fd) {
    return (int)syscall(438 /* SYS_pidfd_getfd */, pidfd, fd, 0);
}

/// A close-on-exec epoll instance, or -1 with errno.
static inline int clinux_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

/// Arms `fd` in the epoll instance `epfd` for one report (EPOLLONESHOT) of input, an error or a
/// hang-up (EPOLLIN | EPOLLERR | EPOLLHUP), carrying `token`: with `add` it registers `fd`,
/// without it re-arms a registered `fd`. Returns 0, or -1 with errno.
static inline int clinux_epoll_arm_once(int epfd, int fd, unsigned long long token, int add) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLONESHOT;
    event.data.u64 = token;
    return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &event);
}

/// Removes `fd` from `epfd`. Returns 0, or -1 with errno.
static inline int clinux_epoll_forget(int epfd, int fd) {
    struct epoll_event unused;
    memset(&unused, 0, sizeof unused);
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &unused);
}

/// Waits up to `timeout_ms` (-1: no limit) for up to `max` (at most 16) reports of `epfd` and
/// stores their tokens. Returns how many, or -1 with errno (EINTR). epoll_event is packed on
/// x86-64, which Swift imports badly: hence this wrapper.
static inline int clinux_epoll_wait_tokens(int epfd, unsigned long long *tokens, int max, int timeout_ms) {
    struct epoll_event events[16];
    if (max > 16) max = 16;
    int n = epoll_wait(epfd, events, max, timeout_ms);
    for (int i = 0; i < n; i++) tokens[i] = events[i].data.u64;
    return n;
}
#endif
