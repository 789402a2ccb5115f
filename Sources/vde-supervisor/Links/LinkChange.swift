import Shared

/// What one `link` action does to a link: pure, so that every endpoint's new link (and the
/// network's new default) is computed and checked before anything changes.
struct LinkChange: Sendable, Equatable {
    var action: LinkRequest.Action
    /// `set`: parsed keys with their raw values, in key order.
    var settings: [(key: LinkImpairment.Key, value: String)]
    /// `clear`: the keys; empty: all.
    var keys: [LinkImpairment.Key]

    static func == (a: LinkChange, b: LinkChange) -> Bool {
        a.action == b.action && a.keys == b.keys
            && a.settings.map { "\($0.key)=\($0.value)" } == b.settings.map { "\($0.key)=\($0.value)" }
    }

    /// Checks the request's shape: known keys, `set` with at least one setting, no settings
    /// or keys where the action takes none.
    init(_ request: LinkRequest) throws(VDEError) {
        action = request.action
        let known = LinkImpairment.Key.allCases.map(\.rawValue).joined(separator: ", ")
        func key(_ name: String) throws(VDEError) -> LinkImpairment.Key {
            guard let key = LinkImpairment.Key(rawValue: name) else {
                throw .invalid("unknown link key '\(UntrustedText(name))'; known: \(known)")
            }
            return key
        }
        var settings: [(key: LinkImpairment.Key, value: String)] = []
        for (name, value) in (request.settings ?? [:]).sorted(by: { $0.key < $1.key }) {
            settings.append((try key(name), value))
        }
        var keys: [LinkImpairment.Key] = []
        for name in request.keys ?? [] { keys.append(try key(name)) }
        switch action {
        case .set:
            guard !settings.isEmpty else {
                throw .invalid("set needs at least one KEY=VALUE (keys: \(known)), e.g. set delay=50ms loss=2%")
            }
            guard keys.isEmpty else { throw .invalid("set takes KEY=VALUE settings, not keys to clear") }
        case .clear:
            guard settings.isEmpty else { throw .invalid("clear takes keys (or none: all), not KEY=VALUE settings") }
        case .show, .down, .up:
            guard settings.isEmpty, keys.isEmpty else {
                throw .invalid("\(action.rawValue) takes no keys or settings")
            }
        }
        // In key order (delay before jitter), whatever order the request had.
        let order = LinkImpairment.Key.allCases
        self.settings = order.flatMap { key in settings.filter { $0.key == key } }
        self.keys = keys
    }

    /// `impairment` with the settings applied or the keys cleared (the cable is not its business).
    func applied(to impairment: LinkImpairment) throws(VDEError) -> LinkImpairment {
        var result = impairment
        switch action {
        case .set:
            for (key, value) in settings { result = try result.setting(key, to: value) }
        case .clear:
            result = keys.isEmpty ? LinkImpairment() : keys.reduce(result) { $0.clearing($1) }
        case .show, .down, .up:
            return impairment
        }
        try result.check()
        return result
    }

    /// An endpoint's new link; nil when it is unimpaired and up (as a record without links).
    func applied(to link: LinkSettings?) throws(VDEError) -> LinkSettings? {
        var settings = link ?? LinkSettings()
        settings.impairment = try applied(to: settings.impairment)
        switch action {
        case .down: settings.down = true
        case .up: settings.down = false
        case .show, .set, .clear: break
        }
        return settings.isDefault ? nil : settings
    }

    /// The network's new default link (`set`/`clear` without an endpoint); nil when empty.
    func appliedToDefault(_ link: LinkImpairment?) throws(VDEError) -> LinkImpairment? {
        let result = try applied(to: link ?? LinkImpairment())
        return result == LinkImpairment() ? nil : result
    }
}
