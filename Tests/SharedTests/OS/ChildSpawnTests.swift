import Shared
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.timeLimit(.minutes(1))) struct ChildSpawnTests {
    /// Starts `argv`, waits for its exit through its pidfd and reaps it.
    private func run(_ argv: [String]) async throws -> ChildSpawn.Exit? {
        let pid = try ChildSpawn.start(argv)
        let handle = try ProcessHandle(pid: pid)
        defer { handle.close() }
        #expect(await handle.waitForExit(timeout: .seconds(20)))
        return ChildSpawn.reap(handle)
    }

    @Test func theExitStatusComesFromThePidfd() async throws {
        #expect(try await run(["/bin/sh", "-c", "exit 3"]) == .exited(3))
    }

    @Test func noDescriptorBeyondTheStandardThreeIsInherited() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0, "a pipe without close-on-exec")
        defer {
            close(fds[0])
            close(fds[1])
        }
        #expect(try await run(["/bin/sh", "-c", "[ -e /proc/$$/fd/\(fds[1]) ] && exit 1; exit 0"]) == .exited(0))
    }

    @Test func signalsAreNeitherBlockedNorIgnoredInTheChild() async throws {
        // The test runner's threads block signals and this process may ignore SIGPIPE.
        let old = signal(SIGTERM, SIG_IGN)
        defer { signal(SIGTERM, old) }
        let pid = try ChildSpawn.start(["/bin/sleep", "30"])
        let handle = try ProcessHandle(pid: pid)
        defer { handle.close() }
        #expect(ProcFS.stat(of: pid).map { _ in getpgid(pid) } == pid, "a process group of its own")
        #expect(handle.send(SIGTERM))
        #expect(await handle.waitForExit(timeout: .seconds(20)))
        #expect(ChildSpawn.reap(handle) == .signaled(SIGTERM))
        #expect(ChildSpawn.reap(handle) == nil, "reaped once")
    }

    @Test func aMissingProgramIsENOENT() {
        let error = #expect(throws: SystemCallError.self) { try ChildSpawn.start(["/nonexistent/program"]) }
        #expect(error?.errno == ENOENT)
    }
}
