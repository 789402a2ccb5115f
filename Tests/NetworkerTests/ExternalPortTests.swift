import Shared
import Testing

@testable import vde_networker

#if canImport(Glibc)
    import Glibc
#endif

/// The MAC table, the port notifications and the book of external ports, on text captured from
/// a real vde_switch 2.3.2 (2026-12-01): a hand-started `vde_plug2tap` in a namespace, whose tap
/// has the MAC 02:11:22:33:44:55, attached, pinged, and left.
struct ExternalPortTests {
    static let hashPrint = """
        0000 DATA END WITH '.'
        Hash: 0070 Addr: 02:11:22:33:44:55 VLAN 0000 to port: 001  age 0 secs
        Hash: 0113 Addr: 52:54:00:AB:cd:03 VLAN 0000 to port: 012  age 31 secs
        .
        1000 Success

        vde$ 
        """

    /// What the watch's connection received, in order, with `debug/add` of the five categories.
    static let notifications = [
        "3031 port/ep/+ Port 01 FD  6",
        "3023 port/descr Port 01 FD  6 -> \"vde_plug2tap: user=root pid=9643\"",
        "3011 hash/+ 02:11:22:33:44:55 VLAN 00:00 Port 1",
        "3032 port/ep/- Port 01 FD  6",
        "3022 port/- 01",
    ]

    @Test func macTableLinesAreRead() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.banner + Self.hashPrint))
        #expect(reply.succeeded)
        #expect(
            MACTable.parse(reply.data) == [
                MACTableEntry(macAddress: "02:11:22:33:44:55", port: 1),
                MACTableEntry(macAddress: "52:54:00:ab:cd:03", port: 12),
            ])
    }

    @Test func macTableSkipsWhatIsNotAnEntry() {
        #expect(
            MACTable.parse(["", "Hash: 0070 Addr: 02:11:22:33:44 VLAN 0000 to port: 001", "garbage port: 3"]).isEmpty)
        #expect(MACTable.parse(["Hash: 0070 Addr: 02:11:22:33:44:55 VLAN 0000 to port: x"]).isEmpty)
    }

    @Test func notificationsAreRead() {
        let events = Self.notifications.map { PortEvent.parse(Substring($0)) }
        #expect(
            events == [
                .endpointAdded(port: 1, id: 6),
                .endpointDescribed(port: 1, id: 6, description: "vde_plug2tap: user=root pid=9643"),
                .macLearnt(macAddress: "02:11:22:33:44:55", port: 1),
                .endpointRemoved(port: 1, id: 6),
                .portRemoved(port: 1),
            ])
    }

    @Test func repliesAndOtherLinesAreNotNotifications() {
        for line in ["1000 Success", "0000 DATA END WITH '.'", "3031 port/ep/+ Port xx FD 6", "3099 fstp/+ 1", ""] {
            #expect(PortEvent.parse(Substring(line)) == nil, "\(line)")
        }
    }

    @Test func subscriptionRepliesSkipTheBannerAndKeepEvents() {
        var buffer = Array(CapturedReplies.banner.utf8)
        #expect(PortEventWatch.takeCommandResult(&buffer) == nil)
        buffer += Array("1000 Success\n\nvde$ ".utf8)
        #expect(PortEventWatch.takeCommandResult(&buffer) == 1000)
        #expect(PortEventWatch.takeCommandResult(&buffer) == nil, "taken once")
        buffer = Array("vde$ 3031 port/ep/+ Port 01 FD  6\n1022 Invalid argument\n\nvde$ 1000 Suc".utf8)
        #expect(PortEventWatch.takeCommandResult(&buffer) == 1022)
        #expect(String(decoding: buffer, as: UTF8.self) == "vde$ 3031 port/ep/+ Port 01 FD  6\n\nvde$ 1000 Suc")
    }

    @Test func programIsTheDescriptionsFirstWord() {
        #expect(PortEntry.programName(of: "vde_plug2tap: user=root pid=12068") == "vde_plug2tap")
        #expect(PortEntry.programName(of: "QEMU user=root pid=12085") == "QEMU")
        #expect(PortEntry.programName(of: "") == nil)
    }

    @Test func theBookFollowsAPortThroughItsLife() {
        var book = PortBook()
        let events = Self.notifications.compactMap { PortEvent.parse(Substring($0)) }
        for event in events.prefix(3) { book.apply(event) }
        #expect(
            book.externalPorts(ourPIDs: []) == [
                ExternalPort(
                    port: 1, peer: "vde_plug2tap: user=root pid=9643", program: "vde_plug2tap", pid: 9643,
                    macAddresses: ["02:11:22:33:44:55"])
            ])
        #expect(book.externalPorts(ourPIDs: [9643]).isEmpty, "a port of our own plug is not external")
        book.apply(events[3])
        #expect(book.externalPorts(ourPIDs: []).isEmpty, "the port's only client left")
        book.apply(events[4])
        #expect(book.ports.isEmpty)
    }

    @Test func whatTheSwitchSaysReplacesTheBookButKeepsExpiredMACs() throws {
        let allprint = try #require(ManagementReply.parse(CapturedReplies.allprintWithQEMU))
        let entries = PortReport.parseAll(allprint.data)
        var book = PortBook()
        book.apply(.endpointAdded(port: 3, id: 9))
        book.apply(.macLearnt(macAddress: "52:54:00:12:34:56", port: 3))
        book.apply(.endpointAdded(port: 5, id: 11))  // gone since: not in the answer
        book.replace(entries: entries, macTable: [MACTableEntry(macAddress: "02:00:00:00:00:01", port: 1)])
        let counters = Dictionary(uniqueKeysWithValues: entries.map { ($0.counters.port, $0.counters) })
        let external = book.externalPorts(ourPIDs: [12068, 12077], counters: counters)
        #expect(external.map(\.port) == [3])
        let qemu = try #require(external.first)
        #expect(qemu.program == "QEMU" && qemu.pid == 12085)
        #expect(qemu.macAddresses == ["52:54:00:12:34:56"], "a MAC the table let expire stays while the port is used")
        #expect(qemu.counters?.outPackets == 11)
        #expect(book.ports[5] == nil)
        #expect(book.ports[1]?.macAddresses == ["02:00:00:00:00:01"])
    }

    @Test func aMACMovesWithItsOwner() {
        var book = PortBook()
        book.apply(.endpointAdded(port: 1, id: 6))
        book.apply(.endpointAdded(port: 2, id: 7))
        book.apply(.macLearnt(macAddress: "02:11:22:33:44:55", port: 1))
        book.apply(.macLearnt(macAddress: "02:11:22:33:44:55", port: 2))
        #expect(book.ports[1]?.macAddresses.isEmpty == true)
        #expect(book.ports[2]?.macAddresses == ["02:11:22:33:44:55"])
    }
}

