import Shared

/// `POST /v1/link` on the control socket: show or change the links of one network's endpoints
/// (`vde-supervisor link`). The body names the network and, optionally, one endpoint, each by
/// full ID or a unique prefix (the CLI has already turned Docker names into IDs).
struct LinkRequest: Codable, Sendable, Equatable {
    enum Action: String, Codable, Sendable, CaseIterable {
        case show, set, clear, down, up
    }

    var network: String
    /// Nil: every endpoint of the network; `set` and `clear` then also change the network's
    /// default, which later endpoints get.
    var endpoint: String?
    var action: Action
    /// `set`: the keys and values, as the CLI takes them (`{"delay":"50ms","loss":"2%"}`).
    var settings: [String: String]?
    /// `clear`: the keys to clear; absent or empty: all of them.
    var keys: [String]?
}

/// The answer to a ``LinkRequest``: each endpoint's link as recorded (the truth) and as its
/// worker reports it.
struct LinkReply: Codable, Sendable, Equatable {
    var network: String
    var shortNetwork: String
    /// The network's default link after the request (`-o link_*`, changed by `set`/`clear`
    /// without an endpoint); nil: none.
    var networkDefault: LinkInfo?
    var endpoints: [Endpoint]
    /// True when the request changed the record (false for `show`, and for a change that
    /// was already in force).
    var changed: Bool

    struct Endpoint: Codable, Sendable, Equatable {
        var id: String
        var shortID: String
        var tap: String
        /// The recorded link.
        var link: LinkInfo
        /// The plug's state as the worker reported it (`plugged`, `linkDown`, ...), or
        /// `unknown` when it was not asked or did not answer.
        var state: String
        /// What happened to the change in the worker, when it did not simply apply it: the
        /// worker is restarting (it applies the recorded link when it is back), or its error.
        var note: String?
        /// True when the worker refused or failed the change (the record holds it all the same,
        /// and the next worker start applies it).
        var failed: Bool?
        /// Docker's name for the container: filled in by the CLI.
        var container: String?
    }
}

/// A link as `status --json` and the `link` request show it: the exact units of
/// ``LinkImpairment`` and the same values as a user writes them.
struct LinkInfo: Codable, Sendable, Equatable {
    /// The cable is pulled (`link ... down`).
    var down: Bool
    /// `delay=50ms loss=2%`, `none`.
    var summary: String
    /// The set keys and their values as a user writes them (`{"delay":"50ms"}`).
    var settings: [String: String]
    var impairment: LinkImpairment

    init(_ settings: LinkSettings) {
        down = settings.down
        summary = settings.impairment.summary
        self.settings = Dictionary(
            settings.impairment.settings.map { ($0.key.rawValue, $0.value) }, uniquingKeysWith: { a, _ in a })
        impairment = settings.impairment
    }

    /// `-` when unimpaired and up; `down`, `delay=50ms loss=2%`, `down, delay=50ms`.
    var short: String {
        let impaired = impairment.isEmpty && settings.isEmpty ? nil : summary
        switch (down, impaired) {
        case (false, nil): return "-"
        case (true, nil): return "down"
        case (false, let text?): return text
        case (true, let text?): return "down, " + text
        }
    }
}
