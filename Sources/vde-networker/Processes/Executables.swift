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
    /// The network's uplink (`vde_plug vde://CTLDIR URL`, Debian's vdeplug package).
    var vdePlug: String = "vde_plug"
    /// For `busybox arping`; optional (nil when not installed).
    var busybox: String? = nil
    /// The plug of an impaired endpoint (Debian's vde-wirefilter, pulled in by vde2).
    var wirefilter: String = "wirefilter"
    /// The switch's capture plugin (`vde-capture.so`); nil when none was found (see
    /// ``locateCapturePlugin(executable:)``). Checked when a segment capture loads it.
    var capturePlugin: String? = nil

    static let fallbackDirectories = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// Resolves every program; names that are not found stay bare, so that the error of a
    /// failed start names the program that is missing.
    static func resolve(environmentPath: String? = Executables.currentPath()) -> Executables {
        func find(_ name: String) -> String {
            locate(name, environmentPath: environmentPath) ?? name
        }
        return Executables(
            vdeSwitch: find("vde_switch"), vdePlug2tap: find("vde_plug2tap"), ip: find("ip"), nsenter: find("nsenter"),
            vdePlug: find("vde_plug"),
            busybox: locate("busybox", environmentPath: environmentPath), wirefilter: find("wirefilter"),
            capturePlugin: locateCapturePlugin())
    }

    /// These paths, or a new lookup when a required program was not found: a spare resolves
    /// them before it has a network (``NetworkerMain``), and a program installed since then is
    /// found when the network comes.
    func refreshedIfIncomplete(environmentPath: String? = Executables.currentPath()) -> Executables {
        let required = [vdeSwitch, vdePlug2tap, ip, nsenter, vdePlug, wirefilter]
        return required.allSatisfy { $0.hasPrefix("/") } ? self : .resolve(environmentPath: environmentPath)
    }

    static let capturePluginName = "vde-capture.so"

    /// `vde-capture.so` beside the running binary (a build directory: scripts/lib.sh builds it
    /// there), else in `../lib/vde-supervisor/` of it (an installation). Nil when neither exists.
    static func locateCapturePlugin(executable: String? = FileSystem.readLink("/proc/self/exe")) -> String? {
        guard let executable else { return nil }
        return Installation.helperCandidates(named: capturePluginName, besideExecutable: executable)
            .first { FileSystem.exists($0) }
    }

    /// The capture plugin's path once it is fit to be loaded into a switch that runs as root: a
    /// regular file owned by root that neither group nor others may write (anyone who could
    /// change it could run code as root). Else a clear error naming what is wrong.
    func checkedCapturePlugin() throws(CaptureError) -> String {
        guard let path = capturePlugin else {
            throw CaptureError(
                vdeError: .unavailable(
                    "the switch's capture plugin \(Self.capturePluginName) is not installed (looked beside vde-networker and in ../lib/vde-supervisor/): reinstall vde-supervisor"
                ))
        }
        // The path goes into a management command line (`plugin/add PATH`): a control
        // character there would end that line and start another command.
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw CaptureError(
                vdeError: .unavailable(
                    "the capture plugin's path \(UntrustedText(path)) holds control characters: install vde-supervisor in a plain directory"
                ))
        }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            throw CaptureError(
                vdeError: .unavailable("the capture plugin \(path): \(SystemCallError.last("lstat").text)"))
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw CaptureError(
                vdeError: .unavailable("the capture plugin \(path) is not a regular file: refusing to load it"))
        }
        guard info.st_uid == 0, info.st_mode & 0o022 == 0 else {
            throw CaptureError(
                vdeError: .unavailable(
                    "the capture plugin \(path) must be owned by root and writable by nobody else (it is loaded into a switch that runs as root); it is owned by uid \(info.st_uid) with mode \(String(info.st_mode & 0o7777, radix: 8)): fix it with chown root: and chmod go-w"
                ))
        }
        return path
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
