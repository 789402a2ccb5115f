import Glibc
import Shared
import Testing

@testable import vde_supervisor

// MARK: Helpers

/// A value to store; `failEncoding` makes its encoding throw, to simulate a failing save.
private struct Sample: Codable, Sendable, Equatable {
    var name: String
    var numbers: [Int]
    var failEncoding = false

    struct Refused: Error {}

    func encode(to encoder: any Encoder) throws {
        if failEncoding { throw Refused() }
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(numbers, forKey: .numbers)
    }

    private enum CodingKeys: String, CodingKey { case name, numbers }

    init(name: String, numbers: [Int], failEncoding: Bool = false) {
        self.name = name
        self.numbers = numbers
        self.failEncoding = failEncoding
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        numbers = try c.decode([Int].self, forKey: .numbers)
    }
}

/// A fresh directory under /tmp, removed with everything in it when `body` returns.
private func withTemporaryDirectory(_ body: (String) throws -> Void) throws {
    var template = Array("/tmp/vde-statestore-test-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { $0.baseAddress.flatMap { mkdtemp($0) } }
    try #require(made != nil, "mkdtemp failed")
    let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    defer { removeTree(path) }
    try body(path)
}

/// `rm -rf` without a shell.
private func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT == S_IFDIR {
        for name in directoryEntries(path) { removeTree(path + "/" + name) }
        chmod(path, 0o700)
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Names in a directory, without `.` and `..`, sorted.
private func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

private func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    try #require(fd >= 0, "cannot create \(path)")
    defer { close(fd) }
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    try #require(written == bytes.count)
}

private func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    return out
}

private func permissions(_ path: String) -> mode_t? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return info.st_mode & 0o7777
}

