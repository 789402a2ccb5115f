import Logging
import Shared
import Synchronization
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// A switch, its plugs, taps and namespaces in memory, behind ``WorkerHost``: what a test
/// does to them (a crash, a vanished tap, a full switch) is what the worker then sees.
final class FakeLab: Sendable {
    struct State {
        /// Pids far above any real pid_max, so that no pid file of a fake names a real process.
        var nextPID: pid_t = 2_000_000_000
        var switches: [FakeSwitch] = []
        /// How many switches were started (adopted ones are in `switches` too).
        var switchStartCount = 0
        var plugs: [FakePlug] = []
        /// What an earlier worker left running, for the next one to adopt: a switch, and plugs
        /// by endpoint (see ``leaveRunning(_:)``).
        var leftoverSwitch: FakeSwitch?
        var leftoverPlugs: [EndpointID: FakePlug] = [:]
        /// Tap name -> MAC, in the host namespace.
        var taps: [TapName: MACAddress] = [:]
        var createdTaps: [TapName] = []
        var deletedTaps: [TapName] = []
        /// Ports of the running switch, by port number -> plug pid.
        var ports: [Int: pid_t] = [:]
        /// Ports a client can get.
        var capacity = 8
        /// How often the worker asked the management socket for them (`port/showinfo`).
        var usablePortsAsked = 0
        var probe: ProbeResult = .absent(errno: ENOENT)
        /// The next plugs fail to attach with this error.
        var plugFailure: PlugError?
        /// Sandbox key -> what the file is.
        var sandboxes: [SandboxKey: SandboxFile] = [:]
        /// Sandbox key -> links inside.
        var links: [SandboxKey: [LinkInfo]] = [:]
        /// While set, tap deletions wait for ``FakeLab/releaseDeletions()``.
        var holdDeletions = false
        var heldDeletions: [CheckedContinuation<Void, Never>] = []
        /// Plugs started while set cannot have their tap watched (an old kernel).
        var watchUnavailable = false
        /// What `/proc` says about every plug's tap (for the polling fallback).
        var tapAttachment: TapAttachment = .attached(interface: "fake")
        /// While set, live changes to wirefilters fail (their management socket is broken).
        var managementFails = false
        /// The switch's capture plugin (CaptureFakes.swift).
        var capturePlugin = FakeCapturePlugin()
        /// Every uplink started (UplinkFakes.swift); an adopted one is not in here.
        var uplinks: [FakeUplink] = []
        /// What an earlier worker left running of the uplink, and the URL it runs with.
        var leftoverUplink: (uplink: FakeUplink, url: UplinkURL)?
        /// Leftover uplinks the launcher stopped (another URL, or the network has none now).
        var stoppedLeftoverUplinks: [FakeUplink] = []
        /// The next uplink starts fail with this error (nil: they run).
        var uplinkFailure: UplinkError?
        /// Every command run in the background (the endpoints' announcements).
        var detachedCommands: [[String]] = []
    }

    let state = Mutex(State())

    func with<T>(_ body: (inout State) -> T) -> T { state.withLock { body(&$0) } }

    var host: WorkerHost {
        WorkerHost(
            switches: FakeSwitchLauncher(lab: self),
            plugs: FakePlugLauncher(lab: self),
            uplinks: FakeUplinkLauncher(lab: self),
            taps: FakeTaps(lab: self),
            management: { _, _ in FakeManagement(lab: self) },
            sandboxFile: { key in self.with { $0.sandboxes[key] ?? .missing } },
            namespaceLinks: { key in self.with { $0.links[key] } ?? [] },
            openFrameSource: { namespace, macAddress in try self.openFrameSource(namespace, macAddress) },
            capturePluginPath: { FakeCapturePlugin.path },
            runDetached: { argv in self.with { $0.detachedCommands.append(argv) } })
    }

    var runningSwitch: FakeSwitch? { with { $0.switches.last { !$0.hasExited } } }
    var switchStarts: Int { with { $0.switchStartCount } }

    /// What a worker killed with -9 leaves: its switch and plugs run on, listed (as the pid
    /// files list them) for the next worker.
    func leaveRunning(_ plugs: [EndpointID: FakePlug]) {
        with { state in
            state.leftoverSwitch = state.switches.last { !$0.hasExited }
            state.leftoverPlugs = plugs
        }
    }
    var plugs: [FakePlug] { with { $0.plugs } }
    func plugs(onTap tap: TapName) -> [FakePlug] { plugs.filter { $0.location == .host(tapName: tap) } }

