import Dispatch
import Shared
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
    let released = Atomic<Bool>(false)
}

/// An actor that makes a blocking call inside its isolation, on an executor of its own.
private actor BlockingActor {
    nonisolated let executor = SerialQueueExecutor(label: "BlockingTests")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    func block(until semaphore: DispatchSemaphore, entered: Counter) -> Bool {
        entered.value.add(1, ordering: .sequentiallyConsistent)
        semaphore.wait()
        return executor.isCurrent
    }
}

@Suite(.timeLimit(.minutes(1))) struct BlockingTests {
    /// More actors blocked at once than the cooperative pool has threads: the pool still runs
    /// other tasks, because each actor blocks only its own queue.
    @Test func actorsBlockedOnTheirOwnQueuesLeaveTheCooperativePoolFree() async throws {
        let count = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) + 1
        let semaphore = DispatchSemaphore(value: 0)
        let entered = Counter()
        // Whatever happens, the blocked calls end after 10 s (a starved pool could not end them).
        DispatchQueue.global().asyncAfter(deadline: .now() + 10) {
            if !entered.released.exchange(true, ordering: .sequentiallyConsistent) {
                for _ in 0..<count { semaphore.signal() }
            }
        }
        let actors = (0..<count).map { _ in BlockingActor() }
        let blocked = actors.map { actor in Task { await actor.block(until: semaphore, entered: entered) } }
        let start = ContinuousClock.now
        while entered.value.load(ordering: .sequentiallyConsistent) < count && ContinuousClock.now - start < .seconds(5)
        {
            try await Task.sleep(for: .milliseconds(2))
        }
        #expect(entered.value.load(ordering: .sequentiallyConsistent) == count, "every actor should be blocked")
        // Work on the cooperative pool while every actor blocks.
        let probe = await Task.detached {
            await Task.yield()
            return ContinuousClock.now
        }.value
        if !entered.released.exchange(true, ordering: .sequentiallyConsistent) {
            for _ in 0..<count { semaphore.signal() }
        }
        #expect(probe - start < .seconds(5), "the cooperative pool stalled while the actors blocked")
        for task in blocked { #expect(await task.value, "the blocking call ran on the actor's own queue") }
    }

    @Test func blockingRunReturnsTheResult() async {
        #expect(await Blocking.run { 6 * 7 } == 42)
        #expect(
            await Blocking.run(timeout: .milliseconds(20)) {
                usleep(2_000_000)
                return 1
            } == nil)
    }
}
