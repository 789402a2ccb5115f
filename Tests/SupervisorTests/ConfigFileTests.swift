import Testing

@testable import vde_supervisor

struct ConfigFileTests {
    @Test func readsLogLevelWithCommentsAndBlankLines() throws {
        let config = try ConfigFile.parse("# settings\n\n log_level = debug  # more\n", path: "x")
        #expect(config.logLevel == .debug)
    }

    @Test func emptyFileSetsNothing() throws {
        #expect(try ConfigFile.parse("", path: "x") == ConfigFile())
    }

    @Test func unknownKeyAndBadValueAreErrorsNamingTheLine() {
        #expect(throws: (any Error).self) { try ConfigFile.parse("loglevel = debug", path: "x") }
        do {
            _ = try ConfigFile.parse("\nlog_level = loud", path: "/etc/x.conf")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("/etc/x.conf line 2"))
        }
    }

    @Test func missingFileIsEmptyConfiguration() throws {
        #expect(try ConfigFile.load("/nonexistent/vde-supervisor.conf") == ConfigFile())
    }
}
