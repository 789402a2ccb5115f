import Shared
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.timeLimit(.minutes(1))) struct ProcessTests {
    @Test func statLinesWithParenthesesInTheCommandName() throws {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100"
        let stat = try #require(ProcFS.parseStat(line))
        #expect(stat == ProcFS.Stat(state: "S", parent: 17, startTime: 987654))
        #expect(ProcFS.parseStat("4242 (x) S 1 2") == nil)
    }

    @Test func ownIdentityAndProgram() throws {
        let identity = try #require(ProcessIdentity.of(pid: getpid()))
        #expect(identity.startTime > 0)
        #expect(ProcFS.stat(of: getpid())?.parent == getppid())
        let program = try #require(ProcFS.program(of: getpid()))
        #expect(identity.isRunning(program: program))
        #expect(!identity.isRunning(program: program + "-not"))
        #expect(!ProcessIdentity(pid: identity.pid, startTime: identity.startTime + 1).isRunning(program: program))
        #expect(ProcessIdentity.of(pid: 0) == nil)
    }

    @Test func pidFilesHoldPidAndStartTimeOnly() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let file = PIDFile(path: scratch.path + "/run/x.pid")
        let identity = try #require(ProcessIdentity.of(pid: getpid()))
        try file.write(identity)
        #expect(file.read() == identity)
        #expect(file.runningProcess(program: try #require(ProcFS.program(of: getpid()))) == identity)
        try FileSystem.writeAtomically(file.path, contents: "\(getpid())\n")
        #expect(file.read() == nil, "a pid without a start time proves nothing")
        file.remove()
        #expect(!FileSystem.exists(file.path))
    }

    @Test func childrenAreListed() throws {
        let pid = try spawnChild(["/bin/sleep", "30"])
        defer {
            kill(pid, SIGKILL)
            reap(pid)
        }
        #expect(ProcFS.children(of: getpid()).contains(pid))
    }

    @Test func aHandleSignalsAndLearnsOfTheExit() async throws {
        let pid = try spawnChild(["/bin/sleep", "30"])
        defer { reap(pid) }
        let identity = try #require(ProcessIdentity.of(pid: pid))
        let handle = try ProcessHandle(identity)
        defer { handle.close() }
        let called = EventCount()
        handle.onExit { called.bump() }
        #expect(!handle.hasExited)
        #expect(await !handle.waitForExit(timeout: .milliseconds(20)))
        #expect(handle.send(SIGTERM))
        #expect(await handle.waitForExit(timeout: .seconds(10)))
        #expect(handle.hasExited)
        // The handler runs on the watcher's thread right after the waiters are told.
        let deadline = ContinuousClock.now + .seconds(5)
        while called.value == 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(called.value == 1)
        let late = EventCount()
        handle.onExit { late.bump() }
        #expect(late.value > 0, "a handler set after the exit runs at once")
    }

    @Test func aHandleRefusesAnIdentityWhoseStartTimeDiffers() throws {
        let identity = try #require(ProcessIdentity.of(pid: getpid()))
        let error = #expect(throws: SystemCallError.self) {
            try ProcessHandle(ProcessIdentity(pid: identity.pid, startTime: identity.startTime + 1))
        }
        #expect(error?.errno == ESRCH)
    }

    /// Issue 11 adopts processes that are not our children: their exit is an event too.
    @Test func theExitOfAProcessThatIsNotOurChildIsAnEvent() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let shell = try spawnChild(
            ["/bin/sh", "-c", "/bin/sleep 30 </dev/null >/dev/null 2>&1 & echo $!"], standardOutput: fds[1])
        close(fds[1])
        reap(shell)
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = read(fds[0], &buffer, buffer.count)
        close(fds[0])
        let text = String(decoding: buffer[0..<max(n, 0)], as: UTF8.self)
        let pid = try #require(pid_t(text.trimmingCharacters()))
        #expect(ProcFS.stat(of: pid)?.parent != getpid())
        let handle = try ProcessHandle(pid: pid)
        defer { handle.close() }
        #expect(handle.send(SIGKILL))
        #expect(await handle.waitForExit(timeout: .seconds(10)))
    }

    @Test func aDescriptorOfAnotherProcessCanBeCopied() throws {
        let handle = try ProcessHandle(pid: getpid())
        defer { handle.close() }
        let copy = try handle.duplicateDescriptor(1)
        #expect(copy > 2)
        close(copy)
        #expect(#expect(throws: SystemCallError.self) { try handle.duplicateDescriptor(100_000) }?.errno == EBADF)
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        String(self.drop { $0 == " " || $0 == "\n" }.reversed().drop { $0 == " " || $0 == "\n" }.reversed())
    }
}
