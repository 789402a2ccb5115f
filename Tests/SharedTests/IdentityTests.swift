import Shared
import Testing

private let fullID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/// Decodes `T` from one JSON string, as a request field or a state record carries it.
private func decoded<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
    try JSONCoding.decode([T].self, from: Array(try JSONCoding.encode([text])))[0]
}

@Suite struct DockerIDTests {
    @Test(arguments: [fullID, "a", "ABCdef09", String(repeating: "a", count: 128)])
    func accepted(_ text: String) throws {
        #expect(try NetworkID(text).rawValue == text)
        #expect(try EndpointID(text).rawValue == text)
    }

    @Test(arguments: [
        "", String(repeating: "a", count: 129), "../etc", "a/b", "a b", "a-b", "a_b", "a.b", "a\n", "é", "a;b", "$(x)",
    ])
    func refused(_ text: String) {
        let network = #expect(throws: VDEError.self) { try NetworkID(text) }
        #expect(network?.code == .invalidArgument)
        #expect(network?.message.contains("network ID") == true)
        #expect(network?.message.contains("\n") == false, "outside text is shown cleaned")
        let endpoint = #expect(throws: VDEError.self) { try EndpointID(text) }
        #expect(endpoint?.message.contains("endpoint ID") == true)
    }

    @Test func shortIsTheFirstTwelve() throws {
        #expect(try NetworkID(fullID).short == "0123456789ab")
        #expect(EndpointID("abc").short == "abc")
    }

