/// The error every part of vde-supervisor reports: a stable code for programs,
/// and a message that tells a user what went wrong and what to do about it.
public struct VDEError: Error, Sendable, Equatable, Codable, CustomStringConvertible {
    /// Broad classes of failure; they decide, for example, the HTTP status of a plugin reply.
    public enum Code: String, Sendable, Codable {
        /// The request or an option was malformed or not allowed.
        case invalidArgument
        /// A network, endpoint, pool or address that is not known.
        case notFound
        /// The request conflicts with what exists (address in use, network still has endpoints).
        case conflict
        /// A limit was reached (switch ports, addresses of a pool).
        case exhausted
        /// A child program or the system failed (switch did not start, tap could not be made).
        case system
        /// A worker did not answer in time or went away.
        case unavailable
        /// A bug: something that should not happen.
        case `internal`
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func invalid(_ message: String) -> VDEError { VDEError(.invalidArgument, message) }
    public static func notFound(_ message: String) -> VDEError { VDEError(.notFound, message) }
    public static func conflict(_ message: String) -> VDEError { VDEError(.conflict, message) }
    public static func exhausted(_ message: String) -> VDEError { VDEError(.exhausted, message) }
    public static func system(_ message: String) -> VDEError { VDEError(.system, message) }
    public static func unavailable(_ message: String) -> VDEError { VDEError(.unavailable, message) }
}

/// An error a module defines for itself that knows how to present itself as a ``VDEError``
/// (its code and user-facing message). Each module keeps one such type.
public protocol ReportableError: Error, Sendable {
    var vdeError: VDEError { get }
}

extension VDEError: ReportableError {
    public var vdeError: VDEError { self }
}

extension VDEError {
    /// Wraps any error into a ``VDEError``, keeping the message of a ``ReportableError``.
    public init(wrapping error: any Error) {
        if let reportable = error as? any ReportableError {
            self = reportable.vdeError
        } else {
            self = VDEError(.internal, "\(error)")
        }
    }
}
