import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The built vde-networker with real vde_switch, vde_plug2tap, taps and network namespaces.
/// Needs root, vde2 and iproute2 (scripts/test installs them); without them the tests fail,
/// never skip. Traffic only flows between namespaces these tests create.
@Suite(.serialized)
struct WorkerProcessTests {
    @Test func hostHasWhatTheseTestsNeed() {
        #expect(Host.isRoot, "the worker tests need root: run them with scripts/test as root")
        #expect(Host.hasVDE, "vde2 or iproute2 is missing: run scripts/test, which installs them")
    }

    // MARK: Fixtures

    func startWorker(_ scratch: Scratch, networkID: NetworkID? = nil) throws -> WorkerHarness {
        let worker =
            try networkID.map {
                try WorkerHarness(
                    networkID: $0, runDir: scratch.directory + "/run", logPath: scratch.directory + "/worker.log")
            } ?? WorkerHarness(runDir: scratch.directory + "/run", logPath: scratch.directory + "/worker.log")
        scratch.trackProcess(worker.pid)
        return worker
    }

    /// The layout the supervisor uses for a switch of its own: `<run dir>/<short id>/{ctl,mgmt}`.
    func ownSpec(_ scratch: Scratch, _ worker: WorkerHarness, numPorts: Int = 4, mode: SwitchMode = .own) throws
        -> SwitchSpec
    {
        try SwitchSpec(paths: try paths(scratch, worker), mode: mode, group: nil, numPorts: numPorts)
    }

    /// The network's paths, as the supervisor computes them (`<run dir>/<short id>/{ctl,mgmt,...}`).
    func paths(_ scratch: Scratch, _ worker: WorkerHarness) throws -> NetworkPaths {
        try NetworkPaths(runDir: scratch.directory + "/run", network: worker.networkID, options: NetworkOptions())
    }

    func networkDir(_ scratch: Scratch, _ worker: WorkerHarness) throws -> String {
        try paths(scratch, worker).networkDir
    }

    func endpoint(_ scratch: Scratch, _ suffix: String) -> EndpointSpec {
        let id = EndpointID(stringLiteral: scratch.id + suffix + Host.randomHex(8))
        return EndpointSpec(endpointID: id, tapName: scratch.tapName(suffix), macAddress: MACAddress(derivedFrom: id))
    }

    /// What dockerd does after Join: move the tap into the namespace, rename it, address it, bring it up.
    func moveIntoNamespace(tap name: TapName, namespace: String, address: String) {
        let tap = name.rawValue
        for argv in [
            [Host.ip, "link", "set", tap, "netns", namespace],
            [Host.ip, "-n", namespace, "link", "set", tap, "name", "eth0"],
            [Host.ip, "-n", namespace, "addr", "add", address, "dev", "eth0"],
            [Host.ip, "-n", namespace, "link", "set", "eth0", "up"],
            [Host.ip, "-n", namespace, "link", "set", "lo", "up"],
        ] {
            let result = Host.run(argv)
            #expect(result.status == 0, "\(argv.joined(separator: " ")): \(result.output)")
        }
    }

    func add(_ worker: WorkerHarness, _ endpoint: EndpointSpec) async throws -> EndpointStatus {
        let reply = try await worker.request(.addEndpoint(endpoint: endpoint))
        #expect(reply.ok == true, "addEndpoint: \(reply.error?.message ?? "")")
        return try #require(reply.result?.endpoint)
    }

    func start(_ worker: WorkerHarness, _ spec: SwitchSpec, restoring: [EndpointSpec]? = nil) async throws
        -> ReplyFields
    {
        let reply = try await worker.request(.start(switch: spec, restore: restoring ?? []))
        #expect(reply.ok == true, "start: \(reply.error?.message ?? "")\n\(worker.logTail())")
        return try #require(reply.result)
    }

    func status(_ worker: WorkerHarness) async throws -> ReplyFields {
        let reply = try await worker.request(.status)
        #expect(reply.ok == true)
        return try #require(reply.result)
    }

