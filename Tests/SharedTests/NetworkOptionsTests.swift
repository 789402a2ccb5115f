import Shared
import Testing

/// The error `NetworkOptions.parse` threw, or nil (recording an issue) when it succeeded.
private func parseError(
    _ raw: [String: String], groupExists: (GroupName) -> Bool = { _ in true },
    sourceLocation: SourceLocation = #_sourceLocation
) -> VDEError? {
    do {
        let options = try NetworkOptions.parse(raw, groupExists: groupExists)
        Issue.record("accepted \(raw) as \(options)", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.code == .invalidArgument, sourceLocation: sourceLocation)
        return error
    }
}

@Suite struct NetworkOptionsTests {
    @Test func defaults() throws {
        let options = try NetworkOptions.parse([:])
        #expect(options == NetworkOptions())
        #expect(options.socketDir == nil)
        #expect(options.createSockets == false)
        #expect(options.managementSocket == nil)
        #expect(options.socketGroup == nil)
        #expect(options.numSwitchports == 32)
    }

    @Test func everyKey() throws {
        var asked: [String] = []
        let options = try NetworkOptions.parse(
            [
                "socket_dir": "/run/vde/net1",
                "create_sockets": "true",
                "management_socket": "/run/vde/net1.mgmt",
                "socket_group": "vde-users",
                "num_switchports": "64",
            ],
            groupExists: {
                asked.append($0.rawValue)
                return true
            })
        #expect(options.socketDir == "/run/vde/net1")
        #expect(options.createSockets)
        #expect(options.managementSocket == "/run/vde/net1.mgmt")
        #expect(options.socketGroup?.rawValue == "vde-users")
        #expect(options.numSwitchports == 64)
        #expect(asked == ["vde-users"])
    }

    @Test func unknownKeyListsTheKnownKeys() {
        let error = parseError(["socket-dir": "/run/vde"])
        let message = error?.message ?? ""
        #expect(message.contains("socket-dir"))
        for key in NetworkOptions.knownKeys { #expect(message.contains(key), "\(key) missing in: \(message)") }
    }

    @Test(arguments: [("true", true), ("1", true), ("false", false), ("0", false)])
    func createSocketsBooleans(value: String, expected: Bool) throws {
        let options = try NetworkOptions.parse(["socket_dir": "/run/vde/a", "create_sockets": value])
        #expect(options.createSockets == expected)
    }

    @Test(arguments: ["yes", "no", "TRUE", "False", "", " true", "2"])
    func createSocketsRefusesOtherWords(value: String) {
        let error = parseError(["socket_dir": "/run/vde/a", "create_sockets": value])
        #expect(error?.message.contains("must be true or false") == true)
    }

    @Test func createSocketsTrueNeedsSocketDir() {
        let error = parseError(["create_sockets": "true"])
        #expect(error?.message.contains("socket_dir") == true)
        // false without socket_dir is fine.
        #expect((try? NetworkOptions.parse(["create_sockets": "false"]))?.createSockets == false)
    }

    @Test(arguments: ["1", "32", "1024"])
    func numSwitchportsInRange(value: String) throws {
        #expect(try NetworkOptions.parse(["num_switchports": value]).numSwitchports == Int(value))
    }

    @Test(arguments: ["abc", "0", "-1", "99999999999999999999", "1025", "", " 5", "5 ", "1e3", "0x10", "3.5", "٣"])
    func numSwitchportsOutOfRange(value: String) {
        let error = parseError(["num_switchports": value])
        #expect(error?.message.contains("from 1 to 1024") == true)
    }

    @Test(arguments: ["68", "1280", "1400", "1500"])
    func mtuInRange(value: String) throws {
        #expect(try NetworkOptions.parse([NetworkOptions.mtuKey: value]).mtu == Int(value))
        #expect(try NetworkOptions.parse([:]).mtu == nil)
    }

    /// Above 1500 the error names vde_switch's frame limit; below 68, IPv4's minimum.
    @Test(arguments: [
        ("1501", "1518 bytes"), ("9000", "1518 bytes"), ("67", "smallest MTU IPv4"), ("0", "smallest MTU IPv4"),
        ("abc", "whole number"), ("-1", "whole number"), ("1e3", "whole number"), ("99999999999", "whole number"),
        ("", "whole number"), (" 1400", "whole number"),
    ])
    func mtuOutOfRangeSaysWhy(value: String, reason: String) {
        let error = parseError([NetworkOptions.mtuKey: value])
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "accepted")")
    }

