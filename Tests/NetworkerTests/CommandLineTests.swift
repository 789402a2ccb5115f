import Shared
import Testing

@testable import vde_networker

private let executables = Executables(
    vdeSwitch: "/usr/bin/vde_switch", vdePlug2tap: "/usr/bin/vde_plug2tap",
    ip: "/usr/sbin/ip", nsenter: "/usr/bin/nsenter")

@Suite struct CommandLineTests {
    @Test func switchArgvAsksForOneMorePortThanUsable() throws {
        let spec = try SwitchSpec(
            networkDir: "/run/vde-supervisor/abc", ctlDir: "/run/vde-supervisor/abc/ctl",
            managementSocket: "/run/vde-supervisor/abc/mgmt",
            mode: .own, group: nil, numPorts: 32)
        #expect(
            SwitchProcess.argv(spec: spec, executables: executables) == [
                "/usr/bin/vde_switch", "-d", "-p", "/run/vde-supervisor/abc/switch.pid", "-s",
                "/run/vde-supervisor/abc/ctl", "-M", "/run/vde-supervisor/abc/mgmt", "-n",
                "33",
            ])
    }

    @Test func switchArgvWithGroupOpensTheSocketsToIt() throws {
        let spec = try SwitchSpec(
            networkDir: "/run/vde-supervisor/abc", ctlDir: "/srv/vde/sw", managementSocket: "/srv/vde/sw.mgmt",
            mode: .useOrCreate, group: "kvm", numPorts: 1)
        #expect(
            SwitchProcess.argv(spec: spec, executables: executables) == [
                "/usr/bin/vde_switch", "-d", "-p", "/run/vde-supervisor/abc/switch.pid", "-s", "/srv/vde/sw", "-M",
                "/srv/vde/sw.mgmt", "-n", "2", "-g", "kvm", "-m",
                "0660",
            ])
    }

    @Test func plugArgvInTheHostNamespace() {
        #expect(
            PlugProcess.argv(ctlDir: "/run/x/ctl", location: .host(tapName: "vdeabc"), executables: executables)
                == ["/usr/bin/vde_plug2tap", "-s", "/run/x/ctl", "--", "vdeabc"])
    }

    @Test func plugArgvInAContainerNamespaceGoesThroughNsenter() {
        let location = PlugLocation.sandbox(path: "/var/run/docker/netns/1a2b", interface: "eth0")
        #expect(
            PlugProcess.argv(ctlDir: "/run/x/ctl", location: location, executables: executables)
                == [
                    "/usr/bin/nsenter", "--net=/var/run/docker/netns/1a2b", "--", "/usr/bin/vde_plug2tap", "-s",
                    "/run/x/ctl", "--", "eth0",
                ])
    }

    @Test func linkListFromIpOneline() {
        let output = """
            1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
            9: vxtest1: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 02:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff
            12: eth0@if13: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default \\    link/ether 8A:2B:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netnsid 0

            """
        let links = LinkList.parse(output)
        #expect(
            links == [
                LinkInfo(name: "lo", macAddress: nil),
                LinkInfo(name: "vxtest1", macAddress: "02:11:22:33:44:55"),
                LinkInfo(name: "eth0", macAddress: "8a:2b:00:00:00:01"),
            ])
        #expect(LinkList.find(macAddress: "02:11:22:33:44:55", in: links)?.name == "vxtest1")
        #expect(LinkList.find(macAddress: "8a:2b:00:00:00:01", in: links)?.name == "eth0")
        #expect(LinkList.find(macAddress: "02:00:00:00:00:09", in: links) == nil)
    }

    /// fdinfo of a plug's /dev/net/tun, as read on this kernel: with its tap (renamed eth0 after a
    /// move into a namespace), and after the tap was deleted.
    @Test func tapAttachmentFromFdinfo() {
        #expect(
            TapAttachment.parse(fdinfo: "pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t105\niff:\teth0\n")
                == .attached(interface: "eth0"))
        #expect(TapAttachment.parse(fdinfo: "pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t105\niff:\t\n") == .detached)
        #expect(TapAttachment.parse(fdinfo: "pos:\t0\nflags:\t02\n") == .unknown)
    }

    @Test func parentDirectories() {
        #expect(FileSystem.parent(of: "/run/vde-supervisor/abc/ctl") == "/run/vde-supervisor/abc")
        #expect(FileSystem.parent(of: "/ctl") == "/")
        #expect(FileSystem.parent(of: "/a/b/") == "/a")
    }
}
