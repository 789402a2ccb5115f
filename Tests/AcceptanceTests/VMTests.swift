import Foundation
import Glibc
import Shared
import Testing

extension Acceptance {
    /// A real QEMU VM (TCG, Debian's cloud kernel, a busybox initramfs: scripts/build-vm-image)
    /// on a network made through the real dockerd and the real plugin, attached the way the
    /// README says: `socket_dir` + `create_sockets=true`, `-netdev vde,sock=SOCKET_DIR`. Its
    /// traffic stays on this machine: QEMU has no other network than that switch.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct VMTests {
        func withDocker<T: Sendable>(_ body: (Supervisor, DockerScope) async throws -> T) async throws -> T {
            try await Docker.checkEnvironment()
            return try await SupervisorFixture.with(socket: SupervisorFixture.realSocket) { supervisor in
                await Docker.removeLabelledLeftovers()
                return try await DockerScope.with { scope in try await body(supervisor, scope) }
            }
        }

        /// A network for VMs: Docker's addresses in the first 16 of `subnet` (`.0/24`), so that
        /// DHCP can hand out the rest.
        @discardableResult
        static func vmNetwork(
            _ scope: DockerScope, _ base: String, subnet: String, socketDir: String, extra: [String] = []
        )
            async throws -> String
        {
            try await scope.network(
                base,
                [
                    "--subnet", "\(subnet).0/24", "--ip-range", "\(subnet).0/28", "-o", "socket_dir=\(socketDir)",
                    "-o", "create_sockets=true",
                ] + extra)
        }

        /// Starts busybox `udhcpd` in the container `base` (on its eth0), leasing `pool`.
        static func serveDHCP(_ scope: DockerScope, _ base: String, pool: (first: String, last: String)) async throws {
            let config = [
                "start \(pool.first)", "end \(pool.last)", "interface eth0", "lease_file /tmp/udhcpd.leases",
                "option subnet 255.255.255.0", "option lease 3600",
            ].joined(separator: "\n")
            try await Command.check(
                [
                    Docker.cli, "exec", "-i", scope.name(base), "sh", "-c",
                    "cat >/tmp/udhcpd.conf && touch /tmp/udhcpd.leases",
                ],
                timeout: .seconds(30), stdin: config + "\n")
            try await Docker.check(
                ["exec", "-d", scope.name(base), "udhcpd", "-f", "/tmp/udhcpd.conf"], timeout: .seconds(30))
            try await Poll.until("udhcpd to run in \(scope.name(base))") {
                try await scope.exec(base, ["ps"]).stdout.contains("udhcpd")
            }
        }

        /// True when `address` is a.b.c.N with N in first...last of the pool.
        static func inPool(_ address: String, _ pool: (first: String, last: String)) -> Bool {
            func host(_ a: String) -> Int? { a.split(separator: ".").last.flatMap { Int($0) } }
            func net(_ a: String) -> String { a.split(separator: ".").dropLast().joined(separator: ".") }
            guard let n = host(address), let lo = host(pool.first), let hi = host(pool.last) else { return false }
            return net(address) == net(pool.first) && (lo...hi).contains(n)
        }