    func allocatePID() -> pid_t {
        with { state in
            defer { state.nextPID += 1 }
            return state.nextPID
        }
    }

    func releaseDeletions() {
        let held = with { state in
            state.holdDeletions = false
            defer { state.heldDeletions = [] }
            return state.heldDeletions
        }
        for waiter in held { waiter.resume() }
    }
}

/// A child of the fake lab (switch or plug): exits once, calling its handler.
class FakeChild: @unchecked Sendable {
    let pid: pid_t
    private let exitState = Mutex<(exited: Bool, handler: (@Sendable (ChildExit) -> Void)?, watched: Bool)>(
        (false, nil, true))

    init(pid: pid_t) { self.pid = pid }

    var hasExited: Bool { exitState.withLock { $0.exited } }
    /// False once the worker stopped watching it (a detach).
    var isWatched: Bool { exitState.withLock { $0.watched && $0.handler != nil } }

    func stopWatching() {
        exitState.withLock { state in
            state.watched = false
            state.handler = nil
        }
    }

    func onExit(_ handler: @escaping @Sendable (ChildExit) -> Void) {
        let already = exitState.withLock { state -> Bool in
            if state.exited { return true }
            state.watched = true
            state.handler = handler
            return false
        }
        if already { handler(ChildExit(status: nil, lastErrorLines: [])) }
    }

    /// Ends the child (a crash, or a stop); the exit handler runs once.
    func exit(reason: String = "killed") {
        let handler = exitState.withLock { state -> (@Sendable (ChildExit) -> Void)? in
            guard !state.exited else { return nil }
            state.exited = true
            defer { state.handler = nil }
            return state.handler
        }
        willExit()
        handler?(ChildExit(status: nil, lastErrorLines: [reason]))
    }

    func willExit() {}
}

final class FakeSwitch: FakeChild, RunningSwitch, @unchecked Sendable {
    let lab: FakeLab
    init(lab: FakeLab) {
        self.lab = lab
        super.init(pid: lab.allocatePID())
    }

    override func willExit() {
        // Its plugs lose their ports with it (real plugs exit too: see crashing the switch).
        lab.with { $0.ports = [:] }
    }

    func stop(logger: Logger) async { exit(reason: "stopped") }

    func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !hasExited, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(1)) }
        return hasExited
    }
}

struct FakeSwitchLauncher: SwitchLauncher {
    let lab: FakeLab

    func probe(ctlDir: String, timeout: Duration) async -> ProbeResult {
        lab.with { $0.probe }
    }

    func start(files: SwitchFiles, logger: Logger) async throws(SwitchError) -> any RunningSwitch {
        let process = FakeSwitch(lab: lab)
        lab.with {
            $0.switches.append(process)
            $0.switchStartCount += 1
        }
        return process
    }

    func adoptLeftover(files: SwitchFiles, logger: Logger) async -> (any RunningSwitch)? {
        let leftover = lab.with { state in
            defer { state.leftoverSwitch = nil }
            return state.leftoverSwitch
        }
        guard let leftover, !leftover.hasExited else { return nil }
        return leftover
    }
}

final class FakePlug: FakeChild, RunningPlug, @unchecked Sendable {
    let lab: FakeLab
    let location: PlugLocation
    let kind: PlugKind
    let managementSocket: String?
    private let watch = Mutex<(@Sendable () -> Void)?>(nil)
    /// What a wirefilter plug was started with, then every impairment applied live since.
    let impairments: Mutex<[LinkImpairment]>

    init(lab: FakeLab, location: PlugLocation, wirefilter: WirefilterSpec? = nil) {
        self.lab = lab
        self.location = location
        kind = wirefilter == nil ? .plug2tap : .wirefilter
        managementSocket = wirefilter?.managementSocket
        impairments = Mutex(wirefilter.map { [$0.impairment] } ?? [])
        super.init(pid: lab.allocatePID())
    }

    var switchPID: pid_t { pid }
    /// The settings the wirefilter has now.
    var impairment: LinkImpairment? { impairments.withLock { $0.last } }
    var liveChanges: Int { impairments.withLock { max($0.count - 1, 0) } }

    func apply(_ impairment: LinkImpairment) async throws(ManagementError) {
        guard kind == .wirefilter else { return }
        if lab.with({ $0.managementFails }) {
            throw ManagementError(socketPath: managementSocket ?? "?", reason: "is broken", console: .wirefilter)
        }
        impairments.withLock { $0.append(impairment) }
    }

    override func willExit() {
        let pid = self.pid
        lab.with { state in state.ports = state.ports.filter { $0.value != pid } }
    }

