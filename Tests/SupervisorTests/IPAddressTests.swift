import Shared
import Testing

@testable import vde_supervisor

/// Parses or fails the test with the error's message.
private func ip(_ text: String) throws -> IPAddress { try IPAddress(parsing: text) }
private func net(_ text: String) throws -> Subnet { try Subnet(parsing: text) }

/// The error a throwing parse produced, or nil when it did not throw.
private func parseError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> IPAMError? {
    do {
        try body()
        return nil
    } catch let error as IPAMError {
        return error
    } catch let error as AddressParseError {
        // The one address parser lives in Shared; IPAM reports its refusals as invalidAddress.
        return .invalidAddress(error)
    } catch {
        Issue.record("not an IPAMError: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite struct IPAddressParsingTests {
    @Test(arguments: [
        ("0.0.0.0", UInt32(0)),
        ("10.0.0.1", 0x0a00_0001),
        ("192.168.1.255", 0xc0a8_01ff),
        ("255.255.255.255", 0xffff_ffff),
    ])
    func parsesIPv4(text: String, value: UInt32) throws {
        let address = try ip(text)
        #expect(address == .v4(value))
        #expect(address.description == text)
        #expect(!address.isV6)
    }

    @Test(arguments: [
        "", "garbage", "300.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", "1.2.3.", ".1.2.3",
        "010.0.0.1", "1.2.3.4 ", " 1.2.3.4", "1.2.3.-4", "1.2.3.4/24", "1.2.3.1000", "1.2.3.a",
        "١.٢.٣.٤", "99999999999999999999.1.1.1",
    ])
    func refusesBadIPv4(text: String) {
        let error = parseError { _ = try IPAddress(parsing: text) }
        #expect(error != nil, "accepted '\(text)'")
        if case .invalidAddress(let failure)? = error, case let input = failure.input {
            #expect(input == text)
        } else {
            Issue.record("unexpected error \(String(describing: error))")
        }
        #expect(error?.vdeError.code == .invalidArgument)
    }

    @Test(arguments: [
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("FD00::1", "fd00::1"),
        ("fd00:0000:0000:0000:0000:0000:0000:0001", "fd00::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // first of two equal runs
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),  // the longest run wins
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // a single zero group stays
        ("2001:0db8:00a0:0000:0000:0000:0000:0000", "2001:db8:a0::"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("::ffff:10.0.0.1", "::ffff:a00:1"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ])
    func parsesAndFormatsIPv6(text: String, canonical: String) throws {
        let address = try ip(text)
        #expect(address.isV6)
        #expect(address.description == canonical)
        // The canonical form parses back to the same address.
        #expect(try ip(canonical) == address)
    }

    @Test func ipv6Value() throws {
        #expect(try ip("::1") == .v6(1))
        #expect(try ip("8000::") == .v6(UInt128(1) << 127))
        #expect(try ip("::ffff:10.0.0.1") == .v6(0xffff_0a00_0001))
    }

    @Test(arguments: [
        ":", ":::", "1:::2", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "g::1",
        ":1::", "1::2:", "1:2:3:4:5:6:7:8::", "1::2:3:4:5:6:7:8", "fe80::1%eth0", "::1.2.3",
        "1.2.3.4::", "::1.2.3.4:5", "::256.1.1.1", "1:2:3:4:5:6:1.2.3.4:5",
        "0000000000000000000000000000000000000000000000000000000000::1",
    ])
    func refusesBadIPv6(text: String) {
        let error = parseError { _ = try IPAddress(parsing: text) }
        #expect(error != nil, "accepted '\(text)'")
        #expect(error?.vdeError.code == .invalidArgument)
    }

    @Test func errorMessagesNameTheInputAndTheReason() {
        let error = parseError { _ = try IPAddress(parsing: "300.1.1.1") }
        let message = error?.vdeError.message ?? ""
        #expect(message.contains("'300.1.1.1'"))
        #expect(message.contains("larger than 255"))
        let empty = parseError { _ = try IPAddress(parsing: "") }?.vdeError.message ?? ""
        #expect(empty.contains("empty"))
    }

    @Test func controlCharactersAreNotEchoed() {
        let error = parseError { _ = try IPAddress(parsing: "1.2.3.4\n\u{1b}[31m") }
        let message = error?.vdeError.message ?? ""
        #expect(!message.isEmpty)
        #expect(!message.unicodeScalars.contains { $0.value < 0x20 })
    }

    @Test func orderingPutsIPv4First() throws {
        let sorted = try [ip("::1"), ip("10.0.0.2"), ip("10.0.0.10"), ip("::")].sorted()
        #expect(sorted.map(\.description) == ["10.0.0.2", "10.0.0.10", "::", "::1"])
    }

    @Test func codableAsText() throws {
        let addresses = try [ip("10.0.0.1"), ip("fd00::1")]
        let json = try JSONCoding.string(addresses)
        #expect(json == #"["10.0.0.1","fd00::1"]"#)
        #expect(try JSONCoding.decode([IPAddress].self, from: Array(json.utf8)) == addresses)
        #expect(throws: DecodingError.self) {
            _ = try JSONCoding.decode([IPAddress].self, from: Array(#"["10.0.0.300"]"#.utf8))
        }
    }
}

@Suite struct SubnetTests {
    @Test func parsesIPv4() throws {
        let subnet = try net("10.0.0.0/24")
        #expect(subnet.address == .v4(0x0a00_0000))
        #expect(subnet.prefixLength == 24)
        #expect(subnet.description == "10.0.0.0/24")
        #expect(subnet.first.description == "10.0.0.0")
        #expect(subnet.last.description == "10.0.0.255")
        #expect(subnet.size == 256)
        #expect(subnet.hostBits == 8)
        #expect(!subnet.isV6)
    }

    @Test(arguments: [
        ("0.0.0.0/0", "0.0.0.0", "255.255.255.255", UInt128(1) << 32),
        ("10.1.2.3/32", "10.1.2.3", "10.1.2.3", UInt128(1)),
        ("10.1.2.2/31", "10.1.2.2", "10.1.2.3", UInt128(2)),
        ("172.16.0.0/12", "172.16.0.0", "172.31.255.255", UInt128(1) << 20),
        ("fd00::/64", "fd00::", "fd00::ffff:ffff:ffff:ffff", UInt128(1) << 64),
        ("fd00::1/128", "fd00::1", "fd00::1", UInt128(1)),
        ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UInt128.max),
    ])
    func firstLastSize(text: String, first: String, last: String, size: UInt128) throws {
        let subnet = try net(text)
        #expect(subnet.first.description == first)
        #expect(subnet.last.description == last)
        #expect(subnet.size == size)
        #expect(subnet.description == text)
    }

    @Test func ipv6IsCanonicalised() throws {
        #expect(try net("FD00:0:0:0::/64").description == "fd00::/64")
    }

    @Test func refusesHostBitsAndSuggestsTheCanonicalForm() {
        let error = parseError { _ = try Subnet(parsing: "10.0.0.1/24") }
        #expect(error == .hostBitsSet(input: "10.0.0.1/24", canonical: "10.0.0.0/24"))
        #expect(error?.vdeError.message.contains("did you mean 10.0.0.0/24") == true)
        let v6 = parseError { _ = try Subnet(parsing: "fd00::1/64") }
        #expect(v6 == .hostBitsSet(input: "fd00::1/64", canonical: "fd00::/64"))
    }

    @Test(arguments: [
        "", "/", "10.0.0.0", "10.0.0.0/", "/24", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/024",
        "10.0.0.0/24/8", "10.0.0.0/1000", "10.0.0.0/99999999999999999999", "300.0.0.0/8", "garbage/8",
        "fd00::/129", "fd00::/ 64", "10.0.0.0 /24", "10.0.0.0/2a",
    ])
    func refusesBadSubnets(text: String) {
        let error = parseError { _ = try Subnet(parsing: text) }
        #expect(error != nil, "accepted '\(text)'")
        #expect(error?.vdeError.code == .invalidArgument)
    }

    @Test func initRefusesOversizedPrefix() {
        let error = parseError { _ = try Subnet(address: .v4(0), prefixLength: 33) }
        #expect(error != nil)
        let negative = parseError { _ = try Subnet(address: .v6(0), prefixLength: -1) }
        #expect(negative != nil)
    }

    @Test func containsAddresses() throws {
        let subnet = try net("10.0.0.0/24")
        #expect(subnet.contains(try ip("10.0.0.0")))
        #expect(subnet.contains(try ip("10.0.0.255")))
        #expect(!subnet.contains(try ip("10.0.1.0")))
        #expect(!subnet.contains(try ip("9.255.255.255")))
        // Another family is never inside, even with the same number.
        #expect(!subnet.contains(IPAddress.v6(0x0a00_0001)))
        let v6 = try net("fd00:1::/64")
        #expect(v6.contains(try ip("fd00:1::ffff")))
        #expect(!v6.contains(try ip("fd00:2::1")))
        #expect(try net("0.0.0.0/0").contains(try ip("255.255.255.255")))
        #expect(try net("::/0").contains(try ip("ffff::")))
    }

    @Test func containsSubnets() throws {
        let subnet = try net("10.0.0.0/16")
        #expect(subnet.contains(try net("10.0.5.0/24")))
        #expect(subnet.contains(try net("10.0.0.0/16")))
        #expect(!subnet.contains(try net("10.0.0.0/8")))
        #expect(!subnet.contains(try net("10.1.0.0/24")))
        #expect(!subnet.contains(try net("::/0")))
        #expect(try net("fd00::/48").contains(try net("fd00:0:0:1::/64")))
    }

    @Test func codableAsText() throws {
        let json = try JSONCoding.string([try net("10.0.0.0/24")])
        #expect(json == #"["10.0.0.0/24"]"#)
        #expect(throws: DecodingError.self) {
            _ = try JSONCoding.decode([Subnet].self, from: Array(#"["10.0.0.1/24"]"#.utf8))
        }
    }
}
