import Glibc
import Shared
import Testing

@testable import vde_supervisor

@Suite struct StateDirLockTests {
    @Test func aSecondHolderIsRefusedWithThePidOfTheFirst() throws {
        var template = Array("/tmp/vde-lock-test-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer {
            $0.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/nonexistent"
        }
        defer {
            for file in ["/state/lock", "/state"] { remove(directory + file) }
            rmdir(directory)
        }
        let first = try StateDirLock.acquire(stateDir: directory + "/state")
        // flock locks belong to the open file description: a second open conflicts even here.
        do {
            _ = try StateDirLock.acquire(stateDir: directory + "/state")
            Issue.record("the second acquire should fail")
        } catch {
            guard case .held(_, _, let pid) = error else {
                Issue.record("expected .held, got \(error)")
                return
            }
            #expect(pid == getpid())
            #expect(error.vdeError.message.contains("pid \(getpid())"))
        }
        first.release()
        let again = try StateDirLock.acquire(stateDir: directory + "/state")
        again.release()
    }
}
