#ifndef VDE_SUPERVISOR_CLINUX_SHIM_H
#define VDE_SUPERVISOR_CLINUX_SHIM_H
// No _GNU_SOURCE here: it would change glibc's declarations (fd_set, for one) against the ones
// Swift's Glibc module sees, and clang refuses two different definitions. What needs it
// (pipe2, F_SETPIPE_SZ) goes through syscall(2) and the kernel's constant instead.
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <malloc.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

/// Gives the heap's free pages back to the kernel (malloc_trim(0): the top of the heap and the
/// free pages inside it). Returns 1 when memory was released.
static inline int clinux_release_free_heap(void) {
    return malloc_trim(0);
}

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

/// 1 when this process is a child subreaper, 0 when not, -1 with errno.
static inline int clinux_is_child_subreaper(void) {
    int flag = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, (unsigned long)&flag, 0, 0, 0) != 0) return -1;
    return flag != 0;
}

/// A zombie child of this process, left unreaped (`waitid` with `WNOWAIT`): with `pid` > 0
/// that child if it is a zombie, with `pid` 0 any zombie child. Returns its pid, 0 when there is
/// none (or the child still runs), or -1 with errno (ECHILD: no such child).
static inline pid_t clinux_peek_zombie_child(pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(pid > 0 ? P_PID : P_ALL, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -1;
    return info.si_pid;
}

/// Names the calling thread (at most 15 bytes are kept), as `top -H` and
/// `/proc/PID/task/TID/comm` show it. Returns 0, or -1 with errno.
static inline int clinux_name_thread(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

/// A close-on-exec pipe whose capacity is shrunk to `capacity` bytes (rounded up to a page by the
/// kernel; a failed shrink keeps the default and is not an error). Returns 0, or -1 with errno.
/// Small pipes matter to callers that size their read buffers by the pipe's capacity.
static inline int clinux_small_pipe(int fds[2], int capacity) {
    if (syscall(SYS_pipe2, fds, O_CLOEXEC) != 0) return -1;
    (void)fcntl(fds[0], F_SETPIPE_SZ, capacity);
    return 0;
}

/// The write end of the pipe that `clinux_signal_to_pipe` writes each caught signal's number to
/// (non-blocking: a full pipe drops the byte, and a signal already pending there is enough).
static int clinux_signal_pipe_write = -1;

/// A signal handler that does only what is async-signal-safe: one write(2) of the signal's number.
static inline void clinux_signal_to_pipe(int sig) {
    int saved = errno;
    unsigned char number = (unsigned char)sig;
    (void)!write(clinux_signal_pipe_write, &number, 1);
    errno = saved;
}

/// Catches `signals` with `clinux_signal_to_pipe`, writing to `write_fd` (SA_RESTART: calls that
/// can be restarted are). Children do not inherit the handler (exec resets it). Returns 0, or -1
/// with errno.
static inline int clinux_catch_signals_into_pipe(int write_fd, const int *signals, int count) {
    clinux_signal_pipe_write = write_fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = clinux_signal_to_pipe;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < count; i++) {
        if (sigaction(signals[i], &action, NULL) != 0) return -1;
    }
    return 0;
}

/// Sets O_NONBLOCK on `fd`. Returns 0, or -1 with errno.
static inline int clinux_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// Makes the persistent tap `name` with the flags `ip tuntap add mode tap` uses (IFF_TAP |
/// IFF_NO_PI), gives it the MAC address `mac` (6 bytes) and, when `mtu` > 0, that MTU, in the
/// calling thread's network namespace. An existing tap of that name would be attached to, not refused: check first.
/// Returns 0, or an errno value with `*step` naming the call that failed; a tap made before a
/// failure is left for the caller to delete.
static inline int clinux_create_tap(const char *name, const unsigned char *mac, int mtu, const char **step) {
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
    if (mtu > 0) {
        request.ifr_mtu = mtu;
        if (ioctl(sock, SIOCSIFMTU, &request) < 0) { int e = errno; close(sock); *step = "SIOCSIFMTU"; return e; }
    }
    close(sock);
    return 0;
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/// A pidfd for `pid` (close-on-exec by definition), or -1 with errno. Glibc's Swift module does
/// not export pidfd_open; a pidfd works for any process we may signal, not only our children.
static inline int clinux_pidfd_open(int pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/// A close-on-exec copy of the descriptor `targetfd` of the process behind `pidfd`, or -1 with
/// errno (EPERM without ptrace rights over it).
static inline int clinux_pidfd_getfd(int pidfd, int targetfd) {
    return (int)syscall(SYS_pidfd_getfd, pidfd, targetfd, 0);
}

/// Sends `sig` to the process behind `pidfd` (never to a later process that reuses its pid).
/// Returns 0, or -1 with errno (ESRCH once it has exited).
static inline int clinux_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, (void *)0, 0);
}

/// epoll_event is packed on x86_64, which Swift does not import reliably: one wrapper per use.
/// Arms `fd` in `epfd` for `events`, with `token` as its user data: adds it, or modifies the
/// registration it has (a one-shot registration stays, disarmed, until the file is closed).
/// Returns 0, or -1 with errno.
static inline int clinux_epoll_arm(int epfd, int fd, unsigned int events, unsigned long long token) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = events;
    event.data.u64 = token;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0) return 0;
    if (errno != EEXIST) return -1;
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event);
}

