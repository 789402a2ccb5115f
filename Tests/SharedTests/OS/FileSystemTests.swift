import Shared
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct FileSystemTests {
    @Test func atomicWriteReplacesTheFileWithTheExactModeAndLeavesNoTemporaryFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/file"
        try FileSystem.writeAtomically(path, contents: "old\n")
        try FileSystem.writeAtomically(path, contents: "new\n", mode: 0o600, options: .sync)
        #expect(FileSystem.readFile(path) == "new\n")
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(FileSystem.listDirectory(scratch.path) == ["file"])
    }

    @Test func aFailedAtomicWriteThrowsTheCallAndKeepsTheOldFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let error = #expect(throws: SystemCallError.self) {
            try FileSystem.writeAtomically(scratch.path + "/missing/file", contents: "x")
        }
        #expect(error?.errno == ENOENT)
        #expect(error?.call == "open")
        #expect(
            error?.description
                == "open \(scratch.path)/missing/file\(FileSystem.temporarySuffix): No such file or directory")
    }

    @Test func writeRefusesASymbolicLinkWhenAsked() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let target = scratch.path + "/target"
        try FileSystem.write(Array("keep".utf8), to: target)
        #expect(symlink(target, scratch.path + "/link") == 0)
        #expect(throws: SystemCallError.self) {
            try FileSystem.write(Array("x".utf8), to: scratch.path + "/link", options: .noFollow)
        }
        #expect(FileSystem.readFile(target) == "keep")
    }

    @Test func readStopsAtTheLimitAndNamesAMissingFile() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/big"
        try FileSystem.write([UInt8](repeating: 65, count: 200_000), to: path)
        #expect(try FileSystem.read(path, limit: 100_001).count == 100_001)
        #expect(try FileSystem.read(path, limit: 1 << 20).count == 200_000)
        let error = #expect(throws: SystemCallError.self) { try FileSystem.read(scratch.path + "/none") }
        #expect(error?.errno == ENOENT)
        #expect(FileSystem.readFile(scratch.path + "/none") == nil)
    }

    @Test func makeDirectoriesCreatesTheMissingOnesWithTheModeAndReportsThem() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let old = umask(0o077)
        defer { umask(old) }
        let created = try FileSystem.makeDirectories(scratch.path + "/a/b/c", mode: 0o755)
        #expect(created == [scratch.path + "/a", scratch.path + "/a/b", scratch.path + "/a/b/c"])
        var info = stat()
        #expect(stat(scratch.path + "/a/b", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o755)
        #expect(try FileSystem.makeDirectories(scratch.path + "/a/b/c").isEmpty)
    }

    @Test func makeDirectoriesRefusesAFileInTheWay() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try FileSystem.write(Array("x".utf8), to: scratch.path + "/file", mode: 0o600)
        let error = #expect(throws: SystemCallError.self) { try FileSystem.makeDirectories(scratch.path + "/file") }
        #expect(error?.errno == ENOTDIR)
        #expect(
            #expect(throws: SystemCallError.self) { try FileSystem.makeDirectories(scratch.path + "/file/sub") }?.errno
                == ENOTDIR)
        var info = stat()
        #expect(
            stat(scratch.path + "/file", &info) == 0 && info.st_mode & 0o777 == 0o600, "the file's mode is not touched")
    }

    @Test func removeIfEmptyKeepsADirectoryWithContent() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try FileSystem.makeDirectories(scratch.path + "/full")
        try FileSystem.makeDirectories(scratch.path + "/empty")
        try FileSystem.write(Array("x".utf8), to: scratch.path + "/full/x")
        #expect(!FileSystem.removeIfEmpty(scratch.path + "/full"))
        #expect(FileSystem.removeIfEmpty(scratch.path + "/empty"))
        #expect(FileSystem.listDirectory(scratch.path)?.sorted() == ["full"])
    }

    @Test func directoryHandleListsAndRemovesByName() throws {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        try FileSystem.write(Array("x".utf8), to: scratch.path + "/one")
        let handle = try #require(DirectoryHandle(scratch.path))
        defer { handle.close() }
        #expect(handle.names() == ["one"])
        #expect(handle.names() == ["one"], "a second listing starts from the beginning again")
        #expect(handle.fileType("one") == S_IFREG)
        #expect(handle.remove("one"))
        #expect(handle.fileType("one") == nil)
        #expect(handle.remove("one"), "already gone counts as removed")
        #expect(symlink(scratch.path, scratch.path + "/link") == 0)
        #expect(DirectoryHandle(scratch.path + "/link") == nil, "a symbolic link is not followed")
    }

    @Test(arguments: [("/a/b", "/a"), ("/a", "/"), ("/a/b/", "/a"), ("a", "."), ("/", "/")])
    func parentOfAPath(path: String, parent: String) {
        #expect(FileSystem.parent(of: path) == parent)
    }
}
