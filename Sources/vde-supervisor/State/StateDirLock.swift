import Glibc
import Shared

/// The state dir's lock: held (`flock`, exclusive) by the one supervisor that uses the state dir,
/// from before it loads the state until it exits. Two supervisors on one state would fight over
/// the same switches and overwrite each other's state file; the second one stops with the pid
/// of the first. The lock goes with the process (the kernel drops it at exit, even after a
/// SIGKILL), so a stale lock file never blocks a start.
///
/// The file (`STATE_DIR/lock`) holds the pid of its holder, for the message only: the lock is
/// the `flock`, not the file's existence or content.
final class StateDirLock: Sendable {
    static let fileName = "lock"

    let path: String
    private let fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    /// Takes the lock of `stateDir` (created, mode 0700, when missing) without waiting.
    static func acquire(stateDir: String) throws(StateDirLockError) -> StateDirLock {
        do {
            try StateStore<SupervisorState>.makeDirectory(stateDir)
        } catch {
            throw .directory(error)
        }
        let path = (stateDir.hasSuffix("/") ? String(stateDir.dropLast()) : stateDir) + "/" + fileName
        let fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .open(path: path, errno: errno) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let error = errno
            if error == EINTR { continue }
            let holder = readPID(fd)
            close(fd)
            if error == EWOULDBLOCK { throw .held(path: path, stateDir: stateDir, pid: holder) }
            throw .lock(path: path, errno: error)
        }
        // Ours now: record our pid for the message a second supervisor prints.
        let text = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) == 0 {
            _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        }
        return StateDirLock(path: path, fd: fd)
    }

    /// The pid written by the holder, if it wrote one yet.
    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[..<n], as: UTF8.self)
        return text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.flatMap { Int32($0) }.flatMap {
            $0 > 0 ? $0 : nil
        }
    }

    /// Lets go of the lock (the process exit does the same).
    func release() {
        close(fd)
    }
}

/// Why the state dir could not be locked.
enum StateDirLockError: ReportableError {
    case directory(StateStoreError)
    case open(path: String, errno: Int32)
    case lock(path: String, errno: Int32)
    /// Another process holds the lock.
    case held(path: String, stateDir: String, pid: Int32?)

    var vdeError: VDEError {
        switch self {
        case .directory(let error):
            return error.vdeError
        case .open(let path, let errno):
            return .system("cannot open the state dir's lock file \(path): \(StateStoreError.text(errno))")
        case .lock(let path, let errno):
            return .system("cannot lock \(path): \(StateStoreError.text(errno))")
        case .held(let path, let stateDir, let pid):
            let who = pid.map { "another vde-supervisor (pid \($0))" } ?? "another vde-supervisor"
            return .conflict(
                "\(who) already uses the state dir \(stateDir) (it holds \(path)); "
                    + "stop it first (systemctl stop vde-supervisor), or give this one another --state-dir")
        }
    }
}
