import Testing

@testable import vde_supervisor

@Suite struct WorkerEnvironmentTests {
    @Test func aWorkerGetsOneArenaAndNoStackCache() {
        let variables = WorkerEnvironment.variables(inheritedTunables: nil)
        #expect(variables == ["MALLOC_ARENA_MAX": "1", "GLIBC_TUNABLES": "glibc.pthread.stack_cache_size=0"])
        #expect(WorkerEnvironment.variables(inheritedTunables: "") == variables)
    }

    @Test func theSupervisorsOwnTunablesAreKept() {
        let variables = WorkerEnvironment.variables(inheritedTunables: "glibc.malloc.tcache_count=0")
        #expect(variables["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0")
    }

    @Test func aStackCacheSizeSetByTheUserWins() {
        let own = "glibc.pthread.stack_cache_size=1048576"
        #expect(WorkerEnvironment.variables(inheritedTunables: own)["GLIBC_TUNABLES"] == own)
    }
}
