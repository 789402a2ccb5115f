import CLinux
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The capture machinery of one worker: one thread waiting in epoll on every capture's sockets
/// and sources, started with the first capture and ended with the last, so an idle worker has
/// no capture thread and pays nothing for capture.
///
/// Segment captures share one source: the switch's capture plugin, connected to
/// ``NetworkPaths/captureSink`` (``openSink(at:)``), whose records go to each of them. An
/// endpoint capture has its own ``FrameSource``. Every record goes to a capture command with
/// one non-blocking send; a full socket drops the record and counts it (``CaptureClient``), so
/// a slow reader never slows the network or the other captures.
///
/// The worker's actor never waits on capture I/O: it adds and ends captures under the lock
/// (short, nothing blocks there), and hears back through `onEvent` (called on the capture
/// thread; hand the work on).
final class CaptureEngine: Sendable {
    enum Event: Sendable, Equatable {
        /// The command of a segment capture closed its side: the worker ends it with
        /// ``end(_:reason:pluginDrops:)`` once it has read the plugin's drop counter.
        case segmentClientClosed(CaptureID)
        /// No segment capture is left: the sink is closed; the plugin is to be stopped and unloaded.
        case segmentCapturesEnded
    }

    private enum Role {
        case wake
        case listener(CaptureID)
        case client(CaptureID)
        case source(CaptureID)
        case sinkListener
        case sink
    }

    private struct State {
        var epoll: Int32 = -1
        var wake: Int32 = -1
        var running = false
        var captures: [CaptureID: CaptureClient] = [:]
        /// What each registered descriptor is (the epoll token is the descriptor).
        var roles: [Int32: Role] = [:]
        var sinkListener: UnixListener?
        var sink: Int32 = -1
        /// Every segment capture's socket is full: the sink is out of epoll, and the plugin
        /// drops (and counts) frames until one of them is writable again.
        var sinkPaused = false
        /// The start of a record whose rest has not arrived yet (see ``forwardSink(_:_:_:)``).
        var sinkPending: [UInt8] = []
        /// Segment captures whose command closed its side, waiting for the worker to end them.
        var closing: Set<CaptureID> = []
        var idleWaiters: [CheckedContinuation<Void, Never>] = []

        var activeSegmentCaptures: Int {
            captures.values.count { $0.isSegment && $0.pendingEnd == nil }
        }
    }

    let connectTimeout: Duration
    /// How long an ending capture's command gets to take its end record.
    let endTimeout: Duration
    private let onEvent: @Sendable (Event) -> Void
    private let state = Mutex(State())

    init(
        connectTimeout: Duration = .seconds(WorkerProtocol.captureConnectTimeoutSeconds),
        endTimeout: Duration = .seconds(2), onEvent: @escaping @Sendable (Event) -> Void
    ) {
        self.connectTimeout = connectTimeout
        self.endTimeout = endTimeout
        self.onEvent = onEvent
    }

    // MARK: The worker's side

    /// True while a capture thread runs.
    var isRunning: Bool { state.withLock { $0.running } }
    var isSinkOpen: Bool { state.withLock { $0.sinkListener != nil || $0.sink >= 0 } }
    var segmentCaptureCount: Int { state.withLock { $0.activeSegmentCaptures } }
    func contains(_ id: CaptureID) -> Bool { state.withLock { $0.captures[id] != nil } }

