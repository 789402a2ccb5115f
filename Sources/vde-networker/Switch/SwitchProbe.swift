import CVDEPlug
import Shared
import Synchronization

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
///
/// `vde_open` blocks without a limit in `connect` (a full backlog) and in `recv` of the switch's
/// reply (a full or hung switch), and takes no timeout. Each probe therefore runs on a thread of
/// its own, and at the timeout that thread is sent ``interruptSignal`` (a no-op handler without
/// SA_RESTART) until it has left `vde_open`: the blocked call fails with EINTR, libvdeplug closes
/// its sockets and removes its data socket, and the thread ends. A probe returns only after its
/// thread has ended, so no probe leaves a thread behind (before, a probe of a hung switch left a
/// Dispatch thread blocked in `vde_open` for good, one per probe).
///
/// Why not the alternatives: a non-blocking connect of our own can tell "nothing listens" but not
/// "full or hung" (the kernel accepts into the backlog without the switch), so the reply, i.e.
/// libvdeplug's protocol, would have to be spoken here too; and a probe in a child process costs a
/// process start: measured here (2 vCPUs), 50 runs of the static release vde-networker took
/// 0.78 s against 0.26 s for /bin/true, i.e. about 10 ms each beyond a bare fork and exec, twice
/// the 5 ms between probes while a switch starts. A thread costs tens of microseconds; a whole
/// probe of a live switch took 0.6 to 4 ms (median of 20, `SwitchProbeThreadTests`), most of it
/// the switch's own reply.
enum SwitchProbe {
    /// Sent to a probe's thread to end a blocked `vde_open`. Nothing else in the worker uses it.
    static let interruptSignal = SIGUSR2

    private static let handlerInstalled: Bool = cvdeplug_install_interrupt_handler(SIGUSR2) == 0

    /// libvdeplug's `vde` module, loaded once for the life of the process: each `vde_open`
    /// otherwise loads it (and `libvdeplug_mod`) with their relocations and `vde_close` unloads
    /// them, two file opens and a dozen system calls per probe. Evaluated before the first probe
    /// (``prepare()``); false when it was not found: probes then load it each time.
    private static let modulePinned: Bool = cvdeplug_pin_module("vde") == 0

    /// Installs the interrupt handler and pins the module now, once for this process and
    /// every process it forks: the fork server calls it in its warm-up, so a forked worker
    /// finds both statics evaluated and shares the module's pages. (It used to pin the module
    /// directly, which left each worker to evaluate the static again at its first probe: a
    /// second read of /proc/self/maps and a `dlopen`. No PSS difference was measurable at 100
    /// networks, 1075 against 1074 kB per network.)
    static func prepare() {
        _ = handlerInstalled
        _ = modulePinned
    }

    static func probe(ctlDir: String, timeout: Duration = .seconds(1)) async -> ProbeResult {
        guard handlerInstalled else { return .absent(errno: EINVAL) }
        // Nothing at the path: no switch can answer there, and connect would say ENOENT too
        // (every new network: its ctl dir is made just before its switch starts). Evidence, so
        // no thread and no libvdeplug for it.
        if FileSystem.isMissing(ctlDir) { return .absent(errno: ENOENT) }
        _ = modulePinned
        let job = ProbeJob(url: "vde://" + ctlDir)
        guard job.start() else { return .absent(errno: EAGAIN) }
        // Whoever claims first decides: the result in time, or the deadline, which then
        // interrupts the thread until it has left vde_open.
        let decided = OnceFlag()
        let deadline = Timeout.after(timeout) {
            if decided.claim() { await job.interruptUntilFinished() }
        }
        let value = await job.result()
        deadline.cancel()
        if decided.claim() { return value }
        // A port got after the deadline still proves a switch; a failure then is our interrupt.
        return value == .answers ? .answers : .noReply
    }

    /// Polls ``probe(ctlDir:timeout:)`` until it answers, `stop` says to give up, or `timeout` passes.
    /// Returns the last result.
    static func waitUntilAnswering(
        ctlDir: String, timeout: Duration, every interval: Duration = .milliseconds(5),
        stop: @Sendable () -> Bool
    ) async -> ProbeResult {
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

/// One probe's thread: runs `vde_open`/`vde_close` and hands the outcome to one waiter.
private final class ProbeJob: Sendable {
    private struct State {
        var thread: pthread_t?
        var outcome: ProbeResult?
        var waiter: CheckedContinuation<ProbeResult, Never>?
    }

    let url: String
    private let state = Mutex(State())

    init(url: String) { self.url = url }

    /// Starts the (detached) thread; false when none could be made.
    func start() -> Bool {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, 256 * 1024)
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        // The lock is held until `thread` is stored, so that an interrupt never sees a half-made state.
        return state.withLock { state -> Bool in
            let made = pthread_create(
                &thread, &attributes,
                { raw in
                    guard let raw else { return nil }
                    let job = Unmanaged<ProbeJob>.fromOpaque(raw).takeRetainedValue()
                    job.run()
                    return nil
                }, context)
            guard made == 0 else {
                Unmanaged<ProbeJob>.fromOpaque(context).release()
                return false
            }
            state.thread = thread
            return true
        }
    }

    private func run() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SwitchProbe.interruptSignal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        var args = vde_open_args(port: 0, group: nil, mode: 0o700)
        let connection = url.withCString { urlPointer in
            "vde-networker".withCString { descriptionPointer in
                cvdeplug_open(
                    UnsafeMutablePointer(mutating: urlPointer), UnsafeMutablePointer(mutating: descriptionPointer),
                    &args)
            }
        }
        let outcome: ProbeResult
        if let connection {
            vde_close(connection)
            outcome = .answers
        } else {
            outcome = .absent(errno: errno)
        }
        // Set under the lock while this thread still runs: an interrupt is only ever sent before.
        let waiter = state.withLock { state in
            state.outcome = outcome
            state.thread = nil
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: outcome)
    }

    /// The outcome, once the thread has finished.
    func result() async -> ProbeResult {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> ProbeResult? in
                if let outcome = state.outcome { return outcome }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Signals the thread every 10 ms until it has finished. A signal that lands outside a
    /// blocking call does nothing, hence the repeat.
    func interruptUntilFinished() async {
        while true {
            let running = state.withLock { state -> Bool in
                guard state.outcome == nil, let thread = state.thread else { return false }
                pthread_kill(thread, SwitchProbe.interruptSignal)
                return true
            }
            if !running { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