        /// Lease, then pings both ways between the VM and the container at `server`.
        static func checkTraffic(
            _ vm: VirtualMachine, _ scope: DockerScope, container: String, server: String,
            pool: (first: String, last: String)
        ) async throws {
            let address = try await vm.leasedAddress()
            #expect(Self.inPool(address, pool), "the VM's lease \(address) is not from udhcpd's pool \(pool)")
            let configured = try await vm.check("ip -o -4 addr show dev eth0")
            #expect(
                configured.output.contains(address + "/"), "the VM's eth0 lacks its lease \(address): \(configured)")
            let out = try await vm.run("ping -c 3 -W 2 \(server)")
            #expect(out.succeeded, "VM -> container \(server): \(out)")
            let back = try await scope.ping(from: container, address)
            #expect(back.succeeded, "container -> VM \(address): \(back)")
        }

        @Test func vmGetsALeaseFromAContainerAndPingsBothWays() async throws {
            let image = try await VMImage.prepare()
            let pool = (first: "10.77.60.100", last: "10.77.60.120")
            try await RunTempDir.with("vm") { dir in
                let socketDir = dir + "/sw"
                try await withDocker { supervisor, scope in
                    let network = try await Self.vmNetwork(scope, "vm", subnet: "10.77.60", socketDir: socketDir)
                    try await scope.container("dhcp", network: "vm", ip: "10.77.60.2")
                    try await Self.serveDHCP(scope, "dhcp", pool: pool)
                    let options = VirtualMachine.Options(socketDir: socketDir)
                    // A whole-segment capture meanwhile (issue 14): the VM is part of the segment.
                    let file = dir + "/segment.pcap"
                    let capture = try await CaptureRun.with(
                        try CaptureCLI.argv(supervisor, options: ["-w", file], [scope.name("vm")]),
                        log: dir + "/capture.log"
                    ) { capture in
                        try await CaptureLab.awaitConnected(supervisor, network: network, count: 1)
                        try await VirtualMachine.with(image: image, options: options, logPath: dir + "/console.log") {
                            vm in
                            try await Self.checkTraffic(vm, scope, container: "dhcp", server: "10.77.60.2", pool: pool)
                            let neighbours = try await scope.exec("dhcp", ["ip", "neigh", "show"]).stdout.lowercased()
                            #expect(
                                neighbours.contains(options.mac),
                                "the container should know the VM's MAC \(options.mac): \(neighbours)")
                        }
                        try await capture.interrupt()
                    }
                    try capture.outcome.get()
                    #expect(capture.exitedZero, "the capture should end cleanly: \(capture.stderr)")
                    let frames = try await PcapFrames.read(file)
                    let fromVM = frames.lines.filter { PcapFrames.source($0) == options.mac.lowercased() }
                    #expect(
                        fromVM.contains { $0.contains("BOOTP/DHCP") }
                            && fromVM.contains { $0.contains("ICMP echo request") },
                        "the segment capture should hold the VM's DHCP and its echo requests: \(frames)")
                }
            }
        }

        /// `socket_group=G`: a QEMU running as an unprivileged user in G attaches (and gets its
        /// lease); one running as a user outside G is refused by the socket's permissions.
        @Test func socketGroupLetsMembersAttachAndRefusesOthers() async throws {
            let image = try await VMImage.prepare()
            let pool = (first: "10.77.61.100", last: "10.77.61.120")
            try await TestGroup.with { group in
                try await RunTempDir.with("vmg") { dir in
                    let socketDir = dir + "/sw"
                    try await withDocker { _, scope in
                        try await Self.vmNetwork(
                            scope, "vmg", subnet: "10.77.61", socketDir: socketDir,
                            extra: ["-o", "socket_group=\(group.name)"])
                        try await scope.container("dhcp", network: "vmg", ip: "10.77.61.2")
                        try await Self.serveDHCP(scope, "dhcp", pool: pool)
                        let (member, outsider) = try Self.unusedUIDs()

                        let refused = try await VirtualMachine.attempt(
                            image: image,
                            options: VirtualMachine.Options(
                                socketDir: socketDir, user: VMUser(uid: outsider, gid: outsider)),
                            logPath: dir + "/outsider.log")
                        switch refused {
                        case .booted(let output):
                            Issue.record(
                                "a QEMU outside group \(group.name) attached to \(socketDir):\n\(output.suffix(2000))")
                        case .exited(let status, let output):
                            #expect(
                                output.contains("Could not open vde") && output.contains("Permission denied"),
                                "QEMU outside the group should say it may not open the switch (\(status)): \(output.suffix(2000))"
                            )
                        }

                        let user = VMUser(uid: member, gid: member, groups: [group.gid])
                        let options = VirtualMachine.Options(socketDir: socketDir, user: user)
                        try await VirtualMachine.with(image: image, options: options, logPath: dir + "/member.log") {
                            vm in
                            let uid = Self.realUID(of: vm.process.pid)
                            #expect(
                                uid == member,
                                "QEMU should run as uid \(member), runs as \(uid.map(String.init) ?? "?")")
                            try await Self.checkTraffic(vm, scope, container: "dhcp", server: "10.77.61.2", pool: pool)
                        }
                    }
                }
            }
        }

        /// Two uids that no account on this machine has.
        static func unusedUIDs() throws -> (UInt32, UInt32) {
            let free = (64_100...64_900).map { UInt32($0) }.filter { getpwuid($0) == nil && getgrgid($0) == nil }
            guard let first = free.randomElement(), let second = free.first(where: { $0 != first }) else {
                throw AcceptanceFailure("no two unused uids in 64100...64900 for the VM's users")
            }
            return (first, second)
        }

        /// The real uid of a process (`Uid:` in /proc/PID/status).
        static func realUID(of pid: Int32) -> UInt32? {
            guard let status = TempDir.readText("/proc/\(pid)/status"),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") })
            else { return nil }
            return line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { UInt32($0) }
        }
    }
}

