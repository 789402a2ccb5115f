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
        static func vmNetwork(
            _ scope: DockerScope, _ base: String, subnet: String, socketDir: String, extra: [String] = []
        )
            async throws
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
                try await withDocker { _, scope in
                    try await Self.vmNetwork(scope, "vm", subnet: "10.77.60", socketDir: socketDir)
                    try await scope.container("dhcp", network: "vm", ip: "10.77.60.2")
                    try await Self.serveDHCP(scope, "dhcp", pool: pool)
                    let options = VirtualMachine.Options(socketDir: socketDir)
                    try await VirtualMachine.with(image: image, options: options, logPath: dir + "/console.log") { vm in
                        try await Self.checkTraffic(vm, scope, container: "dhcp", server: "10.77.60.2", pool: pool)
                        let neighbours = try await scope.exec("dhcp", ["ip", "neigh", "show"]).stdout.lowercased()
                        #expect(
                            neighbours.contains(options.mac),
                            "the container should know the VM's MAC \(options.mac): \(neighbours)")
                    }
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
