import Logging
import Shared
import Synchronization
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// ICMP echo every 10 ms from inside a namespace (bench/lib/recovery_probe.py: a fixed
/// schedule, every probe reported), counting the probes that got no reply.
final class Prober: @unchecked Sendable {
    let pid: pid_t
    let outputPath: String

    /// The prober of bench/recovery, from the checkout these tests were built from.
    static let script: String = {
        // <root>/Tests/NetworkerIntegrationTests/<this file>
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]) }
        return path + "/bench/lib/recovery_probe.py"
    }()

    init(_ scratch: Scratch, from namespace: String, to address: String) throws {
        outputPath = scratch.directory + "/probe-\(namespace).txt"
        let output = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { close(output) }
        guard Host.exists(Self.script), Host.exists("/usr/bin/python3"),
            let pid = Host.spawn(
                [Host.ip, "netns", "exec", namespace, "/usr/bin/python3", Self.script, address, "0.01"],
                stdout: output)
        else {
            throw HarnessError(
                "cannot run \(Self.script) with /usr/bin/python3 (scripts/install-deps installs python3)")
        }
        self.pid = pid
        scratch.trackProcess(pid)
    }

    /// The probes sent so far (answered or not).
    var sent: Int { lines().filter { $0.first == "S" || $0.first == "E" }.count }

    /// Stops probing and returns how many probes were sent and which got no reply. The last
    /// one sent is not counted: its reply may come after the prober stopped listening (it
    /// stops its receiver with its sender), as the acceptance tests' pinger allows too.
    func stop() async -> (sent: Int, lost: [Int]) {
        kill(pid, SIGINT)
        var status: Int32 = 0
        let deadline = ContinuousClock.now + .seconds(5)
        while waitpid(pid, &status, WNOHANG) == 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        var sent = Set<Int>()
        var answered = Set<Int>()
        for line in lines() {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let sequence = Int(fields[1]) else { continue }
            switch fields[0] {
            case "S", "E": sent.insert(sequence)
            case "R": answered.insert(sequence)
            default: break
            }
        }
        let last = sent.max()
        return (sent.count, sent.subtracting(answered).filter { $0 != last }.sorted())
    }

    private func lines() -> [Substring] { (FileRead.text(outputPath) ?? "").split(separator: "\n") }
}

