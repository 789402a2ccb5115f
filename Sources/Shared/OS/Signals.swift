import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Signals a process handles itself.
public enum SignalHandling {
    /// A supervisor that stops reading must not kill the worker with SIGPIPE: writes then fail
    /// with EPIPE, which the link handles. Children do not inherit this (swift-subprocess resets
    /// signal dispositions in the child).
    public static func ignoreBrokenPipe() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// SIGTERM and SIGINT, delivered as a stream instead of killing the process, so that a
    /// worker can stop its children first. The sources must stay alive: keep the returned stream.
    public static func terminationRequests() -> AsyncStream<Int32> {
        AsyncStream { continuation in
            let queue = DispatchQueue(label: "SignalHandling")
            var sources: [any DispatchSourceSignal] = []
            for number in [SIGTERM, SIGINT] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler { continuation.yield(number) }
                source.resume()
                sources.append(source)
            }
            let kept = SignalSources(sources)
            continuation.onTermination = { _ in kept.cancel() }
        }
    }
}

/// Keeps the dispatch sources of ``SignalHandling/terminationRequests()`` alive with their stream.
private final class SignalSources: @unchecked Sendable {
    // Only touched at creation and by `cancel`, which Dispatch makes thread-safe.
    private let sources: [any DispatchSourceSignal]

    init(_ sources: [any DispatchSourceSignal]) { self.sources = sources }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