/// Waits up to `timeout_ns` nanoseconds (negative: for ever) for one event of `epfd` and stores
/// its token: epoll_pwait2 (Linux 5.11), whose timeout is a timespec, so that a timer due in
/// 0.3 ms is not rounded up to a millisecond. Where it is refused (an older kernel: ENOSYS; a
/// seccomp profile that does not know it: EPERM), epoll_wait from then on, its timeout rounded
/// up to whole milliseconds. Returns 1, 0 on timeout, or -1 with errno.
static inline int clinux_epoll_wait_one_ns(int epfd, unsigned long long *token, long long timeout_ns) {
    static int pwait2_refused = 0;
    struct epoll_event event;
    int n;
    if (!__atomic_load_n(&pwait2_refused, __ATOMIC_RELAXED)) {
        struct timespec timeout;
        struct timespec *limit = NULL;
        if (timeout_ns >= 0) {
            timeout.tv_sec = (time_t)(timeout_ns / 1000000000LL);
            timeout.tv_nsec = (long)(timeout_ns % 1000000000LL);
            limit = &timeout;
        }
        n = (int)syscall(SYS_epoll_pwait2, epfd, &event, 1, limit, NULL, 0);
        if (n >= 0 || (errno != ENOSYS && errno != EPERM)) {
            if (n == 1) *token = event.data.u64;
            return n;
        }
        __atomic_store_n(&pwait2_refused, 1, __ATOMIC_RELAXED);
    }
    int milliseconds = -1;
    if (timeout_ns >= 0) {
        long long rounded = (timeout_ns + 999999LL) / 1000000LL;
        milliseconds = rounded > 2147483647LL ? 2147483647 : (int)rounded;
    }
    n = epoll_wait(epfd, &event, 1, milliseconds);
    if (n == 1) *token = event.data.u64;
    return n;
}

/// Waits up to `timeout_ms` (-1: for ever) for at most `max` (at most 64) events of `epfd` and
/// stores their tokens in `tokens`. Returns how many, 0 on timeout, or -1 with errno.
static inline int clinux_epoll_wait_tokens(int epfd, unsigned long long *tokens, int max, int timeout_ms) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, events, max, timeout_ms);
    for (int i = 0; i < n; i++) tokens[i] = events[i].data.u64;
    return n;
}

/// Starts `path` (no PATH search) with `argv` and `envp` (both NULL-terminated) in a process group
/// of its own, with no signal blocked, every signal at its default action, and only descriptors
/// 0, 1 and 2 open: `in_fd`, `out_fd`, `err_fd` (-1: /dev/null). Returns 0 with `*pid` set, or an
/// errno value (ENOENT: no such program).
static inline int clinux_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                               int in_fd, int out_fd, int err_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) return result;
    result = posix_spawnattr_init(&attributes);
    if (result != 0) { posix_spawn_file_actions_destroy(&actions); return result; }
    int fds[3] = { in_fd, out_fd, err_fd };
    for (int target = 0; target < 3 && result == 0; target++) {
        if (fds[target] < 0) {
            result = posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_RDWR, 0);
        } else {
            /* Also for fds[target] == target: glibc then clears close-on-exec. */
            result = posix_spawn_file_actions_adddup2(&actions, fds[target], target);
        }
    }
    if (result == 0) result = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (result == 0) result = posix_spawnattr_setsigmask(&attributes, &none);
    if (result == 0) result = posix_spawnattr_setsigdefault(&attributes, &all);
    if (result == 0) result = posix_spawnattr_setpgroup(&attributes, 0);
    if (result == 0) result = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (result == 0) result = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return result;
}

