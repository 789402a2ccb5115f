import Shared
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// ``UnixListener``: the worker's socket. A live socket is never replaced, a stale one is, and
/// the path goes only while it is still the listener's own file.
@Suite struct UnixListenerTests {
    @Test func bindsAcceptsAndNamesThePeer() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let listener = try UnixListener.bind(scratch.path + "/w.sock")
        defer { listener.close() }
        #expect(FileSystem.fileType(listener.path) == S_IFSOCK)
        var info = stat()
        #expect(lstat(listener.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try listener.accept() == nil, "nothing waits yet")
        let client = try UnixSocket.connect(to: listener.path, timeout: .seconds(2))
        defer { client.close() }
        let accepted = try #require(try listener.accept())
        defer { close(accepted) }
        let peer = try UnixListener.peer(of: accepted)
        #expect(peer.pid == getpid() && peer.uid == geteuid())
        #expect(try UnixListener.peer(of: client.fd).pid == getpid(), "the listener's side: this process too")
    }

    @Test func aLiveSocketIsNeverReplacedAndAStaleOneIs() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/w.sock"
        let first = try UnixListener.bind(path)
        #expect(throws: SystemCallError(call: "bind", subject: path, errno: EADDRINUSE)) {
            try UnixListener.bind(path)
        }
        #expect(UnixSocket.answers(path), "the live socket stays")
        // Stale: the file stays, nobody listens (a killed worker's).
        close(first.fd)
        #expect(UnixSocket.probe(path) == ECONNREFUSED)
        let second = try UnixListener.bind(path)
        defer { second.close() }
        #expect(UnixSocket.answers(path))
    }

    @Test func anotherKindOfFileIsLeftAlone() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/w.sock"
        try FileSystem.write(Array("keep".utf8), to: path)
        #expect(throws: SystemCallError(call: "bind", subject: path, errno: EEXIST)) {
            try UnixListener.bind(path)
        }
        #expect(FileSystem.readFile(path) == "keep")
    }

    @Test func closeRemovesOnlyItsOwnFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/w.sock"
        let old = try UnixListener.bind(path)
        // Someone replaced the file meanwhile: it is not ours to remove.
        unlink(path)
        try FileSystem.write(Array("other".utf8), to: path)
        old.close()
        #expect(FileSystem.readFile(path) == "other")
        unlink(path)
        let mine = try UnixListener.bind(path)
        mine.close()
        #expect(!FileSystem.exists(path))
    }
}
