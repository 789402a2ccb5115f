import CLinux
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Where an endpoint's tap is, as far as the worker can tell.
enum TapLookup: Sendable, Equatable {
    /// Found: plug it there.
    case present(PlugLocation)
    /// Positive evidence that the tap is gone for good (its container was removed); the
    /// supervisor forgets the endpoint on it.
    case gone(evidence: String)
    /// The worker could not look (a namespace it could not enter or list, a name it will not
    /// pass on). Not evidence of anything: look again later.
    case unknown(reason: String)
}

/// What a sandbox key path is right now.
enum SandboxFile: Sendable, Equatable {
    /// A mounted namespace file (nsfs): the container's namespace exists.
    case namespace
    /// No such file (ENOENT): dockerd removed it with the container.
    case missing
    /// A file that is no namespace any more (dockerd unmounted it; nsenter would say
    /// "Invalid argument"). `fsType` is statfs's f_type.
    case notANamespace(fsType: Int)
    /// statfs failed for another reason: nothing is known.
    case cannotCheck(errno: Int32)

    /// `NSFS_MAGIC` from linux/magic.h.
    static let nsfsMagic = 0x6e73_6673

    static func inspect(_ key: SandboxKey) -> SandboxFile {
        let result = clinux_fs_type(key.rawValue)
        guard result >= 0 else {
            let code = errno
            return code == ENOENT || code == ENOTDIR ? .missing : .cannotCheck(errno: code)
        }
        let type = Int(result)
        return type == nsfsMagic ? .namespace : .notANamespace(fsType: type)
    }
}

/// Decides where an endpoint's tap is, from three looks: the host's interfaces, the sandbox
/// key's file, and the links inside the namespace. The looks are functions so that the
/// decision can be tested without a host.
struct TapLocator: Sendable {
    /// How an interface of the tap's name in the host relates to the endpoint.
    var hostTap: @Sendable (_ name: TapName, _ macAddress: MACAddress) -> Taps.Existing
    var sandboxFile: @Sendable (_ key: SandboxKey) -> SandboxFile
    /// The links inside the namespace at `path`; throws when it cannot be entered or listed.
    var links: @Sendable (_ key: SandboxKey) async throws -> [LinkInfo]

    func locate(_ endpoint: EndpointSpec) async -> TapLookup {
        let host = hostTap(endpoint.tapName, endpoint.macAddress)
        guard let key = endpoint.sandboxKey else {
            switch host {
            case .sameTap: return .present(.host(tapName: endpoint.tapName))
            case .none:
                return .gone(
                    evidence: "the tap \(endpoint.tapName) is not in the host and the endpoint never joined a container"
                )
            case .conflicting(let reason):
                return .gone(
                    evidence:
                        "the interface \(endpoint.tapName) in the host \(reason), and the endpoint never joined a container"
                )
            }
        }
        switch sandboxFile(key) {
        case .missing:
            return .gone(evidence: "the container's namespace \(key) no longer exists")
        case .notANamespace(let type):
            return .gone(
                evidence: "\(key) is no network namespace any more (file system type 0x\(String(type, radix: 16)))")
        case .cannotCheck(let code):
            return .unknown(reason: "cannot check the namespace \(key): \(SystemCallError.text(code))")
        case .namespace:
            break
        }
        // Back in the host (a Leave that did not reach us): plug it there.
        if host == .sameTap { return .present(.host(tapName: endpoint.tapName)) }
        let inside: [LinkInfo]
        do {
            inside = try await links(key)
        } catch {
            return .unknown(reason: "\(error)")
        }
        guard let link = LinkList.find(macAddress: endpoint.macAddress, in: inside) else {
            return .gone(
                evidence:
                    "the namespace \(key) holds no link with MAC \(endpoint.macAddress), and the tap is not in the host"
            )
        }
        do {
            try InterfaceName.validate(link.name)
        } catch {
            return .unknown(reason: "in the namespace \(key): \(error)")
        }
        return .present(.sandbox(path: key, interface: link.name))
    }
}

/// Interface names read from inside a container, checked before they reach an argv
/// (`vde_plug2tap`, `arping -I`): the kernel's own rules (at most IFNAMSIZ - 1 = 15 bytes, no
/// `/`, no whitespace, not `.` or `..`), no control characters, and no leading `-`.
enum InterfaceName {
    struct Invalid: Error, CustomStringConvertible {
        var name: String
        var description: String {
            "the interface name '\(UntrustedText(name))' is not usable (1 to 15 bytes, no '/', ':', whitespace or control characters, not '.' or '..', not starting with '-')"
        }
    }

    static func validate(_ name: String) throws(Invalid) {
        let bytes = Array(name.utf8)
        let badByte = bytes.contains { $0 <= 0x20 || $0 == 0x7f || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") }
        let badScalar = name.unicodeScalars.contains {
            $0.properties.isWhitespace || $0.properties.generalCategory == .control
        }
        guard (1...15).contains(bytes.count), !badByte, !badScalar, name != ".", name != "..",
            bytes.first != UInt8(ascii: "-")
        else {
            throw Invalid(name: name)
        }
    }
}
