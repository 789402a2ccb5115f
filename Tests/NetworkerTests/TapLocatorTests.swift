import Shared
import Testing

@testable import vde_networker

/// The decision "present / gone / unknown" with fake looks at the host, the sandbox file and
/// the namespace's links: only positive evidence may say gone.
@Suite struct TapLocatorTests {
    struct Unlistable: Error, CustomStringConvertible {
        var description: String { "nsenter: reassociate to namespace 'ns/net' failed: Operation not permitted" }
    }

    let mac: MACAddress = "02:42:ac:11:00:02"

    func endpoint(sandbox: SandboxKey? = "/var/run/docker/netns/abc") -> EndpointSpec {
        EndpointSpec(endpointID: "e1", tapName: "vdee1", macAddress: mac, sandboxKey: sandbox)
    }

    func locator(
        host: Taps.Existing = .none, file: SandboxFile = .namespace,
        links: Result<[LinkInfo], Unlistable> = .success([])
    ) -> TapLocator {
        TapLocator(hostTap: { _, _ in host }, sandboxFile: { _ in file }, links: { _ in try links.get() })
    }

    func isGone(_ lookup: TapLookup) -> Bool {
        if case .gone = lookup { return true }
        return false
    }

    func isUnknown(_ lookup: TapLookup) -> Bool {
        if case .unknown = lookup { return true }
        return false
    }

    @Test func tapInTheHostIsPresentThere() async {
        #expect(await locator(host: .sameTap, file: .namespace).locate(endpoint()) == .present(.host(tapName: "vdee1")))
        #expect(await locator(host: .sameTap).locate(endpoint(sandbox: nil)) == .present(.host(tapName: "vdee1")))
    }

    @Test func linkWithTheMACInsideTheNamespaceIsPresentThere() async {
        let links = [LinkInfo(name: "lo", macAddress: nil), LinkInfo(name: "eth0", macAddress: mac)]
        #expect(
            await locator(links: .success(links)).locate(endpoint())
                == .present(.sandbox(path: "/var/run/docker/netns/abc", interface: "eth0")))
    }

    @Test func missingSandboxKeyIsEvidence() async {
        #expect(isGone(await locator(host: .sameTap, file: .missing).locate(endpoint())))
        #expect(isGone(await locator(host: .none, file: .missing).locate(endpoint())))
    }

    @Test func sandboxKeyThatIsNoNamespaceIsEvidence() async {
        #expect(isGone(await locator(file: .notANamespace(fsType: 0x0102_1994)).locate(endpoint())))
    }

    @Test func namespaceListedWithoutTheLinkAndNoTapInTheHostIsEvidence() async {
        let links = [LinkInfo(name: "lo", macAddress: nil), LinkInfo(name: "eth1", macAddress: "02:00:00:00:00:99")]
        #expect(isGone(await locator(host: .none, links: .success(links)).locate(endpoint())))
    }

    @Test func endpointThatNeverJoinedWithoutItsTapIsGone() async {
        #expect(isGone(await locator(host: .none).locate(endpoint(sandbox: nil))))
    }

    /// The bug: any nsenter failure or timeout used to be taken for "gone".
    @Test func namespaceThatCannotBeEnteredIsUnknown() async {
        let lookup = await locator(links: .failure(Unlistable())).locate(endpoint())
        #expect(isUnknown(lookup))
        #expect(!isGone(lookup))
    }

    @Test func sandboxFileThatCannotBeCheckedIsUnknown() async {
        #expect(isUnknown(await locator(file: .cannotCheck(errno: 13)).locate(endpoint())))
    }

    @Test func linkWithAnUnusableNameIsUnknownNotPassedOn() async {
        for name in ["-x", "a b", "../x", String(repeating: "e", count: 16), "a\u{1}"] {
            let lookup = await locator(links: .success([LinkInfo(name: name, macAddress: mac)])).locate(endpoint())
            #expect(isUnknown(lookup), "\(name)")
        }
    }
}

@Suite struct SandboxFileTests {
    @Test func missingPathIsMissing() {
        #expect(
            SandboxFile.inspect(SandboxKey(stringLiteral: "/nonexistent-\(Int.random(in: 0...1_000_000))/ns"))
                == .missing)
    }

    @Test func regularFileIsNoNamespace() {
        guard case .notANamespace = SandboxFile.inspect("/proc/self/status") else {
            Issue.record("a /proc file taken for a namespace")
            return
        }
    }

    @Test func ownNetworkNamespaceIsOne() {
        #expect(SandboxFile.inspect("/proc/self/ns/net") == .namespace)
    }
}

@Suite struct InterfaceNameTests {
    @Test(arguments: ["eth0", "vde0123456789ab", "a", "eth-1.x_y", "wlan0@x", "é1"])
    func usableNames(_ name: String) {
        #expect((try? InterfaceName.validate(name)) != nil)
    }

    @Test(arguments: [
        "", ".", "..", "-eth0", "a/b", "a:b", "a b", "a\tb", "a\nb", "a\u{7f}", "a\u{85}b",
        "0123456789abcdef",
    ])
    func unusableNames(_ name: String) {
        #expect(throws: InterfaceName.Invalid.self) { try InterfaceName.validate(name) }
    }
}
