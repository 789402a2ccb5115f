import CVDEPlug
import Shared
#if canImport(Glibc)
import Glibc
#endif

/// What a libvdeplug connection attempt to a ctl dir found.
enum ProbeResult: Sendable, Equatable {
    /// A switch gave the probe a port (the probe closed it again at once).
    case answers
    /// Nothing listens there (`errno`: usually ENOENT or ECONNREFUSED).
    case absent(errno: Int32)
    /// Something accepted the connection but gave no port in time: a switch whose ports are all
    /// in use (libvdeplug then waits forever), or a hung one.
    case noReply
}

/// Asks "does a VDE switch answer at this ctl dir?" the way every VDE client connects:
/// `vde_open("vde://CTLDIR")` through libvdeplug, then `vde_close`.
///
/// A probe holds a switch port only while it is open, i.e. a few microseconds.
enum SwitchProbe {
    static func probe(ctlDir: String, timeout: Duration = .seconds(1)) async -> ProbeResult {
        let url = "vde://" + ctlDir
        let result = await Blocking.run(timeout: timeout) { () -> ProbeResult in
            var args = vde_open_args(port: 0, group: nil, mode: 0o700)
            let connection = url.withCString { urlPointer in
                "vde-networker".withCString { descriptionPointer in
                    cvdeplug_open(UnsafeMutablePointer(mutating: urlPointer), UnsafeMutablePointer(mutating: descriptionPointer), &args)
                }
            }
            guard let connection else { return .absent(errno: errno) }
            // Closed even when the caller has given up waiting: an abandoned probe must not keep a port.
            vde_close(connection)
            return .answers
        }
        return result ?? .noReply
    }

    /// Polls ``probe(ctlDir:timeout:)`` until it answers, `stop` says to give up, or `timeout` passes.
    /// Returns the last result.
    static func waitUntilAnswering(ctlDir: String, timeout: Duration, every interval: Duration = .milliseconds(5),
                                   stop: @Sendable () -> Bool) async -> ProbeResult {
        let deadline = ContinuousClock.now + timeout
        var last = ProbeResult.absent(errno: ENOENT)
        while true {
            let remaining = deadline - ContinuousClock.now
            last = await probe(ctlDir: ctlDir, timeout: max(min(remaining, .seconds(1)), .milliseconds(50)))
            if last == .answers || last == .noReply || stop() || ContinuousClock.now >= deadline { return last }
            try? await Task.sleep(for: interval)
        }
    }
}
