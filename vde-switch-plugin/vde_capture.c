// vde-capture.so: a vde_switch plugin that copies every frame entering the switch to one unix stream socket,
// as the capture records of Sources/Shared/Capture/CaptureRecord.swift. The network's worker
// loads it through the management socket while a segment capture runs and unloads it after,
// so a network nobody captures runs a switch without it.
//
// Why our own plugin: the two capture plugins Debian's vde2 ships do not fit. pdump writes
// every frame once on entry and once more per port it leaves by (no direction in the file),
// with blocking writes that stall the whole switch when its reader is slow; dump formats each
// byte with fprintf into text on the management console. This one listens to "packet/in" only
// (each frame once, with its port), and never blocks: a frame that does not fit the socket is
// dropped and counted.
//
// vde_switch 2.3.2 does not install its plugin header, so the few declarations a plugin needs
// are written here from its documented interface (the management commands, the event
// callbacks). They match the switch Debian 12 ships (vde-switch 2.3.2+r586).
//
// Built with the system C compiler by scripts/lib.sh (build_capture_plugin), not by SwiftPM:
// SwiftPM links every library it makes with the Swift runtime, which must not be loaded into
// vde_switch. It lands beside vde-networker, which loads it from there.
//
// Management commands: `vdecapture/start PATH` (connect to the unix stream socket PATH and copy
// every entering frame to it), `vdecapture/stop`, `vdecapture/stats`.
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

// --- The part of vde_switch's plugin interface used here. ---
#define VDE_STRARG 2
#define VDE_WITHFILE 0x40
struct comlist {
    char *path;
    char *syntax;
    char *help;
    int (*doit)();
    unsigned char type;
    struct comlist *next;
};
struct dbgcl;
typedef int (*vde_event_fun)(struct dbgcl *event, void *arg, va_list v);
struct plugin {
    char *name;
    char *help;
    void *handle;
    struct plugin *next;
};
int eventadd(vde_event_fun fun, char *path, void *arg);
int eventdel(vde_event_fun fun, char *path, void *arg);
void addcl(int ncl, struct comlist *cl);
void delcl(int ncl, struct comlist *cl);
void printoutc(FILE *f, const char *format, ...);

// The symbol vde_switch looks for to accept the library as a plugin.
__attribute__((visibility("default"))) struct plugin vde_plugin_data = {
    .name = "vdecapture",
    .help = "copy every frame entering the switch to a capture socket (vde-supervisor)",
};

// --- State: one sink at a time (the worker fans frames out to its captures). ---
static int sink = -1;
static int listening = 0;
static unsigned long long frames_sent = 0;
static unsigned long long frames_dropped = 0;
static char stop_reason[128] = "";

/// Bytes of the sink's send buffer: a burst of about 2700 full-size frames. A unix stream
/// socket counts bytes, not datagrams (a datagram socket queues only net.unix.max_dgram_qlen
/// of them, 10 on Debian 12).
enum { SINK_BUFFER = 4 << 20, RECORD_HEADER = 24 };

static void put16(unsigned char *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }

static void close_sink(const char *reason) {
    if (sink >= 0) close(sink);
    sink = -1;
    if (reason) snprintf(stop_reason, sizeof stop_reason, "%s", reason);
}

/// Called by the switch for every frame that enters a port, before it is forwarded. Returns 0:
/// the frame goes on unchanged.
static int on_frame_in(struct dbgcl *event, void *arg, va_list v) {
    (void)event;
    (void)arg;
    int port = va_arg(v, int);
    unsigned char *frame = va_arg(v, unsigned char *);
    int length = va_arg(v, int);
    if (sink < 0 || length <= 0) return 0;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned char header[RECORD_HEADER];
    put16(header, 1);  // kind: frame
    put16(header + 2, 0);
    put32(header + 4, (uint32_t)port);
    put32(header + 8, (uint32_t)length);
    put32(header + 12, (uint32_t)length);
    put64(header + 16, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    struct iovec parts[2] = {{header, sizeof header}, {frame, (size_t)length}};
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = 2};
    ssize_t sent = sendmsg(sink, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent == (ssize_t)(sizeof header + (size_t)length)) {
        frames_sent++;
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
        frames_dropped++;  // the worker is behind: lose this frame, never stall the switch
    } else if (sent >= 0) {
        // A record shorter than the socket buffer goes out whole or not at all; a part would
        // break the stream's framing, so end the capture rather than send garbage.
        frames_dropped++;
        close_sink("a record was cut short");
    } else {
        // The worker is gone (EPIPE, ECONNRESET): stop copying; the next worker unloads us.
        close_sink(strerror(errno));
    }
    return 0;
}

static int command_start(FILE *out, char *path) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (path == NULL || path[0] != '/' || strlen(path) >= sizeof address.sun_path) {
        printoutc(out, "vdecapture/start needs an absolute socket path shorter than %zu bytes",
                  sizeof address.sun_path);
        return EINVAL;
    }
    memcpy(address.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    int size = SINK_BUFFER;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        int error = errno;
        printoutc(out, "cannot connect to %s: %s", path, strerror(error));
        close(fd);
        return error;
    }
    close_sink(NULL);
    sink = fd;
    frames_sent = 0;
    frames_dropped = 0;
    stop_reason[0] = '\0';
    if (!listening) {
        int error = eventadd(on_frame_in, "packet/in", NULL);
        if (error != 0) {
            close_sink("cannot listen to packet/in");
            return error;
        }
        listening = 1;
    }
    return 0;
}

static void stop_listening(void) {
    if (listening) eventdel(on_frame_in, "packet/in", NULL);
    listening = 0;
}

static int command_stop(FILE *out) {
    (void)out;
    stop_listening();
    close_sink("stopped");
    return 0;
}

static int command_stats(FILE *out) {
    printoutc(out, "active=%d frames=%llu dropped=%llu stopped=%s", sink >= 0, frames_sent, frames_dropped,
              stop_reason[0] ? stop_reason : "-");
    return 0;
}

static struct comlist commands[] = {
    {"vdecapture", "============", "CAPTURE: copy frames to a socket (vde-supervisor)", NULL, 0, NULL},
    {"vdecapture/start", "PATH", "copy every entering frame to the unix stream socket PATH", command_start,
     VDE_STRARG | VDE_WITHFILE, NULL},
    {"vdecapture/stop", "", "stop copying frames", command_stop, VDE_WITHFILE, NULL},
    {"vdecapture/stats", "", "show active, frames sent and dropped", command_stats, VDE_WITHFILE, NULL},
};

__attribute__((constructor)) static void plugin_loaded(void) {
    addcl(sizeof commands / sizeof commands[0], commands);
}

__attribute__((destructor)) static void plugin_unloaded(void) {
    stop_listening();
    close_sink(NULL);
    delcl(sizeof commands / sizeof commands[0], commands);
}