    /// Listens at `socketPath` (mode 0600) for the capture command, for ``connectTimeout``.
    /// `source`: an endpoint capture's frames (taken over: closed when the capture ends); nil
    /// for a segment capture. Returns whether the plugin's sink is open (checked with the
    /// capture added, so a sink that is open stays for it).
    @discardableResult
    func add(_ spec: CaptureSpec, socketPath: String, source: (any FrameSource)?, startedAt: Int64)
        throws(CaptureError) -> Bool
    {
        let listener: UnixListener
        do {
            listener = try UnixListener.bind(socketPath, mode: 0o600)
        } catch {
            source?.close()
            throw .system("cannot make the capture socket", error)
        }
        let outcome: Result<(start: Bool, sinkOpen: Bool), CaptureError> = state.withLock { state in
            guard state.captures[spec.id] == nil else { return .failure(.duplicate(spec.id)) }
            let start = !state.running
            if start {
                if let failure = Self.prepareThread(&state) { return .failure(failure) }
            }
            guard clinux_epoll_arm(state.epoll, listener.fd, UInt32(EPOLLIN.rawValue), UInt64(listener.fd)) == 0 else {
                return .failure(.system("cannot watch the capture socket", SystemCallError.last("epoll_ctl")))
            }
            state.roles[listener.fd] = .listener(spec.id)
            var client = CaptureClient(
                spec: spec, startedAt: startedAt, listener: listener,
                connectDeadline: .now + connectTimeout)
            client.source = source
            state.captures[spec.id] = client
            Self.wakeUp(state)
            return .success((start, state.sinkListener != nil || state.sink >= 0))
        }
        switch outcome {
        case .success(let result):
            if result.start { startThread() }
            return result.sinkOpen
        case .failure(let error):
            listener.close()
            source?.close()
            throw error
        }
    }

    /// The plugin's drop counter when the segment capture `id` joined a running plugin: only
    /// later drops are the capture's.
    func setPluginDropsBase(_ id: CaptureID, _ base: UInt64) {
        state.withLock { $0.captures[id]?.pluginDropsBase = base }
    }

    /// Listens at `path` for the switch's capture plugin (`vdecapture/start PATH`).
    func openSink(at path: String) throws(CaptureError) {
        let listener: UnixListener
        do {
            listener = try UnixListener.bind(path, mode: 0o600)
        } catch {
            throw .system("cannot make the capture plugin's socket", error)
        }
        let failure: CaptureError? = state.withLock { state in
            guard state.running else {
                return CaptureError(vdeError: .unavailable("no segment capture to open the sink for"))
            }
            Self.closeSink(&state)
            guard clinux_epoll_arm(state.epoll, listener.fd, UInt32(EPOLLIN.rawValue), UInt64(listener.fd)) == 0 else {
                return .system("cannot watch the capture plugin's socket", SystemCallError.last("epoll_ctl"))
            }
            state.roles[listener.fd] = .sinkListener
            state.sinkListener = listener
            state.sinkPending = []
            return nil
        }
        if let failure {
            listener.close()
            throw failure
        }
    }

    /// Ends a capture: its command gets an end record with its counters and `reason` (empty
    /// when the command ended it). `pluginDrops`: the plugin's drop counter now (segment).
    func end(_ id: CaptureID, reason: String, pluginDrops: UInt64? = nil) {
        let events = state.withLock { state -> [Event] in
            var events: [Event] = []
            Self.end(id, reason: reason, pluginDrops: pluginDrops, endTimeout: endTimeout, &state, &events)
            Self.wakeUp(state)
            return events
        }
        for event in events { onEvent(event) }
    }

    /// Ends every capture that `matching` selects, with `reason`.
    func endAll(reason: String, pluginDrops: UInt64? = nil, matching: (CaptureSpec) -> Bool = { _ in true }) {
        let events = state.withLock { state -> [Event] in
            var events: [Event] = []
            for (id, capture) in state.captures where capture.pendingEnd == nil && matching(capture.spec) {
                Self.end(id, reason: reason, pluginDrops: pluginDrops, endTimeout: endTimeout, &state, &events)
            }
            Self.wakeUp(state)
            return events
        }
        for event in events { onEvent(event) }
    }

    /// Running captures, oldest first; segment captures count the plugin's drops since they
    /// began (`pluginDrops`: its counter now).
    func statuses(pluginDrops: UInt64? = nil) -> [CaptureStatus] {
        state.withLock { state in
            for (id, capture) in state.captures {
                // What the kernel dropped on an endpoint's packet socket so far.
                if let source = capture.source { state.captures[id]?.dropped += source.takeDrops() }
            }
            return state.captures.values.filter { $0.pendingEnd == nil }
                .map { capture in
                    capture.status(
                        extraDrops: capture.isSegment ? Self.drops(pluginDrops, since: capture.pluginDropsBase) : 0)
                }
                .sorted { ($0.startedAt, $0.id.rawValue) < ($1.startedAt, $1.id.rawValue) }
        }
    }

