import Shared
import Testing

@testable import vde_supervisor

/// Records written before `networkDir` and `switchStarted` existed are migrated in one place,
/// when the state is read.
@Suite struct NetworkRecordMigrationTests {
    static let runDir = "/run/vde-supervisor"
    static let id: NetworkID = "0123456789abcdef0123"

    /// A record as vde-supervisor wrote it before: `mode` overwritten with own/external.
    static func oldRecord(mode: String, ctlDir: String, options: String) -> String {
        let ipam = (try? JSONCoding.string(IPAMState())) ?? "{}"
        return """
            {"version":1,"ipam":\(ipam),"networks":{"\(id)":{"id":"\(id)","options":\(options),
             "switchSpec":{"ctlDir":"\(ctlDir)","managementSocket":"/run/lab.mgmt","mode":"\(mode)","numPorts":32},
             "ipv4Data":[],"ipv6Data":[],"poolIDs":[],"endpoints":{},"createdAt":1}}}
            """
    }

    static func decode(_ text: String, runDir: String? = NetworkRecordMigrationTests.runDir) throws -> NetworkRecord {
        let userInfo: [CodingUserInfoKey: any Sendable] = runDir.map { [NetworkRecord.runDirKey: $0] } ?? [:]
        let state = try JSONCoding.decode(SupervisorState.self, from: Array(text.utf8), userInfo: userInfo)
        return try #require(state.networks[id])
    }

    @Test func anOldCreateSocketsRecordKeepsItsIntentAndItsRunDir() throws {
        let record = try Self.decode(
            Self.oldRecord(
                mode: "own", ctlDir: "/run/lab",
                options: #"{"socketDir":"/run/lab","createSockets":true,"numSwitchports":32}"#))
        #expect(record.switchSpec.mode == .useOrCreate, "socket_dir + create_sockets is the intent useOrCreate")
        #expect(record.switchStarted, "mode own meant: the plugin started the switch")
        #expect(
            record.switchSpec.paths.networkDir == "/run/vde-supervisor/0123456789ab", "not beside the user's socket_dir"
        )
    }

    @Test func anOldExternalRecordStaysExternal() throws {
        let record = try Self.decode(
            Self.oldRecord(
                mode: "external", ctlDir: "/run/lab",
                options: #"{"socketDir":"/run/lab","createSockets":false,"numSwitchports":32}"#))
        #expect(record.switchSpec.mode == .external)
        #expect(!record.switchStarted)
    }

    @Test func anOldCreateSocketsRecordWhoseSwitchWasRunningIsUseOrCreateNotStarted() throws {
        let record = try Self.decode(
            Self.oldRecord(
                mode: "external", ctlDir: "/run/lab",
                options: #"{"socketDir":"/run/lab","createSockets":true,"numSwitchports":32}"#))
        #expect(record.switchSpec.mode == .useOrCreate)
        #expect(!record.switchStarted)
    }

    @Test func anOldDefaultRecordIsOwn() throws {
        let record = try Self.decode(
            Self.oldRecord(
                mode: "own", ctlDir: "/run/vde-supervisor/0123456789ab/ctl",
                options: #"{"createSockets":false,"numSwitchports":32}"#))
        #expect(record.switchSpec.mode == .own)
        #expect(record.switchStarted)
        #expect(record.switchSpec.paths.networkDir == "/run/vde-supervisor/0123456789ab")
    }

    @Test func aNewRecordRoundTripsAsWritten() throws {
        let spec = try SwitchSpec(
            networkDir: "/somewhere/else/0123456789ab", ctlDir: "/run/lab", managementSocket: nil,
            mode: .useOrCreate, group: nil, numPorts: 8)
        var state = SupervisorState()
        state.networks[Self.id] = NetworkRecord(
            id: Self.id, options: NetworkOptions(socketDir: "/run/lab", createSockets: true),
            switchSpec: spec, switchStarted: false, ipv4Data: [], ipv6Data: [], poolIDs: [],
            createdAt: 5)
        let text = String(decoding: try JSONCoding.encode(state), as: UTF8.self)
        let decoded = try Self.decode(text)
        #expect(decoded == state.networks[Self.id])
        // The recorded directory wins over the run dir the reader knows.
        #expect(decoded.switchSpec.paths.networkDir == "/somewhere/else/0123456789ab")
    }

    @Test func anOldRecordCannotBeReadWithoutTheRunDir() {
        #expect(throws: (any Error).self) {
            _ = try Self.decode(
                Self.oldRecord(
                    mode: "own", ctlDir: "/run/lab", options: #"{"createSockets":false,"numSwitchports":32}"#),
                runDir: nil)
        }
    }
}