/// Reaps the exited child behind `pidfd` without blocking (waitid P_PIDFD). Returns 1 with
/// `*code` (exit status or signal) and `*signaled`, 0 when it has not exited, -1 with errno.
static inline int clinux_reap_pidfd(int pidfd, int *code, int *signaled) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid((idtype_t)3 /* P_PIDFD */, (id_t)pidfd, &info, WEXITED | WNOHANG) != 0) return -1;
    if (info.si_pid == 0) return 0;
    *signaled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
    *code = info.si_status;
    return 1;
}
// --- The worker fork server (vde-networker --fork-server, the supervisor's WorkerForkServer). ---
// Since this header uses msghdr and cmsghdr, a whole-module (release) build of Shared finds
// glibc's socket constants (SOCK_STREAM, ...) only in files that import CLinux too (measured:
// "cannot find 'SOCK_STREAM' in scope" in UnixSocket.swift until it did).
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/// A connected pair of close-on-exec SOCK_SEQPACKET unix sockets. Returns 0, or -1 with errno.
static inline int clinux_seqpacket_pair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
}

/// Sends `length` bytes and `count` (at most 4) descriptors in one message on the SOCK_SEQPACKET
/// socket `sock`. Returns the bytes sent, or -1 with errno.
static inline long clinux_send_with_fds(int sock, const void *bytes, size_t length, const int *fds, int count) {
    union { struct cmsghdr header; char space[CMSG_SPACE(4 * sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    struct iovec vector = { (void *)bytes, length };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    if (count > 4) count = 4;
    if (count > 0) {
        message.msg_control = control.space;
        message.msg_controllen = CMSG_SPACE(count * sizeof(int));
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(count * sizeof(int));
        memcpy(CMSG_DATA(header), fds, count * sizeof(int));
    }
    long sent;
    do { sent = sendmsg(sock, &message, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    return sent;
}

/// Receives one message of at most `capacity` bytes and at most 4 descriptors (close-on-exec)
/// from `sock`. Returns the bytes received (0 at end of input) with `*count` descriptors stored
/// in `fds`, or -1 with errno. Descriptors of a truncated message are closed, and EMSGSIZE returned.
static inline long clinux_receive_with_fds(int sock, void *bytes, size_t capacity, int *fds, int *count) {
    union { struct cmsghdr header; char space[CMSG_SPACE(4 * sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    struct iovec vector = { bytes, capacity };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control.space;
    message.msg_controllen = sizeof control.space;
    *count = 0;
    long received;
    do { received = recvmsg(sock, &message, MSG_CMSG_CLOEXEC); } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            if (*count < 4) fds[(*count)++] = fd; else close(fd);
        }
    }
    if (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *count; i++) close(fds[i]);
        *count = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return received;
}

/// In a single-threaded fork server: forks a worker that is nobody's child here. An intermediate
/// child forks the worker, opens a pidfd on it (race-free: the worker cannot be reaped while the
/// intermediate lives), hands pid and pidfd back over a private socket pair and exits; the
/// worker is then re-parented to the nearest child subreaper (the supervisor), which reaps it
/// and learns its exit status. The worker runs in a process group of its own, with `input_fd`
/// as its stdin and `output_fd` as its stdout, and every other descriptor from 3 up closed.
///
/// Returns 0 in the worker; 1 in the caller, once the intermediate has exited, with
/// `*worker_pid` and `*worker_pidfd` set; a negative errno in the caller on failure.
static inline int clinux_fork_detached_worker(int input_fd, int output_fd, int *worker_pid, int *worker_pidfd) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return -errno;
    pid_t middle = fork();
    if (middle < 0) { int e = errno; close(pair[0]); close(pair[1]); return -e; }
    if (middle == 0) {
        close(pair[0]);
        pid_t worker = fork();
        if (worker == 0) {
            setpgid(0, 0);
            if (dup2(input_fd, 0) < 0 || dup2(output_fd, 1) < 0) _exit(71);  /* EX_OSERR */
            syscall(SYS_close_range, 3, ~0U, 0);
            return 0;
        }
        int result[2] = { 0, 0 };
        int pidfd = -1;
        if (worker < 0) {
            result[1] = errno;
        } else {
            setpgid(worker, worker);
            pidfd = (int)syscall(SYS_pidfd_open, worker, 0);
            if (pidfd < 0) { result[1] = errno; kill(-worker, SIGKILL); kill(worker, SIGKILL); }
            else result[0] = worker;
        }
        clinux_send_with_fds(pair[1], result, sizeof result, &pidfd, pidfd >= 0 ? 1 : 0);
        _exit(0);
    }
    close(pair[1]);
    int status;
    while (waitpid(middle, &status, 0) < 0 && errno == EINTR) {}
    int result[2] = { 0, EPROTO };
    int fds[4];
    int count = 0;
    long got = clinux_receive_with_fds(pair[0], result, sizeof result, fds, &count);
    int e = errno;
    close(pair[0]);
    if (got != (long)sizeof result) {
        for (int i = 0; i < count; i++) close(fds[i]);
        return got < 0 ? -e : -EPROTO;
    }
    if (result[0] <= 0 || count != 1) {
        for (int i = 0; i < count; i++) close(fds[i]);
        return -(result[1] != 0 ? result[1] : EPROTO);
    }
    *worker_pid = result[0];
    *worker_pidfd = fds[0];
    return 1;
}


// --- Packet capture of one endpoint (vde-networker's Capture module). ---
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netpacket/packet.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>

#ifndef SYS_setns
#define SYS_setns 308
#endif
#define CLINUX_CLONE_NEWNET 0x40000000
#define CLINUX_ETH_P_ALL 0x0003

struct clinux_packet_open {
    const char *netns;
    unsigned char mac[6];
    int fd;
    int ifindex;
    int error;
    const char *step;
};

static inline void *clinux_packet_open_thread(void *raw) {
    struct clinux_packet_open *job = (struct clinux_packet_open *)raw;
    job->fd = -1;
    if (job->netns != NULL) {
        int ns = open(job->netns, O_RDONLY | O_CLOEXEC);
        if (ns < 0) { job->error = errno; job->step = "open"; return NULL; }
        /* This thread only: it ends right after, so the process's other threads never see it. */
        if (syscall(SYS_setns, ns, CLINUX_CLONE_NEWNET) != 0) {
            job->error = errno; job->step = "setns"; close(ns); return NULL;
        }
        close(ns);
    }
    struct ifaddrs *list = NULL;
    if (getifaddrs(&list) != 0) { job->error = errno; job->step = "getifaddrs"; return NULL; }
    int ifindex = 0;
    for (struct ifaddrs *entry = list; entry != NULL; entry = entry->ifa_next) {
        if (entry->ifa_addr == NULL || entry->ifa_addr->sa_family != AF_PACKET) continue;
        const struct sockaddr_ll *link = (const struct sockaddr_ll *)entry->ifa_addr;
        if (link->sll_halen == 6 && memcmp(link->sll_addr, job->mac, 6) == 0) { ifindex = link->sll_ifindex; break; }
    }
    freeifaddrs(list);
    if (ifindex == 0) { job->error = ENODEV; job->step = "find the interface"; return NULL; }
    /* Protocol 0 first: the socket sees nothing until bound to the interface with ETH_P_ALL. */
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) { job->error = errno; job->step = "socket"; return NULL; }
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) {
        job->error = errno; job->step = "SO_TIMESTAMPNS"; close(fd); return NULL;
    }
    int size = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct sockaddr_ll address;
    memset(&address, 0, sizeof address);
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(CLINUX_ETH_P_ALL);
    address.sll_ifindex = ifindex;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        job->error = errno; job->step = "bind"; close(fd); return NULL;
    }
    job->fd = fd;
    job->ifindex = ifindex;
    job->error = 0;
    return NULL;
}

/// Opens a non-blocking AF_PACKET socket that sees both directions of the interface whose MAC
/// address is `mac`, inside the network namespace at `netns` (NULL: the caller's). The
/// namespace is entered by a thread made for this and ended after (setns changes only the
/// calling thread; the socket stays in that namespace). Returns 0 with `*fd` and `*ifindex`
/// set, or an errno value with `*step` naming what failed. Blocks for the thread's life.
static inline int clinux_packet_open(const char *netns, const unsigned char *mac, int *fd, int *ifindex,
                                     const char **step) {
    struct clinux_packet_open job;
    memset(&job, 0, sizeof job);
    job.netns = netns;
    memcpy(job.mac, mac, 6);
    pthread_t thread;
    int started = pthread_create(&thread, NULL, clinux_packet_open_thread, &job);
    if (started != 0) { *step = "pthread_create"; return started; }
    pthread_join(thread, NULL);
    if (job.error != 0) { *step = job.step; return job.error; }
    *fd = job.fd;
    *ifindex = job.ifindex;
    return 0;
}

/// Reads one frame from an AF_PACKET socket made by clinux_packet_open: up to `capacity` bytes
/// into `buffer`. Returns the bytes stored, with `*length` the frame's length on the wire,
/// `*outgoing` 1 when the interface sent it, `*ifindex` its interface and `*nanoseconds` the
/// kernel's receive time (CLOCK_REALTIME); or -1 with errno (EAGAIN: none waits).
static inline long clinux_packet_recv(int fd, unsigned char *buffer, unsigned long capacity, unsigned long *length,
                                      int *outgoing, int *ifindex, long long *nanoseconds) {
    struct sockaddr_ll from;
    struct iovec part = { buffer, capacity };
    union { char bytes[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } control;
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_name = &from;
    message.msg_namelen = sizeof from;
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    message.msg_control = control.bytes;
    message.msg_controllen = sizeof control.bytes;
    ssize_t received = recvmsg(fd, &message, MSG_TRUNC | MSG_DONTWAIT);
    if (received < 0) return -1;
    *length = (unsigned long)received;
    *outgoing = from.sll_pkttype == PACKET_OUTGOING;
    *ifindex = from.sll_ifindex;
    *nanoseconds = -1;
    for (struct cmsghdr *entry = CMSG_FIRSTHDR(&message); entry != NULL; entry = CMSG_NXTHDR(&message, entry)) {
        if (entry->cmsg_level == SOL_SOCKET && entry->cmsg_type == SO_TIMESTAMPNS) {
            struct timespec stamp;
            memcpy(&stamp, CMSG_DATA(entry), sizeof stamp);
            *nanoseconds = (long long)stamp.tv_sec * 1000000000LL + stamp.tv_nsec;
        }
    }
    if (*nanoseconds < 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        *nanoseconds = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    }
    return (long)(received < (ssize_t)capacity ? received : (ssize_t)capacity);
}

/// Frames the kernel dropped on an AF_PACKET socket since the last call (PACKET_STATISTICS
/// resets on read), or -1 with errno.
static inline long long clinux_packet_drops(int fd) {
    struct { unsigned int packets; unsigned int drops; } stats;
    socklen_t length = sizeof stats;
    if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &stats, &length) != 0) return -1;
    return stats.drops;
}

/// Sets a socket's send buffer to `size` bytes, beyond wmem_max when allowed (root:
/// SO_SNDBUFFORCE), else as far as wmem_max. Returns 0, or -1 with errno.
static inline int clinux_set_send_buffer(int fd, int size) {
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) == 0) return 0;
    return setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/// A non-blocking, close-on-exec eventfd, or -1 with errno.
