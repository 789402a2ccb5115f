import Foundation

/// Temporary directories under /tmp, short enough for unix socket paths below them.
enum TempDir {
    /// Makes a fresh directory `/tmp/vdeacc-<tag>-XXXXXX` (mode 0755).
    static func make(_ tag: String) throws -> String {
        var template = Array("/tmp/vdeacc-\(tag)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in mkdtemp(buffer.baseAddress!) }
        guard made != nil else { throw AcceptanceFailure("mkdtemp failed for tag \(tag): errno \(errno)") }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
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
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    static func readBytes(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map(Array.init)
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
