import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Where the programs the worker runs live. Looked up once, in `PATH` and then in the usual
/// system directories, because dockerd and systemd often run services with a short `PATH`
/// (without `/usr/sbin`, where Debian keeps `ip`).
struct Executables: Sendable {
    var vdeSwitch: String
    var vdePlug2tap: String
    var ip: String
    var nsenter: String
    /// For `busybox arping`; optional (nil when not installed).
    var busybox: String? = nil
    /// The plug of an impaired endpoint (Debian's vde-wirefilter, pulled in by vde2).
    var wirefilter: String = "wirefilter"

    static let fallbackDirectories = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// Resolves every program; names that are not found stay bare, so that the error of a
    /// failed start names the program that is missing.
    static func resolve(environmentPath: String? = Executables.currentPath()) -> Executables {
        func find(_ name: String) -> String {
            locate(name, environmentPath: environmentPath) ?? name
        }
        return Executables(
            vdeSwitch: find("vde_switch"), vdePlug2tap: find("vde_plug2tap"), ip: find("ip"), nsenter: find("nsenter"),
            busybox: locate("busybox", environmentPath: environmentPath), wirefilter: find("wirefilter"))
    }

    static func locate(_ name: String, environmentPath: String?) -> String? {
        let fromPath = (environmentPath ?? "").split(separator: ":").map(String.init).filter { $0.hasPrefix("/") }
        for directory in fromPath + fallbackDirectories {
            let candidate = directory + "/" + name
            if FileSystem.isExecutable(candidate) { return candidate }
        }
        return nil
    }

    static func currentPath() -> String? {
        getenv("PATH").map { String(cString: $0) }
    }
}
