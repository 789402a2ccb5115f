import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The pid a switch shows for an adopted wirefilter's port.
///
/// libvdeplug connects to the switch before `wirefilter --daemon` forks, so the switch keeps
/// the launcher's pid (``PlugProcess/switchPID``), which a new worker cannot learn from the
/// daemon's pid. libvdeplug (vdeplug4 4.0.1) binds its data socket in the switch's ctl dir as
/// `.PID-NNNNN` with that same pid (measured: `ctl/.12893-00000` for the port showing
/// `pid=12893`), and the kernel lists the bound path in `/proc/PID/net/unix` (the plug's own
/// namespace's view) against the socket's inode, which `/proc/PID/fd` names.
enum WirefilterPeer {
    /// The pid in the name of `pid`'s data socket in `ctlDir`; `pid` itself when none is found
    /// (then only the port counters of status are missing).
    static func switchPID(of pid: pid_t, ctlDir: String) -> pid_t {
        guard let descriptors = ProcFS.descriptors(of: pid),
            let table = FileSystem.readFile("/proc/\(pid)/net/unix", limit: 8 << 20)
        else { return pid }
        let inodes = Set(descriptors.compactMap { socketInode($0.target) })
        return peerPID(unixTable: table, inodes: inodes, ctlDir: ctlDir) ?? pid
    }

    /// `socket:[4590176]` -> "4590176".
    static func socketInode(_ target: String) -> String? {
        guard target.hasPrefix("socket:["), target.hasSuffix("]") else { return nil }
        return String(target.dropFirst(8).dropLast())
    }

    /// Reads `/proc/net/unix` lines (`Num RefCount Protocol Flags Type St Inode Path`): the
    /// first socket of `inodes` bound at `CTLDIR/.PID-NNNNN` gives PID.
    static func peerPID(unixTable: String, inodes: Set<String>, ctlDir: String) -> pid_t? {
        let prefix = ctlDir + "/."
        for line in unixTable.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8, inodes.contains(String(fields[6])) else { continue }
            let path = fields[7]
            guard path.hasPrefix(prefix) else { continue }
            let name = path.dropFirst(prefix.count)
            guard let dash = name.firstIndex(of: "-"), let peer = pid_t(name[..<dash]), peer > 0 else { continue }
            return peer
        }
        return nil
    }
}
