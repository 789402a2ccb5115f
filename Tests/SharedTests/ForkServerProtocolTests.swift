import Shared
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct ForkServerProtocolTests {
    @Test func aReplyRoundTripsThroughItsBytes() {
        for reply in [ForkServerProtocol.Reply(pid: 4242, errno: 0), ForkServerProtocol.Reply(pid: 0, errno: EAGAIN)] {
            #expect(reply.bytes.count == ForkServerProtocol.Reply.size)
            #expect(ForkServerProtocol.Reply(bytes: reply.bytes) == reply)
        }
    }

    @Test func malformedRepliesAreRefused() {
        // Too short, too long, a pid with an error, neither pid nor error, a negative pid.
        let cases: [[UInt8]] = [
            [1, 0, 0],
            ForkServerProtocol.Reply(pid: 7, errno: 0).bytes + [0],
            withUnsafeBytes(of: (Int32(7), Int32(EAGAIN))) { Array($0) },
            withUnsafeBytes(of: (Int32(0), Int32(0))) { Array($0) },
            withUnsafeBytes(of: (Int32(-3), Int32(0))) { Array($0) },
        ]
        for bytes in cases { #expect(ForkServerProtocol.Reply(bytes: bytes) == nil, "\(bytes)") }
    }

    /// The room the server's command line reserves holds any worker's: the longest network ID,
    /// a long run dir, every log level.
    @Test(arguments: ["trace", "info", "critical"])
    func theServersCommandLineHasRoomForAnyWorkersOwn(level: String) throws {
        func bytes(_ arguments: [String]) -> Int { arguments.reduce(0) { $0 + $1.utf8.count + 1 } }
        let runDir = "/run/" + String(repeating: "d", count: 90)
        let server = ForkServerProtocol.serverArguments(
            executable: "/usr/libexec/vde-networker", logLevel: level, runDir: runDir)
        let longest = try NetworkID(String(repeating: "f", count: NetworkID.maxBytes))
        let worker = ForkServerProtocol.workerArguments(
            executable: "/usr/libexec/vde-networker", networkID: longest, logLevel: level, runDir: runDir, forked: true)
        #expect(bytes(worker) <= bytes(server))
        // A spare shows its own first, in the same room.
        let spare = ForkServerProtocol.spareArguments(
            executable: "/usr/libexec/vde-networker", logLevel: level, runDir: runDir)
        #expect(bytes(spare) <= bytes(server))
        #expect(Array(server.prefix(2)) == ["/usr/libexec/vde-networker", "--fork-server"])
        #expect(worker.last == "--fork-worker")
    }
}

@Suite struct DescriptorMessagesTests {
    @Test func descriptorsTravelWithTheBytes() throws {
        let (a, b) = try DescriptorMessages.socketPair()
        defer {
            close(a)
            close(b)
        }
        var pipe: [Int32] = [-1, -1]
        #expect(Glibc.pipe(&pipe) == 0)
        try DescriptorMessages.send(
            DescriptorMessages.Message(bytes: Array("hello".utf8), descriptors: [pipe[1]]), on: a)
        close(pipe[1])
        let message = try #require(try DescriptorMessages.receive(on: b, capacity: 64))
        #expect(message.bytes == Array("hello".utf8))
        #expect(message.descriptors.count == 1)
        // The descriptor received is the pipe's write end: what goes in comes out of the read end.
        let received = try #require(message.descriptors.first)
        #expect(fcntl(received, F_GETFD) & FD_CLOEXEC != 0, "received descriptors are close-on-exec")
        #expect(write(received, "x", 1) == 1)
        message.closeDescriptors()
        var byte: UInt8 = 0
        #expect(read(pipe[0], &byte, 1) == 1 && byte == UInt8(ascii: "x"))
        close(pipe[0])
    }

    @Test func theEndOfInputIsNilAndAnOversizedMessageIsRefused() throws {
        let (a, b) = try DescriptorMessages.socketPair()
        defer { close(b) }
        try DescriptorMessages.send(DescriptorMessages.Message(bytes: Array(repeating: 1, count: 100)), on: a)
        #expect {
            _ = try DescriptorMessages.receive(on: b, capacity: 10)
        } throws: { error in
            (error as? SystemCallError)?.errno == EMSGSIZE
        }
        #expect(DescriptorMessages.waitReadable(b, timeout: .milliseconds(10)) == false)
        close(a)
        #expect(DescriptorMessages.waitReadable(b, timeout: .seconds(1)))
        #expect(try DescriptorMessages.receive(on: b, capacity: 10) == nil)
    }
}