    @Test(arguments: [
        "relative/path", "./x", "", "/", "/tmp/../etc", "/tmp/./x", "/tmp//x", "/tmp/x/", "//tmp",
        "/tmp/a\nb", "/tmp/a\u{7f}", "/tmp/\u{1b}[31m", "/tmp/a\tb", "/tmp/..", "~/vde",
    ])
    func badPathsAreRefused(path: String) {
        for key in [NetworkOptions.socketDirKey, NetworkOptions.managementSocketKey] {
            let error = parseError([key: path])
            let message = error?.message ?? ""
            #expect(message.contains(key))
            // The echoed value never carries control characters.
            #expect(!message.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f })
        }
    }

    @Test func pathLengthLimit() throws {
        let longest = "/" + String(repeating: "a", count: NetworkOptions.maxPathLength - 1)
        #expect(try NetworkOptions.parse(["socket_dir": longest]).socketDir == longest)
        let error = parseError(["socket_dir": longest + "a"])
        #expect(error?.message.contains("at most \(NetworkOptions.maxPathLength)") == true)
        // Bytes count, not characters.
        let multibyte = "/" + String(repeating: "é", count: 50)
        #expect(parseError(["socket_dir": multibyte]) != nil)
    }

    /// Decision: shell metacharacters are ordinary characters of an absolute path. Children get
    /// argv arrays, never a shell, so `;`, `$()`, quotes and spaces cannot inject anything.
    @Test(arguments: ["/tmp/a;rm -rf x", "/tmp/$(reboot)", "/tmp/`id`", "/tmp/a b", "/tmp/'q'\"d\"", "/tmp/a|b&c>d<e*"])
    func shellMetacharactersAreJustCharacters(path: String) throws {
        #expect(try NetworkOptions.parse(["socket_dir": path]).socketDir == path)
    }

    @Test func shellLookingPathWithTrailingSlashIsStillRefused() {
        // `/tmp/a;rm -rf /` ends with '/', which makes it a non-normalised path.
        let error = parseError(["socket_dir": "/tmp/a;rm -rf /"])
        #expect(error?.message.contains("normalised") == true)
    }

    @Test func socketDirAndManagementSocketMustDiffer() {
        let error = parseError(["socket_dir": "/run/vde/x", "management_socket": "/run/vde/x"])
        #expect(error?.message.contains("different") == true)
    }

    @Test func unknownGroupIsRefusedViaTheInjectedCheck() {
        let error = parseError(["socket_group": "nosuchgroup"], groupExists: { $0.rawValue == "vde" })
        #expect(error?.message.contains("nosuchgroup") == true)
        #expect(error?.message.contains("no such group") == true)
        #expect(
            (try? NetworkOptions.parse(["socket_group": "vde"], groupExists: { $0.rawValue == "vde" }))?.socketGroup
                == "vde")
    }

    @Test(arguments: ["", "-vde", "a b", "vde;id", String(repeating: "g", count: 33), "grüppe", "a/b"])
    func invalidGroupNamesAreRefusedWithoutAsking(name: String) {
        var asked = false
        let error = parseError(
            ["socket_group": name],
            groupExists: { _ in
                asked = true
                return true
            })
        #expect(error?.message.contains("not a valid group name") == true)
        #expect(!asked)
    }

    @Test func optionsAreCodable() throws {
        let options = try NetworkOptions.parse([
            "socket_dir": "/run/vde/a", "create_sockets": "1", "num_switchports": "8",
        ])
        let decoded = try JSONCoding.decode(NetworkOptions.self, from: try JSONCoding.encode(options))
        #expect(decoded == options)
    }
}
