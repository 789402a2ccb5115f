import CSystemd
import Glibc
import Shared

/// The systemd protocols, through libsystemd: socket activation and sd_notify.
/// Everything is a no-op when the supervisor was not started by systemd.
enum Systemd {
    /// The listening unix stream socket systemd passed (`LISTEN_FDS`), if any.
    /// The environment variables are unset so that workers do not inherit them.
    static func takeListeningSocket() throws -> Int32? {
        let count = sd_listen_fds(1)
        guard count > 0 else { return nil }
        guard count == 1 else {
            throw VDEError.invalid(
                "systemd passed \(count) sockets; vde-supervisor.socket must have exactly one ListenStream")
        }
        let fd = SD_LISTEN_FDS_START
        guard sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
            throw VDEError.invalid(
                "the socket systemd passed is not a listening unix stream socket (check ListenStream= in vde-supervisor.socket)"
            )
        }
        return fd
    }

    /// Sends a notification (`READY=1`, `STATUS=...`, `WATCHDOG=1`, ...) when `NOTIFY_SOCKET` is set.
    @discardableResult
    static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// Half the watchdog interval systemd asks for, or nil when the watchdog is off.
    static func watchdogPingInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec / 2))
    }
}