    /// Returns once no capture is left and the thread has ended.
    func waitUntilIdle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { state -> Bool in
                guard state.running else { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    // MARK: The capture thread

    private static func prepareThread(_ state: inout State) -> CaptureError? {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { return .system("cannot start capturing", SystemCallError.last("epoll_create1")) }
        let wake = clinux_eventfd()
        guard wake >= 0, clinux_epoll_arm(epoll, wake, UInt32(EPOLLIN.rawValue), UInt64(wake)) == 0 else {
            let error = SystemCallError.last("eventfd")
            if wake >= 0 { Glibc.close(wake) }
            Glibc.close(epoll)
            return .system("cannot start capturing", error)
        }
        state.epoll = epoll
        state.wake = wake
        state.roles[wake] = .wake
        state.running = true
        return nil
    }

    private func startThread() {
        Task.detached { [self] in await Blocking.run { self.loop() } }
    }

    private static func wakeUp(_ state: State) {
        guard state.wake >= 0 else { return }
        var one: UInt64 = 1
        _ = write(state.wake, &one, 8)
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var bits = [UInt32](repeating: 0, count: 64)
        var scratch = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            let (epoll, timeout) = state.withLock { state in (state.epoll, Self.timeout(state)) }
            let count = clinux_epoll_wait_many(epoll, &tokens, &bits, 64, timeout)
            let (events, waiters, done) = state.withLock {
                state -> ([Event], [CheckedContinuation<Void, Never>], Bool) in
                var events: [Event] = []
                for index in 0..<max(Int(count), 0) {
                    handle(fd: Int32(truncatingIfNeeded: tokens[index]), bits: bits[index], &state, &events, &scratch)
                }
                expire(&state, &events)
                guard state.captures.isEmpty else { return (events, [], false) }
                // The last capture is gone: so is the thread.
                Self.closeSink(&state)
                Glibc.close(state.wake)
                Glibc.close(state.epoll)
                state.wake = -1
                state.epoll = -1
                state.roles = [:]
                state.running = false
                defer { state.idleWaiters = [] }
                return (events, state.idleWaiters, true)
            }
            for event in events { onEvent(event) }
            for waiter in waiters { waiter.resume() }
            if done { return }
        }
    }

    /// Milliseconds until the next deadline, -1 when there is none.
    private static func timeout(_ state: State) -> Int32 {
        let deadlines = state.captures.values.map { $0.endDeadline ?? ($0.isConnected ? nil : $0.connectDeadline) }
        guard let next = deadlines.compactMap({ $0 }).min() else { return -1 }
        let left = ContinuousClock.now.duration(to: next)
        return left <= .zero ? 0 : Int32(clamping: left.milliseconds + 1)
    }

    private func handle(
        fd: Int32, bits: UInt32, _ state: inout State, _ events: inout [Event], _ scratch: inout [UInt8]
    ) {
        guard let role = state.roles[fd] else { return }
        switch role {
        case .wake:
            var value: UInt64 = 0
            _ = read(fd, &value, 8)
        case .listener(let id):
            accept(id, &state, &events)
        case .client(let id):
            clientReady(id, bits: bits, &state, &events, &scratch)
        case .source(let id):
            sourceReady(id, &state, &events)
        case .sinkListener:
            acceptSink(&state, &events)
        case .sink:
            sinkReady(&state, &events, &scratch)
        }
    }

    private func accept(_ id: CaptureID, _ state: inout State, _ events: inout [Event]) {
        guard var capture = state.captures[id], let listener = capture.listener else { return }
        let connection: Int32?
        do {
            connection = try listener.accept()
        } catch {
            Self.end(id, reason: "accept: \(error)", pluginDrops: nil, endTimeout: endTimeout, &state, &events)
            return
        }
        guard let connection else { return }
        Self.forget(listener.fd, &state)
        listener.close()
        capture.listener = nil
        _ = clinux_set_nonblocking(connection)
        _ = clinux_set_send_buffer(connection, CaptureClient.sendBuffer)
        if let peer = try? UnixListener.peer(of: connection) {
            capture.clientPID = peer.pid
            capture.clientUID = peer.uid
        }
        capture.connection = connection
        Self.register(connection, events: Self.clientEvents, role: .client(id), &state)
        if let source = capture.source {
            _ = source.takeDrops()
            Self.register(source.fd, events: UInt32(EPOLLIN.rawValue), role: .source(id), &state)
        }
        state.captures[id] = capture
        if capture.isSegment { Self.resumeSink(&state) }
    }

    private func clientReady(
        _ id: CaptureID, bits: UInt32, _ state: inout State, _ events: inout [Event], _ scratch: inout [UInt8]
    ) {
        guard var capture = state.captures[id] else { return }
        if capture.pendingEnd != nil {
            if capture.flushEnd() || bits & UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
                Self.remove(id, &state, &events)
            } else {
                state.captures[id] = capture
            }
            return
        }
        if capture.isFull, bits & UInt32(EPOLLOUT.rawValue) != 0 {
            capture.isFull = false
            state.captures[id] = capture
            Self.register(capture.connection, events: Self.clientEvents, role: .client(id), &state)
            if let source = capture.source {
                Self.register(source.fd, events: UInt32(EPOLLIN.rawValue), role: .source(id), &state)
            }
            Self.resumeSink(&state)
        }
        // The command sends nothing: what it does send is read and ignored; end of file (it
        // shut down its side, or closed) ends the capture.
        var closed = bits & UInt32(EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        while !closed {
            let received = scratch.withUnsafeMutableBytes {
                recv(capture.connection, $0.baseAddress, min($0.count, 4096), Int32(MSG_DONTWAIT))
            }
            if received > 0 { continue }
            if received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if received < 0 && errno == EINTR { continue }
            closed = true
        }
        guard closed else { return }
        if capture.isSegment {
            // The plugin's drop counter is read by the worker (a management exchange): until
            // it ends the capture, its descriptor stays out of epoll (an end of file stays readable).
            Self.forget(capture.connection, &state)
            state.closing.insert(id)
            events.append(.segmentClientClosed(id))
        } else {
            Self.end(id, reason: "", pluginDrops: nil, endTimeout: endTimeout, &state, &events)
        }
    }

    private func sourceReady(_ id: CaptureID, _ state: inout State, _ events: inout [Event]) {
        guard var capture = state.captures[id], let source = capture.source else { return }
        // At most a burst per wake-up, so that other captures get their turn.
        for _ in 0..<256 {
            let record: CaptureRecord?
            do {
                record = try source.nextFrame()
            } catch {
                state.captures[id] = capture
                Self.end(
                    id, reason: "the endpoint's interface went away (\(error))", pluginDrops: nil,
                    endTimeout: endTimeout, &state, &events)
                return
            }
            guard let record else { break }
            let delivered = record.bytes.withUnsafeBytes { Self.deliver($0, to: id, &capture, &state, &events) }
            guard delivered else { return }
            if capture.isFull {
                // Until the command reads again, the kernel drops for us (PACKET_STATISTICS
                // counts them): no read and no send per frame meanwhile.
                _ = clinux_epoll_remove(state.epoll, source.fd)
                break
            }
        }
        state.captures[id] = capture
    }

    private func acceptSink(_ state: inout State, _ events: inout [Event]) {
        guard let listener = state.sinkListener, let connection = try? listener.accept() else { return }
        Self.forget(listener.fd, &state)
        listener.close()
        state.sinkListener = nil
        _ = clinux_set_nonblocking(connection)
        state.sink = connection
        Self.register(connection, events: UInt32(EPOLLIN.rawValue), role: .sink, &state)
    }

    private func sinkReady(_ state: inout State, _ events: inout [Event], _ scratch: inout [UInt8]) {
        let sink = state.sink
        var brokenReason: String?
        // At most 1 MiB per wake-up (about 700 full-size frames), then the others' turn.
        for _ in 0..<4 {
            let received = scratch.withUnsafeMutableBytes { recv(sink, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if received < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                brokenReason = "reading the switch's capture plugin failed: \(SystemCallError.text(errno))"
                break
            }
            if received == 0 {
                brokenReason = "the switch's capture plugin stopped sending (the switch exited?)"
                break
            }
            let failure = scratch.withUnsafeBytes {
                forwardSink(UnsafeRawBufferPointer(rebasing: $0[0..<received]), &state, &events)
            }
            if let failure {
                brokenReason = "the switch's capture plugin sent a broken stream: \(failure)"
                break
            }
            if Self.everySegmentCaptureIsFull(state) {
                // Reading on would only drop here: let the plugin drop (and count) instead.
                _ = clinux_epoll_remove(state.epoll, sink)
                state.sinkPaused = true
                break
            }
            if received < scratch.count { break }
        }
        guard let brokenReason else { return }
        Self.closeSink(&state)
        for (id, capture) in state.captures where capture.isSegment && capture.pendingEnd == nil {
            Self.end(id, reason: brokenReason, pluginDrops: nil, endTimeout: endTimeout, &state, &events)
        }
    }

    /// Hands every whole record in `chunk` to each segment capture as the plugin wrote it (no
    /// decoding and encoding again: that cost two allocations per frame), keeping a record cut
    /// at the chunk's end for the next read. Returns what is wrong with a broken stream.
    private func forwardSink(_ chunk: UnsafeRawBufferPointer, _ state: inout State, _ events: inout [Event])
        -> String?
    {
        var offset = 0
        if !state.sinkPending.isEmpty {
            let headerPart = min(max(CaptureRecord.headerLength - state.sinkPending.count, 0), chunk.count)
            state.sinkPending += chunk[0..<headerPart]
            offset = headerPart
            guard state.sinkPending.count >= CaptureRecord.headerLength else { return nil }
            let total: Int
            switch state.sinkPending.withUnsafeBytes({ Self.recordLength($0) }) {
            case .success(let length): total = length
            case .failure(let failure): return failure.reason
            }
            let rest = min(total - state.sinkPending.count, chunk.count - offset)
            state.sinkPending += chunk[offset..<(offset + rest)]
            offset += rest
            guard state.sinkPending.count == total else { return nil }
            let record = state.sinkPending
            state.sinkPending = []
            record.withUnsafeBytes { fanOut($0, &state, &events) }
        }
        while chunk.count - offset >= CaptureRecord.headerLength {
            let total: Int
            switch Self.recordLength(UnsafeRawBufferPointer(rebasing: chunk[offset...])) {
            case .success(let length): total = length
            case .failure(let failure): return failure.reason
            }
            guard chunk.count - offset >= total else { break }
            fanOut(UnsafeRawBufferPointer(rebasing: chunk[offset..<(offset + total)]), &state, &events)
            offset += total
        }
        state.sinkPending += chunk[offset...]
        return nil
    }

    private struct BrokenStream: Error { var reason: String }

    /// Header and payload length of the frame record at the start of `bytes` (its header whole).
    private static func recordLength(_ bytes: UnsafeRawBufferPointer) -> Result<Int, BrokenStream> {
        let kind = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        guard kind == CaptureRecord.Kind.frame.rawValue else {
            return .failure(BrokenStream(reason: "record kind \(kind) where frames were expected"))
        }
        let length = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        guard length <= CaptureRecord.maxCapturedLength else {
            return .failure(BrokenStream(reason: "a record of \(length) bytes is longer than any frame"))
        }
        return .success(CaptureRecord.headerLength + length)
    }

    private func fanOut(_ bytes: UnsafeRawBufferPointer, _ state: inout State, _ events: inout [Event]) {
        for id in state.captures.keys {
            guard var capture = state.captures[id], capture.isSegment, capture.isConnected, capture.pendingEnd == nil,
                !state.closing.contains(id)
            else { continue }
            if Self.deliver(bytes, to: id, &capture, &state, &events) { state.captures[id] = capture }
        }
    }

    /// Forgets captures whose command never connected, and ends that did not take their end record.
    private func expire(_ state: inout State, _ events: inout [Event]) {
        let now = ContinuousClock.now
        for (id, capture) in state.captures {
            if let deadline = capture.endDeadline {
                if deadline <= now { Self.remove(id, &state, &events) }
            } else if !capture.isConnected, capture.connectDeadline <= now {
                Self.remove(id, &state, &events)
            }
        }
    }

    // MARK: State changes (under the lock)

    /// A connected command: its end of file, and nothing else.
    private static let clientEvents = UInt32(EPOLLIN.rawValue | EPOLLRDHUP.rawValue)

    /// Hands a record to a capture; a full socket has epoll tell when it is writable again.
    private static func deliver(
        _ bytes: UnsafeRawBufferPointer, to id: CaptureID, _ capture: inout CaptureClient, _ state: inout State,
        _ events: inout [Event]
    ) -> Bool {
        switch capture.deliver(bytes) {
        case .sent, .dropped:
            return true
        case .full:
            register(capture.connection, events: clientEvents | UInt32(EPOLLOUT.rawValue), role: .client(id), &state)
            return true
        case .broken:
            state.captures[id] = capture
            remove(id, &state, &events)
            return false
        }
    }

    private static func register(_ fd: Int32, events: UInt32, role: Role, _ state: inout State) {
        _ = clinux_epoll_arm(state.epoll, fd, events, UInt64(fd))
        state.roles[fd] = role
    }

    private static func forget(_ fd: Int32, _ state: inout State) {
        guard fd >= 0 else { return }
        if state.epoll >= 0 { _ = clinux_epoll_remove(state.epoll, fd) }
        state.roles[fd] = nil
    }

    private static func drops(_ now: UInt64?, since base: UInt64) -> UInt64 {
        guard let now, now > base else { return 0 }
        return now - base
    }

    private static func end(
        _ id: CaptureID, reason: String, pluginDrops: UInt64?, endTimeout: Duration, _ state: inout State,
        _ events: inout [Event]
    ) {
        guard var capture = state.captures[id], capture.pendingEnd == nil else { return }
        state.closing.remove(id)
        guard capture.isConnected else {
            remove(id, &state, &events)
            return
        }
        if let source = capture.source {
            capture.dropped += source.takeDrops()
            forget(source.fd, &state)
            source.close()
            capture.source = nil
        }
        let dropped = capture.dropped + (capture.isSegment ? drops(pluginDrops, since: capture.pluginDropsBase) : 0)
        capture.pendingEnd =
            CaptureRecord.end(
                frames: capture.frames, dropped: dropped, reason: reason, timestampNanoseconds: nowNanoseconds()
            )
            .bytes
        capture.endDeadline = .now + endTimeout
        if capture.flushEnd() {
            state.captures[id] = capture
            remove(id, &state, &events)
            return
        }
        // The rest goes out when the command has read enough (it drains until the end record).
        register(capture.connection, events: UInt32(EPOLLOUT.rawValue), role: .client(id), &state)
        state.captures[id] = capture
        segmentsChanged(&state, &events)
    }

    private static func remove(_ id: CaptureID, _ state: inout State, _ events: inout [Event]) {
        guard var capture = state.captures.removeValue(forKey: id) else { return }
        state.closing.remove(id)
        if let listener = capture.listener { forget(listener.fd, &state) }
        forget(capture.connection, &state)
        if let source = capture.source { forget(source.fd, &state) }
        capture.close()
        if capture.isSegment { segmentsChanged(&state, &events) }
    }

    private static func everySegmentCaptureIsFull(_ state: State) -> Bool {
        let receiving = state.captures.filter { id, capture in
            capture.isSegment && capture.isConnected && capture.pendingEnd == nil && !state.closing.contains(id)
        }
        return !receiving.isEmpty && receiving.values.allSatisfy(\.isFull)
    }

    /// Reads the sink again (a segment capture can take frames).
    private static func resumeSink(_ state: inout State) {
        guard state.sinkPaused, state.sink >= 0 else { return }
        state.sinkPaused = false
        register(state.sink, events: UInt32(EPOLLIN.rawValue), role: .sink, &state)
    }

    /// With no segment capture left, the sink goes, and the worker hears of it.
    private static func segmentsChanged(_ state: inout State, _ events: inout [Event]) {
        resumeSink(&state)
        guard state.activeSegmentCaptures == 0, state.sinkListener != nil || state.sink >= 0 else { return }
        closeSink(&state)
        if !events.contains(.segmentCapturesEnded) { events.append(.segmentCapturesEnded) }
    }

    private static func closeSink(_ state: inout State) {
        if let listener = state.sinkListener {
            forget(listener.fd, &state)
            listener.close()
        }
        state.sinkListener = nil
        if state.sink >= 0 {
            forget(state.sink, &state)
            Glibc.close(state.sink)
        }
        state.sink = -1
        state.sinkPaused = false
        state.sinkPending = []
    }

    static func nowNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}