static inline int clinux_eventfd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

/// Waits up to `timeout_ms` for up to `capacity` events of `epfd`, storing their tokens and
/// event bits. Returns the count, 0 on timeout, or -1 with errno.
static inline int clinux_epoll_wait_many(int epfd, unsigned long long *tokens, unsigned int *events, int capacity,
                                         int timeout_ms) {
    struct epoll_event batch[64];
    if (capacity > 64) capacity = 64;
    int n = epoll_wait(epfd, batch, capacity, timeout_ms);
    for (int i = 0; i < n; i++) { tokens[i] = batch[i].data.u64; events[i] = batch[i].events; }
    return n;
}

/// Removes `fd` from `epfd`. Returns 0, or -1 with errno.
static inline int clinux_epoll_remove(int epfd, int fd) {
    struct epoll_event unused;
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &unused);
}
/// 1 when the interface `ifindex` still exists in the network namespace of the socket `fd`
/// (SIOCGIFNAME answers in the socket's namespace, not the calling thread's), else 0.
static inline int clinux_interface_exists(int fd, int ifindex) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    request.ifr_ifindex = ifindex;
    return ioctl(fd, SIOCGIFNAME, &request) == 0;
}

/// The Swift concurrency runtime's hooks for the global executor (libswift_Concurrency exports
/// them; their real types are Swift-convention function pointers, swift/Runtime/Concurrency.h).
extern void *swift_task_enqueueGlobal_hook;
extern void *swift_task_enqueueGlobalWithDelay_hook;
extern void *swift_task_enqueueGlobalWithDeadline_hook;

/// Sets the three hooks at once (Swift 6 refuses to write a C global directly).
static inline void clinux_install_global_executor_hooks(void *enqueue, void *withDelay, void *withDeadline) {
    swift_task_enqueueGlobal_hook = enqueue;
    swift_task_enqueueGlobalWithDelay_hook = withDelay;
    swift_task_enqueueGlobalWithDeadline_hook = withDeadline;
}

#endif
