/// How one endpoint's link to its switch is impaired, in each direction: what wirefilter
/// emulates between the endpoint's tap and the switch (issue 13, README "Shaping links").
///
/// Every field nil means "not impaired": such an endpoint is plugged by `vde_plug2tap` alone
/// and pays nothing. Values are kept in exact units (microseconds, thousandths of a percent,
/// bit/s) so that what a user set is what `status` shows back, with no float rounding.
///
/// Set from three places, all parsed here and nowhere else: `docker network create -o
/// link_delay=20ms` (the network's default, ``parse(options:)``), `docker network connect
/// --driver-opt link_delay=20ms` (one endpoint, ``parse(endpointOptions:)``), and
/// `vde-supervisor link NET [CONTAINER] set delay=20ms` (live, ``setting(_:to:)``).
public struct LinkImpairment: Codable, Sendable, Equatable, Hashable {
    /// One-way delay added in each direction, in microseconds.
    public var delayMicroseconds: Int?
    /// The delay varies uniformly by up to this much either way (wirefilter's `delay D+J`).
    public var jitterMicroseconds: Int?
    /// Frames lost in each direction, in thousandths of a percent (1% = 1000).
    public var lossMillipercent: Int?
    /// Mean length of a burst of lost frames (wirefilter's Gilbert model); nil: independent losses.
    public var lossBurst: Int?
    /// Frames duplicated in each direction, in thousandths of a percent.
    public var duplicateMillipercent: Int?
    /// Bandwidth of each direction in bit/s; frames beyond it wait (a bottleneck, not a policer).
    public var rateBitsPerSecond: Int?

    public init(
        delayMicroseconds: Int? = nil, jitterMicroseconds: Int? = nil, lossMillipercent: Int? = nil,
        lossBurst: Int? = nil, duplicateMillipercent: Int? = nil, rateBitsPerSecond: Int? = nil
    ) {
        self.delayMicroseconds = delayMicroseconds
        self.jitterMicroseconds = jitterMicroseconds
        self.lossMillipercent = lossMillipercent
        self.lossBurst = lossBurst
        self.duplicateMillipercent = duplicateMillipercent
        self.rateBitsPerSecond = rateBitsPerSecond
    }

    /// No impairment at all (zero values count as none): the endpoint needs no wirefilter.
    public var isEmpty: Bool {
        (delayMicroseconds ?? 0) == 0 && (jitterMicroseconds ?? 0) == 0 && (lossMillipercent ?? 0) == 0
            && (duplicateMillipercent ?? 0) == 0 && rateBitsPerSecond == nil
    }

    /// The keys, as the CLI takes them (`delay=20ms`); `-o` and `--driver-opt` prefix them with `link_`.
    public enum Key: String, CaseIterable, Sendable, CustomStringConvertible {
        case delay, jitter, loss
        case lossBurst = "loss_burst"
        case dup, rate

        /// `link_delay`: the name of the `-o` and `--driver-opt` option.
        public var optionName: String { LinkImpairment.optionPrefix + rawValue }
        public var description: String { rawValue }

        /// What a value looks like, for error messages.
        var valueForm: String {
            switch self {
            case .delay, .jitter: "a duration with a unit: 20ms, 1.5s, 500us"
            case .loss, .dup: "a percentage with a % sign: 1%, 0.5%"
            case .lossBurst: "a whole number of frames from 1 to \(LinkImpairment.maxLossBurst)"
            case .rate: "a rate with a unit: 10mbit, 512kbit, 1gbit"
            }
        }
    }

    public static let optionPrefix = "link_"
    /// The longest delay (and jitter) accepted: 60 s. Longer is no link, and would let one
    /// endpoint's queue hold a minute of its traffic in the wirefilter's memory.
    public static let maxDelayMicroseconds = 60_000_000
    public static let maxLossBurst = 1000
    /// 1 kbit/s to 10 Gbit/s: below, a single full frame takes 12 s; above, no emulation here
    /// keeps up anyway (one wirefilter moves about 1 Gbit/s on this machine, see docs/benchmarks.md).
    public static let rateRange = 1_000...10_000_000_000
    /// Duplication is below 100 %: at 100 % wirefilter would resend every frame forever.
    public static let maxDuplicateMillipercent = 99_999
    /// Values are short; anything longer is refused before it is looked at.
    static let maxValueLength = 24

    // MARK: Parsing

    /// The network's default link from `docker network create -o` options: the `link_*` keys
    /// only (the caller checks the others). Throws on a bad value or an unknown `link_` key.
    public static func parse(options raw: [String: String]) throws(VDEError) -> LinkImpairment {
        let impairment = try parseKeys(raw)
        try impairment.check()
        return impairment
    }

    /// The `link_*` keys of `raw`, each value parsed, the combination not checked.
    private static func parseKeys(_ raw: [String: String]) throws(VDEError) -> LinkImpairment {
        var impairment = LinkImpairment()
        for (name, value) in raw.sorted(by: { $0.key < $1.key }) where name.hasPrefix(optionPrefix) {
            guard let key = Key(rawValue: String(name.dropFirst(optionPrefix.count))) else {
                throw .invalid(
                    "unknown link option '\(UntrustedText(name))'; known: \(Key.allCases.map(\.optionName).joined(separator: ", "))"
                )
            }
            impairment = try impairment.setting(key, to: value, shownAs: name)
        }
        return impairment
    }