    /// Shuts the worker down and checks that nothing of its switch is left.
    func shutDown(_ worker: WorkerHarness, spec: SwitchSpec, expectOwnedGone: Bool = true) async throws {
        let reply = try await worker.request(.shutdown)
        #expect(reply.ok == true)
        #expect(await worker.waitForExit() == 0)
        if expectOwnedGone {
            #expect(await Host.eventually { Host.processes(commandLineContaining: spec.paths.ctlDir).isEmpty })
            #expect(
                !Host.exists(spec.paths.ctlDir),
                "left: \(FileSystem.listDirectory(spec.paths.ctlDir) ?? [])\n\(worker.logTail())")
            #expect(!Host.exists(spec.paths.managementSocket ?? "/nonexistent"))
        }
        #expect(worker.nonProtocolLines.isEmpty, "stdout carried non-protocol lines: \(worker.nonProtocolLines)")
    }

    /// A vde_switch the test runs itself (an "external" switch), with its stdin pipe held here.
    struct TestSwitch {
        let pid: pid_t
        let stdin: Int32
        let ctlDir: String
        let managementSocket: String

        func stop() {
            close(stdin)
            var status: Int32 = 0
            for _ in 0..<200 {
                if waitpid(pid, &status, WNOHANG) == pid { return }
                usleep(10_000)
            }
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
    }

    func startTestSwitch(_ scratch: Scratch, ports: Int = 8) async throws -> TestSwitch {
        let ctlDir = scratch.directory + "/ext/ctl"
        let management = scratch.directory + "/ext/mgmt"
        mkdir(scratch.directory + "/ext", 0o755)
        let pipe = Host.pipe()
        let pid = try #require(
            Host.spawn(
                ["vde_switch", "-s", ctlDir, "-M", management, "-n", String(ports)], stdin: pipe.read, stderr: -1))
        close(pipe.read)
        scratch.trackProcess(pid)
        #expect(await Host.eventually { Host.exists(ctlDir + "/ctl") && Host.exists(management) })
        return TestSwitch(pid: pid, stdin: pipe.write, ctlDir: ctlDir, managementSocket: management)
    }

    // MARK: Tests

    @Test func pingBetweenTwoEndpointsAndCountersAndShutdown() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)

        let started = try await start(worker, spec)
        #expect(worker.allMessages.first?.event?.kind == .hello)
        #expect(worker.allMessages.first?.event?.pid == worker.pid)
        #expect(started.switch?.owned == true)
        let switchPID = try #require(started.switch?.pid)
        #expect(Host.isAlive(switchPID))
        #expect(Host.exists(spec.paths.ctlDir) && Host.exists(spec.paths.managementSocket!))

        let one = endpoint(scratch, "a")
        let two = endpoint(scratch, "b")
        let first = try await add(worker, one)
        let second = try await add(worker, two)
        #expect(first.state == .plugged && second.state == .plugged)
        #expect(first.port != nil && second.port != nil && first.port != second.port)
        #expect(FileRead.text("/sys/class/net/\(one.tapName)/address")?.hasPrefix(one.macAddress.rawValue) == true)

        // Adding again is idempotent.
        let again = try await add(worker, one)
        #expect(again.plugPID == first.plugPID)

        let ns1 = scratch.namespace("1")
        let ns2 = scratch.namespace("2")
        moveIntoNamespace(tap: one.tapName, namespace: ns1, address: "10.99.1.1/24")
        moveIntoNamespace(tap: two.tapName, namespace: ns2, address: "10.99.1.2/24")
        #expect(
            try await worker.request(
                .joinEndpoint(endpointID: one.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns1))
            ).ok == true)
        #expect(
            try await worker.request(
                .joinEndpoint(endpointID: two.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns2))
            ).ok == true)
        #expect(await Host.ping(from: ns1, to: "10.99.1.2"))

        let report = try await status(worker)
        let endpoints = try #require(report.endpoints)
        #expect(endpoints.count == 2)
        for status in endpoints {
            let counters = try #require(status.counters, "no counters for \(status.endpointID)")
            #expect(counters.inPackets > 0 && counters.outPackets > 0)
            #expect(counters.peerPID == status.plugPID)
        }
        #expect(report.otherPorts == [])

        try await shutDown(worker, spec: spec)
        #expect(!Host.isAlive(switchPID))
        #expect(!Host.exists(spec.paths.networkDir), "the network run dir should be removed")
    }

    @Test func switchAndPlugsAreRestartedAfterKill() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        let started = try await start(worker, spec)
        let oldSwitch = try #require(started.switch?.pid)

        let one = endpoint(scratch, "a")
        let two = endpoint(scratch, "b")
        _ = try await add(worker, one)
        _ = try await add(worker, two)
        let ns1 = scratch.namespace("1")
        let ns2 = scratch.namespace("2")
        moveIntoNamespace(tap: one.tapName, namespace: ns1, address: "10.99.2.1/24")
        moveIntoNamespace(tap: two.tapName, namespace: ns2, address: "10.99.2.2/24")
        _ = try await worker.request(
            .joinEndpoint(endpointID: one.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns1)))
        _ = try await worker.request(
            .joinEndpoint(endpointID: two.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns2)))
        #expect(await Host.ping(from: ns1, to: "10.99.2.2"))

        // The switch dies: the worker reports it, starts a new one and re-attaches both plugs.
        var mark = worker.messageCount
        kill(oldSwitch, SIGKILL)
        let exited = try await worker.event(.childExited, after: mark) { $0.child == .switch }
        #expect(exited.pid == oldSwitch)
        let restarted = try await worker.event(.childRestarted, after: mark) { $0.child == .switch }
        #expect(restarted.pid != oldSwitch)
        #expect(await Host.ping(from: ns1, to: "10.99.2.2"))
        let afterSwitch = try await status(worker)
        #expect(afterSwitch.switch?.pid == restarted.pid)
        #expect(afterSwitch.endpoints?.isEmpty == false)
        #expect(afterSwitch.endpoints?.allSatisfy { $0.state == .plugged } == true)

        // A plug dies: it is restarted inside the container's namespace, where its tap is now.
        let oldPlug = try #require(afterSwitch.endpoints?.first { $0.endpointID == one.endpointID }?.plugPID)
        mark = worker.messageCount
        kill(oldPlug, SIGKILL)
        let plugExited = try await worker.event(.childExited, after: mark) { $0.child == .plug }
        #expect(plugExited.endpointID == one.endpointID)
        let plugRestarted = try await worker.event(.childRestarted, after: mark) { $0.child == .plug }
        let newPlug = try #require(plugRestarted.pid)
        #expect(newPlug != oldPlug)
        let commandLine =
            FileRead.bytes("/proc/\(newPlug)/cmdline").map {
                String(decoding: $0.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            } ?? ""
        #expect(commandLine.contains("vde_plug2tap") && commandLine.contains(" eth0"), "cmdline: \(commandLine)")
        #expect(await Host.ping(from: ns2, to: "10.99.2.1"))

        try await shutDown(worker, spec: spec)
    }

    /// `docker restart`: Leave (dockerd moves the tap back to the host), then Join again.
    @Test func leaveThenJoinAgainPlugsTheTapAgain() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        let one = endpoint(scratch, "a")
        let two = endpoint(scratch, "b")
        let firstPlug = try #require(try await add(worker, one).plugPID)
        _ = try await add(worker, two)
        let ns1 = scratch.namespace("1")
        let ns2 = scratch.namespace("2")
        _ = try await worker.request(
            .joinEndpoint(endpointID: one.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns1)))
        moveIntoNamespace(tap: one.tapName, namespace: ns1, address: "10.99.5.1/24")
        _ = try await worker.request(
            .joinEndpoint(endpointID: two.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns2)))
        moveIntoNamespace(tap: two.tapName, namespace: ns2, address: "10.99.5.2/24")
        #expect(await Host.ping(from: ns1, to: "10.99.5.2"))

        let left = try await worker.request(.leaveEndpoint(endpointID: one.endpointID))
        #expect(left.result?.endpoint?.state == .unplugged)
        #expect(left.result?.endpoint?.plugPID == nil)
        #expect(await Host.eventually { !Host.isAlive(firstPlug) })
        // What dockerd does when the container stops: the tap goes back to the host, under its name.
        #expect(Host.run([Host.ip, "-n", ns1, "link", "set", "eth0", "down"]).status == 0)
        #expect(Host.run([Host.ip, "-n", ns1, "link", "set", "eth0", "name", one.tapName.rawValue]).status == 0)
        #expect(Host.run([Host.ip, "-n", ns1, "link", "set", one.tapName.rawValue, "netns", "1"]).status == 0)

        let ns3 = scratch.namespace("3")
        let joined = try await worker.request(
            .joinEndpoint(endpointID: one.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns3)))
        #expect(joined.result?.endpoint?.state == .plugged)
        let secondPlug = try #require(joined.result?.endpoint?.plugPID)
        #expect(secondPlug != firstPlug)
        moveIntoNamespace(tap: one.tapName, namespace: ns3, address: "10.99.5.1/24")
        #expect(await Host.ping(from: ns3, to: "10.99.5.2"))
        try await shutDown(worker, spec: spec)
    }

    @Test func vanishedTapStopsItsPlug() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)

        // In a container namespace that is then deleted.
        let joined = endpoint(scratch, "a")
        let joinedPlug = try #require(try await add(worker, joined).plugPID)
        let ns = scratch.namespace("1")
        moveIntoNamespace(tap: joined.tapName, namespace: ns, address: "10.99.3.1/24")
        _ = try await worker.request(
            .joinEndpoint(endpointID: joined.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns)))
        var mark = worker.messageCount
        #expect(Host.run([Host.ip, "netns", "del", ns]).status == 0)
        let gone = try await worker.event(.tapGone, after: mark) { $0.endpointID == joined.endpointID }
        #expect(gone.pid == joinedPlug)
        #expect(await Host.eventually { !Host.isAlive(joinedPlug) })

        // In the host namespace, deleted by someone else.
        let host = endpoint(scratch, "b")
        let hostPlug = try #require(try await add(worker, host).plugPID)
        mark = worker.messageCount
        #expect(Host.run([Host.ip, "link", "del", host.tapName.rawValue]).status == 0)
        _ = try await worker.event(.tapGone, after: mark) { $0.endpointID == host.endpointID }
        #expect(await Host.eventually { !Host.isAlive(hostPlug) })

        let report = try await status(worker)
        #expect(report.endpoints?.isEmpty == false)
        #expect(report.endpoints?.allSatisfy { $0.state == .tapGone && $0.plugPID == nil } == true)
        // No restart attempts for a gone tap.
        #expect(!worker.allMessages.contains { $0.event?.kind == .childRestarted })

        // Told by the kernel (TapWatch), not found by the fallback poll.
        #expect(!(FileRead.text(worker.logPath) ?? "").contains("cannot watch the tap"))

        // Removing them is still fine.
        #expect(try await worker.request(.removeEndpoint(endpointID: joined.endpointID)).ok == true)
        #expect(try await worker.request(.removeEndpoint(endpointID: host.endpointID)).ok == true)
        try await shutDown(worker, spec: spec)
    }

    @Test func fullSwitchRefusesAnotherEndpointAndLeavesNoTap() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker, numPorts: 1)
        let started = try await start(worker, spec)
        #expect(started.switch?.numPorts == 1)

        let one = endpoint(scratch, "a")
        _ = try await add(worker, one)
        let two = endpoint(scratch, "b")
        let reply = try await worker.request(.addEndpoint(endpoint: two))
        #expect(reply.ok == false)
        #expect(reply.error?.code == .exhausted)
        #expect(reply.error?.message.contains("all 1 ports") == true)
        #expect(reply.error?.message.contains("num_switchports") == true)
        #expect(!Host.exists("/sys/class/net/\(two.tapName)"))

        // Leave frees the port; remove deletes the tap and is idempotent.
        let left = try await worker.request(.leaveEndpoint(endpointID: one.endpointID))
        #expect(left.result?.endpoint?.state == .unplugged)
        #expect(try await worker.request(.removeEndpoint(endpointID: one.endpointID)).ok == true)
        // The tap goes in the background, after the reply.
        #expect(await Host.eventually { !Host.exists("/sys/class/net/\(one.tapName)") })
        #expect(try await worker.request(.removeEndpoint(endpointID: one.endpointID)).ok == true)
        #expect(try await worker.request(.leaveEndpoint(endpointID: one.endpointID)).error?.code == .notFound)

        _ = try await add(worker, two)
        try await shutDown(worker, spec: spec)
    }

    @Test func switchThatCannotStartIsReportedWithItsReason() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        var spec = try ownSpec(scratch, worker)
        spec.group = GroupName(stringLiteral: "vdenwnogroup" + scratch.id)
        let reply = try await worker.request(.start(switch: spec))
        #expect(reply.ok == false)
        #expect(reply.error?.code == .system)
        #expect(reply.error?.message.contains("exited with status") == true)
        #expect(reply.error?.message.contains("No such group") == true, "message: \(reply.error?.message ?? "")")
        try await shutDown(worker, spec: spec)
        #expect(!Host.exists(try networkDir(scratch, worker)))
    }

    @Test func tapNameTakenByAnotherInterfaceIsAConflict() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        let one = endpoint(scratch, "a")
        #expect(Host.run([Host.ip, "tuntap", "add", "dev", one.tapName.rawValue, "mode", "tap"]).status == 0)
        #expect(
            Host.run([Host.ip, "link", "set", "dev", one.tapName.rawValue, "address", "02:00:00:00:00:99"]).status == 0)
        let reply = try await worker.request(.addEndpoint(endpoint: one))
        #expect(reply.error?.code == .conflict)
        #expect(reply.error?.message.contains("02:00:00:00:00:99") == true)
        // Not ours: left alone.
        #expect(Host.exists("/sys/class/net/\(one.tapName)"))

        // A tap with the right MAC (left by an earlier attempt) is reused.
        #expect(
            Host.run([Host.ip, "link", "set", "dev", one.tapName.rawValue, "address", one.macAddress.rawValue]).status
                == 0)
        #expect(try await add(worker, one).state == .plugged)
        try await shutDown(worker, spec: spec)
    }

    @Test func externalSwitchWithoutManagementSocketThatIsFull() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let external = try await startTestSwitch(scratch, ports: 2)
        defer { external.stop() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, worker), ctlDir: external.ctlDir, managementSocket: nil,
            mode: .external, group: nil, numPorts: 1)
        let started = try await start(worker, spec)
        #expect(started.switch?.owned == false)
        _ = try await add(worker, endpoint(scratch, "a"))
        let two = endpoint(scratch, "b")
        let reply = try await worker.request(.addEndpoint(endpoint: two))
        #expect(reply.error?.code == .exhausted, "message: \(reply.error?.message ?? "")")
        #expect(!Host.exists("/sys/class/net/\(two.tapName)"))
        try await shutDown(worker, spec: spec, expectOwnedGone: false)
    }

    @Test func externalModeWithoutSwitchFailsClearly() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, worker), ctlDir: scratch.directory + "/nothing/ctl",
            managementSocket: nil, mode: .external, group: nil, numPorts: 8)
        let reply = try await worker.request(.start(switch: spec))
        #expect(reply.ok == false)
        #expect(reply.error?.code == .unavailable)
        #expect(reply.error?.message.contains("no VDE switch answers at \(spec.paths.ctlDir)") == true)
        #expect(reply.error?.message.contains("create_sockets=true") == true)
        #expect(!Host.exists(scratch.directory + "/nothing"))
        #expect(try await worker.request(.ping).ok == true)
        try await shutDown(worker, spec: spec, expectOwnedGone: false)
    }

    @Test func useOrCreateUsesARunningSwitchAndLeavesItRunning() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let external = try await startTestSwitch(scratch)
        defer { external.stop() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }

        // `own` refuses a ctl dir where a switch answers.
        let own = try SwitchSpec(
            networkDir: try networkDir(scratch, worker), ctlDir: external.ctlDir,
            managementSocket: scratch.directory + "/own-mgmt", mode: .own, group: nil, numPorts: 4)
        let refused = try await worker.request(.start(switch: own))
        #expect(refused.ok == false)
        #expect(refused.error?.code == .conflict)
        #expect(refused.error?.message.contains("already answers") == true)

        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, worker), ctlDir: external.ctlDir,
            managementSocket: external.managementSocket, mode: .useOrCreate, group: nil, numPorts: 4)
        let started = try await start(worker, spec)
        #expect(started.switch?.owned == false)
        #expect(started.switch?.pid == nil)
        #expect(started.switch?.numPorts == 7)
        let one = endpoint(scratch, "a")
        let plug = try #require(try await add(worker, one).plugPID)

        try await shutDown(worker, spec: spec, expectOwnedGone: false)
        #expect(Host.isAlive(external.pid))
        #expect(Host.exists(external.ctlDir + "/ctl"))
        #expect(await Host.eventually { !Host.isAlive(plug) })
    }

    @Test func useOrCreateStartsASwitchWhenNoneAnswers() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        // A user's socket_dir with create_sockets=true, here without a management socket.
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, worker), ctlDir: scratch.directory + "/user/switch",
            managementSocket: nil, mode: .useOrCreate, group: nil, numPorts: 2)
        let started = try await start(worker, spec)
        #expect(started.switch?.owned == true)
        let switchPID = try #require(started.switch?.pid)
        let one = try await add(worker, endpoint(scratch, "a"))
        #expect(one.state == .plugged && one.port == nil)
        try await shutDown(worker, spec: spec)
        #expect(!Host.isAlive(switchPID))
        #expect(!Host.exists(scratch.directory + "/user"), "the directory the worker created should be gone")
    }

    // The end of input and SIGTERM: WorkerLinkTests.swift.

    /// DeleteEndpoint is answered before the tap is gone; a shutdown right after still waits for
    /// the deletion, and leaves neither the tap nor its marker.
    @Test func removedTapsGoInTheBackgroundAndShutdownWaitsForThem() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        _ = try await start(worker, spec)
        let endpoints = [endpoint(scratch, "a"), endpoint(scratch, "b"), endpoint(scratch, "c")]
        for one in endpoints { _ = try await add(worker, one) }
        for one in endpoints {
            #expect(try await worker.request(.removeEndpoint(endpointID: one.endpointID)).ok == true)
        }
        // Added again at once: the new tap must not be deleted by the old endpoint's deletion.
        let again = endpoints[0]
        #expect(try await add(worker, again).state == .plugged)
        #expect(Host.exists("/sys/class/net/\(again.tapName)"))
        #expect(try await worker.request(.removeEndpoint(endpointID: again.endpointID)).ok == true)

        let markers = spec.paths.deletingDir
        try await shutDown(worker, spec: spec)
        for one in endpoints {
            #expect(!Host.exists("/sys/class/net/\(one.tapName)"), "tap \(one.tapName) left behind")
        }
        #expect(!Host.exists(markers))
    }

    /// A worker that died between a DeleteEndpoint reply and the tap's deletion left a marker: the
    /// next worker deletes that tap, but not the tap of an endpoint it restores.
    @Test func nextWorkerDeletesTapsMarkedByADeadOne() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        let markers = spec.paths.deletingDir
        let orphan = endpoint(scratch, "a")
        let kept = endpoint(scratch, "b")
        for one in [orphan, kept] {
            #expect(Host.run([Host.ip, "tuntap", "add", "dev", one.tapName.rawValue, "mode", "tap"]).status == 0)
            #expect(
                Host.run([Host.ip, "link", "set", "dev", one.tapName.rawValue, "address", one.macAddress.rawValue])
                    .status == 0)
        }
        #expect(Host.run(["mkdir", "-p", markers]).status == 0)
        #expect(
            Host.run(["touch", markers + "/" + orphan.tapName.rawValue, markers + "/" + kept.tapName.rawValue]).status
                == 0)

        let mark = worker.messageCount
        let started = try await start(worker, spec, restoring: [kept])
        #expect(started.endpoints?.map(\.state) == [.restarting])
        #expect(try await worker.endpointStates([kept.endpointID], after: mark)[kept.endpointID]?.state == .plugged)
        #expect(!Host.exists("/sys/class/net/\(orphan.tapName)"))
        #expect(Host.exists("/sys/class/net/\(kept.tapName)"))
        #expect(!Host.exists("\(markers)/\(orphan.tapName)") && !Host.exists("\(markers)/\(kept.tapName)"))
        try await shutDown(worker, spec: spec)
    }

    /// On an external switch too, the plugs a killed worker left run on: the next worker
    /// adopts those of the endpoints it restores (same pids), and stops the plug of an endpoint
    /// that is no longer recorded.
    @Test func newWorkerAdoptsThePlugsItRestoresAndStopsTheOthers() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let external = try await startTestSwitch(scratch)
        defer { external.stop() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, first), ctlDir: external.ctlDir,
            managementSocket: external.managementSocket,
            mode: .external, group: nil, numPorts: 7)
        _ = try await start(first, spec)
        let inHost = endpoint(scratch, "a")
        let inSandbox = endpoint(scratch, "b")
        let forgotten = endpoint(scratch, "d")
        let hostPlug = try #require(try await add(first, inHost).plugPID)
        let sandboxPlug = try #require(try await add(first, inSandbox).plugPID)
        let forgottenPlug = try #require(try await add(first, forgotten).plugPID)
        let ns = scratch.namespace("1")
        moveIntoNamespace(tap: inSandbox.tapName, namespace: ns, address: "10.99.4.1/24")
        _ = try await first.request(
            .joinEndpoint(endpointID: inSandbox.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns)))

        first.signal(SIGKILL)
        _ = await first.waitForExit()
        let pidDir = try paths(scratch, first).plugsDir
        #expect(Host.isAlive(hostPlug) && Host.isAlive(sandboxPlug) && Host.isAlive(forgottenPlug))
        #expect(Host.exists("\(pidDir)/\(inHost.endpointID).pid"))

        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        var restoredSandbox = inSandbox
        restoredSandbox.sandboxKey = SandboxKey(stringLiteral: "/run/netns/" + ns)
        let gone = endpoint(scratch, "c")
        let mark = second.messageCount
        let started = try await start(second, spec, restoring: [inHost, restoredSandbox, gone])
        #expect(Host.isAlive(hostPlug) && Host.isAlive(sandboxPlug))
        #expect(!Host.isAlive(forgottenPlug), "the plug of an endpoint not restored must be stopped")
        #expect(!Host.exists("\(pidDir)/\(forgotten.endpointID).pid"))
        let byID = Dictionary(uniqueKeysWithValues: (started.endpoints ?? []).map { ($0.endpointID, $0) })
        #expect(byID[inHost.endpointID]?.state == .plugged && byID[inHost.endpointID]?.plugPID == hostPlug)
        #expect(byID[inSandbox.endpointID]?.state == .plugged && byID[inSandbox.endpointID]?.plugPID == sandboxPlug)
        #expect(byID[gone.endpointID]?.state == .restarting)
        let outcomes = try await second.endpointStates([gone.endpointID], after: mark)
        #expect(outcomes[gone.endpointID]?.state == .tapGone)
        let report = try await status(second)
        #expect(report.endpoints?.filter { $0.counters != nil }.count == 2)

        // Adopted plugs are watched like started ones: a tap deleted under one stops it.
        let hostMark = second.messageCount
        #expect(Host.run([Host.ip, "link", "del", inHost.tapName.rawValue]).status == 0)
        let tapGone = try await second.event(.tapGone, after: hostMark)
        #expect(tapGone.pid == hostPlug)
        #expect(await Host.eventually { !Host.isAlive(hostPlug) })

        try await shutDown(second, spec: spec, expectOwnedGone: false)
        #expect(Host.isAlive(external.pid))
        #expect(await Host.eventually { !Host.isAlive(sandboxPlug) })
        #expect(!Host.exists(pidDir))
    }

    @Test func pingAndStatusAnswerWhileAnAddWaitsOnAHungSwitch() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let external = try await startTestSwitch(scratch)
        defer {
            kill(external.pid, SIGCONT)
            external.stop()
        }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, worker), ctlDir: external.ctlDir,
            managementSocket: external.managementSocket, mode: .external, group: nil, numPorts: 7)
        _ = try await start(worker, spec)

        kill(external.pid, SIGSTOP)
        let slow = endpoint(scratch, "a")
        let addRequest = WorkerRequest(id: 1000, .addEndpoint(endpoint: slow))
        worker.writeLine(try JSONCoding.string(addRequest))
        let began = ContinuousClock.now
        #expect(try await worker.request(.ping, timeout: .seconds(1)).ok == true)
        let report = try await worker.request(.status, timeout: .seconds(2))
        #expect(report.ok == true)
        #expect(ContinuousClock.now - began < .milliseconds(1500))
        let pending = try #require(report.result?.endpoints, "status must list the endpoints even while an add hangs")
        #expect(pending.allSatisfy { $0.counters == nil })

        let added = try await worker.reply(to: 1000)
        #expect(added.ok == false, "an add on a hung switch must not pass")
        #expect(!Host.exists("/sys/class/net/\(slow.tapName)"))
        kill(external.pid, SIGCONT)
        _ = try await add(worker, endpoint(scratch, "b"))
        try await shutDown(worker, spec: spec, expectOwnedGone: false)
    }

    @Test func badLinesAreAnsweredOrLoggedAndServingGoesOn() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }

        worker.writeLine("this is not json")
        worker.writeLine(#"{"v":4,"id":900,"command":{"frobnicate":{}}}"#)
        worker.writeLine(#"{"v":4,"id":901}"#)
        worker.writeLine(#"{"v":7,"id":902,"command":{"ping":{}}}"#)
        // A command without a field it needs: the reply names the field.
        worker.writeLine(#"{"v":4,"id":903,"command":{"addEndpoint":{}}}"#)
        worker.writeLine(String(repeating: "x", count: WorkerProtocol.maxLineBytes + 10))
        worker.writeLine("")
        let unknown = try await worker.reply(to: 900)
        #expect(unknown.ok == false && unknown.error?.code == .invalidArgument)
        #expect(unknown.error?.message.contains("frobnicate") == true)
        #expect(try await worker.reply(to: 901).error?.code == .invalidArgument)
        #expect(try await worker.reply(to: 902).error?.message.contains("version 7") == true)
        let missing = try await worker.reply(to: 903)
        #expect(missing.error?.code == .invalidArgument)
        #expect(missing.error?.message.contains("'endpoint'") == true, "\(missing.error?.message ?? "")")
        #expect(try await worker.request(.addEndpoint(endpoint: endpoint(scratch, "a"))).error?.code == .unavailable)
        #expect(try await worker.request(.ping).ok == true)
        #expect(worker.logTail(lines: 200).contains("dropped a line of"))

        let spec = try ownSpec(scratch, worker)
        try await shutDown(worker, spec: spec)
    }
}
