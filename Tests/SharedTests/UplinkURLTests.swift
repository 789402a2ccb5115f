import Shared
import Testing

@Suite struct UplinkURLTests {
    @Test(arguments: [
        ("vxvde://", UplinkURL.Scheme.vxvde, false, nil as String?),
        ("vxvde://239.255.99.9/if=vxt0", .vxvde, false, "vxt0"),
        (
            "vxvde://239.1.2.3/port=12345/vni=42/ttl=1/if=eth1/expiretime=10/hashsize=1024/rcvbuf=65536", .vxvde, false,
            "eth1"
        ),
        ("vxvde://ff15::3/port=12345/vni=42", .vxvde, true, nil),
        ("vxvde:///v6", .vxvde, true, nil),
        ("vxvde://239.0.0.1/grp=1000/bind=169.254.1.1", .vxvde, false, nil),
        ("udp://2000->192.0.2.7:3000", .udp, false, nil),
        ("udp://169.254.1.1:2000->169.254.1.2:3000", .udp, false, nil),
        ("udp://2000->host-b.example.org:3000", .udp, false, nil),
        ("udp://::1:2000->fd00::2:3000", .udp, true, nil),
    ])
    func acceptedURLsKeepTheirTextAndTellFamilyAndInterface(
        text: String, scheme: UplinkURL.Scheme, ipv6: Bool, interface: String?
    ) throws {
        let url = try UplinkURL(text)
        #expect(url.rawValue == text)
        #expect(url.scheme == scheme)
        #expect(url.ipv6 == ipv6)
        #expect(url.interface == interface)
    }

    /// Every refusal names what was wrong and lists the accepted forms.
    @Test(arguments: [
        ("vde:///tmp/ctl", "unknown or missing scheme"),
        ("tap://eth0", "unknown or missing scheme"),
        ("cmd://ssh host vde_plug", "printable ASCII"),
        ("vxvde:/239.0.0.1", "unknown or missing scheme"),
        ("vxvde://10.0.0.1", "not a multicast address"),
        ("vxvde://ff02::1/v4", "contradicts"),
        ("vxvde://host.example/", "not an IP address literal"),
        ("vxvde://239.0.0.1/port=0", "'port' must be a whole number from 1 to 65535"),
        ("vxvde://239.0.0.1/port=99999999999999", "'port' must be a whole number"),
        ("vxvde://239.0.0.1/ttl=-1", "'ttl'"),
        ("vxvde://239.0.0.1/vni=16777216", "'vni'"),
        ("vxvde://239.0.0.1/if=../../x", "interface name"),
        ("vxvde://239.0.0.1/if=eth0;reboot", "interface name"),
        ("vxvde://239.0.0.1/iff=eth0", "unknown vxvde option 'iff'"),
        ("vxvde://239.0.0.1/", "unknown vxvde option ''"),
        ("vxvde://239.0.0.1/v4=1", "takes no value"),
        ("vxvde://239.0.0.1/ttl=1/ttl=2", "given twice"),
        ("vxlan://239.0.0.1/vni=7", "sends no unicast"),
        ("udp://2000", "LOCALPORT->REMOTE:REMOTEPORT"),
        ("udp://2000->192.0.2.7", "needs a :PORT"),
        ("udp://2000->:3000", "remote host is missing"),
        ("udp://x->192.0.2.7:3000", "'local port'"),
        ("udp://10.0.0.1:2000->fd00::2:3000", "different families"),
        ("udp://2000->$(reboot):3000", "neither an IP address nor a host name"),
    ])
    func refusedURLsSayWhy(text: String, words: String) {
        do {
            let url = try UplinkURL(text)
            Issue.record("accepted \(text) as \(url)")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains(words), "\(error.message)")
            #expect(error.message.contains("accepted: vxvde://"), "\(error.message)")
        }
    }

    @Test func aLongURLIsRefused() {
        #expect(throws: VDEError.self) { try UplinkURL("vxvde://239.0.0.1/if=" + String(repeating: "a", count: 300)) }
    }

    /// 1500 less the outer IP and UDP headers, the scheme's header and the inner Ethernet header.
    @Test func defaultMTUIsWhatCrossesA1500ByteUnderlay() throws {
        #expect(try UplinkURL("vxvde://239.0.0.1").defaultMTU == 1450)
        #expect(try UplinkURL("vxvde://ff15::3").defaultMTU == 1430)
        #expect(try UplinkURL("udp://2000->192.0.2.7:3000").defaultMTU == 1458)
    }

    @Test func theOptionSetsTheSpecsMTUUnlessTheUserDid() throws {
        let plain = try NetworkOptions.parse(["uplink": "vxvde://239.255.1.1/if=vxt0"])
        #expect(plain.uplink?.rawValue == "vxvde://239.255.1.1/if=vxt0")
        #expect(plain.effectiveMTU == 1450)
        let chosen = try NetworkOptions.parse([
            "uplink": "vxvde://239.255.1.1", "com.docker.network.driver.mtu": "1400",
        ])
        #expect(chosen.effectiveMTU == 1400)
        #expect(try NetworkOptions.parse([:]).effectiveMTU == nil)
        #expect(throws: VDEError.self) { try NetworkOptions.parse(["uplink": "vxvde://10.0.0.1"]) }
    }

    /// A record with an uplink reads back equal; one without keeps its bytes (no `uplink` key).
    @Test func optionsAndSpecsRoundTrip() throws {
        let options = try NetworkOptions.parse(["uplink": "udp://2000->192.0.2.7:3000"])
        let text = try JSONCoding.string(options)
        #expect(text.contains(#""uplink":"udp://2000->192.0.2.7:3000""#), "\(text)")
        #expect(try JSONCoding.decode(NetworkOptions.self, from: Array(text.utf8)) == options)
        #expect(!(try JSONCoding.string(NetworkOptions())).contains("uplink"))
    }
}

@Suite struct UplinkSegmentTests {
    /// vdeplug4's defaults are filled in, so two spellings of one segment compare equal.
    @Test func defaultsAreFilledIn() throws {
        #expect(try UplinkURL("vxvde://").segment == UplinkURL("vxvde://239.0.0.1/vni=1/port=14789/if=eth1").segment)
        #expect(try UplinkURL("vxvde://").segment != UplinkURL("vxvde:///vni=2").segment)
        #expect(try UplinkURL("vxvde:///v6").segment == UplinkURL("vxvde://ff05:56de::1").segment)
        #expect(
            try UplinkURL("udp://2000->192.0.2.1:3000").segment
                == UplinkURL("udp://169.254.1.1:2000->192.0.2.9:4000").segment)
    }
}
