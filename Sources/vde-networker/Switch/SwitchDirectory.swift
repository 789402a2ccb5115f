import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The rules for the directories the plugin starts a switch in (a ctl dir, the directory of a
/// management socket) and for the only names it ever removes there.
///
/// - A directory the plugin will start a switch in must not exist, be empty, or carry the
///   plugin's marker file ``markerName`` holding this network's ID (written when the plugin
///   claimed it). Anything else is refused: a user's `socket_dir=/run` or a directory of QEMU
///   monitor sockets is never touched.
/// - Directories inside the network's own run dir are the plugin's by construction and need no
///   marker (networks created before the marker existed keep working).
/// - Only names the switch makes are removed: in a ctl dir `ctl`, vde_switch's port sockets
///   (`NNN.FD`, e.g. `001.6`) and libvdeplug's client data sockets (`.PPPPP-NNNNN`, left when a
///   client died between bind and connect); elsewhere only the management socket's own name.
///   Each is removed only when it is a socket (checked with `fstatat(AT_SYMLINK_NOFOLLOW)`) and a
///   connection to it is refused (nobody listens), through a directory fd opened with
///   `O_DIRECTORY|O_NOFOLLOW` and `unlinkat`, so no path is followed twice.
struct SwitchDirectory: Sendable {
    static let markerName = ".vde-supervisor"

    /// The directory itself.
    let path: String
    let networkID: NetworkID
    /// True when the directory is inside the network's run dir: no marker is needed or written.
    let insideNetworkDir: Bool

    init(path: String, networkID: NetworkID, networkDir: String) {
        self.path = path
        self.networkID = networkID
        insideNetworkDir = path == networkDir || path.hasPrefix(networkDir + "/")
    }

    /// Names vde_switch 2.3.2 and libvdeplug create in a ctl dir (seen with `ls -la` of a live
    /// switch with plugs: `ctl`, `001.6`, `002.8`; libvdeplug binds `.%05d-%05d` there briefly).
    static func isSwitchName(_ name: String) -> Bool {
        if name == "ctl" { return true }
        let bytes = Array(name.utf8)
        let isDigit = { (b: UInt8) in b >= 0x30 && b <= 0x39 }
        if let dot = bytes.firstIndex(of: UInt8(ascii: ".")), dot >= 3, dot < bytes.count - 1,
            bytes[..<dot].allSatisfy(isDigit), bytes[(dot + 1)...].allSatisfy(isDigit)
        {
            return true
        }
        if bytes.count == 12, bytes[0] == UInt8(ascii: "."), bytes[6] == UInt8(ascii: "-"),
            bytes[1..<6].allSatisfy(isDigit), bytes[7...].allSatisfy(isDigit)
        {
            return true
        }
        return false
    }

    // MARK: Claim

    /// What ``claim(option:)`` did, so that a failure later in the same start can undo it.
    struct Claim {
        /// Directories it created, outermost first.
        var created: [String] = []
        /// True when it wrote the marker now (the directory was new or empty).
        var marked = false
    }

    /// Makes sure the plugin may start a switch here: creates the directory (and its missing
    /// parents) if it does not exist, writes the marker into a new or empty directory, and accepts
    /// a directory that carries this network's marker. `option` names the user's option in errors.
    func claim(option: String) throws(SwitchError) -> Claim {
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else {
                throw .unusableDirectory(path: path, option: option, reason: SystemCallError.text(errno))
            }
            let created: [String]
            do {
                created = try FileSystem.makeDirectories(path, mode: 0o755)
            } catch {
                throw .cannotCreateDirectory(error)
            }
            if !insideNetworkDir { try writeMarker(option: option) }
            return Claim(created: created, marked: !insideNetworkDir)
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw .unusableDirectory(path: path, option: option, reason: "it exists and is not a directory")
        }
        if insideNetworkDir { return Claim() }
        guard let names = FileSystem.listDirectory(path) else {
            throw .unusableDirectory(path: path, option: option, reason: SystemCallError.text(errno))
        }
        if names.contains(Self.markerName) {
            let owner = markerOwner()
            guard owner == networkID else {
                throw .directoryOfAnotherNetwork(path: path, option: option, owner: owner)
            }
            return Claim()
        }
        guard names.isEmpty else {
            throw .directoryNotOurs(path: path, option: option, names: names.sorted())
        }
        try writeMarker(option: option)
        return Claim(marked: true)
    }

    /// Undoes a claim made by this start: the marker it wrote, the directories it created
    /// (innermost first, each only when empty).
    func undo(_ claim: Claim) {
        if claim.marked { removeOwnMarker() }
        for created in claim.created.reversed() where FileSystem.listDirectory(created)?.isEmpty == true {
            FileSystem.removeDirectory(created)
        }
    }

    /// The network ID in the marker file, when there is one (read without following a link).
    func markerOwner() -> NetworkID? {
        guard let directory = DirectoryHandle(path) else { return nil }
        defer { directory.close() }
        guard let bytes = directory.readFile(Self.markerName, limit: 256), !bytes.isEmpty else { return nil }
        return String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isWhitespace).first
            .flatMap { try? NetworkID(String($0)) }
    }

    /// Removes the marker when it holds this network's ID (another network's stays).
    private func removeOwnMarker() {
        guard markerOwner() == networkID, let directory = DirectoryHandle(path) else { return }
        _ = directory.remove(Self.markerName)
        directory.close()
    }

    private func writeMarker(option: String) throws(SwitchError) {
        guard let directory = DirectoryHandle(path) else {
            throw .unusableDirectory(path: path, option: option, reason: SystemCallError.text(errno))
        }
        defer { directory.close() }
        do {
            try directory.createFile(Self.markerName, bytes: Array("\(networkID)\n".utf8))
        } catch {
            throw .unusableDirectory(
                path: path, option: option, reason: "cannot write \(Self.markerName): \(error.text)")
        }
    }

    // MARK: Removal

    /// What ``removeStale(where:logger:)`` found for one name.
    enum Leftover: Equatable {
        case removed
        /// A socket that accepts connections: someone uses it; it stays.
        case live
        /// Not a socket: it stays.
        case notASocket
    }

    /// Removes the stale sockets whose names `isOurs` accepts (see the type's rules) and returns
    /// what it found for each such name (nothing for a directory that cannot be opened).
    @discardableResult
    func removeStale(where isOurs: (String) -> Bool, logger: Logger) -> [String: Leftover] {
        guard let directory = DirectoryHandle(path) else { return [:] }
        defer { directory.close() }
        var found: [String: Leftover] = [:]
        for name in directory.names() where name != Self.markerName && isOurs(name) {
            let outcome = directory.removeIfStale(name)
            if let outcome { found[name] = outcome }
            switch outcome {
            case .removed: logger.debug("removed the stale socket \(path)/\(name)")
            case .live: logger.warning("left \(path)/\(name) alone: it accepts connections")
            case .notASocket: logger.warning("left \(path)/\(name) alone: it is not a socket")
            case nil: break
            }
        }
        return found
    }

    /// Removes the marker (when it holds this network's ID) and then the directory if it is
    /// empty. The last step of a removal: the switch's own names go first.
    ///
    /// A directory inside the network's run dir has no marker but is removed too when empty:
    /// vde_switch removes its ctl dir itself only when its own cleanup finds it empty (and not
    /// at all when it is killed). Once in CI a worker's shutdown after 100 plugs left
    /// `<network dir>/ctl` behind, and with it the network dir; what was in it then is not known,
    /// so a directory that is not empty is now named in a warning with what it holds.
    func release(logger: Logger) {
        if !insideNetworkDir { removeOwnMarker() }
        guard let names = FileSystem.listDirectory(path) else { return }
        if !names.isEmpty {
            logger.warning(
                "left the directory \(path): it holds what is not the switch's: \(names.sorted().joined(separator: ", "))"
            )
        } else if FileSystem.removeDirectory(path) {
            logger.debug("removed the directory \(path)")
        }
    }
}

extension DirectoryHandle {
    /// Unlinks `name` if it is a socket nobody listens on; nil when there is no such name.
    func removeIfStale(_ name: String) -> SwitchDirectory.Leftover? {
        guard let type = fileType(name) else { return nil }
        guard type == S_IFSOCK else { return .notASocket }
        guard isRefusedSocket(name) else { return .live }
        return remove(name) ? .removed : .live
    }
}
