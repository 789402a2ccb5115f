import CLinux
import Shared

/// Why a tap could not be made, checked or removed.
enum TapError: ReportableError, CustomStringConvertible {
    case invalidName(String)
    case invalidMAC(String)
    /// An interface of that name exists with another MAC, or is not a tap.
    case conflict(name: String, reason: String)
    case commandFailed(CommandError)
    case systemCallFailed(name: String, step: String, errno: Int32)

    var description: String {
        switch self {
        case .invalidName(let name):
            "'\(NetworkOptions.sanitized(name))' is not a usable interface name: 1 to 15 characters out of letters, digits, '_', '.' and '-', not starting with '-'"
        case .invalidMAC(let mac):
            "'\(NetworkOptions.sanitized(mac))' is not a unicast MAC address (aa:bb:cc:dd:ee:ff)"
        case .conflict(let name, let reason):
            "an interface named \(name) already exists and \(reason); remove it (ip link del \(name)) or use another endpoint"
        case .commandFailed(let error):
            "could not set up the tap: \(error)"
        case .systemCallFailed(let name, let step, let code):
            "could not create the tap \(name): \(step): \(SystemCallError.text(code))"
        }
    }

    var vdeError: VDEError {
        switch self {
        case .invalidName, .invalidMAC: .invalid(description)
        case .conflict: .conflict(description)
        case .commandFailed, .systemCallFailed: .system(description)
        }
    }
}

/// An interface as `ip -o link show` lists it.
struct LinkInfo: Sendable, Equatable {
    var name: String
    var macAddress: String?
}

/// Parsing of `ip -o link show`: one line per link,
/// `9: vdeabc: <BROADCAST,MULTICAST> mtu 1500 ... \    link/ether 02:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff`
/// (veth names carry a peer suffix, `eth0@if12`).
enum LinkList {
    static func parse(_ output: String) -> [LinkInfo] {
        var links: [LinkInfo] = []
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, fields[0].hasSuffix(":"), fields[1].hasSuffix(":") else { continue }
            var name = fields[1].dropLast()
            if let at = name.firstIndex(of: "@") { name = name[..<at] }
            var mac: String?
            if let index = fields.firstIndex(of: "link/ether"), index + 1 < fields.count {
                mac = Naming.normalizedMAC(String(fields[index + 1]))
            }
            links.append(LinkInfo(name: String(name), macAddress: mac))
        }
        return links
    }

    /// The link with `macAddress` (normalised), if any.
    static func find(macAddress: String, in links: [LinkInfo]) -> LinkInfo? {
        let wanted = Naming.normalizedMAC(macAddress)
        return links.first { $0.macAddress != nil && $0.macAddress == wanted }
    }
}

/// Taps in the worker's own (host) network namespace.
///
/// Taps are persistent (`TUNSETPERSIST`), so they outlive their plug: dockerd moves them into a
/// container after Join and back after Leave, and a restarted plug can attach to them again.
struct Taps: Sendable {
    var ip: String
    var runner: CommandRunner

    /// Checks a tap name: the kernel allows 15 bytes (IFNAMSIZ - 1); slashes, spaces and
    /// control characters would break sysfs paths and `ip` argv.
    static func validate(name: String) throws(TapError) {
        let bytes = Array(name.utf8)
        let allowed = { (c: UInt8) in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2e || c == 0x2d
        }
        guard (1...15).contains(bytes.count), bytes.allSatisfy(allowed), bytes[0] != 0x2d, name != ".", name != ".." else {
            throw .invalidName(name)
        }
    }

    static func checkedMAC(_ mac: String) throws(TapError) -> String {
        guard let normalized = Naming.normalizedMAC(mac) else { throw .invalidMAC(mac) }
        return normalized
    }

    /// Cheap: a sysfs lookup, no process.
    func exists(_ name: String) -> Bool {
        FileSystem.exists("/sys/class/net/" + name)
    }

    func currentMAC(of name: String) -> String? {
        FileSystem.readFile("/sys/class/net/\(name)/address").flatMap { Naming.normalizedMAC(String($0.trimmingSpaces())) }
    }

    /// True for tun and tap devices (they have `tun_flags` in sysfs).
    func isTunTap(_ name: String) -> Bool {
        FileSystem.exists("/sys/class/net/\(name)/tun_flags")
    }

    /// How an existing interface of this name relates to the endpoint.
    enum Existing: Equatable {
        case none
        /// A tap with the endpoint's MAC: an earlier attempt made it; reuse it.
        case sameTap
        case conflicting(reason: String)
    }

    func existing(name: String, macAddress: String) -> Existing {
        guard exists(name) else { return .none }
        guard isTunTap(name) else { return .conflicting(reason: "is not a tap") }
        let current = currentMAC(of: name)
        guard current == macAddress else { return .conflicting(reason: "has the MAC address \(current ?? "unknown"), not \(macAddress)") }
        return .sameTap
    }

    /// Makes a persistent tap with `macAddress`, down, in the host namespace, with ioctls in this
    /// process (what `ip tuntap add` and `ip link set address` do, without two processes: every
    /// CreateEndpoint pays this). If a step fails, a tap already made is deleted again.
    func create(name: String, macAddress: String) async throws(TapError) {
        try Taps.validate(name: name)
        guard let mac = Naming.macBytes(macAddress) else { throw .invalidMAC(macAddress) }
        let failure: (step: String, code: Int32)? = await Blocking.run {
            var step: UnsafePointer<CChar>?
            let code = clinux_create_tap(name, mac, &step)
            return code == 0 ? nil : (step.map { String(cString: $0) } ?? "?", code)
        }
        guard let failure else { return }
        if exists(name) { try? await delete(name: name) }
        throw .systemCallFailed(name: name, step: failure.step, errno: failure.code)
    }

    func delete(name: String) async throws(TapError) {
        do {
            try await runner.check([ip, "link", "del", name])
        } catch {
            // Gone meanwhile is fine: deleting is idempotent.
            if exists(name) { throw .commandFailed(error) }
        }
    }
}
