import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A failed system call: which call, on what (a path, a socket, a pid), and the errno with the
/// system's text for it (`mkdir /run/vde: Permission denied`). The one error type of the OS layer;
/// callers wrap it into their module's error with what a user should do about it.
public struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call that failed (`open`, `connect`, `pidfd_open`, ...).
    public var call: String
    /// What it was called on, if anything worth naming.
    public var subject: String?
    public var errno: Int32

    public init(call: String, subject: String? = nil, errno: Int32) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    /// The failure of `call` just now: takes the thread's current `errno`.
    public static func last(_ call: String, _ subject: String? = nil) -> SystemCallError {
        SystemCallError(call: call, subject: subject, errno: Glibc.errno)
    }

    public var description: String {
        "\(call)\(subject.map { " \($0)" } ?? ""): \(text)"
    }

    /// The system's text for ``errno`` (`No such file or directory`).
    public var text: String { Self.text(errno) }

    /// The system's text for an errno value.
    public static func text(_ code: Int32) -> String {
        guard let message = strerror(code) else { return "errno \(code)" }
        return String(cString: message)
    }

    /// Runs a swift-system call, turning its `Errno` into a ``SystemCallError``.
    static func wrapping<T>(_ call: String, _ subject: String?, _ body: () throws -> T) throws(SystemCallError) -> T {
        do {
            return try body()
        } catch let error as Errno {
            throw SystemCallError(call: call, subject: subject, errno: error.rawValue)
        } catch {
            throw SystemCallError(call: call, subject: subject, errno: EIO)
        }
    }
}