/// The worker's part, against the fakes: an external port is reported by `status`, and named
/// as lost when the switch dies.
@Suite(.timeLimit(.minutes(1))) struct WorkerExternalPortTests {
    /// The worker's own probe holds a port while it waits for a new switch to answer: it is
    /// neither an external port nor an other port (a status under load once listed it as both).
    @Test func aPortOfTheWorkersOwnPIDIsNotExternal() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec, restoring: [])
        fixture.lab.with { $0.ports[7] = getpid() }
        let status = await fixture.worker.status()
        #expect(status.externalPorts == [], "\(String(describing: status.externalPorts))")
        #expect(status.otherPorts?.contains { $0.port == 7 } == false, "\(String(describing: status.otherPorts))")
        await fixture.cleanUp()
    }

    @Test func aSwitchDeathNamesTheExternalPortsItCutOff() async throws {
        let fixture = FakeWorkerFixture()
        _ = try await fixture.worker.start(spec: fixture.spec, restoring: [])
        let one = fixture.endpoint(1)
        _ = try await fixture.worker.addEndpoint(one)
        // A VM-style client on port 5, not one of the worker's plugs.
        let vmPID: Int32 = 1_999_999_999
        fixture.lab.with { $0.ports[5] = vmPID }
        let status = await fixture.worker.status()
        #expect(status.externalPorts?.map(\.port) == [5], "\(String(describing: status.externalPorts))")
        #expect(status.externalPorts?.first?.pid == vmPID)
        #expect(status.externalPorts?.first?.program == "vde_plug2tap")
        #expect(status.lostExternalPorts == nil)

        // The plugs of a dying switch exit too, and their exits may be handled first.
        let plug = try #require(fixture.lab.plugs.first)
        plug.exit()
        _ = try await fixture.event(.childExited) { $0.child == .plug && $0.pid == plug.pid }
        let firstSwitch = try #require(fixture.lab.runningSwitch)
        firstSwitch.exit()
        _ = try await fixture.event(.childExited) { $0.child == .switch }
        _ = try await fixture.event(.childRestarted) { $0.child == .switch }
        let after = await fixture.worker.status()
        let lost = try #require(after.lostExternalPorts?.first, "no lost ports reported: \(after)")
        #expect(lost.switchPID == firstSwitch.pid)
        #expect(lost.ports.map(\.port) == [5], "only the external port is lost, not the endpoint's: \(lost.ports)")
        #expect(lost.ports.first?.pid == vmPID)
        await fixture.cleanUp()
    }
}