    func waitUntilAttached(ctlDir: String, management: (any SwitchManagement)?, timeout: Duration)
        async throws(PlugError) -> Int?
    {
        let pid = self.pid
        let outcome: Result<Int, PlugError> = lab.with { state in
            if let failure = state.plugFailure { return .failure(failure) }
            guard let port = (1...state.capacity).first(where: { state.ports[$0] == nil }) else {
                return .failure(.notAttached(pid: pid, ctlDir: ctlDir, waited: timeout, cause: nil))
            }
            state.ports[port] = pid
            return .success(port)
        }
        return try outcome.get()
    }

    func terminate(grace: Duration) async {
        stopWatchingTap()
        exit(reason: "terminated")
    }

    func tapAttachment() -> TapAttachment { lab.with { $0.tapAttachment } }

    func watchTap(onGone: @escaping @Sendable () -> Void) throws(TapWatch.Unavailable) {
        if lab.with({ $0.watchUnavailable }) {
            throw TapWatch.Unavailable(description: "pidfd_getfd: Function not implemented")
        }
        watch.withLock { $0 = onGone }
    }

    func stopWatchingTap() { watch.withLock { $0 = nil } }
    var isWatchingTap: Bool { watch.withLock { $0 != nil } }

    override func stopWatching() {
        stopWatchingTap()
        super.stopWatching()
    }

    /// What the kernel reports when the tap is deleted under the plug (the plug itself runs on).
    func vanishTap() {
        let onGone = watch.withLock { handler in
            defer { handler = nil }
            return handler
        }
        onGone?()
    }
}

struct FakePlugLauncher: PlugLauncher {
    let lab: FakeLab

    func start(ctlDir: String, location: PlugLocation, wirefilter: WirefilterSpec?, logger: Logger)
        async throws(PlugError) -> any RunningPlug
    {
        let plug = FakePlug(lab: lab, location: location, wirefilter: wirefilter)
        lab.with { $0.plugs.append(plug) }
        return plug
    }

    /// The leftover plugs of restored endpoints are adopted; the others are stopped.
    func adoptLeftovers(pidFiles: PlugPIDFiles, restoring: [EndpointSpec], paths: NetworkPaths, logger: Logger) async
        -> PlugPIDFiles.Leftovers
    {
        let leftovers = lab.with { state in
            defer { state.leftoverPlugs = [:] }
            return state.leftoverPlugs
        }
        let wanted = Set(restoring.map(\.endpointID))
        var found = PlugPIDFiles.Leftovers()
        for (id, plug) in leftovers.sorted(by: { $0.key < $1.key }) where !plug.hasExited {
            if wanted.contains(id) {
                found.adopted[id] = plug
            } else {
                plug.exit(reason: "stopped as a leftover")
                found.stopped.append(plug.pid)
            }
        }
        return found
    }
}

struct FakeTaps: TapHost {
    let lab: FakeLab

    func exists(_ name: TapName) -> Bool { lab.with { $0.taps[name] != nil } }
    func isTunTap(_ name: TapName) -> Bool { exists(name) }

    func existing(name: TapName, macAddress: MACAddress) -> Taps.Existing {
        guard let mac = lab.with({ $0.taps[name] }) else { return .none }
        return mac == macAddress ? .sameTap : .conflicting(reason: "has the MAC address \(mac), not \(macAddress)")
    }

    func create(name: TapName, macAddress: MACAddress, mtu: Int?) async throws(TapError) {
        lab.with { state in
            state.taps[name] = macAddress
            state.createdTaps.append(name)
        }
    }

    func delete(name: TapName) async throws(TapError) {
        let hold = lab.with { $0.holdDeletions }
        if hold {
            await withCheckedContinuation { continuation in
                let held = lab.with { state -> Bool in
                    guard state.holdDeletions else { return false }
                    state.heldDeletions.append(continuation)
                    return true
                }
                if !held { continuation.resume() }
            }
        }
        lab.with { state in
            state.taps[name] = nil
            state.deletedTaps.append(name)
        }
    }
}

struct FakeManagement: SwitchManagement {
    let lab: FakeLab

    func ports() async throws(ManagementError) -> [PortCounters] {
        lab.with { state in
            state.ports.sorted { $0.key < $1.key }.map {
                PortCounters(port: $0.key, peer: "vde_plug2tap: pid=\($0.value)", peerPID: $0.value)
            }
        }
    }

    func portEntries() async throws(ManagementError) -> [PortEntry] {
        try await ports().map {
            PortEntry(counters: $0, active: true, endpoints: [.init(id: 1, program: $0.peer, pid: $0.peerPID)])
        }
    }

