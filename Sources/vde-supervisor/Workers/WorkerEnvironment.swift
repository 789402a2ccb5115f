#if canImport(Glibc)
    import Glibc
#endif

/// What a worker's environment adds to the supervisor's: glibc settings for a process that runs
/// once per network and must stay small (docs/benchmarks.md, "Issue 17: towards 1 MiB per
/// network").
enum WorkerEnvironment {
    /// glibc's cache of the stacks of ended threads, turned off: a worker's executor threads end
    /// after 5 s idle and its blocking calls run on short threads, and glibc kept up to 40 MiB of
    /// their stacks mapped with the pages they had touched (about 40 kB per worker, measured with
    /// bench/lib/worker_memory.py at 50 networks; a new thread costs an mmap instead).
    static let stackCacheOff = "glibc.pthread.stack_cache_size=0"

    /// The variables to add or replace, given the supervisor's own `GLIBC_TUNABLES` (kept, and a
    /// stack cache size set there wins). One malloc arena: per-thread arenas cost more than they
    /// gain in a process this quiet.
    static func variables(inheritedTunables: String?) -> [String: String] {
        let tunables: String
        switch inheritedTunables {
        case nil, "": tunables = stackCacheOff
        case let inherited?:
            let userSetIt = inherited.contains("glibc.pthread.stack_cache_size=")
            tunables = userSetIt ? inherited : "\(inherited):\(stackCacheOff)"
        }
        return ["MALLOC_ARENA_MAX": "1", "GLIBC_TUNABLES": tunables]
    }

    /// ``variables(inheritedTunables:)`` for this process's environment.
    static var current: [String: String] {
        variables(inheritedTunables: getenv("GLIBC_TUNABLES").map { String(cString: $0) })
    }
}
