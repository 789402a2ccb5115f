import Foundation
import Glibc
import Testing

extension Acceptance {
    /// Checks of the test harness itself, so that a passing acceptance run means something:
    /// commands report failure, timeouts fire, polls give up, replies parse.
    @Suite(.timeLimit(.minutes(2)))
    struct HarnessTests {
        @Test func commandsReportOutputAndFailure() async throws {
            let ok = try await Command.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 0"])
            #expect(ok.succeeded && ok.stdout == "out\n" && ok.stderr == "err\n")
            let failed = try await Command.run(["/bin/sh", "-c", "exit 3"])
            #expect(!failed.succeeded)
            #expect(failed.status == .exited(3))
            await #expect(throws: AcceptanceFailure.self) { try await Command.check(["/bin/false"]) }
        }

        @Test func commandTimeoutKillsTheProcessGroup() async throws {
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: AcceptanceFailure.self) {
                try await Command.run(["/bin/sh", "-c", "sleep 30 & sleep 30"], timeout: .seconds(1))
            }
            #expect(clock.now - start < .seconds(10), "the timeout did not end the command")
        }

        /// Empty files (every kernel thread's /proc/PID/cmdline) read as empty, and without a
        /// leak: FileManager.contents(atPath:) lost 4 KiB per empty file, which
        /// `scripts/test --sanitize address --filter HarnessTests` reports (LeakSanitizer).
        @Test func filesReadWholeAndEmptyFilesWithoutLeaking() async throws {
            try await TempDir.with("read") { dir in
                let empty = dir + "/empty"
                let full = dir + "/full"
                #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
                let text = String(repeating: "0123456789abcdef", count: 600)  // more than one 4 KiB read
                #expect(FileManager.default.createFile(atPath: full, contents: Data(text.utf8)))
                for _ in 0..<100 { #expect(TempDir.readBytes(empty) == []) }
                #expect(TempDir.readText(full) == text)
                #expect(TempDir.readBytes(dir + "/missing") == nil)
            }
        }

        @Test func pollGivesUpAtTheDeadline() async throws {
            await #expect(throws: AcceptanceFailure.self) {
                try await Poll.until("never", deadline: .milliseconds(300)) { false }
            }
            var calls = 0
            try await Poll.until("third call") {
                calls += 1
                return calls == 3
            }
            #expect(calls == 3)
        }

        @Test func backgroundSwitchStopsOnEOFAndNamespacesWork() async throws {
            try HostRequirements.check()
            try await TempDir.with("harness") { dir in
                let run = try await Background.with(
                    ["/usr/bin/vde_switch", "-s", dir + "/sw", "-M", dir + "/mgmt"], logPath: dir + "/log",
                    stop: .closeStdin
                ) { sw in
                    try await Poll.until("switch ctl socket") {
                        TempDir.exists(dir + "/sw/ctl") && TempDir.exists(dir + "/mgmt")
                    }
                    let info = try await managementCommand(dir + "/mgmt", "port/showinfo")
                    #expect(info.contains("Numports=32") && info.contains("1000 Success"), "management reply: \(info)")
                    #expect(sw.isRunning)
                    #expect(HostInspector.vdeProcesses(mentioning: [dir]).map(\.pid) == [sw.pid])
                    #expect(TempDir.sockets(under: dir).contains(dir + "/sw/ctl"))
                    #expect(TempDir.sockets(under: dir).contains(dir + "/mgmt"))
                }
                try run.outcome.get()
                #expect(run.stopSteps == ["close stdin"])
                #expect(run.status == .exited(0))
                #expect(HostInspector.vdeProcesses(mentioning: [dir]).isEmpty)
            }
            try await NetNS.with(count: 1) { namespaces in
                let ping = try await namespaces[0].ping("127.0.0.1", count: 1, wait: 1)
                #expect(ping.succeeded, "loopback ping in a fresh namespace: \(ping)")
                let unreachable = try await namespaces[0].ping("10.203.99.1", count: 1, wait: 1)
                #expect(!unreachable.succeeded, "a ping to nowhere must fail: \(unreachable)")
            }
        }

        @Test func httpRepliesParse() throws {
            let plain = try UnixHTTPClient.parse(
                Array("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n{\"Err\":1}".utf8))
            #expect(plain.status == 404 && plain.bodyText == "{\"Err\":1}")
            let chunked = try UnixHTTPClient.parse(
                Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n".utf8))
            #expect(chunked.status == 200 && chunked.bodyText == "{\"a\":1}")
            #expect(throws: AcceptanceFailure.self) { try UnixHTTPClient.parse(Array("garbage".utf8)) }
        }
    }
}