    func closeEndpoint(port: Int, id: Int) async throws(ManagementError) {
        _ = lab.with { $0.ports.removeValue(forKey: port) }
    }

    func usablePorts() async throws(ManagementError) -> Int? {
        lab.with { state in
            state.usablePortsAsked += 1
            return state.capacity
        }
    }
}

/// A worker on a fake lab, in a scratch directory of its own, with every event it emits.
final class FakeWorkerFixture: Sendable {
    static let networkID: NetworkID = "0123456789abcdef000000000000000000000000000000000000000000000000"
    let lab: FakeLab
    let worker: Worker
    let directory: String
    private let events = EventLog()

    final class EventLog: Sendable {
        let messages = Mutex<[WorkerEvent]>([])
    }

    /// `lab`: another fixture's, for a worker that follows that fixture's worker.
    init(lab: FakeLab = FakeLab()) {
        self.lab = lab
        let temporary = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        guard let made = Self.makeScratchDirectory(temporary + "/vdenw-unit") else {
            preconditionFailure("mkdtemp: \(errno)")
        }
        directory = made
        let events = self.events
        var logger = Logger(label: "fake-worker")
        logger.logLevel = .critical
        worker = Worker(
            networkID: Self.networkID,
            executables: Executables(
                vdeSwitch: "/nonexistent/vde_switch", vdePlug2tap: "/nonexistent/vde_plug2tap",
                ip: "/nonexistent/ip", nsenter: "/nonexistent/nsenter", busybox: "/nonexistent/busybox"),
            logger: logger, host: lab.host, emit: { message in events.messages.withLock { $0.append(message) } })
    }

    /// The network's paths as the supervisor computes them, below the scratch directory.
    var paths: NetworkPaths {
        do {
            return try NetworkPaths(runDir: directory, network: Self.networkID, options: NetworkOptions())
        } catch {
            preconditionFailure("the fixture's paths break a rule: \(error)")
        }
    }

    var spec: SwitchSpec {
        do {
            return try SwitchSpec(paths: paths, mode: .own, group: nil, numPorts: lab.with { $0.capacity })
        } catch {
            preconditionFailure("the fixture's spec breaks a rule: \(error)")
        }
    }

    func endpoint(_ n: Int, sandboxKey: SandboxKey? = nil, link: LinkSettings? = nil) -> EndpointSpec {
        EndpointSpec(
            endpointID: EndpointID(stringLiteral: String(repeating: "e", count: 8) + String(n)),
            tapName: TapName(stringLiteral: "vdefake\(n)"),
            macAddress: MACAddress(stringLiteral: "02:00:00:00:00:0\(n)"),
            sandboxKey: sandboxKey, link: link)
    }

    var allEvents: [WorkerEvent] { events.messages.withLock { $0 } }

    /// Polls (every millisecond, for at most 5 s) until an event matches.
    func event(_ kind: WorkerEvent.Kind, where predicate: @escaping (WorkerEvent) -> Bool = { _ in true }) async throws
        -> WorkerEvent
    {
        let found = try await eventually("a \(kind.rawValue) event") {
            self.allEvents.first { $0.kind == kind && predicate($0) }
        }
        return found
    }

    func cleanUp() async {
        await worker.shutdown(reason: "test over")
        Self.removeTree(directory)
    }

    /// A test that failed before ``cleanUp()`` leaves no directory either.
    deinit { Self.removeTree(directory) }

    /// A new directory `<prefix>-XXXXXX` (mkdtemp); nil when it cannot be made.
    static func makeScratchDirectory(_ prefix: String) -> String? {
        var template = Array((prefix + "-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { $0.baseAddress.flatMap { mkdtemp($0) } }
        guard made != nil else { return nil }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes `path` and everything under it (no symlinks are followed).
    static func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR, let directory = opendir(path) {
            var names: [String] = []
            while let entry = readdir(directory) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(directory)
            for name in names { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}

struct NotYet: Error, CustomStringConvertible { var description: String }

/// Polls `condition` every millisecond until it gives a value; fails after `timeout`.
func eventually<T>(_ what: String, timeout: Duration = .seconds(5), _ condition: () async -> T?) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = await condition() { return value }
        guard ContinuousClock.now < deadline else { throw NotYet(description: "no \(what) within \(timeout)") }
        try await Task.sleep(for: .milliseconds(1))
    }
}

func eventually(_ what: String, timeout: Duration = .seconds(5), _ condition: () async -> Bool) async throws {
    _ = try await eventually(what, timeout: timeout) { await condition() ? true : nil }
}
