import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// Restore after a worker restart: present / gone / unknown with real namespaces, a large
/// network, and the taps of unfinished adds.
extension WorkerProcessTests {
    /// An endpoint that joined the namespace `ns` (its tap moved there as dockerd does).
    func joinedEndpoint(
        _ scratch: Scratch, _ worker: WorkerHarness, suffix: String, namespace ns: String,
        address: String
    ) async throws -> EndpointSpec {
        var one = endpoint(scratch, suffix)
        _ = try await add(worker, one)
        moveIntoNamespace(tap: one.tapName, namespace: ns, address: address)
        let reply = try await worker.request(
            .joinEndpoint(endpointID: one.endpointID, sandboxKey: try SandboxKey("/run/netns/" + ns)))
        #expect(reply.ok == true)
        one.sandboxKey = SandboxKey(stringLiteral: "/run/netns/" + ns)
        return one
    }

    /// Positive evidence only: a sandbox key that no longer exists, and one that is no namespace
    /// any more (what dockerd leaves when it unmounted it), are gone at once, with no plug
    /// started, and a tap dockerd moved back to the host is deleted.
    @Test func restoreFindsRemovedContainersGoneWithoutPluggingThem() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let external = try await startTestSwitch(scratch)
        defer { external.stop() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, first), ctlDir: external.ctlDir,
            managementSocket: external.managementSocket, mode: .external, group: nil, numPorts: 7)
        _ = try await start(first, spec)
        let nsMissing = scratch.namespace("m")
        let nsUnmounted = scratch.namespace("u")
        let nsAlive = scratch.namespace("a")
        let missing = try await joinedEndpoint(
            scratch, first, suffix: "m", namespace: nsMissing, address: "10.99.6.1/24")
        var unmounted = try await joinedEndpoint(
            scratch, first, suffix: "u", namespace: nsUnmounted, address: "10.99.6.2/24")
        let alive = try await joinedEndpoint(scratch, first, suffix: "a", namespace: nsAlive, address: "10.99.6.3/24")
        first.signal(SIGKILL)
        _ = await first.waitForExit()

        // What dockerd does when the containers are removed while nobody listens: the taps go
        // back to the host, and the namespace files go (or stay behind, unmounted).
        for (one, ns) in [(missing, nsMissing), (unmounted, nsUnmounted)] {
            #expect(Host.run([Host.ip, "-n", ns, "link", "set", "eth0", "down"]).status == 0)
            #expect(Host.run([Host.ip, "-n", ns, "link", "set", "eth0", "name", one.tapName.rawValue]).status == 0)
            #expect(Host.run([Host.ip, "-n", ns, "link", "set", one.tapName.rawValue, "netns", "1"]).status == 0)
        }
        #expect(Host.run([Host.ip, "netns", "del", nsMissing]).status == 0)
        let deadFile = scratch.directory + "/unmounted-netns"
        #expect(Host.run(["touch", deadFile]).status == 0)
        unmounted.sandboxKey = SandboxKey(stringLiteral: deadFile)
        #expect(Host.exists("/sys/class/net/\(missing.tapName)") && Host.exists("/sys/class/net/\(unmounted.tapName)"))

        let logBefore = (FileRead.text(first.logPath) ?? "").utf8.count
        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        let mark = second.messageCount
        let started = try await start(second, spec, restoring: [missing, unmounted, alive])
        // The live container's plug ran on: it is adopted, and so `plugged` at once.
        #expect(started.endpoints?.first { $0.endpointID == alive.endpointID }?.state == .plugged)
        let outcomes = try await second.endpointStates([missing, unmounted].map(\.endpointID), after: mark)
        #expect(outcomes[missing.endpointID]?.state == .tapGone)
        #expect(outcomes[missing.endpointID]?.detail?.contains("no longer exists") == true)
        #expect(outcomes[unmounted.endpointID]?.state == .tapGone)
        #expect(outcomes[unmounted.endpointID]?.detail?.contains("no network namespace") == true)
        #expect(
            await Host.eventually {
                !Host.exists("/sys/class/net/\(missing.tapName)") && !Host.exists("/sys/class/net/\(unmounted.tapName)")
            })
        // No plug was ever started on the taps of the removed containers (the check sees the
        // one adopted for the live container); their old plugs were stopped, not adopted.
        // The second worker's lines only (both write to the same file).
        let log = String(
            decoding: Array((FileRead.text(second.logPath) ?? "").utf8.dropFirst(logBefore)), as: UTF8.self)
        #expect(
            log.split(separator: "\n").contains {
                $0.contains("adopted the running plug") && $0.contains(alive.endpointID.rawValue)
            })
        for gone in [missing, unmounted] {
            #expect(
                !log.split(separator: "\n").contains {
                    $0.contains("plug started") && $0.contains(gone.endpointID.rawValue)
                },
                "a plug was started for \(gone.endpointID)")
            // (`ip link del TAP` of the background deletion may still run.)
            let plugs = Host.processes(commandLineContaining: gone.tapName.rawValue).filter { pid in
                FileRead.text("/proc/\(pid)/cmdline")?.contains("vde_plug2tap") == true
            }
            #expect(plugs.isEmpty, "plugs on \(gone.tapName): \(plugs)")
        }
        try await shutDown(second, spec: spec, expectOwnedGone: false)
    }

    /// "Could not look" is not "gone": a namespace nsenter cannot enter (here through an
    /// nsenter that refuses while a file exists, put first in the worker's PATH) leaves the
    /// endpoint `unreachable` with the reason; it is looked at again and plugged once it can be.
    @Test func namespaceThatCannotBeEnteredIsUnreachableAndRetried() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let external = try await startTestSwitch(scratch)
        defer { external.stop() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try SwitchSpec(
            networkDir: try networkDir(scratch, first), ctlDir: external.ctlDir,
            managementSocket: external.managementSocket, mode: .external, group: nil, numPorts: 7)
        _ = try await start(first, spec)
        let ns = scratch.namespace("1")
        let joined = try await joinedEndpoint(scratch, first, suffix: "a", namespace: ns, address: "10.99.7.1/24")
        first.signal(SIGKILL)
        _ = await first.waitForExit()
        // Its plug ran on (and would be adopted); gone too, the restore must look for the tap.
        let plugs = Host.processes(commandLineContaining: joined.tapName.rawValue)
        #expect(plugs.count == 1)
        for pid in plugs { kill(pid, SIGKILL) }
        #expect(await Host.eventually { plugs.allSatisfy { !Host.isAlive($0) } })

        let bin = scratch.directory + "/bin"
        let deny = scratch.directory + "/deny"
        mkdir(bin, 0o755)
        let script =
            "#!/bin/sh\nif [ -e \(deny) ]; then echo \"nsenter: cannot open $1: Permission denied\" >&2; exit 1; fi\nexec /usr/bin/nsenter \"$@\"\n"
        #expect(
            Host.run([
                "sh", "-c", "printf '%s' \"$0\" > \(bin)/nsenter && chmod 755 \(bin)/nsenter && touch \(deny)", script,
            ]).status == 0)
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        // This process's environment with the fake first in PATH (the rest, e.g. the sanitizer
        // runs' LD_LIBRARY_PATH, must reach the worker too).
        var environment: [String] = []
        var entry = environ
        while let variable = entry.pointee {
            let text = String(cString: variable)
            if !text.hasPrefix("PATH=") { environment.append(text) }
            entry += 1
        }
        environment.append("PATH=\(bin):\(path)")
        let second = try WorkerHarness(
            networkID: first.networkID, runDir: scratch.directory + "/run", logPath: scratch.directory + "/worker.log",
            environment: environment)
        scratch.trackProcess(second.pid)
        defer { second.stop() }
        let mark = second.messageCount
        _ = try await start(second, spec, restoring: [joined])
        let outcome = try #require(try await second.endpointStates([joined.endpointID], after: mark)[joined.endpointID])
        #expect(outcome.state == .unreachable)
        #expect(outcome.detail?.contains("Permission denied") == true)
        let report = try await status(second)
        #expect(report.endpoints?.first?.state == .unreachable)
        #expect(report.endpoints?.first?.detail?.contains("Permission denied") == true)
        #expect(Host.exists("/run/netns/" + ns))

        // It can be entered again: the next look plugs it.
        unlink(deny)
        let plugged = try await second.event(.endpointState, after: mark, timeout: .seconds(40)) {
            $0.endpointID == joined.endpointID && $0.state == .plugged
        }
        #expect(plugged.pid.map(Host.isAlive) == true)
        try await shutDown(second, spec: spec, expectOwnedGone: false)
    }

    /// `start` replies once the switch is up; 100 endpoints are restored after it, each
    /// reported. (Restored one after another inside `start`, a large network exceeded the
    /// supervisor's 15 s limit and never came back.)
    @Test func networkOfAHundredEndpointsRestores() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try ownSpec(scratch, first, numPorts: 128)
        let switchPID = try #require(try await start(first, spec).switch?.pid)
        var all: [EndpointSpec] = []
        for index in 0..<100 {
            let one = endpoint(scratch, (index < 16 ? "0" : "") + String(index, radix: 16))
            _ = try await add(first, one)
            all.append(one)
        }
        first.signal(SIGKILL)
        _ = await first.waitForExit()
        // The switch too (its plugs exit with it): nothing is left to adopt, all 100 are restored.
        kill(switchPID, SIGKILL)
        #expect(await Host.eventually { Host.processes(commandLineContaining: spec.paths.ctlDir).isEmpty })

        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        let mark = second.messageCount
        let started = try await start(second, spec, restoring: all)
        #expect(started.endpoints?.count == 100)
        let outcomes = try await second.endpointStates(all.map(\.endpointID), after: mark, timeout: .seconds(180))
        #expect(outcomes.values.filter { $0.state == .plugged }.count == 100)
        let report = try await status(second)
        #expect(report.endpoints?.filter { $0.state == .plugged }.count == 100)
        #expect(report.endpoints?.filter { $0.counters != nil }.count == 100)
        try await shutDown(second, spec: spec)
    }

    /// A worker killed while it adds an endpoint (here: waiting on a full switch) leaves the
    /// tap it made; the next worker deletes it (`creating/` marker), but keeps the taps of
    /// endpoints it restores.
    @Test func tapOfAnAddCutShortIsDeletedByTheNextWorker() async throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let first = try startWorker(scratch)
        defer { first.stop() }
        let spec = try ownSpec(scratch, first, numPorts: 1)
        _ = try await start(first, spec)
        let kept = endpoint(scratch, "a")
        _ = try await add(first, kept)
        let cut = endpoint(scratch, "b")
        // The switch is full: the add makes the tap, then looks for a free port for 0.5 s.
        first.writeLine(try JSONCoding.string(WorkerRequest(id: 99, .addEndpoint(endpoint: cut))))
        #expect(await Host.eventually(timeout: .seconds(5)) { Host.exists("/sys/class/net/\(cut.tapName)") })
        first.signal(SIGKILL)
        _ = await first.waitForExit()
        #expect(
            Host.exists("/sys/class/net/\(cut.tapName)"), "the add finished before the kill; the test proves nothing")
        let creating = spec.paths.creatingDir
        #expect(Host.exists("\(creating)/\(cut.tapName)"))

        let second = try startWorker(scratch, networkID: first.networkID)
        defer { second.stop() }
        let started = try await start(second, spec, restoring: [kept])
        #expect(!Host.exists("/sys/class/net/\(cut.tapName)"))
        #expect(!Host.exists("\(creating)/\(cut.tapName)") && !Host.exists("\(creating)/\(kept.tapName)"))
        // The kept endpoint's plug ran on: adopted, `plugged` at once.
        #expect(started.endpoints?.map(\.state) == [.plugged])
        #expect(Host.exists("/sys/class/net/\(kept.tapName)"))

        // removeEndpoint of an endpoint the worker does not know (the undo of a failed add)
        // deletes a tap named after it and its marker.
        let undone = endpoint(scratch, "c")
        let reply = try await second.request(.addEndpoint(endpoint: undone))
        #expect(reply.error?.code == .exhausted)
        #expect(try await second.request(.removeEndpoint(endpointID: undone.endpointID)).ok == true)
        #expect(!Host.exists("\(creating)/\(undone.tapName)"))
        try await shutDown(second, spec: spec)
    }
}