/// Issue 11: the data path outlives the worker. A worker killed with -9 leaves its switch and
/// plugs running; the next worker adopts them (same pids) instead of starting anew; a pid file
/// whose pid now names another process is not adopted; `shutdown` still stops everything.
extension WorkerProcessTests {
    /// A stand-in for a VM: `vde_plug2tap -s CTL` started by hand inside `namespace` (QEMU's
    /// `-netdev vde` attaches the same way, through libvdeplug), on a tap it makes there.
    func startVMStandIn(_ scratch: Scratch, ctlDir: String, namespace: String, address: String) async throws -> pid_t {
        let pipe = Host.pipe()
        defer { close(pipe.read) }
        let pid = try #require(
            Host.spawn(
                [Host.ip, "netns", "exec", namespace, "vde_plug2tap", "-s", ctlDir, "vmtap"], stdin: pipe.read,
                stderr: -1))
        scratch.trackProcess(pid)
        #expect(await Host.eventually { Host.run([Host.ip, "-n", namespace, "link", "show", "vmtap"]).status == 0 })
        for argv in [
            [Host.ip, "-n", namespace, "addr", "add", address, "dev", "vmtap"],
            [Host.ip, "-n", namespace, "link", "set", "vmtap", "up"],
            [Host.ip, "-n", namespace, "link", "set", "lo", "up"],
        ] {
            let result = Host.run(argv)
            #expect(result.status == 0, "\(argv.joined(separator: " ")): \(result.output)")
        }
        return pid
    }

    @Test func killOfTheWorkerLosesNoProbeAndTheNextWorkerAdoptsSwitchAndPlugs() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try ownSpec(scratch, first)
        let switchPID = try #require(try await start(first, spec).switch?.pid)
        var container = endpoint(scratch, "a")
        let plugPID = try #require(try await add(first, container).plugPID)
        let nsContainer = scratch.namespace("c")
        moveIntoNamespace(tap: container.tapName, namespace: nsContainer, address: "10.99.11.1/24")
        container.sandboxKey = try SandboxKey("/run/netns/" + nsContainer)
        let joined = try await first.request(
            .joinEndpoint(endpointID: container.endpointID, sandboxKey: try #require(container.sandboxKey)))
        #expect(joined.ok == true)
        let nsVM = scratch.namespace("v")
        let vmPlug = try await startVMStandIn(
            scratch, ctlDir: spec.paths.ctlDir, namespace: nsVM, address: "10.99.11.2/24")
        #expect(await Host.ping(from: nsContainer, to: "10.99.11.2"))
        #expect(await Host.ping(from: nsVM, to: "10.99.11.1"))

        let fromContainer = try Prober(scratch, from: nsContainer, to: "10.99.11.2")
        let fromVM = try Prober(scratch, from: nsVM, to: "10.99.11.1")
        #expect(await Host.eventually { fromContainer.sent >= 50 && fromVM.sent >= 50 })
        first.signal(SIGKILL)
        #expect(await first.waitForExit() == 128 + SIGKILL)
        let afterKill = fromContainer.sent
        #expect(Host.isAlive(switchPID) && Host.isAlive(plugPID) && Host.isAlive(vmPlug))

        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        let started = try await start(second, spec, restoring: [container])
        #expect(started.switch?.pid == switchPID, "the new worker must adopt the running switch")
        #expect(started.switch?.owned == true)
        #expect(started.endpoints?.map(\.state) == [.plugged])
        #expect(started.endpoints?.first?.plugPID == plugPID, "the new worker must adopt the running plug")
        let report = try await status(second)
        #expect(report.switch?.pid == switchPID)
        #expect(report.endpoints?.first?.plugPID == plugPID)
        #expect(report.endpoints?.first?.counters != nil)
        #expect(report.otherPorts?.count == 1, "the VM stand-in's port: \(report.otherPorts ?? [])")
        // Probes go on through the kill and the adoption, and for a while after it.
        #expect(await Host.eventually(timeout: .seconds(10)) { fromContainer.sent >= afterKill + 200 })
        let containerProbes = await fromContainer.stop()
        let vmProbes = await fromVM.stop()
        #expect(containerProbes.sent >= 250 && vmProbes.sent >= 250)
        #expect(
            containerProbes.lost.isEmpty,
            "container -> VM: \(containerProbes.lost.count) of \(containerProbes.sent) lost: \(containerProbes.lost), the kill after \(afterKill)"
        )
        #expect(
            vmProbes.lost.isEmpty, "VM -> container: \(vmProbes.lost.count) of \(vmProbes.sent) lost: \(vmProbes.lost)")

        // The adopted plug is the new worker's: killed, it is restarted in the container.
        let mark = second.messageCount
        kill(plugPID, SIGKILL)
        let restarted = try await second.event(.childRestarted, after: mark) { $0.child == .plug }
        #expect(restarted.pid != plugPID)
        #expect(await Host.ping(from: nsContainer, to: "10.99.11.2"))

        // shutdown still stops everything and leaves nothing (the VM stand-in exits with its switch).
        try await shutDown(second, spec: spec)
        #expect(await Host.eventually { !Host.isAlive(switchPID) && !Host.isAlive(vmPlug) })
        #expect(!Host.exists(spec.paths.networkDir), "the network's run dir must go")
    }

    /// A pid file naming a pid that another process has now (same pid, another start time:
    /// the pid was recycled) proves nothing: that process is neither adopted nor stopped, and a
    /// new switch and plug are started.
    @Test func pidFilesNamingARecycledPidAreNotAdopted() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let worker = try startWorker(scratch)
        defer { worker.stop() }
        let spec = try ownSpec(scratch, worker)
        // A stand-in for a process that got the pid of the dead switch and plug.
        let bystander = try #require(Host.spawn(["sleep", "60"]))
        scratch.trackProcess(bystander)
        let startTime = try #require(ProcessIdentity.of(pid: bystander)?.startTime)
        let recycled = ProcessIdentity(pid: bystander, startTime: startTime + 7).fileText
        let restored = endpoint(scratch, "a")
        #expect(Host.run([Host.ip, "tuntap", "add", "dev", restored.tapName.rawValue, "mode", "tap"]).status == 0)
        #expect(
            Host.run([
                Host.ip, "link", "set", "dev", restored.tapName.rawValue, "address", restored.macAddress.rawValue,
            ])
            .status == 0)
        #expect(Host.run(["mkdir", "-p", spec.paths.plugsDir]).status == 0)
        let plugFile = spec.paths.plugsDir + "/\(restored.endpointID).pid"
        for path in [spec.paths.switchPIDFile, plugFile] {
            #expect(Host.run(["sh", "-c", "printf '%s' \"$0\" > \"$1\"", recycled, path]).status == 0)
        }

        let mark = worker.messageCount
        let started = try await start(worker, spec, restoring: [restored])
        let switchPID = try #require(started.switch?.pid)
        #expect(switchPID != bystander)
        #expect(started.endpoints?.map(\.state) == [.restarting], "nothing may be adopted")
        let plugged = try await worker.endpointStates([restored.endpointID], after: mark)[restored.endpointID]
        #expect(plugged?.state == .plugged)
        #expect(plugged?.pid != nil && plugged?.pid != bystander)
        #expect(Host.isAlive(bystander), "a pid file never stops a process it cannot prove is ours")
        #expect(FileRead.text(spec.paths.switchPIDFile)?.hasPrefix("\(switchPID) ") == true)
        #expect(FileRead.text(plugFile)?.hasPrefix("\(plugged?.pid ?? 0) ") == true)
        try await shutDown(worker, spec: spec)
        #expect(Host.isAlive(bystander))
        #expect(!Host.exists(spec.paths.networkDir))
    }

    /// `Worker.detach` with the real switch and plugs (a worker in this process): nothing is
    /// stopped, nothing watched any more (the switch's pidfd and the tap watch's duplicate of
    /// the plug's tun descriptor are closed), the pid files stay, and a worker process started
    /// next adopts it all.
    @Test func detachLeavesTheRealDataPathRunningForTheNextWorkerToAdopt() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let networkID = NetworkID(stringLiteral: "net" + Host.randomHex(12))
        let spec = try SwitchSpec(
            paths: try NetworkPaths(runDir: scratch.directory + "/run", network: networkID, options: NetworkOptions()),
            mode: .own, group: nil, numPorts: 4)
        var logger = Logger(label: "detach-test")
        logger.logLevel = .warning
        let worker = Worker(networkID: networkID, executables: .resolve(), logger: logger, emit: { _ in })
        let reply = try await worker.start(spec: spec, restoring: [])
        guard case .started(let status, _) = reply, let switchPID = status.pid else {
            Issue.record("start replied \(reply)")
            return
        }
        scratch.trackProcess(switchPID)
        let one = endpoint(scratch, "a")
        let plugPID = try #require(try await worker.addEndpoint(one).plugPID)
        scratch.trackProcess(plugPID)
        let descriptorsBefore = FileSystem.listDirectory("/proc/self/fd")?.count ?? 0

        await worker.detach(reason: "test")
        #expect(Host.isAlive(switchPID) && Host.isAlive(plugPID))
        // The switch's pidfd and the tap watch's duplicate are closed (the plug is this
        // process's child: its pidfd stays until it is reaped).
        let descriptorsAfter = FileSystem.listDirectory("/proc/self/fd")?.count ?? 0
        #expect(descriptorsAfter <= descriptorsBefore - 2, "\(descriptorsBefore) fds before, \(descriptorsAfter) after")
        #expect(FileRead.text(spec.paths.switchPIDFile)?.hasPrefix("\(switchPID) ") == true)
        #expect(FileRead.text(spec.paths.plugsDir + "/\(one.endpointID).pid")?.hasPrefix("\(plugPID) ") == true)

        let next = try WorkerHarness(
            networkID: networkID, runDir: scratch.directory + "/run", logPath: scratch.directory + "/worker.log")
        scratch.trackProcess(next.pid)
        defer { next.stop() }
        let started = try await start(next, spec, restoring: [one])
        #expect(started.switch?.pid == switchPID)
        #expect(started.endpoints?.first?.plugPID == plugPID && started.endpoints?.first?.state == .plugged)
        try await shutDown(next, spec: spec)
        #expect(await Host.eventually { !Host.isAlive(switchPID) && !Host.isAlive(plugPID) })
    }
}