    /// One endpoint's link from `docker network connect --driver-opt k=v` (the top-level keys
    /// of CreateEndpoint's Options). dockerd puts its own namespaced keys there too
    /// (`com.docker.network.endpoint.exposedports`, ...): those are left alone; any other key
    /// without a dot is the user's, and must be a `link_*` key, so a typo is an error.
    /// The combination is not checked here: the endpoint's options overlay its network's default
    /// (`link_jitter=5ms` on a network with `link_delay=20ms` is fine), so the caller checks the
    /// overlaid result (``check()``).
    public static func parse(endpointOptions raw: [String: String]) throws(VDEError) -> LinkImpairment {
        for name in raw.keys.sorted() where !name.contains(".") && !name.hasPrefix(optionPrefix) {
            throw .invalid(
                "unknown endpoint option '\(UntrustedText(name))'; the vde driver takes \(Key.allCases.map(\.optionName).joined(separator: ", "))"
            )
        }
        return try parseKeys(raw.filter { !$0.key.contains(".") })
    }

    /// A copy with `key` set from `value` (a CLI `set KEY=VALUE`, or one option), or the
    /// error naming the key and the form its value takes. Does not check the whole (see ``check()``).
    public func setting(_ key: Key, to value: String, shownAs name: String? = nil) throws(VDEError)
        -> LinkImpairment
    {
        let name = name ?? key.rawValue
        let bad = VDEError.invalid("\(name)='\(UntrustedText(value))' is not \(key.valueForm)")
        guard value.utf8.count <= Self.maxValueLength else { throw bad }
        if value.hasPrefix("-") {
            throw .invalid("\(name)='\(UntrustedText(value))' is negative; it must be \(key.valueForm)")
        }
        var copy = self
        switch key {
        case .delay, .jitter:
            guard let microseconds = Self.parseScaled(value, units: ["us": 1, "ms": 1000, "s": 1_000_000]) else {
                throw bad
            }
            guard microseconds <= Self.maxDelayMicroseconds else {
                throw .invalid("\(name)='\(UntrustedText(value))' is above the limit of 60s")
            }
            if key == .delay { copy.delayMicroseconds = microseconds } else { copy.jitterMicroseconds = microseconds }
        case .loss, .dup:
            guard let millipercent = Self.parseScaled(value, units: ["%": 1000]) else { throw bad }
            if key == .loss {
                guard millipercent <= 100_000 else {
                    throw .invalid("\(name)='\(UntrustedText(value))' is above 100%")
                }
                copy.lossMillipercent = millipercent
            } else {
                guard millipercent <= Self.maxDuplicateMillipercent else {
                    throw .invalid(
                        "\(name)='\(UntrustedText(value))' must be below 100%: at 100% every frame would be sent forever"
                    )
                }
                copy.duplicateMillipercent = millipercent
            }
        case .lossBurst:
            guard value.count <= 4, !value.isEmpty, value.allSatisfy(\.isASCIIDigit), let n = Int(value),
                (1...Self.maxLossBurst).contains(n)
            else { throw bad }
            copy.lossBurst = n
        case .rate:
            guard
                let bits = Self.parseScaled(
                    value.lowercased(), units: ["bit": 1, "kbit": 1000, "mbit": 1_000_000, "gbit": 1_000_000_000])
            else { throw bad }
            guard Self.rateRange.contains(bits) else {
                throw .invalid("\(name)='\(UntrustedText(value))' must be from 1kbit to 10gbit")
            }
            copy.rateBitsPerSecond = bits
        }
        return copy
    }

    /// A copy without `key`.
    public func clearing(_ key: Key) -> LinkImpairment {
        var copy = self
        switch key {
        case .delay: copy.delayMicroseconds = nil
        case .jitter: copy.jitterMicroseconds = nil
        case .loss: copy.lossMillipercent = nil
        case .lossBurst: copy.lossBurst = nil
        case .dup: copy.duplicateMillipercent = nil
        case .rate: copy.rateBitsPerSecond = nil
        }
        return copy
    }

    /// `other`'s fields where it has them, this one's elsewhere: an endpoint's `--driver-opt`
    /// over its network's `-o` default, a CLI `set` over what the endpoint had.
    public func overlaid(with other: LinkImpairment) -> LinkImpairment {
        LinkImpairment(
            delayMicroseconds: other.delayMicroseconds ?? delayMicroseconds,
            jitterMicroseconds: other.jitterMicroseconds ?? jitterMicroseconds,
            lossMillipercent: other.lossMillipercent ?? lossMillipercent,
            lossBurst: other.lossBurst ?? lossBurst,
            duplicateMillipercent: other.duplicateMillipercent ?? duplicateMillipercent,
            rateBitsPerSecond: other.rateBitsPerSecond ?? rateBitsPerSecond)
    }