extension Acceptance {
    /// The data path outlives its managers (issue 11): a VM attached to a network's
    /// `socket_dir` pings a container-style endpoint every 10 ms, and is pinged by it, through
    /// a kill -9 of the network's worker and then of the supervisor (started again on the same
    /// state), and not one probe is lost. Needs the datapath and adoption work (detached
    /// switch, plugs and workers adopted): until both are in, it fails with the counts lost.
    /// Run it alone with `swift test --skip-build --filter VMRecoveryTests`. The plugin API is
    /// driven as dockerd would, without dockerd: a supervisor on the real plugin socket cannot
    /// be killed and started again by the Docker fixture, ``RecoverySupervisor`` can.
    @Suite(.serialized, .timeLimit(.minutes(10)))
    struct VMRecoveryTests {
        static let subnet = "10.77.62"

        @Test func vmKeepsPingingThroughKillsOfWorkerAndSupervisor() async throws {
            let image = try await VMImage.prepare()
            try await RunTempDir.with("vmk") { dir in
                let socketDir = dir + "/sw"
                try await RecoverySupervisor.with { supervisor in
                    try await RecoveryNamespaces.with(count: 1) { namespaces in
                        try await Self.run(
                            image: image, supervisor: supervisor, ns: namespaces[0], dir: dir, socketDir: socketDir)
                    }
                }
            }
        }

