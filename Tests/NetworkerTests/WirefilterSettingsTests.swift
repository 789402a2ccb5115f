import Shared
import Testing

@testable import vde_networker

/// What wirefilter gets for a ``LinkImpairment``: the exact values in its units (ms with
/// decimals, percentages, BYTES per second), and every parameter in a live change.
@Suite struct WirefilterSettingsTests {
    func impairment(_ settings: [(LinkImpairment.Key, String)]) throws -> LinkImpairment {
        var impairment = LinkImpairment()
        for (key, value) in settings { impairment = try impairment.setting(key, to: value) }
        try impairment.check()
        return impairment
    }

    @Test func everyParameterInItsUnit() throws {
        let all = try impairment([
            (.delay, "50ms"), (.jitter, "10ms"), (.loss, "20%"), (.lossBurst, "3"), (.dup, "0.5%"),
            (.rate, "10mbit"),
        ])
        #expect(
            WirefilterSettings.commands(for: all) == [
                "delay 50+10", "loss 20", "lostburst 3", "dup 0.5", "bandwidth 1250000",
            ])
        #expect(
            WirefilterSettings.options(for: all) == [
                "-d", "50+10", "-l", "20", "-L", "3", "-D", "0.5", "-b", "1250000",
            ])
    }

    @Test func clearedParametersAreSetToZeroLiveAndLeftOutAtStart() throws {
        let delayOnly = try impairment([(.delay, "25ms")])
        #expect(
            WirefilterSettings.commands(for: delayOnly) == [
                "delay 25", "loss 0", "lostburst 0", "dup 0", "bandwidth 0",
            ])
        #expect(WirefilterSettings.options(for: delayOnly) == ["-d", "25"])
        #expect(WirefilterSettings.commands(for: LinkImpairment()).allSatisfy { $0.hasSuffix(" 0") })
        #expect(WirefilterSettings.options(for: LinkImpairment()).isEmpty)
    }

    @Test func fractionsAreExact() throws {
        let fine = try impairment([
            (.delay, "250us"), (.loss, "0.001%"), (.dup, "12.345%"), (.rate, "1001bit"),
        ])
        #expect(
            WirefilterSettings.commands(for: fine) == [
                "delay 0.25", "loss 0.001", "lostburst 0", "dup 12.345", "bandwidth 125.125",
            ])
        let jittered = try impairment([(.delay, "1.5s"), (.jitter, "1us")])
        #expect(WirefilterSettings.delay(jittered) == "1500+0.001")
        #expect(WirefilterSettings.bytesPerSecond(1_000_000_000) == "125000000")
        #expect(WirefilterSettings.decimal(5, scale: 1000) == "0.005")
        #expect(WirefilterSettings.decimal(120, scale: 1000) == "0.12")
    }

    @Test func whichPlugALinkNeeds() throws {
        #expect(PlugKind.wanted(for: nil) == .plug2tap)
        #expect(PlugKind.wanted(for: LinkSettings()) == .plug2tap)
        #expect(PlugKind.wanted(for: LinkSettings(impairment: try impairment([(.loss, "1%")]))) == .wirefilter)
        #expect(PlugKind.wanted(for: LinkSettings(impairment: try impairment([(.loss, "1%")]), down: true)) == nil)
        #expect(PlugKind.wanted(for: LinkSettings(down: true)) == nil)
    }

    /// `[nsenter --net=NS --] wirefilter -v CTLDIR:tap://IFNAME ...`: the switch first, since
    /// `-v` splits at the first colon.
    @Test func theArgvPlugsTheTapStraightIntoTheSwitch() throws {
        let executables = Executables(
            vdeSwitch: "/x/vde_switch", vdePlug2tap: "/x/vde_plug2tap", ip: "/x/ip", nsenter: "/x/nsenter",
            wirefilter: "/x/wirefilter")
        let paths = try NetworkPaths(
            runDir: "/run/vde", network: FakeWorkerFixture.networkID, options: NetworkOptions())
        let spec = WirefilterSpec(impairment: try impairment([(.delay, "50ms")]), tap: "vdetap1", paths: paths)
        let host = PlugProcess.wirefilterArgv(
            ctlDir: paths.ctlDir, location: .host(tapName: "vdetap1"), spec: spec, executables: executables)
        #expect(
            host == [
                "/x/wirefilter", "-v", paths.ctlDir + ":tap://vdetap1", "-M",
                paths.linkManagementSocket(tap: "vdetap1"),
                "--mgmtmode", "600", "--daemon", "--pidfile", paths.linkPIDFile(tap: "vdetap1"), "-d", "50",
            ])
        let inside = PlugProcess.wirefilterArgv(
            ctlDir: paths.ctlDir, location: .sandbox(path: "/run/docker/netns/abc", interface: "eth0"), spec: spec,
            executables: executables)
        #expect(Array(inside.prefix(4)) == ["/x/nsenter", "--net=/run/docker/netns/abc", "--", "/x/wirefilter"])
        #expect(inside.contains(paths.ctlDir + ":tap://eth0"))
    }

    /// Captured from wirefilter 2.3.2: its banner and prompt differ from the switch's.
    @Test func theWirefilterConsoleIsParsedWithItsPrompt() throws {
        let banner = "\nVDE wirefilter V.2.3.2\n(C) R.Davoli 2005,2006 - GPLv2\n\nVDEwf$ "
        let showinfo =
            "0000 DATA END WITH '.'\nWireFilter: bidirectional\nLoss   L->R 1.5+0U   R->L 1.5+0U\nDelay  L->R 12.5+2.5U   R->L 12.5+2.5U\n.\n1000 Success\n\nVDEwf$ "
        let reply = try #require(ManagementReply.parse(banner + showinfo, prompt: ManagementConsole.wirefilter.prompt))
        #expect(reply.succeeded)
        #expect(reply.data.count == 3 && reply.data[2].hasPrefix("Delay  L->R 12.5+2.5U"))
        let set = try #require(ManagementReply.parse(banner + "1000 Success\n\nVDEwf$ ", prompt: "VDEwf$ "))
        #expect(set.succeeded && set.data.isEmpty)
        // A status line right after the prompt on the same line (the switch's parser would miss it).
        let inline = try #require(ManagementReply.parse("VDEwf$ 1022 Invalid argument\n", prompt: "VDEwf$ "))
        #expect(inline.code == 1022)
    }

    /// An adopted wirefilter's port is found by the pid libvdeplug put in its data socket's name.
    @Test func theSwitchSidePidOfAnAdoptedWirefilter() {
        let table = """
            Num       RefCount Protocol Flags    Type St Inode Path
            0000000000000000: 00000002 00000000 00000000 0002 01 4590176 /run/vde/n/ctl/.12893-00000
            0000000000000000: 00000003 00000000 00000000 0001 03 4590175
            0000000000000000: 00000002 00000000 00000000 0002 01 4590999 /run/vde/n/ctl/.55555-00000
            """
        #expect(
            WirefilterPeer.peerPID(unixTable: table, inodes: ["4590175", "4590176"], ctlDir: "/run/vde/n/ctl") == 12893)
        #expect(WirefilterPeer.peerPID(unixTable: table, inodes: ["4590175"], ctlDir: "/run/vde/n/ctl") == nil)
        #expect(WirefilterPeer.peerPID(unixTable: table, inodes: ["4590176"], ctlDir: "/other") == nil)
        #expect(WirefilterPeer.socketInode("socket:[4590176]") == "4590176")
        #expect(WirefilterPeer.socketInode("/dev/net/tun") == nil)
    }
}
