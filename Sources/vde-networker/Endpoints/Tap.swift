import CLinux
import Shared

/// Why a tap could not be made, checked or removed.
enum TapError: ReportableError, CustomStringConvertible {
    /// An interface of that name exists with another MAC, or is not a tap.
    case conflict(name: TapName, reason: String)
    case commandFailed(CommandError)
    case systemCallFailed(name: TapName, step: String, errno: Int32)

    var description: String {
        switch self {
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
        case .conflict: .conflict(description)
        case .commandFailed, .systemCallFailed: .system(description)
        }
    }
}

/// An interface as `ip -o link show` lists it.
struct LinkInfo: Sendable, Equatable {
    var name: String
    var macAddress: MACAddress?
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
            var mac: MACAddress?
            if let index = fields.firstIndex(of: "link/ether"), index + 1 < fields.count {
                mac = try? MACAddress(String(fields[index + 1]))
            }
            links.append(LinkInfo(name: String(name), macAddress: mac))
        }
        return links
    }

    /// The link with `macAddress`, if any.
    static func find(macAddress: MACAddress, in links: [LinkInfo]) -> LinkInfo? {
        links.first { $0.macAddress == macAddress }
    }
}

/// Taps in the worker's own (host) network namespace.
///
/// Taps are persistent (`TUNSETPERSIST`), so they outlive their plug: dockerd moves them into a
/// container after Join and back after Leave, and a restarted plug can attach to them again.
struct Taps: Sendable {
    var ip: String
    var runner: CommandRunner

    /// Cheap: a sysfs lookup, no process.
    func exists(_ name: TapName) -> Bool {
        FileSystem.exists("/sys/class/net/\(name)")
    }

    func currentMAC(of name: TapName) -> MACAddress? {
        FileSystem.readFile("/sys/class/net/\(name)/address").flatMap { try? MACAddress(String($0.trimmingSpaces())) }
    }

    /// True for tun and tap devices (they have `tun_flags` in sysfs).
    func isTunTap(_ name: TapName) -> Bool {
        FileSystem.exists("/sys/class/net/\(name)/tun_flags")
    }

    /// How an existing interface of this name relates to the endpoint.
    enum Existing: Equatable {
        case none
        /// A tap with the endpoint's MAC: an earlier attempt made it; reuse it.
        case sameTap
        case conflicting(reason: String)
    }

    func existing(name: TapName, macAddress: MACAddress) -> Existing {
        guard exists(name) else { return .none }
        guard isTunTap(name) else { return .conflicting(reason: "is not a tap") }
        let current = currentMAC(of: name)
        guard current == macAddress else {
            return .conflicting(
                reason: "has the MAC address \(current.map { "\($0)" } ?? "unknown"), not \(macAddress)")
        }
        return .sameTap
    }

    /// Makes a persistent tap with `macAddress` (and `mtu`, when given; else the kernel's 1500),
    /// down, in the host namespace, with ioctls in this
    /// process (what `ip tuntap add` and `ip link set address` do, without two processes: every
    /// CreateEndpoint pays this). If a step fails, a tap already made is deleted again.
    func create(name: TapName, macAddress: MACAddress, mtu: Int?) async throws(TapError) {
        let mac = macAddress.bytes
        let failure: (step: String, code: Int32)? = await Blocking.run {
            var step: UnsafePointer<CChar>?
            let code = clinux_create_tap(name.rawValue, mac, Int32(mtu ?? 0), &step)
            return code == 0 ? nil : (step.map { String(cString: $0) } ?? "?", code)
        }
        guard let failure else { return }
        if exists(name) { try? await delete(name: name) }
        throw .systemCallFailed(name: name, step: failure.step, errno: failure.code)
    }

    func delete(name: TapName) async throws(TapError) {
        do {
            try await runner.check([ip, "link", "del", name.rawValue])
        } catch {
            // Gone meanwhile is fine: deleting is idempotent.
            if exists(name) { throw .commandFailed(error) }
        }
    }
}
