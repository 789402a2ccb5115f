import Shared
import Testing

private let fullID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

@Suite struct NamingTests {
    @Test(arguments: [fullID, "a", "abc", String(repeating: "f", count: 128)])
    func tapNameIsShortAndPrefixed(id: String) {
        let name = Naming.tapName(endpointID: id)
        #expect(name.hasPrefix("vde"))
        #expect(name.utf8.count <= 15)
        #expect(name.utf8.count >= 4)
    }

    @Test func tapNameUsesTheStartOfTheID() {
        #expect(Naming.tapName(endpointID: fullID) == "vde0123456789ab")
        #expect(Naming.shortID(fullID) == "0123456789ab")
    }

    @Test func networkRunDir() {
        #expect(Naming.networkRunDir(runDir: "/run/vde", networkID: fullID) == "/run/vde/0123456789ab")
        #expect(Naming.networkRunDir(runDir: "/run/vde/", networkID: fullID) == "/run/vde/0123456789ab")
    }

    @Test func macFromEndpointIDIsStableLocalUnicast() throws {
        let mac = Naming.macAddress(endpointID: fullID)
        #expect(mac == Naming.macAddress(endpointID: fullID))
        let parts = mac.split(separator: ":")
        #expect(parts.count == 6)
        #expect(parts.allSatisfy { $0.count == 2 && UInt8($0, radix: 16) != nil })
        #expect(mac == mac.lowercased())
        let first = try #require(UInt8(parts[0], radix: 16))
        #expect(first & 0x02 == 0x02, "locally administered")
        #expect(first & 0x01 == 0, "unicast")
        #expect(Naming.normalizedMAC(mac) == mac)
    }

    @Test func differentIDsGiveDifferentMACs() {
        var seen = Set<String>()
        for i in 0..<1000 {
            let mac = Naming.macAddress(endpointID: fullID.dropLast(4) + String(i, radix: 16))
            seen.insert(mac)
        }
        #expect(seen.count == 1000)
    }

    @Test func normalizedMACAcceptsUpperCase() {
        #expect(Naming.normalizedMAC("02:AB:cd:EF:00:9F") == "02:ab:cd:ef:00:9f")
        #expect(Naming.normalizedMAC("00:00:5e:00:53:01") == "00:00:5e:00:53:01")
    }

    @Test(arguments: [
        "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "03:00:00:00:00:00",   // multicast / broadcast
        "", "garbage", "02:00:00:00:00", "02:00:00:00:00:00:00", "02-00-00-00-00-01", "2:0:0:0:0:1",
        "02:00:00:00:00:0g", "002:00:00:00:00:01", "02:00:00:00:00:01:", " 02:00:00:00:00:01",
    ])
    func normalizedMACRefusesMulticastAndGarbage(mac: String) {
        #expect(Naming.normalizedMAC(mac) == nil)
        #expect(Naming.macBytes(mac) == nil)
    }

    @Test func macBytesAreTheSixOctets() {
        #expect(Naming.macBytes("02:AB:cd:EF:00:9F") == [0x02, 0xab, 0xcd, 0xef, 0x00, 0x9f])
    }

    @Test func isValidID() {
        #expect(Naming.isValidID(fullID))
        #expect(Naming.isValidID("a"))
        #expect(Naming.isValidID("ABCdef09"))
        #expect(Naming.isValidID(String(repeating: "a", count: 128)))
        #expect(!Naming.isValidID(""))
        #expect(!Naming.isValidID(String(repeating: "a", count: 129)))
        for bad in ["../etc", "a/b", "a b", "a-b", "a_b", "a.b", "a\n", "é", "a;b", "$(x)"] {
            #expect(!Naming.isValidID(bad), "accepted '\(bad)'")
        }
    }
}
