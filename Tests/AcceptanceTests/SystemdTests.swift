import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// Socket activation and sd_notify, played by `systemd-socket-activate` and a datagram
    /// listener of the test standing in for systemd (PID 1 on this host is not systemd).
    @Suite(.timeLimit(.minutes(3)))
    struct SystemdProtocolTests {
        @Test func socketActivationAndNotify() async throws {
            let watchdogUsec = 1_000_000
            let finished = try await ActivatedSupervisor.with("sdact", watchdogUsec: watchdogUsec) { run in
                let listener = run.listener
                try await run.waitUntilListening()
                // Before any connection the supervisor has not even been executed: nothing is notified.
                try await observe(
                    for: .seconds(1), "no sd_notify message and no supervisor before the first connection"
                ) {
                    listener.messages.isEmpty && run.command == "systemd-socket-"
                }

                // The first connection starts the supervisor (exec in place: same pid, so
                // LISTEN_PID matches), which answers that very connection on fd 3.
                let activate = try await run.activate()
                #expect(activate.status == 200, "Plugin.Activate through the activated socket: \(activate)")
                let implements = try JSONCoding.decode(DockerAPI.ActivateResponse.self, from: activate.body).Implements
                #expect(Set(implements).isSuperset(of: ["NetworkDriver", "IpamDriver"]), "Implements: \(implements)")
                #expect(run.command == "vde-supervisor", "the activated process should be vde-supervisor")

                let ready = try await listener.wait(for: "READY=1") { $0 == "READY=1" }
                let status = try #require(
                    listener.lines.first { $0.line.hasPrefix("STATUS=") }?.line,
                    "a STATUS= line should come with or after READY=1: \(listener.transcript())")
                let statusText = status.dropFirst("STATUS=".count)
                #expect(
                    statusText.first?.isNumber == true && statusText.contains("network(s)"),
                    "STATUS should start with the network count: \(status)")

                // WATCHDOG=1 at half of WATCHDOG_USEC (a protocol property; tolerances are wide).
                try await expectWatchdogSpacing(run, from: ready, watchdogUsec: watchdogUsec)

                // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
                let beforeReload = listener.messages.count
                run.process.signal(SIGHUP)
                let reloading = try await listener.wait(for: "RELOADING=1 after SIGHUP", from: beforeReload) {
                    $0 == "RELOADING=1"
                }
                #expect(
                    listener.messages[reloading].lines.contains { $0.hasPrefix("MONOTONIC_USEC=") },
                    "RELOADING=1 should carry MONOTONIC_USEC: \(listener.messages[reloading])")
                try await listener.wait(for: "READY=1 after RELOADING=1", from: reloading + 1) { $0 == "READY=1" }
                #expect(run.process.isRunning, "the supervisor must survive SIGHUP")
                try await Poll.until("the supervisor to log the reload") {
                    run.logText().contains("configuration reloaded")
                }

                // A second supervisor on the same socket path (not activated) refuses to start.
                let control2 = run.dir + "/control2.sock"
                let second = try await Command.run(
                    [
                        run.supervisorPath, "run", "--socket", run.socket, "--control-socket", control2,
                        "--state-dir", run.dir + "/state2", "--run-dir", run.dir + "/run2", "--networker",
                        run.networkerPath,
                        "--config", run.dir + "/absent.conf",
                    ], timeout: .seconds(30))
                #expect(!second.succeeded, "a second supervisor on \(run.socket) must refuse to start: \(second)")
                #expect(
                    second.output.contains("another vde-supervisor already serves \(run.socket)"),
                    "the refusal should name the socket clearly: \(second)")
                #expect(!TempDir.exists(control2), "the refused supervisor must not have served anything")
                #expect(TempDir.exists(run.socket), "the refused supervisor must not remove the activated socket")
                let still = try await UnixHTTPClient.post(
                    socket: run.socket, path: "/NetworkDriver.GetCapabilities", body: [], timeout: .seconds(30))
                #expect(still.status == 200, "the activated supervisor must still answer: \(still)")
                #expect(run.process.isRunning)

                // SIGTERM: STOPPING=1, then exit.
                try await run.terminate()
            }
            #expect(
                finished.status == .exited(0),
                "exit status after SIGTERM: \(finished.status)\n\(finished.log.suffix(4000))")
            let messages = finished.messages
            let stopping = try #require(
                messages.firstIndex { $0.lines.contains("STOPPING=1") },
                "STOPPING=1 after SIGTERM: \(finished.transcript)")
            let late = messages[(stopping + 1)...].filter { $0.lines.contains("WATCHDOG=1") }
            #expect(late.isEmpty, "no WATCHDOG=1 may follow STOPPING=1: \(finished.transcript)")
        }

        /// WATCHDOG_USEC that is not a whole number of seconds: the pings must still come at
        /// about half of it (systemd kills a service whose pings are further apart than
        /// WATCHDOG_USEC; half leaves room for scheduling delays).
        @Test(arguments: [2_200_000])
        func watchdogPingsAtHalfOfAnyInterval(watchdogUsec: Int) async throws {
            let finished = try await ActivatedSupervisor.with("sdwd", watchdogUsec: watchdogUsec) { run in
                let activate = try await run.activate()
                #expect(activate.status == 200, "Plugin.Activate: \(activate)")
                let ready = try await run.listener.wait(for: "READY=1") { $0 == "READY=1" }
                try await expectWatchdogSpacing(run, from: ready, watchdogUsec: watchdogUsec)
                try await run.terminate()
            }
            #expect(finished.status == .exited(0), "exit status after SIGTERM: \(finished.status)")
        }

        /// systemd may send SIGHUP (`systemctl reload`) as soon as READY=1 arrives: the
        /// supervisor must already handle it then, not die of SIGHUP's default action.
        /// The listener signals from its reader thread the instant READY=1 arrives; five runs,
        /// because the window it probes is short.
        @Test func sighupRightAfterReadyReloads() async throws {
            for attempt in 1...5 {
                let pid = Locked<pid_t?>(nil)
                let signalled = Locked(false)
                let sendHangupAtReady: @Sendable (NotifyMessage) -> Void = { message in
                    guard message.lines.contains("READY=1") else { return }
                    signalled.withLock { done in
                        if !done, let p = pid.value {
                            kill(p, SIGHUP)
                            done = true
                        }
                    }
                }
                let finished = try await ActivatedSupervisor.with(
                    "sdhup", watchdogUsec: 1_000_000, onMessage: sendHangupAtReady
                ) { run in
                    pid.set(run.process.pid)
                    // A bare connection activates it (the reply is not what this test is about).
                    try await run.waitUntilListening()
                    #expect(UnixHTTPClient.answers(socket: run.socket))
                    let listener = run.listener
                    try await Poll.until(
                        "READY=1, RELOADING=1, READY=1 after a SIGHUP sent the instant READY=1 arrived (attempt \(attempt))",
                        every: .milliseconds(20)
                    ) {
                        guard run.process.isRunning else {
                            throw AcceptanceFailure(
                                "attempt \(attempt): the supervisor died of a SIGHUP sent right after READY=1 (SIGHUP is not handled yet when READY=1 is sent; messages and log above)"
                            )
                        }
                        guard let reloading = listener.firstIndex(where: { $0 == "RELOADING=1" }) else { return false }
                        return listener.firstIndex(from: reloading + 1, where: { $0 == "READY=1" }) != nil
                    }
                    #expect(signalled.value)
                    try await run.terminate()
                }
                #expect(
                    finished.status == .exited(0), "attempt \(attempt): exit status after SIGTERM: \(finished.status)")
            }
        }

        /// Waits for 4 WATCHDOG=1 pings after message `ready` and checks that each gap is
        /// between 0.3 and 0.8 of WATCHDOG_USEC (the supervisor aims at 0.5).
        private func expectWatchdogSpacing(_ run: ActivatedSupervisor, from ready: Int, watchdogUsec: Int) async throws
        {
            let usec = Double(watchdogUsec) / 1e6
            try await Poll.until(
                "4 WATCHDOG=1 pings after READY=1", deadline: .seconds(Int64(usec * 6) + 5), every: .milliseconds(50)
            ) {
                run.watchdogTimes(from: ready).count >= 4
            }
            let pings = run.watchdogTimes(from: ready)
            for (a, b) in zip(pings, pings.dropFirst()) {
                let gap = (b - a).inSeconds
                #expect(
                    gap >= 0.3 * usec && gap <= 0.8 * usec,
                    "WATCHDOG=1 every \(gap) s with WATCHDOG_USEC=\(watchdogUsec): expected about \(usec / 2) s (0.3-0.8 of it): \(run.listener.transcript())"
                )
            }
        }

        /// Checks that `condition` holds throughout `window` (an observation of absence: it
        /// can only be made by looking for a while). Fails as soon as it does not.
        private func observe(for window: Duration, _ what: String, _ condition: () -> Bool) async throws {
            let end = ContinuousClock.now + window
            while ContinuousClock.now < end {
                guard condition() else { throw AcceptanceFailure("expected throughout \(window): \(what)") }
                try await Task.sleep(for: .milliseconds(50))
            }
            guard condition() else { throw AcceptanceFailure("expected throughout \(window): \(what)") }
        }
    }

    /// The shipped unit files pass `systemd-analyze verify`.
    @Suite(.timeLimit(.minutes(2)))
    struct SystemdUnitTests {
        @Test func unitsVerify() async throws {
            try SystemdTools.require([SystemdTools.analyze])
            let supervisor = try Binaries.supervisor
            try await TempDir.with("sdunits") { dir in
                guard let socketUnit = TempDir.readText(Repository.file("systemd/vde-supervisor.socket")),
                    let serviceUnit = TempDir.readText(Repository.file("systemd/vde-supervisor.service"))
                else {
                    throw AcceptanceFailure(
                        "systemd/vde-supervisor.socket or .service missing under \(Repository.root)")
                }
                #expect(
                    serviceUnit.contains("ExecStart=/usr/local/bin/vde-supervisor "),
                    "ExecStart should name /usr/local/bin/vde-supervisor")
                let service = serviceUnit.replacingOccurrences(of: "/usr/local/bin/vde-supervisor", with: supervisor)
                try socketUnit.write(toFile: dir + "/vde-supervisor.socket", atomically: true, encoding: .utf8)
                try service.write(toFile: dir + "/vde-supervisor.service", atomically: true, encoding: .utf8)
                let verify = try await Command.run(
                    [
                        SystemdTools.analyze, "verify",
                        dir + "/vde-supervisor.socket", dir + "/vde-supervisor.service",
                    ],
                    timeout: .seconds(60))
                #expect(verify.succeeded, "systemd-analyze verify: \(verify)")
                let complaints = verify.output.split(whereSeparator: \.isNewline).filter {
                    $0.contains("vde-supervisor")
                }
                #expect(complaints.isEmpty, "systemd-analyze verify complains about the units: \(verify)")
            }
        }
    }

    /// The units under a real systemd (PID 1 of a container): socket activation by the first
    /// request, Type=notify status, Restart=on-failure after SIGKILL, reload.
    @Suite(.timeLimit(.minutes(40)))
    struct SystemdContainerTests {
        @Test func underRealSystemd() async throws {
            try await SystemdContainer.checkEnvironment()
            let bin = try await StaticBinaries.directory()
            for name in StaticBinaries.names { try await StaticBinaries.checkLinkage(bin + "/" + name) }
            try await SystemdContainer.with { container in
                try await install(into: container, from: bin)
                try await exercise(container)
            }
        }

        /// What scripts/install does, inside the container.
        private func install(into container: SystemdContainer, from bin: String) async throws {
            let stage = "/root/vde-install"
            try await container.check(["mkdir", "-p", stage])
            for name in StaticBinaries.names {
                try await Docker.check(["cp", bin + "/" + name, "\(container.name):\(stage)/\(name)"])
            }
            for unit in ["vde-supervisor.socket", "vde-supervisor.service"] {
                try await Docker.check(["cp", Repository.file("systemd/" + unit), "\(container.name):\(stage)/\(unit)"])
            }
            // The layout of stage_tree for /usr/local: the worker in ../lib/vde-supervisor.
            try await container.check(["install", "-m", "0755", "\(stage)/vde-supervisor", "/usr/local/bin/"])
            try await container.check([
                "install", "-D", "-m", "0755", "\(stage)/vde-networker", "/usr/local/lib/vde-supervisor/vde-networker",
            ])
            try await container.check([
                "install", "-m", "0644", "\(stage)/vde-supervisor.socket", "\(stage)/vde-supervisor.service",
                "/etc/systemd/system/",
            ])
            // The binaries must run there: every library they need is in the image.
            for path in ["/usr/local/bin/vde-supervisor", "/usr/local/lib/vde-supervisor/vde-networker"] {
                let ldd = try await container.check(["ldd", path])
                #expect(!ldd.stdout.contains("not found"), "\(path) misses libraries in the image: \(ldd)")
                try await container.check([path, "--help"])
            }
            try await container.check(["systemctl", "daemon-reload"])
            try await container.check(["systemctl", "start", "vde-supervisor.socket"])
            #expect(try await container.property("ActiveState", of: "vde-supervisor.socket") == "active")
            #expect(
                try await container.property("ActiveState", of: "vde-supervisor.service") == "inactive",
                "the service must wait for the first connection")
        }

        private func expectActivateAnswer(_ reply: CommandResult) throws {
            guard reply.succeeded else { throw AcceptanceFailure("curl Plugin.Activate failed: \(reply)") }
            let implements = try JSONCoding.decode(DockerAPI.ActivateResponse.self, from: Array(reply.stdout.utf8))
                .Implements
            #expect(Set(implements).isSuperset(of: ["NetworkDriver", "IpamDriver"]), "Implements: \(implements)")
        }

        /// ProtectSystem=strict with ReadWritePaths=/run: the default switch (under the run dir)
        /// and a switch the plugin creates under /run work; one under /srv is refused clearly.
        private func exerciseConfinement(_ container: SystemdContainer) async throws {
            let own = IDs.dockerID()
            let inRun = IDs.dockerID()
            let inSrv = IDs.dockerID()
            let created = [
                (own, [String: String](), "10.231.1"),
                (inRun, ["socket_dir": "/run/vde-lab/sw", "create_sockets": "true"], "10.231.2"),
            ]
            for (id, options, subnet) in created {
                let reply = try await container.pluginCall(
                    "/NetworkDriver.CreateNetwork",
                    Requests.createNetwork(id, pool: subnet + ".0/24", gateway: subnet + ".1/24", options: options))
                if reply.status != 200 {
                    Issue.record(
                        AcceptanceFailure(
                            "CreateNetwork \(options) under the unit: \(reply)\n\(await container.diagnostics())"))
                }
            }
            let switches = try await container.exec(["pgrep", "-a", "vde_switch"])
            // The unit runs the supervisor with its default run dir.
            let ownPaths = try NetworkPaths(
                runDir: "/run/vde-supervisor", network: NetworkID(own), options: NetworkOptions())
            #expect(switches.stdout.contains(ownPaths.ctlDir), "the default switch: \(switches)")
            #expect(switches.stdout.contains("/run/vde-lab/sw"), "the switch in /run/vde-lab/sw: \(switches)")

            let refused = try await container.pluginCall(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(
                    inSrv, pool: "10.231.3.0/24", gateway: "10.231.3.1/24",
                    options: ["socket_dir": "/srv/vde-lab/sw", "create_sockets": "true"]))
            #expect(
                refused.status != 200 && refused.body.contains("/srv/vde-lab")
                    && refused.body.contains("Read-only file system"),
                "a socket_dir outside the writable trees must be refused clearly: \(refused)")
            #expect(
                !(try await container.exec(["test", "-e", "/srv/vde-lab"])).succeeded,
                "nothing may be created under /srv")

            for (id, _, _) in created {
                let reply = try await container.pluginCall("/NetworkDriver.DeleteNetwork", Requests.network(id))
                #expect(reply.status == 200, "DeleteNetwork: \(reply)")
            }
            #expect(
                !(try await container.exec(["test", "-e", "/run/vde-lab/sw"])).succeeded,
                "the created socket_dir goes with its network")
        }

        /// The processes of one network inside the container: its worker, switch and plugs.
        private func dataPath(_ container: SystemdContainer, network: String, ctlDir: String) async throws -> [String] {
            let listing = try await container.exec(["pgrep", "-a", "-f", "vde"]).stdout
            return listing.split(separator: "\n").compactMap { line -> String? in
                let fields = line.split(separator: " ", maxSplits: 1)
                guard fields.count == 2 else { return nil }
                let command = String(fields[1])
                let ours =
                    command.contains("--network-id \(network)")
                    || (command.contains(ctlDir)
                        && (command.contains("vde_switch") || command.contains("vde_plug2tap")))
                return ours ? "\(fields[0]) \(command)" : nil
            }.sorted()
        }

        /// KillMode=process: `systemctl restart` and `systemctl stop` + a start (here by socket
        /// activation, through a plugin call made while the service was stopped) leave the
        /// worker, switch and plugs running, and the new supervisor adopts them; a VM-style
        /// probe every 10 ms between two container-style endpoints loses nothing; the call made
        /// meanwhile is applied once. `vde-supervisor stop-networks` then stops everything.
        private func exerciseAdoption(_ container: SystemdContainer) async throws {
            let network = IDs.dockerID()
            let paths = try NetworkPaths(
                runDir: "/run/vde-supervisor", network: NetworkID(network), options: NetworkOptions())
            let created = try await container.pluginCall(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(network, pool: "10.232.1.0/24", gateway: "10.232.1.1/24"))
            #expect(created.status == 200, "CreateNetwork: \(created)")
            // Two endpoints in namespaces of their own, joined and moved as dockerd does.
            let endpoints = [IDs.dockerID(), IDs.dockerID()]
            for (index, endpoint) in endpoints.enumerated() {
                try await container.joinInNamespace(
                    network: network, endpoint: endpoint, namespace: "adopt\(index)", address: "10.232.1.\(index + 2)")
            }
            let before = try await dataPath(container, network: network, ctlDir: paths.ctlDir)
            #expect(before.count == 4, "one worker, one switch, two plugs: \(before)")

            let summary = try await TempDir.with("sdping") { dir in
                let pinger = try await container.startPinger(
                    from: "adopt0", to: "10.232.1.3", dir: dir, label: "systemd")
                let process = pinger.process
                do {
                    try await pinger.waitForReplies(20)
                    // systemctl restart: the same worker, switch and plugs, adopted.
                    let mainPID = try await container.activeMainPID()
                    try await container.check(
                        ["systemctl", "restart", "vde-supervisor.service"], timeout: .seconds(60))
                    let restartedPID = try await container.activeMainPID(other: mainPID)
                    #expect(
                        try await dataPath(container, network: network, ctlDir: paths.ctlDir) == before,
                        "systemctl restart must keep the data path")

                    // systemctl stop: the data path stays; a call made now starts the service
                    // (socket activation), which adopts the worker and answers the call once.
                    try await container.check(["systemctl", "stop", "vde-supervisor.service"], timeout: .seconds(60))
                    #expect(try await container.property("ActiveState", of: "vde-supervisor.service") == "inactive")
                    #expect(
                        try await dataPath(container, network: network, ctlDir: paths.ctlDir) == before,
                        "systemctl stop must leave the data path running")
                    let third = IDs.dockerID()
                    let whileStopped = try await container.pluginCall(
                        "/NetworkDriver.CreateEndpoint",
                        Requests.createEndpoint(network: network, endpoint: third, address: "10.232.1.9/24"))
                    #expect(whileStopped.status == 200, "CreateEndpoint while the service was stopped: \(whileStopped)")
                    _ = try await container.activeMainPID(other: restartedPID)
                    let after = try await dataPath(container, network: network, ctlDir: paths.ctlDir)
                    #expect(Set(before).isSubset(of: after), "the stopped service's data path is adopted: \(after)")
                    #expect(after.count == 5, "one new plug, for the call made while stopped, and only one: \(after)")
                    // The snapshot and its journal: the new endpoint is in one of them.
                    let state = try await container.exec([
                        "cat", "/var/lib/vde-supervisor/state.json", "/var/lib/vde-supervisor/state.journal",
                    ]).stdout
                    #expect(state.components(separatedBy: third).count - 1 >= 1, "the new endpoint is recorded")
                    let journal = try await container.exec([
                        "journalctl", "--no-pager", "-o", "cat", "-u", "vde-supervisor.service",
                    ])
                    #expect(
                        journal.stdout.components(separatedBy: "network adopted").count - 1 >= 2,
                        "both starts should adopt the worker")
                    let removed = try await container.pluginCall(
                        "/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, third))
                    #expect(removed.status == 200, "DeleteEndpoint: \(removed)")
                    let seen = pinger.repliedSequences().count
                    try await pinger.waitForReplies(seen + 20)
                } catch {
                    await process.stop(SIGINT, grace: .seconds(5))
                    throw error
                }
                return try await pinger.stop()
            }
            print("probes across systemctl restart and stop + start: \(summary)")
            #expect(
                summary.missing.allSatisfy { $0 == summary.transmitted },
                "probes lost across systemctl restart and stop + start: \(summary)")
            #expect(summary.errors == 0, "probe errors: \(summary)")

            // stop-networks (what scripts/uninstall runs) stops everything; the state stays.
            try await container.check(["systemctl", "stop", "vde-supervisor.service"], timeout: .seconds(60))
            try await container.check(["/usr/local/bin/vde-supervisor", "stop-networks"], timeout: .seconds(60))
            #expect(
                try await dataPath(container, network: network, ctlDir: paths.ctlDir).isEmpty,
                "stop-networks must stop the worker, switch and plugs")
            #expect(!(try await container.exec(["test", "-e", paths.networkDir])).succeeded, "the network dir goes")
            // The next call starts the service again, which brings the network back from its state.
            for endpoint in endpoints {
                let removed = try await container.pluginCall(
                    "/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint))
                #expect(removed.status == 200, "DeleteEndpoint: \(removed)")
            }
            let deleted = try await container.pluginCall("/NetworkDriver.DeleteNetwork", Requests.network(network))
            #expect(deleted.status == 200, "DeleteNetwork: \(deleted)")
            #expect(try await dataPath(container, network: network, ctlDir: paths.ctlDir).isEmpty)
            for index in endpoints.indices { _ = try await container.exec(["ip", "netns", "del", "adopt\(index)"]) }
        }

        /// The inode of the plugin socket file: a new one means a new listening socket.
        private func socketInode(_ container: SystemdContainer) async throws -> String {
            try await container.check(["stat", "-c", "%i", SystemdContainer.pluginSocket]).stdout.trimmingWhitespace
        }

        private func exercise(_ container: SystemdContainer) async throws {
            // The first request activates the service, which answers it.
            try expectActivateAnswer(try await container.curlActivate())
            let firstPID = try await container.activeMainPID()

            let status = try await container.exec(["systemctl", "status", "--no-pager", "-l", "vde-supervisor"])
            #expect(status.succeeded, "systemctl status: \(status)")
            #expect(status.stdout.contains("active (running)"), "systemctl status: \(status)")
            #expect(
                status.stdout.contains("Status: \"") && status.stdout.contains("network(s)"),
                "systemctl status should show the STATUS= line: \(status)")
            #expect(try await container.property("StatusText", of: "vde-supervisor").contains("network(s)"))

            // kill -9 of the main pid: Restart=on-failure brings it back, and it serves again.
            let socketBefore = try await socketInode(container)
            try await container.check(["kill", "-9", firstPID])
            let secondPID = try await container.activeMainPID(other: firstPID)
            #expect(try await container.property("NRestarts", of: "vde-supervisor.service") == "1")
            try expectActivateAnswer(try await container.curlActivate())
            #expect(try await container.property("ActiveState", of: "vde-supervisor.socket") == "active")
            // The point of socket activation: the listening socket outlives the restart, so
            // what dockerd sends meanwhile waits in its backlog instead of failing.
            let socketAfter = try await socketInode(container)
            #expect(
                socketBefore == socketAfter,
                "systemd closed and re-created \(SystemdContainer.pluginSocket) when it restarted the service (inode \(socketBefore) -> \(socketAfter)): requests during the restart fail instead of queueing. PartOf=vde-supervisor.service in vde-supervisor.socket propagates the restart to the socket."
            )

            // systemctl reload: SIGHUP through ExecReload; the same process goes on serving.
            let reload = try await container.exec(["systemctl", "reload", "vde-supervisor"], timeout: .seconds(60))
            #expect(reload.succeeded, "systemctl reload: \(reload)")
            try await Poll.until("the journal to show the reload", deadline: .seconds(20), every: .milliseconds(250)) {
                let journal = try await container.exec([
                    "journalctl", "--no-pager", "-o", "cat", "-u", "vde-supervisor.service",
                ])
                return journal.stdout.contains("configuration reloaded")
            }
            #expect(try await container.activeMainPID() == secondPID, "reload must not restart the service")
            try expectActivateAnswer(try await container.curlActivate())

            try await exerciseConfinement(container)
            try await exerciseAdoption(container)

            // A clean stop ends the service without a failure.
            try await container.check(
                ["systemctl", "stop", "vde-supervisor.service", "vde-supervisor.socket"], timeout: .seconds(60))
            #expect(try await container.property("Result", of: "vde-supervisor.service") == "success")

            try await exerciseUninstall(container)
        }

        /// scripts/uninstall with a network running: it stops the units and every network
        /// (stop-networks), removes binaries and units, keeps the state, and leaves no process.
        private func exerciseUninstall(_ container: SystemdContainer) async throws {
            try await container.check(["systemctl", "start", "vde-supervisor.socket"])
            let network = IDs.dockerID()
            let created = try await container.pluginCall(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(network, pool: "10.232.2.0/24", gateway: "10.232.2.1/24"))
            #expect(created.status == 200, "CreateNetwork: \(created)")
            #expect(try await container.exec(["pgrep", "-f", "network-id \(network)"]).succeeded, "its worker runs")
            try await Docker.check(["cp", Repository.file("scripts/uninstall"), "\(container.name):/root/uninstall"])
            let uninstall = try await container.exec(["bash", "/root/uninstall"], timeout: .seconds(120))
            #expect(uninstall.succeeded, "scripts/uninstall: \(uninstall)")
            let left = try await container.exec([
                "pgrep", "-a", "-f", "vde-networker|vde_switch|vde_plug2tap|vde-supervisor",
            ])
            #expect(left.stdout.trimmingWhitespace.isEmpty, "processes left after scripts/uninstall: \(left)")
            #expect(!(try await container.exec(["test", "-e", "/usr/local/bin/vde-supervisor"])).succeeded)
            #expect(
                try await container.exec(["test", "-e", "/var/lib/vde-supervisor/state.json"]).succeeded,
                "the state is kept without --purge")
        }
    }
}
