import Shared
import Testing

@testable import vde_supervisor

/// The message of the error `body` throws, or nil (recorded as an issue) when it throws none.
private func refusal(_ body: () throws(IPAMError) -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String?
{
    do {
        try body()
        Issue.record("expected a refusal", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.vdeError.code == .invalidArgument, "\(error.vdeError)", sourceLocation: sourceLocation)
        return error.vdeError.message
    }
}

private let v4 = [DockerAPI.IPAMData(AddressSpace: "vde-local", Pool: "10.9.0.0/24", Gateway: "10.9.0.1/24")]
private let v6 = [DockerAPI.IPAMData(AddressSpace: "vde-local", Pool: "fd00:9::/64", Gateway: "fd00:9::1/64")]

private func endpoint(_ address: String, _ addressIPv6: String = "") -> DockerAPI.CreateEndpointRequest {
    DockerAPI.CreateEndpointRequest(
        NetworkID: "n", EndpointID: "e",
        Interface: DockerAPI.EndpointInterface(Address: address, AddressIPv6: addressIPv6, MacAddress: nil))
}

private func network(_ ipv4: [DockerAPI.IPAMData], _ ipv6: [DockerAPI.IPAMData] = []) -> DockerAPI.CreateNetworkRequest
{
    DockerAPI.CreateNetworkRequest(NetworkID: "n", Options: [:], IPv4Data: ipv4, IPv6Data: ipv6)
}

@Suite struct AddressChecksTests {
    @Test func interfaceAddressesInTheSubnetPass() throws {
        try AddressChecks.check(endpoint("10.9.0.5/24", "fd00:9::5/64"), ipv4Data: v4, ipv6Data: v6)
        try AddressChecks.check(endpoint("10.9.0.5"), ipv4Data: v4, ipv6Data: [])
        try AddressChecks.check(endpoint(""), ipv4Data: [], ipv6Data: [])
        try AddressChecks.check(
            DockerAPI.CreateEndpointRequest(NetworkID: "n", EndpointID: "e"), ipv4Data: v4, ipv6Data: v6)
    }

    @Test(arguments: [
        ("999.1.2.3/24", "", "Interface.Address"),
        ("10.9.0.5/33", "", "prefix length"),
        ("10.9.0.5/24/1", "", "Interface.Address"),
        ("10.8.0.5/24", "", "10.9.0.0/24"),
        ("10.9.0.5/16", "", "10.9.0.0/24"),
        ("fd00:9::5/64", "", "IPv6"),
        ("", "10.9.0.5/24", "IPv4"),
        ("", "fd00:8::5/64", "fd00:9::/64"),
        ("", "fd00:9::5%eth0/64", "Interface.AddressIPv6"),
    ])
    func badInterfaceAddressesAreRefused(_ address: String, _ addressIPv6: String, mentioning word: String) {
        let message = refusal { () throws(IPAMError) in
            try AddressChecks.check(endpoint(address, addressIPv6), ipv4Data: v4, ipv6Data: v6)
        }
        #expect(message?.contains(word) == true, "\(String(describing: message))")
    }

    @Test func anIPv6AddressOnANetworkWithoutIPv6IsRefused() {
        let message = refusal { () throws(IPAMError) in
            try AddressChecks.check(endpoint("", "fd00:9::5/64"), ipv4Data: v4, ipv6Data: [])
        }
        #expect(message?.contains("no IPv6 subnet") == true, "\(String(describing: message))")
    }

    @Test func networkDataThatFitsPasses() throws {
        try AddressChecks.check(network(v4, v6))
        try AddressChecks.check(
            network([.init(Pool: "10.9.0.0/24", Gateway: nil, AuxAddresses: ["r": "10.9.0.2/24", "s": "10.9.0.3"])]))
        try AddressChecks.check(DockerAPI.CreateNetworkRequest(NetworkID: "n"))
    }

    @Test(arguments: [
        (DockerAPI.IPAMData(Pool: "10.9.0.0/33"), "IPv4Data[0].Pool"),
        (DockerAPI.IPAMData(Pool: "10.9.0.1/24"), "host bits"),
        (DockerAPI.IPAMData(Pool: "fd00::/64"), "IPv4Data[0].Pool"),
        (DockerAPI.IPAMData(Pool: "10.9.0.0/24", Gateway: "10.9.1.1/24"), "IPv4Data[0].Gateway"),
        (DockerAPI.IPAMData(Pool: "10.9.0.0/24", Gateway: "10.9.0.256/24"), "IPv4Data[0].Gateway"),
        (DockerAPI.IPAMData(Pool: "10.9.0.0/24", AuxAddresses: ["router": "10.10.0.2"]), "AuxAddresses[router]"),
    ])
    func badNetworkDataIsRefused(_ data: DockerAPI.IPAMData, mentioning word: String) {
        let message = refusal { () throws(IPAMError) in try AddressChecks.check(network([data])) }
        #expect(message?.contains(word) == true, "\(String(describing: message))")
    }

    @Test func ipv6DataMustBeIPv6() {
        let message = refusal { () throws(IPAMError) in try AddressChecks.check(network(v4, v4)) }
        #expect(message?.contains("IPv6Data[0].Pool") == true, "\(String(describing: message))")
    }

    @Test func ipamAddressesAreParsedAndInThePool() throws {
        var ipam = IPAMState()
        let poolID = try ipam.requestPool(.init(Pool: "10.9.0.0/24")).PoolID
        try AddressChecks.check(DockerAPI.RequestAddressRequest(PoolID: poolID, Address: "10.9.0.7"), in: ipam)
        try AddressChecks.check(DockerAPI.RequestAddressRequest(PoolID: poolID, Address: ""), in: ipam)
        try AddressChecks.check(DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: "10.9.0.7"), in: ipam)
        for bad in ["999.1.2.3", "10.9.0.7/24", ""] {
            let message = refusal { () throws(IPAMError) in
                try AddressChecks.check(DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: bad), in: ipam)
            }
            #expect(message?.hasPrefix("Address: ") == true, "\(String(describing: message))")
            _ = refusal { () throws(IPAMError) in
                try AddressChecks.check(
                    DockerAPI.RequestAddressRequest(PoolID: poolID, Address: bad.isEmpty ? "x" : bad), in: ipam)
            }
        }
        let outside = refusal { () throws(IPAMError) in
            try AddressChecks.check(DockerAPI.ReleaseAddressRequest(PoolID: poolID, Address: "10.8.0.7"), in: ipam)
        }
        #expect(outside?.contains("10.9.0.0/24") == true, "\(String(describing: outside))")
    }

    @Test func poolsAreSubnets() throws {
        try AddressChecks.check(DockerAPI.RequestPoolRequest(Pool: "10.9.0.0/24", SubPool: "10.9.0.128/25"))
        #expect(
            refusal { () throws(IPAMError) in
                try AddressChecks.check(DockerAPI.RequestPoolRequest(Pool: "10.9.0.0/24", SubPool: "10.9.0.1/25"))
            }?
            .contains("SubPool") == true)
        #expect(
            refusal { () throws(IPAMError) in try AddressChecks.check(DockerAPI.RequestPoolRequest(Pool: "10.9.0/24"))
            }?
            .contains("Pool") == true)
        #expect(
            refusal { () throws(IPAMError) in
                try AddressChecks.check(DockerAPI.RequestPoolRequest(Pool: "10.9.0.0/24", SubPool: "10.8.0.0/25"))
            }?
            .contains("--ip-range") == true)
    }
}
