/// What vde-supervisor is and where its parts sit once installed: the one owner of the product's
/// version and of the layout every way of installing it shares (`scripts/install`, the Debian
/// package, the container image and the managed plugin; docs/packaging.md).
///
/// The layout: the `vde-supervisor` command in `PREFIX/bin`; its helpers (the `vde-networker`
/// worker and the switch's capture plugin `vde-capture.so`) in `PREFIX/lib/vde-supervisor`,
/// off users' `PATH` because nobody runs them by hand. A build directory (`.build/release`)
/// keeps all three side by side instead; both are found without flags.
public enum Installation {
    /// The version of this build: `vde-supervisor --version` prints it, and the packaging
    /// scripts ask the built binary for it (`scripts/lib.sh`), so this line is the only place
    /// it is written.
    public static let version = "0.18.0"

    /// The helpers' directory below the installation prefix.
    public static let helperDirectory = "lib/vde-supervisor"

    /// Where a helper of the running installation can be: beside `executable` (a build
    /// directory, or the helpers' directory itself), then in `../lib/vde-supervisor/` of it
    /// (an installation whose command sits in `PREFIX/bin`). In that order.
    public static func helperCandidates(named name: String, besideExecutable executable: String) -> [String] {
        let directory = FileSystem.parent(of: executable)
        return [
            directory + "/" + name,
            FileSystem.parent(of: directory) + "/" + helperDirectory + "/" + name,
        ]
    }
}
