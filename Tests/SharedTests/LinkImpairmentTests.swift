import Shared
import Testing

@Suite struct LinkImpairmentTests {
    @Test func networkOptionsInExactUnits() throws {
        let link = try LinkImpairment.parse(options: [
            "link_delay": "20ms", "link_jitter": "1.5ms", "link_loss": "1%", "link_dup": "0.5%",
            "link_rate": "10mbit", "link_loss_burst": "3", "socket_dir": "/ignored/here",
        ])
        #expect(
            link
                == LinkImpairment(
                    delayMicroseconds: 20000, jitterMicroseconds: 1500, lossMillipercent: 1000, lossBurst: 3,
                    duplicateMillipercent: 500, rateBitsPerSecond: 10_000_000))
        #expect(link.summary == "delay=20ms jitter=1500us loss=1% loss_burst=3 dup=0.5% rate=10mbit")
        #expect(!link.isEmpty)
    }

    @Test func summaryReadsBack() throws {
        for text in ["delay=1.5s", "delay=250us", "rate=1.544mbit", "rate=512kbit", "loss=0.001%", "rate=1gbit"] {
            let parts = text.split(separator: "=").map(String.init)
            let key = try #require(LinkImpairment.Key(rawValue: parts[0]))
            let link = try LinkImpairment().setting(key, to: parts[1])
            #expect(link.summary == text)
        }
    }

    @Test(arguments: [
        ("delay", "-5ms", "negative"), ("delay", "20", "duration with a unit"), ("delay", "20mins", "duration"),
        ("delay", "61s", "60s"), ("delay", "1.2345ms", "duration"), ("loss", "101%", "above 100%"),
        ("loss", "5", "percentage"), ("dup", "100%", "below 100%"), ("rate", "10mbps", "rate with a unit"),
        ("rate", "999bit", "1kbit"), ("rate", "99999999999999999999gbit", "rate with a unit"),
        ("loss_burst", "0", "whole number"), ("delay", "$(reboot)ms", "duration"),
    ])
    func badValuesAreRefusedWithTheirForm(key: String, value: String, says: String) throws {
        let key = try #require(LinkImpairment.Key(rawValue: key))
        #expect {
            _ = try LinkImpairment().setting(key, to: value)
        } throws: { error in
            (error as? VDEError)?.message.contains(says) == true && (error as? VDEError)?.code == .invalidArgument
        }
    }

    @Test func combinationsAreChecked() {
        #expect(throws: VDEError.self) { try LinkImpairment.parse(options: ["link_jitter": "5ms"]) }
        #expect(throws: VDEError.self) {
            try LinkImpairment.parse(options: ["link_delay": "4ms", "link_jitter": "5ms"])
        }
        #expect(throws: VDEError.self) { try LinkImpairment.parse(options: ["link_loss_burst": "3"]) }
        #expect(throws: VDEError.self) { try LinkImpairment.parse(options: ["link_latency": "3ms"]) }
    }

    @Test func endpointOptionsIgnoreDockersOwnKeysButNotTypos() throws {
        let link = try LinkImpairment.parse(endpointOptions: [
            "com.docker.network.endpoint.exposedports": "x", "link_delay": "5ms",
        ])
        #expect(link.delayMicroseconds == 5000)
        #expect(throws: VDEError.self) { try LinkImpairment.parse(endpointOptions: ["lnk_delay": "5ms"]) }
    }

    @Test func endpointOverlaysNetworkDefault() throws {
        let network = try LinkImpairment.parse(options: ["link_delay": "20ms", "link_loss": "1%"])
        let endpoint = try LinkImpairment.parse(options: ["link_delay": "50ms"])
        let effective = network.overlaid(with: endpoint)
        #expect(effective.delayMicroseconds == 50000)
        #expect(effective.lossMillipercent == 1000)
        #expect(effective.clearing(.loss).lossMillipercent == nil)
    }

    @Test func zeroIsNoImpairment() throws {
        #expect(try LinkImpairment.parse(options: ["link_delay": "0ms"]).isEmpty)
        #expect(LinkSettings().isDefault)
        #expect(!LinkSettings(down: true).isDefault)
    }

    @Test func networkOptionsCarryTheDefaultLink() throws {
        let options = try NetworkOptions.parse(["link_delay": "25ms"])
        #expect(options.link?.delayMicroseconds == 25000)
        #expect(try NetworkOptions.parse([:]).link == nil)
    }
}
