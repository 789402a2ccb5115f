import Shared
import Testing

@testable import vde_networker

/// Replies captured from a real vde_switch 2.3.2 (`-n 33`): two vde_plug2tap plugs that had
/// exchanged pings, and a port attached through libvdeplug with the description "QEMU", which is
/// how QEMU's `-netdev vde` attaches (net/vde.c calls `vde_open(sock, "QEMU", &args)`).
enum CapturedReplies {
    static let banner = "VDE switch V.2.3.2\n(C) Virtual Square Team (coord. R. Davoli) 2005,2006,2007 - GPLv2\n\nvde$ "

    static let allprintWithQEMU = """
        0000 DATA END WITH '.'
        Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable
         Current User: root Access Control: (User: NONE - Group: NONE)
         IN:  pkts         10          bytes                  852
         OUT: pkts         10          bytes                  852
          -- endpoint ID 0003 module unix prog   : vde_plug2tap: user=root pid=12068
        Port 0002 untagged_vlan=0000 ACTIVE - Unnamed Allocatable
         Current User: root Access Control: (User: NONE - Group: NONE)
         IN:  pkts         10          bytes                  852
         OUT: pkts          9          bytes                  762
          -- endpoint ID 0007 module unix prog   : vde_plug2tap: user=root pid=12077
        Port 0003 untagged_vlan=0000 ACTIVE - Unnamed Allocatable
         Current User: root Access Control: (User: NONE - Group: NONE)
         IN:  pkts          0          bytes                    0
         OUT: pkts         11          bytes                  894
          -- endpoint ID 0009 module unix prog   : QEMU user=root pid=12085
        .
        1000 Success

        vde$ 
        """

    /// Port 1's client has left (the port stays listed, INACTIVE, and is free); port 2 is in use.
    static let allprintWithInactivePort =
        "0000 DATA END WITH '.'\nPort 0001 untagged_vlan=0000 INACTIVE - Unnamed Allocatable\n Current User: NONE Access Control: (User: NONE - Group: NONE)\n IN:  pkts          0          bytes                    0\n OUT: pkts          0          bytes                    0\nPort 0002 untagged_vlan=0000 ACTIVE - Unnamed Allocatable\n Current User: root Access Control: (User: NONE - Group: NONE)\n IN:  pkts          0          bytes                    0\n OUT: pkts          0          bytes                    0\n  -- endpoint ID 0007 module unix prog   : QEMU user=root pid=29796\n.\n1000 Success\n\nvde$ "

    static let allprintEmpty = "0000 DATA END WITH '.'\n.\n1000 Success\n\nvde$ "

    static let showinfo = "0000 DATA END WITH '.'\nNumports=3\nHUB=false\ncounters=true\n.\n1000 Success\n\nvde$ "

    static let invalidArgument = "0000 DATA END WITH '.'\n.\n1022 Invalid argument\n\nvde$ "
}

@Suite struct ManagementReplyTests {
    @Test func parsesAllprintAfterTheBanner() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.banner + CapturedReplies.allprintWithQEMU))
        #expect(reply.code == 1000)
        #expect(reply.succeeded)
        #expect(reply.message == "Success")
        #expect(reply.data.count == 15)
    }

    @Test func portCountersOfPlugsAndQEMU() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.allprintWithQEMU))
        let ports = PortReport.parse(reply.data)
        #expect(
            ports == [
                PortCounters(
                    port: 1, inPackets: 10, inBytes: 852, outPackets: 10, outBytes: 852,
                    peer: "vde_plug2tap: user=root pid=12068", peerPID: 12068),
                PortCounters(
                    port: 2, inPackets: 10, inBytes: 852, outPackets: 9, outBytes: 762,
                    peer: "vde_plug2tap: user=root pid=12077", peerPID: 12077),
                PortCounters(
                    port: 3, inPackets: 0, inBytes: 0, outPackets: 11, outBytes: 894,
                    peer: "QEMU user=root pid=12085", peerPID: 12085),
            ])
    }

    @Test func inactivePortsAreFree() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.allprintWithInactivePort))
        #expect(PortReport.parseAll(reply.data).map(\.active) == [false, true])
        #expect(
            PortReport.parse(reply.data) == [PortCounters(port: 2, peer: "QEMU user=root pid=29796", peerPID: 29796)])
    }

    @Test func endpointIDsForEpclose() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.allprintWithQEMU))
        let entries = PortReport.parseAll(reply.data)
        #expect(entries.map { $0.endpoints.map(\.id) } == [[3], [7], [9]])
        #expect(entries[2].endpoints == [PortEntry.Endpoint(id: 9, program: "QEMU user=root pid=12085", pid: 12085)])
    }

    @Test func replyWithoutDataBlock() throws {
        let reply = try #require(ManagementReply.parse("1006 No such device or address\n\nvde$ "))
        #expect(reply.code == 1006)
        #expect(reply.data.isEmpty)
    }

    @Test func emptySwitchHasNoPorts() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.banner + CapturedReplies.allprintEmpty))
        #expect(reply.succeeded)
        #expect(reply.data.isEmpty)
        #expect(PortReport.parse(reply.data).isEmpty)
    }

    @Test func errorReplyKeepsItsCode() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.invalidArgument))
        #expect(reply.code == 1022)
        #expect(!reply.succeeded)
        #expect(reply.message == "Invalid argument")
    }

    @Test func incompleteReplyIsNotParsedYet() {
        #expect(ManagementReply.parse(CapturedReplies.banner) == nil)
        #expect(ManagementReply.parse("0000 DATA END WITH '.'\nPort 0001 untagged_vlan=0000 ACTIVE\n") == nil)
        // The status line has not ended yet.
        #expect(ManagementReply.parse("0000 DATA END WITH '.'\n.\n1000 Succ") == nil)
    }

    @Test func replyArrivingInPiecesIsFoundOnceComplete() {
        let whole = CapturedReplies.banner + CapturedReplies.allprintWithQEMU
        var complete: ManagementReply?
        var text = ""
        for character in whole {
            text.append(character)
            if let reply = ManagementReply.parse(text) {
                complete = reply
                break
            }
        }
        #expect(complete?.data.count == 15)
    }

    @Test func numberOfPortsFromShowinfo() throws {
        let reply = try #require(ManagementReply.parse(CapturedReplies.showinfo))
        #expect(PortReport.numberOfPorts(showInfo: reply.data) == 3)
    }

    @Test func processIDOfPeer() {
        #expect(PortReport.processID(in: "vde_plug2tap: user=root pid=2906") == 2906)
        #expect(PortReport.processID(in: "QEMU") == nil)
    }
}
