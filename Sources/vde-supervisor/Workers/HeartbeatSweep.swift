/// Finds workers that hang, at a fixed total rate whatever the number of networks.
///
/// Every `interval` it starts a liveness check (``NetworkWorker/checkAlive()``) of the next
/// worker in turn (round robin over the workers the plugin lists, sorted by network ID). A
/// ping costs a worker about 280 µs of CPU (measured, debug build): a ping per worker every
/// 2 s (the earlier heartbeat) was 1.4 % of a CPU at 100 networks; this is 0.03 % at any number.
///
/// The price is the time to find an idle worker that hangs: up to `interval` times the number
/// of workers, plus the check itself (3 pings of up to 2 s). That is acceptable because a hung
/// worker matters only when it is asked something, and a command that times out checks its
/// worker at once; meanwhile its switch and plugs carry frames without it. See docs/recovery.md.
struct HeartbeatSweep: Sendable {
    static let interval: Duration = .seconds(1)

    /// The workers to check, asked afresh at every tick (networks come and go).
    let workers: @Sendable () async -> [NetworkWorker]
    var interval: Duration = HeartbeatSweep.interval

    /// Runs until the task is cancelled.
    func run() async {
        var turn = 0
        while true {
            do { try await Task.sleep(for: interval) } catch { return }
            let all = await workers()
            guard !all.isEmpty else { continue }
            let index = turn % all.count
            turn = index + 1
            let worker = all[index]
            // Not awaited: a check of a hung worker takes seconds; the sweep goes on meanwhile.
            Task { await worker.checkAlive() }
        }
    }
}