    @Test func decodingChecksTheRuleAndNamesTheField() throws {
        let good = try JSONCoding.decode(DockerAPI.NetworkRequest.self, from: Array(#"{"NetworkID":"abc123"}"#.utf8))
        #expect(good.NetworkID.rawValue == "abc123")
        let error = #expect(throws: DecodingError.self) {
            try JSONCoding.decode(DockerAPI.NetworkRequest.self, from: Array(#"{"NetworkID":"../x"}"#.utf8))
        }
        let text = JSONCoding.describe(try #require(error))
        #expect(text.contains("NetworkID") && text.contains("not a Docker ID"), "\(text)")
    }

    @Test func dictionaryKeyedByIDIsAJSONObject() throws {
        let map = [NetworkID("abc"): 1]
        let json = String(decoding: try JSONCoding.encode(map), as: UTF8.self)
        #expect(json == #"{"abc":1}"#)
        #expect(try JSONCoding.decode([NetworkID: Int].self, from: Array(json.utf8)) == map)
        #expect(throws: DecodingError.self) {
            try JSONCoding.decode([NetworkID: Int].self, from: Array(#"{"a/b":1}"#.utf8))
        }
    }
}

@Suite struct TapNameTests {
    @Test(arguments: [fullID, "a", "abc", String(repeating: "f", count: 128)])
    func derivedNameIsShortAndPrefixed(id: String) throws {
        let name = TapName(endpoint: try EndpointID(id))
        #expect(name.rawValue.hasPrefix("vde"))
        #expect((4...15).contains(name.rawValue.utf8.count))
        #expect(try TapName(name.rawValue) == name, "a derived name passes the rule")
    }

    @Test func derivedNameUsesTheStartOfTheID() throws {
        #expect(TapName(endpoint: try EndpointID(fullID)).rawValue == "vde0123456789ab")
    }

    @Test(arguments: ["eth0", "vde_a.b-c", "a", String(repeating: "x", count: 15)])
    func accepted(_ text: String) throws {
        #expect(try TapName(text).rawValue == text)
    }

    @Test(arguments: ["", String(repeating: "x", count: 16), "-eth0", ".", "..", "a/b", "a b", "a:b", "a\n", "é"])
    func refused(_ text: String) {
        let error = #expect(throws: VDEError.self) { try TapName(text) }
        #expect(error?.message.contains("not a usable interface name") == true)
    }
}

@Suite struct MACAddressTests {
    @Test func derivedIsStableLocallyAdministeredUnicast() throws {
        let id = try EndpointID(fullID)
        let mac = MACAddress(derivedFrom: id)
        #expect(mac == MACAddress(derivedFrom: id))
        #expect(mac.bytes.count == 6)
        #expect(mac.bytes[0] & 0x02 == 0x02, "locally administered")
        #expect(mac.bytes[0] & 0x01 == 0, "unicast")
        #expect(try MACAddress(mac.rawValue) == mac)
        #expect(mac.rawValue == mac.rawValue.lowercased())
    }

    @Test func differentIDsGiveDifferentMACs() throws {
        var seen = Set<MACAddress>()
        for i in 0..<1000 {
            seen.insert(MACAddress(derivedFrom: try EndpointID(fullID.dropLast(4) + String(i, radix: 16))))
        }
        #expect(seen.count == 1000)
    }

    @Test func normalisesToLowerCase() throws {
        let mac = MACAddress("02:AB:cd:EF:00:9F")
        #expect(mac.rawValue == "02:ab:cd:ef:00:9f")
        #expect(mac.bytes == [0x02, 0xab, 0xcd, 0xef, 0x00, 0x9f])
        #expect(mac == MACAddress("02:ab:cd:ef:00:9f"))
        #expect(MACAddress("00:00:5e:00:53:01").rawValue == "00:00:5e:00:53:01")
    }

    @Test(arguments: [
        "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "03:00:00:00:00:00",  // multicast / broadcast
        "", "garbage", "02:00:00:00:00", "02:00:00:00:00:00:00", "02-00-00-00-00-01", "2:0:0:0:0:1",
        "02:00:00:00:00:0g", "002:00:00:00:00:01", "02:00:00:00:00:01:", " 02:00:00:00:00:01", "02:00:00:00:00:０1",
    ])
    func refusesMulticastAndGarbage(_ text: String) {
        let error = #expect(throws: VDEError.self) { try MACAddress(text) }
        #expect(error?.message.contains("not a unicast MAC") == true)
    }

    @Test func decodesNormalisedAndEncodesAsText() throws {
        let mac = try decoded(MACAddress.self, from: "02:AB:00:00:00:01")
        #expect(String(decoding: try JSONCoding.encode([mac]), as: UTF8.self) == #"["02:ab:00:00:00:01"]"#)
    }

    @Test func emptyMacAddressOfDockerReadsAsNone() throws {
        let none = try JSONCoding.decode(DockerAPI.EndpointInterface.self, from: Array(#"{"MacAddress":""}"#.utf8))
        #expect(none.MacAddress == nil)
        let given = try JSONCoding.decode(
            DockerAPI.EndpointInterface.self, from: Array(#"{"MacAddress":"02:AA:00:00:00:01"}"#.utf8))
        #expect(given.MacAddress?.rawValue == "02:aa:00:00:00:01")
        #expect(throws: DecodingError.self) {
            try JSONCoding.decode(
                DockerAPI.EndpointInterface.self, from: Array(#"{"MacAddress":"01:00:5e:00:00:01"}"#.utf8))
        }
    }
}

@Suite struct GroupNameTests {
    @Test(arguments: ["vde", "vde-users", "a.b_c", String(repeating: "g", count: 32)])
    func accepted(_ text: String) throws {
        #expect(try GroupName(text).rawValue == text)
    }

    @Test(arguments: ["", "-vde", "a b", "a/b", "a:b", String(repeating: "g", count: 33), "grüppe"])
    func refused(_ text: String) {
        let error = #expect(throws: VDEError.self) { try GroupName(text) }
        #expect(error?.message.contains("not a valid group name") == true)
    }
}

@Suite struct IPv4AddressTests {
    @Test func readsWithTheOneParser() throws {
        let address = IPv4Address("10.0.0.5")
        #expect(address.rawValue == "10.0.0.5")
        #expect(address.value == 0x0a00_0005)
    }

    @Test(arguments: ["", "10.0.0", "10.0.0.256", "010.0.0.1", "10.0.0.1/24", "fd00::1", "10.0.0.1 ", "1.2.3.4.5"])
    func refused(_ text: String) {
        let error = #expect(throws: VDEError.self) { try IPv4Address(text) }
        #expect(error?.message.contains("not a valid IP address") == true)
    }
}

@Suite struct UntrustedTextTests {
    @Test func replacesControlCharactersAndBoundsLength() {
        #expect(UntrustedText("a\nb\u{7f}").description == "a?b?")
        let long = UntrustedText(String(repeating: "x", count: 500)).description
        #expect(long.count == UntrustedText.defaultLimit + 3 && long.hasSuffix("..."))
        #expect("\(UntrustedText("ok"))" == "ok")
    }
}
