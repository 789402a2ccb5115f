import Foundation

/// Where the built `vde-supervisor` and `vde-networker` are: next to the test bundle
/// (`.build/<triple>/debug/`), unless `VDE_BIN_DIR` names another directory
/// (`scripts/test --sanitize` sets it to the sanitized build's directory).
enum Binaries {
    static func directory() throws -> String {
        if let dir = ProcessInfo.processInfo.environment["VDE_BIN_DIR"], !dir.isEmpty { return dir }
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            throw AcceptanceFailure("cannot read /proc/self/exe to find the build directory; set VDE_BIN_DIR")
        }
        var dir = (exe as NSString).deletingLastPathComponent
        // The test executable may sit inside an .xctest bundle directory.
        while dir.hasSuffix(".xctest") || dir.hasSuffix("/Contents/MacOS") || dir.hasSuffix("/Contents") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }

    static func path(_ name: String) throws -> String {
        let dir = try directory()
        let path = dir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw AcceptanceFailure(
                "\(name) not found in \(dir): build it first (`swift build --build-tests`; \(runScriptsTestHint)), or set VDE_BIN_DIR"
            )
        }
        return path
    }

    static var supervisor: String { get throws { try path("vde-supervisor") } }
    static var networker: String { get throws { try path("vde-networker") } }
}
