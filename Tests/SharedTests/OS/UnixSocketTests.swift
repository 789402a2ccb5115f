import Shared
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A listening unix stream socket at `path` (backlog 1), closed by ``close()``.
private struct Listener {
    let fd: Int32

    init(path: String, listening: Bool = true) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw SystemCallError.last("bind", path) }
        if listening { guard listen(fd, 1) == 0 else { throw SystemCallError.last("listen", path) } }
    }

    func accept() -> Int32 { Glibc.accept(fd, nil, nil) }
    func close() { Glibc.close(fd) }
}

/// A ``UnixSocket`` connected to a listener in a scratch directory, and the accepted peer.
private struct ConnectedPair {
    let scratch: ScratchDirectory
    let listener: Listener
    let socket: UnixSocket
    let peer: Int32

    init() throws {
        scratch = try ScratchDirectory()
        listener = try Listener(path: scratch.path + "/s")
        socket = try UnixSocket.connect(to: scratch.path + "/s", timeout: .seconds(2))
        peer = listener.accept()
    }

    func close() {
        socket.close()
        if peer >= 0 { Glibc.close(peer) }
        listener.close()
        scratch.remove()
    }
}

@Suite(.timeLimit(.minutes(1))) struct UnixSocketTests {
    @Test func connectsSendsAndReceivesUntilTheEnd() throws {
        let pair = try ConnectedPair()
        defer { pair.close() }
        let (socket, peer) = (pair.socket, pair.peer)
        #expect(peer >= 0)
        try socket.send(Array("ping".utf8), deadline: .now + .seconds(2))
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(recv(peer, &buffer, buffer.count, 0) == 4)
        #expect(Array(buffer[0..<4]) == Array("ping".utf8))
        _ = Glibc.send(peer, "pong", 4, 0)
        #expect(try socket.receive(deadline: .now + .seconds(2)) == Array("pong".utf8))
        Glibc.shutdown(peer, Int32(SHUT_WR))
        #expect(try socket.receive(deadline: .now + .seconds(2)).isEmpty, "the end of the stream")
    }

    @Test func receiveMessageStopsWhenCompleteAtTheEndOrOverTheLimit() throws {
        let pair = try ConnectedPair()
        defer { pair.close() }
        let (socket, peer) = (pair.socket, pair.peer)
        _ = Glibc.send(peer, "one.two", 7, 0)
        let complete = try socket.receiveMessage(deadline: .now + .seconds(2), limit: 100) {
            $0.contains(UInt8(ascii: "."))
        }
        #expect(String(decoding: complete, as: UTF8.self).hasPrefix("one."))
        _ = Glibc.send(peer, String(repeating: "x", count: 200), 200, 0)
        let error = #expect(throws: SystemCallError.self) {
            try socket.receiveMessage(deadline: .now + .seconds(2), limit: 100)
        }
        #expect(error?.errno == EMSGSIZE)
        Glibc.shutdown(peer, Int32(SHUT_WR))
        _ = try socket.receiveMessage(deadline: .now + .seconds(2), limit: 1 << 20)
    }

    @Test func receiveGivesUpAtTheDeadlineWithETIMEDOUT() throws {
        let pair = try ConnectedPair()
        defer { pair.close() }
        let error = #expect(throws: SystemCallError.self) {
            try pair.socket.receive(deadline: .now + .milliseconds(20))
        }
        #expect(error?.errno == ETIMEDOUT)
        #expect(error?.call == "recv")
    }

    @Test func probeTellsAStaleSocketFromALiveOneAndFromNone() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let live = try Listener(path: scratch.path + "/live")
        defer { live.close() }
        try Listener(path: scratch.path + "/stale", listening: false).close()
        #expect(UnixSocket.probe(scratch.path + "/live") == 0)
        #expect(UnixSocket.answers(scratch.path + "/live"))
        #expect(UnixSocket.probe(scratch.path + "/stale") == ECONNREFUSED)
        #expect(UnixSocket.probe(scratch.path + "/none") == ENOENT)
        #expect(UnixSocket.probe(scratch.path + "/" + String(repeating: "x", count: 120)) == ENAMETOOLONG)
        let directory = try #require(DirectoryHandle(scratch.path))
        defer { directory.close() }
        #expect(directory.isRefusedSocket("stale"))
        #expect(!directory.isRefusedSocket("live"))
        #expect(!directory.isRefusedSocket("none"))
    }

    @Test func connectNamesTheCallAndThePath() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let error = #expect(throws: SystemCallError.self) {
            try UnixSocket.connect(to: scratch.path + "/none", timeout: .seconds(1))
        }
        #expect(error?.description == "connect \(scratch.path)/none: No such file or directory")
    }
}