/// The StateStoreError a call threw, or nil (recording an issue) when it did not throw one.
private func storeError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void)
    -> StateStoreError?
{
    do {
        try body()
        Issue.record("expected a StateStoreError, the call succeeded", sourceLocation: sourceLocation)
    } catch let error as StateStoreError {
        return error
    } catch {
        Issue.record("not a StateStoreError: \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

// MARK: Tests

@Suite struct StateStoreTests {
    @Test func roundTrip() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            #expect(store.path == dir + "/state.json")
            let value = Sample(name: "net", numbers: [3, 1, 2])
            try store.save(value)
            #expect(try store.load() == value)
            let changed = Sample(name: "other", numbers: [])
            try store.save(changed)
            #expect(try store.load() == changed)
        }
    }

    @Test func roundTripOfTheIPAMState() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<IPAMState>(directory: dir, fileName: "ipam.json")
            var state = IPAMState()
            let id = try state.requestPool(.init(Pool: "10.0.0.0/24", V6: false)).PoolID
            _ = try state.requestAddress(.init(PoolID: id, Address: "10.0.0.9"))
            try store.save(state)
            #expect(try store.load() == state)
            #expect(directoryEntries(dir) == ["ipam.json"])
        }
    }

    @Test func missingFileIsNil() throws {
        try withTemporaryDirectory { dir throws in
            #expect(try StateStore<Sample>(directory: dir).load() == nil)
            #expect(try StateStore<Sample>(directory: dir + "/not/there").load() == nil)
        }
    }

    @Test func corruptFileIsAnErrorNamingThePath() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            for content in ["{not json", "", #"{"name": 5, "numbers": []}"#, "[]"] {
                try writeFile(store.path, content)
                let error = storeError { _ = try store.load() }
                guard case .corrupt(let path, _, nil)? = error else {
                    Issue.record("expected .corrupt for '\(content)', got \(String(describing: error))")
                    continue
                }
                #expect(path == store.path)
                let message = error?.vdeError.message ?? ""
                #expect(message.contains(store.path))
                #expect(message.contains("Move it aside"))
            }
        }
    }

    @Test func unreadableStateIsAnError() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            #expect(mkdir(store.path, 0o700) == 0)
            let error = storeError { _ = try store.load() }
            #expect(error == .read(path: store.path, errno: EISDIR))
        }
    }

    @Test func saveLeavesNoTemporaryFileAndUsesMode0600() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            // An older file with a laxer mode is replaced by a private one.
            try writeFile(store.path, #"{"name":"old","numbers":[]}"#, mode: 0o644)
            try store.save(Sample(name: "n", numbers: [1]))
            #expect(directoryEntries(dir).sorted() == ["state.json", "state.json.1"])
            #expect(permissions(store.path) == 0o600)
            let text = String(decoding: readFile(store.path) ?? [], as: UTF8.self)
            #expect(text.hasSuffix("}\n"))
            #expect(text.contains("\"name\" : \"n\""))
        }
    }

    @Test func saveCreatesMissingDirectoriesPrivately() throws {
        try withTemporaryDirectory { dir throws in
            let nested = dir + "/a/b"
            let store = StateStore<Sample>(directory: nested + "/")
            #expect(store.path == nested + "/state.json")
            try store.save(Sample(name: "n", numbers: []))
            #expect(permissions(dir + "/a") == 0o700)
            #expect(permissions(nested) == 0o700)
            #expect(try store.load()?.name == "n")
        }
    }

    @Test func directoryThatIsAFileIsAnError() throws {
        try withTemporaryDirectory { dir throws in
            try writeFile(dir + "/file", "x")
            let store = StateStore<Sample>(directory: dir + "/file")
            let error = storeError { try store.save(Sample(name: "n", numbers: [])) }
            guard case .directory? = error else {
                Issue.record("expected .directory, got \(String(describing: error))")
                return
            }
            #expect(error?.vdeError.message.contains(dir + "/file") == true)
        }
    }

    @Test func failedEncodingLeavesTheOldFileIntact() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            try store.save(Sample(name: "old", numbers: [1]))
            let before = readFile(store.path)
            let error = storeError { try store.save(Sample(name: "new", numbers: [2], failEncoding: true)) }
            guard case .encoding(let path, _)? = error else {
                Issue.record("expected .encoding, got \(String(describing: error))")
                return
            }
            #expect(path == store.path)
            #expect(readFile(store.path) == before)
            #expect(try store.load() == Sample(name: "old", numbers: [1]))
            #expect(directoryEntries(dir) == ["state.json"])
        }
    }

    @Test func failedWriteLeavesTheOldFileIntact() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            try store.save(Sample(name: "old", numbers: [1]))
            let before = readFile(store.path)
            // Something that is not ours sits where the temporary file goes.
            #expect(mkdir(store.temporaryPath, 0o700) == 0)
            let error = storeError { try store.save(Sample(name: "new", numbers: [2])) }
            guard case .write(_, let step, _)? = error else {
                Issue.record("expected .write, got \(String(describing: error))")
                return
            }
            #expect(step == "create")
            #expect(readFile(store.path) == before)
            #expect(try store.load() == Sample(name: "old", numbers: [1]))
            // It is left alone, not removed.
            #expect(permissions(store.temporaryPath) != nil)
            #expect(error?.vdeError.message.contains("previous state file is kept") == true)
        }
    }

    @Test func failedRenameRemovesTheTemporaryFile() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            // The target is a non-empty directory: rename(2) must fail.
            #expect(mkdir(store.path, 0o700) == 0)
            try writeFile(store.path + "/keep", "precious")
            let error = storeError { try store.save(Sample(name: "new", numbers: [2])) }
            guard case .write(let path, let step, _)? = error else {
                Issue.record("expected .write, got \(String(describing: error))")
                return
            }
            #expect(path == store.path)
            #expect(step == "rename")
            #expect(directoryEntries(dir) == ["state.json"])
            #expect(readFile(store.path + "/keep") == Array("precious".utf8))
        }
    }

    /// Each save keeps the value it replaces as `state.json.1`, so a damaged file has an
    /// earlier generation to restore.
    @Test func eachSaveKeepsThePreviousGeneration() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            try store.save(Sample(name: "a", numbers: [1]))
            #expect(readFile(store.previousPath) == nil, "nothing to keep before the first save")
            try store.save(Sample(name: "b", numbers: [2]))
            try store.save(Sample(name: "c", numbers: [3]))
            #expect(try store.load() == Sample(name: "c", numbers: [3]))
            #expect(
                try StateStore<Sample>(directory: dir, fileName: "state.json.1").load()
                    == Sample(name: "b", numbers: [2]))
            #expect(directoryEntries(dir).sorted() == ["state.json", "state.json.1"])
            #expect(permissions(store.previousPath) == 0o600)
        }
    }

    @Test func aCorruptFileNamesThePreviousGenerationAndHowToRestoreIt() throws {
        try withTemporaryDirectory { dir throws in
            let store = StateStore<Sample>(directory: dir)
            try store.save(Sample(name: "a", numbers: [1]))
            try store.save(Sample(name: "b", numbers: [2]))
            try writeFile(store.path, "{damaged")
            let error = storeError { _ = try store.load() }
            guard case .corrupt(_, _, let previous)? = error else {
                Issue.record("expected .corrupt, got \(String(describing: error))")
                return
            }
            #expect(previous == store.previousPath)
            let message = error?.vdeError.message ?? ""
            #expect(message.contains("cp -p \(store.previousPath) \(store.path)"), "\(message)")
            #expect(message.contains("one change older"), "\(message)")
        }
    }

    /// The directory cannot be synced after the rename: the old file is put back and the save
    /// throws, so a caller that keeps its old value in memory agrees with the disk.
    @Test func aFailedDirectorySyncPutsTheOldFileBack() throws {
        try withTemporaryDirectory { dir throws in
            var store = StateStore<Sample>(directory: dir)
            try store.save(Sample(name: "old", numbers: [1]))
            let before = readFile(store.path)
            store.syncDirectory = { _ in
                errno = EIO
                return -1
            }
            let error = storeError { try store.save(Sample(name: "new", numbers: [2])) }
            #expect(error == .directorySync(path: store.path, errno: EIO, restored: true))
            #expect(readFile(store.path) == before)
            #expect(try store.load() == Sample(name: "old", numbers: [1]))
            #expect(error?.vdeError.message.contains("undone") == true)
            #expect(directoryEntries(dir).sorted() == ["state.json", "state.json.1"], "no temporary file is left")
        }
    }

    @Test func aFailedDirectorySyncOfTheFirstSaveLeavesNoFile() throws {
        try withTemporaryDirectory { dir throws in
            var store = StateStore<Sample>(directory: dir)
            store.syncDirectory = { _ in
                errno = EIO
                return -1
            }
            let error = storeError { try store.save(Sample(name: "new", numbers: [2])) }
            #expect(error == .directorySync(path: store.path, errno: EIO, restored: true))
            #expect(try store.load() == nil)
            #expect(directoryEntries(dir).isEmpty)
        }
    }

    @Test func temporaryNameIsPerProcess() {
        let store = StateStore<Sample>(directory: "/var/lib/vde", fileName: "s.json")
        #expect(store.temporaryPath == "/var/lib/vde/s.json.tmp-\(getpid())")
    }
}