        static func run(image: VMImage, supervisor: RecoverySupervisor, ns: NetNS, dir: String, socketDir: String)
            async throws
        {
            let client = supervisor.client
            let network = IDs.dockerID()
            try await client.ok(
                "/NetworkDriver.CreateNetwork",
                Requests.createNetwork(
                    network, pool: "\(subnet).0/24", gateway: "\(subnet).1/24",
                    options: [NetworkOptions.socketDirKey: socketDir, NetworkOptions.createSocketsKey: "true"]))
            // A container-style endpoint, as dockerd makes one: the plugin's tap moved into a netns.
            let endpoint = IDs.dockerID()
            let peer = "\(subnet).10"
            let created = try await client.ok(
                "/NetworkDriver.CreateEndpoint",
                Requests.createEndpoint(network: network, endpoint: endpoint, address: peer + "/24"),
                as: DockerAPI.CreateEndpointResponse.self)
            let mac = try #require(created.Interface?.MacAddress?.rawValue)
            let joined = try await client.ok(
                "/NetworkDriver.Join", Requests.join(network: network, endpoint: endpoint, sandbox: ns.path),
                as: DockerAPI.JoinResponse.self)
            try await ns.adoptAsEth0(tap: joined.InterfaceName.SrcName.rawValue, mac: mac, address: peer + "/24")

            let vmAddress = "\(subnet).50"
            let options = VirtualMachine.Options(socketDir: socketDir)
            try await VirtualMachine.with(image: image, options: options, logPath: dir + "/console.log") { vm in
                try await vm.check("ip addr add \(vmAddress)/24 dev eth0")
                try await Poll.until("the VM to reach the endpoint at \(peer)", deadline: .seconds(30)) {
                    try await vm.run("ping -c 1 -W 1 \(peer)").succeeded
                }
                let switchBefore = Self.switchPID(socketDir: socketDir)
                // Where each fault fell in both probe sequences, for the failure messages.
                let faults = Locked<[String]>([])
                func noteFault(_ what: String) async throws {
                    let vmSeq = try await Self.lastVMSequence(vm)
                    faults.withLock { $0.append("\(what) after VM icmp_seq \(vmSeq)") }
                }
                try await vm.check("ping -i 0.01 \(peer) >/tmp/ping.log 2>&1 & echo $! >/tmp/ping.pid")
                let fromPeer = try await RecoveryPinger.with("endpoint -> VM", from: ns, to: vmAddress, dir: dir) {
                    pinger in
                    try await pinger.waitForReplies(20)
                    try await Self.waitForVMReplies(vm, atLeast: 20)

                    let worker = try #require(Self.workerPID(network), "no vde-networker for network \(network)")
                    try await noteFault(
                        "kill -9 of the worker (pid \(worker)) at endpoint icmp_seq \(pinger.repliedSequences().max() ?? 0)"
                    )
                    kill(worker, SIGKILL)
                    try await Poll.until("a new vde-networker for the network", deadline: .seconds(30)) {
                        guard let now = Self.workerPID(network) else { return false }
                        return now != worker
                    }
                    // The probes go on meanwhile; give them a while after the new worker (soft: a
                    // path that stays cut shows below as probes unanswered at the end, not as a
                    // timeout here).
                    try? await pinger.waitForReplies(pinger.repliedSequences().count + 200, deadline: .seconds(10))

                    try await noteFault(
                        "kill -9 of the supervisor (pid \(supervisor.supervisorPID)) at endpoint icmp_seq \(pinger.repliedSequences().max() ?? 0)"
                    )
                    try await supervisor.kill9()
                    try await supervisor.start()
                    try await Poll.until("a worker for the network under the new supervisor", deadline: .seconds(30)) {
                        Self.workerPID(network) != nil
                    }
                    try? await pinger.waitForReplies(pinger.repliedSequences().count + 200, deadline: .seconds(10))
                    return try await pinger.stop()
                }
                let fromVM = try await Self.stopVMPing(vm)
                let switchAfter = Self.switchPID(socketDir: socketDir)
                let toVM = ProbeCount(fromPeer)
                print("note: endpoint -> VM: \(toVM); VM -> endpoint: \(fromVM); \(faults.value)")
                #expect(
                    toVM.passes && fromPeer.errors == 0,
                    "endpoint -> VM every 10 ms across both kills: \(toVM), \(fromPeer.errors) errors; \(faults.value)")
                #expect(fromVM.passes, "VM -> endpoint every 10 ms across both kills: \(fromVM); \(faults.value)")
                #expect(
                    switchBefore != nil && switchAfter == switchBefore,
                    "the switch at \(socketDir) should be the same process throughout: \(switchBefore.map(String.init) ?? "none") then \(switchAfter.map(String.init) ?? "none")"
                )
            }
            try await client.ok("/NetworkDriver.Leave", Requests.endpoint(network, endpoint))
            try await client.ok("/NetworkDriver.DeleteEndpoint", Requests.endpoint(network, endpoint))
            try await client.ok("/NetworkDriver.DeleteNetwork", Requests.network(network))
        }

        static func workerPID(_ network: String) -> Int32? {
            HostInspector.vdeProcesses(mentioning: [network]).first { $0.program == "vde-networker" }?.pid
        }

        static func switchPID(socketDir: String) -> Int32? {
            HostInspector.vdeProcesses(mentioning: [socketDir]).first { $0.program == "vde_switch" }?.pid
        }

        /// The icmp_seq of the last reply the VM's ping has logged (-1: none yet).
        static func lastVMSequence(_ vm: VirtualMachine) async throws -> Int {
            let last = try await vm.check("grep 'bytes from' /tmp/ping.log | tail -n 1").output
            guard let range = last.range(of: "seq=") else { return -1 }
            return Int(last[range.upperBound...].prefix { $0.isNumber }) ?? -1
        }

        /// Replies the VM's background ping has logged so far.
        static func waitForVMReplies(_ vm: VirtualMachine, atLeast count: Int) async throws {
            try await Poll.until("\(count) replies to the VM's ping", deadline: .seconds(20), every: .milliseconds(200))
            {
                let replies = try await vm.check("grep -c 'bytes from' /tmp/ping.log || true").output
                return Int(replies.trimmingWhitespace).map { $0 >= count } ?? false
            }
        }

        /// Stops the VM's ping (SIGINT makes busybox ping print its summary) and counts in the
        /// VM, so that only one line comes back over the serial console.
        static func stopVMPing(_ vm: VirtualMachine) async throws -> ProbeCount {
            try await vm.check("kill -INT $(cat /tmp/ping.pid)")
            try await Poll.until(
                "the VM's ping to print its summary", deadline: .seconds(20), every: .milliseconds(200)
            ) {
                try await vm.run("grep -q 'packets transmitted' /tmp/ping.log").succeeded
            }
            // busybox ping numbers its probes from 0; m is the last one answered (-1: none).
            let counted = try await vm.check(
                "awk -F'seq=' '/bytes from/ { split($2, a, \" \"); q = a[1] + 0; if (!(q in r)) n++; r[q] = 1; if (q > m) m = q } /packets transmitted/ { t = $0 + 0 } BEGIN { m = -1 } END { l = 0; s = \"\"; for (i = 0; i < m; i++) if (!(i in r)) { l++; if (l <= 40) s = s \" \" i }; printf \"counts %d %d %d %d%s\\n\", t, n, m, l, s }' /tmp/ping.log"
            ).output
            guard let line = counted.split(separator: "\n").first(where: { $0.hasPrefix("counts ") }) else {
                throw AcceptanceFailure("cannot read the VM's ping counts: \(counted)")
            }
            let numbers = line.split(separator: " ").dropFirst().compactMap { Int($0) }
            guard numbers.count >= 4 else { throw AcceptanceFailure("cannot read the VM's ping counts: \(line)") }
            return ProbeCount(
                sent: numbers[0], replied: numbers[1], lostCount: numbers[3], firstLost: Array(numbers.dropFirst(4)),
                unansweredAtEnd: numbers[0] - 1 - numbers[2])
        }
    }
}

