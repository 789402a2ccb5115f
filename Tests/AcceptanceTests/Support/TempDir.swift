import Foundation

/// Temporary directories under /tmp, short enough for unix socket paths below them.
enum TempDir {
    /// Makes a fresh directory `/tmp/vdeacc-<tag>-XXXXXX` (mode 0755).
    static func make(_ tag: String) throws -> String {
        var template = Array("/tmp/vdeacc-\(tag)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.flatMap { mkdtemp($0) } }
        guard made != nil else { throw AcceptanceFailure("mkdtemp failed for tag \(tag): errno \(errno)") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(path, 0o755)
        return path
    }

    /// Runs `body` with a fresh directory and removes it afterwards, also on failure.
    static func with<T>(_ tag: String, _ body: (String) async throws -> T) async throws -> T {
        let dir = try make(tag)
        defer { remove(dir) }
        return try await body(dir)
    }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    static func readText(_ path: String) -> String? {
        readBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The whole file, nil when it cannot be opened or read. Plain open/read: FileManager's
    /// `contents(atPath:)` leaks a 4 KiB buffer for every file that reports size 0 and is empty
    /// (`/proc/<kernel thread>/cmdline`, read for every process by ``HostInspector``): 41 MB
    /// in one acceptance run under AddressSanitizer (docs/testing.md).
    static func readBytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { return result }
            result.append(contentsOf: chunk[0..<n])
        }
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Paths of all unix sockets below `dir` (recursively).
    static func sockets(under dir: String) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: dir) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            let path = dir + "/" + relative
            var st = stat()
            if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { found.append(path) }
        }
        return found.sorted()
    }
}
