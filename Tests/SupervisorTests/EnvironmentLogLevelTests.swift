import Testing

@testable import vde_supervisor

struct EnvironmentLogLevelTests {
    @Test func theFlagWinsOverTheEnvironment() throws {
        #expect(try EnvironmentLogLevel.resolve(flag: .warning, value: "debug") == .warning)
    }

    @Test func theEnvironmentSetsTheLevelWithoutTheFlag() throws {
        #expect(try EnvironmentLogLevel.resolve(flag: nil, value: "debug") == .debug)
    }

    @Test func unsetOrEmptyIsInfo() throws {
        #expect(try EnvironmentLogLevel.resolve(flag: nil, value: nil) == .info)
        #expect(try EnvironmentLogLevel.resolve(flag: nil, value: "") == .info)
    }

    @Test func aBadValueIsAnErrorNamingTheVariableAndTheLevels() {
        do {
            _ = try EnvironmentLogLevel.resolve(flag: nil, value: "loud")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("LOG_LEVEL=loud is not a log level"))
            #expect("\(error)".contains("debug"))
        }
    }

    @Test func runParsesStopNetworksOnExitAndLeavesTheLevelUnset() throws {
        let run = try RunCommand.parse(["--stop-networks-on-exit"])
        #expect(run.stopNetworksOnExit)
        #expect(run.logLevel == nil)
        #expect(try !RunCommand.parse([]).stopNetworksOnExit)
    }
}
