import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Signals a process handles itself.
public enum SignalHandling {
    /// A supervisor that stops reading must not kill the worker with SIGPIPE: writes then fail
    /// with EPIPE, which the link handles. Children do not inherit this (ChildSpawn resets
    /// signal dispositions in the child).
    public static func ignoreBrokenPipe() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// SIGTERM and SIGINT, delivered as a stream instead of killing the process, so that a
    /// worker can stop its children first. Keep the stream: dropping it ignores both signals.
    ///
    /// A handler writes each signal's number into a pipe that the process's ``DescriptorWatcher``
    /// waits on, so no thread is added. Dispatch's signal sources, used before, started
    /// libdispatch's manager thread and its tables in every worker, for two signals that come
    /// once in a worker's life (docs/benchmarks.md, "Issue 17: towards 1 MiB per network").
    ///
    /// When the pipe cannot be made (out of descriptors), both signals keep their default action
    /// and end the process, which the supervisor treats as a crash; the stream then never yields.
    public static func terminationRequests() -> AsyncStream<Int32> {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        guard let watcher = DescriptorWatcher.shared, let pipe = try? PipeLines.open() else { return stream }
        let caught = CaughtSignals(
            signals: [SIGTERM, SIGINT], pipe: pipe, watcher: watcher, continuation: continuation)
        guard caught.start() else { return stream }
        continuation.onTermination = { _ in caught.stop() }
        return stream
    }
}

/// The pipe that ``SignalHandling/terminationRequests()``'s handler writes to, and its reader.
private final class CaughtSignals: Sendable {
    private struct State {
        var token: DescriptorWatcher.Token?
        var stopped = false
    }

    private let signals: [Int32]
    private let readEnd: Int32
    private let writeEnd: Int32
    private let watcher: DescriptorWatcher
    private let continuation: AsyncStream<Int32>.Continuation
    /// Also serialises reads of the pipe with `stop`'s close, so that a reused descriptor number
    /// is never read.
    private let state = Mutex(State())

    init(
        signals: [Int32], pipe: (read: Int32, write: Int32), watcher: DescriptorWatcher,
        continuation: AsyncStream<Int32>.Continuation
    ) {
        self.signals = signals
        readEnd = pipe.read
        writeEnd = pipe.write
        self.watcher = watcher
        self.continuation = continuation
    }

    /// Installs the handler and starts reading; false (and everything undone) on failure.
    func start() -> Bool {
        _ = clinux_set_nonblocking(readEnd)
        _ = clinux_set_nonblocking(writeEnd)
        let installed = signals.withUnsafeBufferPointer {
            clinux_catch_signals_into_pipe(writeEnd, $0.baseAddress, Int32($0.count))
        }
        let armed = installed == 0 && state.withLock { arm(&$0) }
        guard armed else {
            for number in signals { signal(number, SIG_DFL) }
            close(readEnd)
            close(writeEnd)
            return false
        }
        return true
    }

    /// Ignores the signals from now on and closes the pipe.
    func stop() {
        for number in signals { signal(number, SIG_IGN) }
        state.withLock { state in
            guard !state.stopped else { return }
            state.stopped = true
            if let token = state.token { watcher.cancel(token) }
            close(readEnd)
            close(writeEnd)
        }
        continuation.finish()
    }

    private func arm(_ state: inout State) -> Bool {
        guard !state.stopped else { return true }
        state.token = try? watcher.watch(readEnd) { [self] in
            self.state.withLock { state in
                guard !state.stopped else { return }
                readAll()
                _ = arm(&state)
            }
        }
        return state.token != nil
    }

    private func readAll() {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { buffer in
            while true {
                let count = read(readEnd, buffer.baseAddress, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return }
                for number in buffer.prefix(count) { continuation.yield(Int32(number)) }
            }
        }
    }
}
