import Shared

/// The limits and output of one `vde-supervisor capture`, checked before anything starts.
struct CaptureArguments: Sendable, Equatable {
    static let maxSnaplen = 262_144

    enum Output: Sendable, Equatable {
        /// pcap to this file.
        case file(String)
        /// pcap to stdout (`-w -`, or no `-w` with stdout not a terminal).
        case stdoutPcap
        /// A summary line per frame on stdout (a terminal, no `-w`).
        case summary
    }

    var output: Output
    /// Stop after this many frames passed the filter; nil: no limit.
    var count: Int?
    /// Stop after this long, in milliseconds; nil: no limit.
    var durationMilliseconds: Int?
    var snaplen: Int

    init(output: Output, count: Int?, durationMilliseconds: Int?, snaplen: Int) {
        self.output = output
        self.count = count
        self.durationMilliseconds = durationMilliseconds
        self.snaplen = snaplen
    }

    /// `write`: the `-w` value; `stdoutIsTerminal` decides without it.
    init(write: String?, count: Int?, duration: String?, snaplen: Int?, stdoutIsTerminal: Bool) throws(CaptureError) {
        switch write {
        case nil: output = stdoutIsTerminal ? .summary : .stdoutPcap
        case "-": output = .stdoutPcap
        case let path?:
            guard !path.isEmpty else { throw CaptureError("-w needs a file name, or - for stdout") }
            output = .file(path)
        }
        if let count, count < 1 { throw CaptureError("-c takes a count of at least 1; got \(count)") }
        self.count = count
        durationMilliseconds = try duration.map { text throws(CaptureError) in try Self.parseDuration(text) }
        let snaplen = snaplen ?? Self.maxSnaplen
        guard (1...Self.maxSnaplen).contains(snaplen) else {
            throw CaptureError("--snaplen takes 1 to \(Self.maxSnaplen) bytes; got \(snaplen)")
        }
        self.snaplen = snaplen
    }

    /// `10` and `10s` (seconds), `500ms`, `2m`, `1h`; more than zero, at most a week.
    static func parseDuration(_ text: String) throws(CaptureError) -> Int {
        let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        let problem = CaptureError(
            "--duration takes a whole number with an optional unit (ms, s, m, h; seconds without): 30, 500ms, 2m; got '\(UntrustedText(text))'"
        )
        var number = Substring(text)
        var scale = 1000
        for (unit, factor) in units where text.hasSuffix(unit) {
            number = text.dropLast(unit.count)
            scale = factor
            break
        }
        guard !number.isEmpty, number.allSatisfy(\.isASCIIDigit), number.count <= 9, let value = Int(number) else {
            throw problem
        }
        let milliseconds = value * scale
        guard milliseconds > 0, milliseconds <= 7 * 24 * 3_600_000 else {
            throw CaptureError("--duration must be more than 0 and at most a week; got '\(UntrustedText(text))'")
        }
        return milliseconds
    }
}

/// `capture NETWORK [CONTAINER|ENDPOINT] [FILTER...]`: which of the words after NETWORK names
/// what the capture looks at, and which are the filter.
///
/// The first word is the target when it names a container on the network (as dockerd lists
/// it: name, full ID or a unique ID prefix, as `link` resolves them) or looks like an endpoint
/// ID prefix (lowercase hex, no BPF keyword is); otherwise every word is the filter, which
/// starts with a BPF keyword (`icmp`, `host`, `not`, `(`...) in all but odd cases. A container
/// named like a BPF keyword wins: capture the segment with such a filter by quoting it whole.
struct CaptureTarget: Sendable, Equatable {
    /// The network as the supervisor takes it: dockerd's full ID, or the user's text.
    var network: String
    /// The word that named the target, as typed; nil: the whole segment.
    var given: String?
    /// A full endpoint ID (a container resolved through dockerd) or the user's prefix.
    var endpoint: String?
    /// The words of the filter joined by spaces, as tcpdump joins them; nil: none.
    var filter: String?

    static func split(network: String, words: [String], docker: DockerNames.Network?) throws(CaptureError)
        -> CaptureTarget
    {
        var target = CaptureTarget(network: network)
        if let first = words.first, names(first, docker: docker) {
            let resolved: LinkTarget
            do {
                resolved = try LinkTarget.resolve(network: network, container: first, docker: docker)
            } catch {
                throw CaptureError(error.message)
            }
            target = CaptureTarget(network: resolved.network, given: first, endpoint: resolved.endpoint)
            target.filter = filter(words.dropFirst())
        } else {
            target.network = docker.flatMap { $0.id.isEmpty ? nil : $0.id } ?? network
            target.filter = filter(words[...])
        }
        return target
    }

    /// True when `word` is a container on the network or could be an endpoint ID prefix.
    static func names(_ word: String, docker: DockerNames.Network?) -> Bool {
        if let docker {
            if docker.containers.values.contains(where: { $0 == word || $0 == "/" + word }) { return true }
            if docker.containerIDs.values.contains(where: { $0.hasPrefix(word) }) { return true }
        }
        return (1...64).contains(word.utf8.count)
            && word.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    private static func filter(_ words: ArraySlice<String>) -> String? {
        let text = words.joined(separator: " ").trimmingSpaces
        return text.isEmpty ? nil : text
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var scalars = Substring(self)
        while scalars.first == " " { scalars = scalars.dropFirst() }
        while scalars.last == " " { scalars = scalars.dropLast() }
        return String(scalars)
    }
}