    /// Checks the combination: wirefilter draws each frame's delay from delay ± jitter, so a
    /// jitter needs a delay at least as large; a loss burst needs a loss.
    public func check() throws(VDEError) {
        if let jitter = jitterMicroseconds, jitter > 0, jitter > (delayMicroseconds ?? 0) {
            throw .invalid(
                "jitter \(Self.formatDuration(jitter)) is larger than the delay \(Self.formatDuration(delayMicroseconds ?? 0)): each frame is delayed by delay ± jitter, so set a delay at least as large"
            )
        }
        if lossBurst != nil, (lossMillipercent ?? 0) == 0 {
            throw .invalid("loss_burst needs a loss: set loss too (for example loss=5% loss_burst=3)")
        }
    }

    /// Parses `<decimal><unit>` with at most three decimals into an exact integer of the base
    /// unit (`1.5ms` with `ms` = 1000 is 1500). Nil for anything else, including no unit.
    static func parseScaled(_ text: String, units: [String: Int]) -> Int? {
        guard let unitStart = text.firstIndex(where: { !$0.isASCIIDigit && $0 != "." }) else { return nil }
        let number = text[..<unitStart]
        guard let scale = units[String(text[unitStart...])], !number.isEmpty else { return nil }
        let parts = number.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.count <= 12, let wholeValue = Int(whole)
        else { return nil }
        var fraction = 0
        var fractionScale = 1
        if parts.count == 2 {
            let digits = parts[1]
            guard !digits.isEmpty, digits.count <= 3, let value = Int(digits) else { return nil }
            fraction = value
            for _ in digits { fractionScale *= 10 }
        }
        let (product, overflow) = wholeValue.multipliedReportingOverflow(by: scale)
        guard !overflow, (fraction * scale) % fractionScale == 0 else { return nil }
        return product + fraction * scale / fractionScale
    }

    // MARK: Showing

    /// `delay=20ms jitter=5ms loss=1% rate=10mbit`, in ``Key`` order; `none` when empty. The
    /// values read back through ``setting(_:to:shownAs:)`` to the same impairment.
    public var summary: String {
        let parts = settings.map { "\($0.key)=\($0.value)" }
        return parts.isEmpty ? "none" : parts.joined(separator: " ")
    }

    /// The set keys and their values as a user writes them, in ``Key`` order.
    public var settings: [(key: Key, value: String)] {
        var parts: [(Key, String)] = []
        if let delayMicroseconds { parts.append((.delay, Self.formatDuration(delayMicroseconds))) }
        if let jitterMicroseconds { parts.append((.jitter, Self.formatDuration(jitterMicroseconds))) }
        if let lossMillipercent { parts.append((.loss, Self.formatScaled(lossMillipercent, scale: 1000) + "%")) }
        if let lossBurst { parts.append((.lossBurst, String(lossBurst))) }
        if let duplicateMillipercent {
            parts.append((.dup, Self.formatScaled(duplicateMillipercent, scale: 1000) + "%"))
        }
        if let rateBitsPerSecond { parts.append((.rate, Self.formatRate(rateBitsPerSecond))) }
        return parts
    }

    static func formatDuration(_ microseconds: Int) -> String {
        if microseconds % 1000 != 0 { return "\(microseconds)us" }
        if microseconds >= 1_000_000 && microseconds % 1000 == 0 {
            return formatScaled(microseconds / 1000, scale: 1000) + "s"
        }
        return "\(microseconds / 1000)ms"
    }

    static func formatRate(_ bits: Int) -> String {
        for (unit, scale) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1000)] where bits >= scale {
            let thousandths = bits / (scale / 1000)
            if thousandths * (scale / 1000) == bits { return formatScaled(thousandths, scale: 1000) + unit }
        }
        return "\(bits)bit"
    }

    /// `value / scale` with up to three decimals, trailing zeros dropped (scale is 1000).
    static func formatScaled(_ value: Int, scale: Int) -> String {
        let whole = value / scale
        let fraction = value % scale
        guard fraction != 0 else { return String(whole) }
        var digits = String(fraction)
        while digits.count < 3 { digits = "0" + digits }
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }
}

/// One endpoint's link as the plugin keeps it: the impairment in force and whether the
/// cable is plugged. Recorded by the supervisor in its state (one owner), sent to the worker
/// in ``EndpointSpec/link`` and ``WorkerCommand/setLink(endpointID:link:)``, reported back in
/// ``EndpointStatus/link``.
public struct LinkSettings: Codable, Sendable, Equatable, Hashable {
    public var impairment: LinkImpairment
    /// True when the user pulled the cable (`vde-supervisor link ... down`): no plug runs for
    /// the endpoint, so the container sees NO-CARRIER on its interface.
    public var down: Bool

    public init(impairment: LinkImpairment = LinkImpairment(), down: Bool = false) {
        self.impairment = impairment
        self.down = down
    }

    /// Neither impaired nor down: what an endpoint has when no one asked for anything.
    public var isDefault: Bool { impairment.isEmpty && !down }

    /// `up, delay=20ms loss=1%` / `down, none`.
    public var summary: String { (down ? "down" : "up") + ", " + impairment.summary }
}