/// 10 ms probes across faults, counted alike in both directions. A probe without a reply that
/// was sent before the last answered one is lost. Those sent after it were unanswered when ping
/// was stopped: in flight (QEMU under TCG answered 4000 probes here in 0.5 to 93 ms, 3 ms on
/// average, none lost), or cut off for good, which the test tells apart by waiting for 200 more
/// replies after the last fault before it stops ping.
struct ProbeCount: Sendable, CustomStringConvertible {
    /// More than this many unanswered at the end is a path that stayed cut, not probes in flight.
    static let inFlightAllowance = 20

    var sent: Int
    var replied: Int
    var lostCount: Int
    /// The first lost icmp_seq values, at most 40.
    var firstLost: [Int]
    var unansweredAtEnd: Int

    init(sent: Int, replied: Int, lostCount: Int, firstLost: [Int], unansweredAtEnd: Int) {
        self.sent = sent
        self.replied = replied
        self.lostCount = lostCount
        self.firstLost = firstLost
        self.unansweredAtEnd = unansweredAtEnd
    }

    /// From iputils ping's summary (icmp_seq 1...transmitted).
    init(_ summary: RecoveryPinger.Summary) {
        let missing = Set(summary.missing)
        let lastAnswered =
            (1...max(summary.transmitted, 1)).last { !missing.contains($0) && $0 <= summary.transmitted } ?? 0
        let lost = summary.missing.filter { $0 < lastAnswered }.sorted()
        self.init(
            sent: summary.transmitted, replied: summary.received, lostCount: lost.count,
            firstLost: Array(lost.prefix(40)),
            unansweredAtEnd: summary.transmitted - lastAnswered)
    }

    /// Enough probes, none lost, and the path worked at the end.
    var passes: Bool { sent > 300 && lostCount == 0 && unansweredAtEnd <= Self.inFlightAllowance }

    var description: String {
        "\(sent) sent, \(replied) replied, \(lostCount) lost (icmp_seq \(firstLost)), \(unansweredAtEnd) unanswered at the end"
    }
}