/// ``PortEventWatch`` against a stand-in for the switch's management socket that answers as
/// vde_switch 2.3.2 does (banner, `1000 Success`, prompts, `3xxx` lines), so that the
/// subscription, the reading of events cut anywhere, and the end are checked without vde2.
@Suite(.timeLimit(.minutes(1))) struct PortEventWatchTests {
    /// A listening socket in a fresh directory of /tmp; `remove()` takes both away.
    struct FakeManagementSocket {
        let directory: String
        let path: String
        let fd: Int32

        init() throws {
            var template = Array("/tmp/vde-pew-XXXXXX".utf8CString)
            guard let made = template.withUnsafeMutableBufferPointer({ $0.baseAddress.flatMap { mkdtemp($0) } }) else {
                throw SystemCallError.last("mkdtemp")
            }
            directory = String(cString: made)
            path = directory + "/mgmt"
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard bound == 0, listen(fd, 1) == 0 else { throw SystemCallError.last("bind/listen", path) }
        }

        func remove() {
            close(fd)
            unlink(path)
            rmdir(directory)
        }

        /// Accepts one connection and plays the switch: the banner, one reply per command line
        /// (an event slipped in before the second reply), then `events` written in the pieces
        /// given, then the end. Returns the commands it received.
        func serve(events: [String]) -> [String] {
            let connection = accept(fd, nil, nil)
            guard connection >= 0 else { return [] }
            defer { close(connection) }
            func write(_ text: String) {
                _ = Array(text.utf8).withUnsafeBytes { send(connection, $0.baseAddress, $0.count, 0) }
            }
            func readLine() -> String? {
                var line: [UInt8] = []
                var byte: UInt8 = 0
                while recv(connection, &byte, 1, 0) == 1 {
                    if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
                    line.append(byte)
                }
                return nil
            }
            write(CapturedReplies.banner)
            var commands: [String] = []
            while commands.count < PortEvent.categories.count, let command = readLine() {
                commands.append(command)
                if commands.count == 2 { write("3031 port/ep/+ Port 02 FD  7\n") }
                write("1000 Success\n\nvde$ ")
            }
            for piece in events {
                write(piece)
                usleep(2000)
            }
            return commands
        }
    }

    @Test func subscribesThenHandsOnEventsInOrderUntilTheSwitchGoes() async throws {
        let fake = try FakeManagementSocket()
        defer { fake.remove() }
        let pieces = [
            "vde$ 3031 port/ep/+ Port 01 FD  6\n3023 port/descr Port 01 FD  6 -> \"QEMU user=root pid=77\"\n",
            "3011 hash/+ 52:54:00:12:34:56 VLAN 00:00 Po",
            "rt 1\r\n3032 port/ep/- Port 01 FD  6\n",
        ]
        async let served = Blocking.run { fake.serve(events: pieces) }
        let path = fake.path
        let watch = try await Blocking.run { PortEventWatch.open(path: path, timeout: .seconds(5)) }.get()
        let (stream, continuation) = AsyncStream.makeStream(of: [PortEvent].self)
        try watch.start(onEvents: { continuation.yield($0) }, onEnd: { continuation.finish() })
        var events: [PortEvent] = []
        for await batch in stream { events += batch }
        #expect(await served == PortEvent.categories.map { "debug/add \($0)" })
        #expect(
            events == [
                .endpointAdded(port: 2, id: 7), .endpointAdded(port: 1, id: 6),
                .endpointDescribed(port: 1, id: 6, description: "QEMU user=root pid=77"),
                .macLearnt(macAddress: "52:54:00:12:34:56", port: 1), .endpointRemoved(port: 1, id: 6),
            ], "events written during the subscription and right after it are not lost")
        watch.cancel()
    }

    @Test func aRefusedSubscriptionIsAnError() async throws {
        let fake = try FakeManagementSocket()
        defer { fake.remove() }
        let path = fake.path
        async let served: Void = Blocking.run {
            let connection = accept(fake.fd, nil, nil)
            guard connection >= 0 else { return }
            _ = Array((CapturedReplies.banner + "1022 Invalid argument\n\nvde$ ").utf8).withUnsafeBytes {
                send(connection, $0.baseAddress, $0.count, 0)
            }
            var byte: UInt8 = 0
            while recv(connection, &byte, 1, 0) == 1 {}
            close(connection)
        }
        let result = await Blocking.run { PortEventWatch.open(path: path, timeout: .seconds(5)) }
        guard case .failure(let error) = result else {
            Issue.record("a 1022 reply should fail the subscription")
            return
        }
        #expect(error.description.contains("1022"), "\(error)")
        await served
    }
}
