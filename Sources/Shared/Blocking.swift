import Dispatch

/// Runs blocking calls (sockets, libvdeplug, file syncs, NSS look-ups) on Dispatch threads instead
/// of the cooperative pool: with two cores the pool has two threads, and one stuck call must not
/// stall the process. Used by both executables.
public enum Blocking {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: work()) }
        }
    }

    /// Like ``run(_:)``, but gives up after `timeout` and returns nil. A call that cannot be
    /// interrupted (libvdeplug's `vde_open` on a full switch) goes on in its thread and its result
    /// is dropped, so `work` must clean up after itself.
    public static func run<T: Sendable>(timeout: Duration, _ work: @escaping @Sendable () -> T) async -> T? {
        let resumed = OnceFlag()
        return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let resumeOnce: @Sendable (T?) -> Void = { value in
                if resumed.claim() { continuation.resume(returning: value) }
            }
            DispatchQueue.global().async { resumeOnce(work()) }
            let (seconds, attoseconds) = timeout.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { resumeOnce(nil) }
        }
    }
}

extension Duration {
    /// Whole milliseconds, for poll(2) timeouts and messages.
    public var milliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
