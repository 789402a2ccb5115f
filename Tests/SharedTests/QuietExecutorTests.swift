import Synchronization
import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

private final class Flags: Sendable {
    let count = Atomic<Int>(0)
    let open = Atomic<Bool>(false)
    let gate = ConditionLock()
}

@Suite(.timeLimit(.minutes(1))) struct QuietExecutorTests {
    @Test func theTimerHeapGivesJobsInDeadlineOrderAndTiesInArrivalOrder() {
        var heap = TimerHeap<String>()
        let earliestAfterEach = [
            heap.insert("c", due: 30), heap.insert("a", due: 10), heap.insert("b", due: 20), heap.insert("a2", due: 10),
        ]
        #expect(earliestAfterEach == [true, true, false, false])
        #expect(heap.earliest == 10)
        let early = heap.popDue(now: 5)
        #expect(early == nil)
        var out: [String] = []
        while let next = heap.popDue(now: 100) { out.append(next) }
        #expect(out == ["a", "a2", "b", "c"])
        #expect(heap.count == 0)
    }

    @Test func tasksThatPreferItRunAndTheirSleepsWaitInItsTimers() async {
        await fiftySleepsRunAndWaitInItsTimers(QuietExecutor(maximumThreads: 4))
    }

    /// The last idle thread stays while a sleep is pending, however short its lifetime.
    @Test func aThreadStaysForAPendingSleepAndEndsAfterIt() async {
        let executor = QuietExecutor(maximumThreads: 2, idleThreadLifetime: .milliseconds(1))
        let slept = Task(executorPreference: executor) { () -> Bool in
            (try? await Task.sleep(for: .milliseconds(200))) != nil
        }
        #expect(await slept.value)
        while executor.counts.threads > 0 { try? await Task.sleep(for: .milliseconds(10)) }
    }

    @Test func aCancelledSleepEndsAtOnce() async {
        await cancelledSleepEndsAtOnce(on: QuietExecutor(maximumThreads: 2))
    }

    /// Jobs that block their threads do not stop the rest: another thread starts, and every
    /// thread ends once it has been idle for its lifetime.
    @Test func blockedThreadsGetAnotherAndAllEndWhenIdle() async {
        let executor = QuietExecutor(maximumThreads: 4, idleThreadLifetime: .milliseconds(50))
        let blocking = 2
        let flags = Flags()
        var blockers: [Task<Void, Never>] = []
        for _ in 0..<blocking {
            blockers.append(
                Task(executorPreference: executor) { [flags] in
                    flags.count.add(1, ordering: .sequentiallyConsistent)
                    flags.gate.lock()
                    while !flags.open.load(ordering: .sequentiallyConsistent) { flags.gate.wait() }
                    flags.gate.unlock()
                })
        }
        while flags.count.load(ordering: .sequentiallyConsistent) < blocking { await Task.yield() }
        let other = Task(executorPreference: executor) { 42 }
        #expect(await other.value == 42)
        #expect(executor.counts.mostThreads > blocking)
        flags.gate.lock()
        flags.open.store(true, ordering: .sequentiallyConsistent)
        flags.gate.broadcast()
        flags.gate.unlock()
        for blocker in blockers { await blocker.value }
        while executor.counts.threads > 0 { try? await Task.sleep(for: .milliseconds(10)) }
        #expect(executor.counts.threads == 0)
    }
}

/// A ``QuietExecutor`` hosted by a descriptor watcher's thread, as the worker runs it.
@Suite(.timeLimit(.minutes(1))) struct HostedQuietExecutorTests {
    /// An executor with a watcher (and its one thread) of its own.
    private func hosted() throws -> (QuietExecutor, DescriptorWatcher) {
        let executor = QuietExecutor(maximumThreads: 1)
        let watcher = try #require(DescriptorWatcher.make(hosting: executor.hostedByWatcher()))
        return (executor, watcher)
    }

    @Test func jobsAndTheirSleepsRunWithoutAThreadOfTheExecutorsOwn() async throws {
        let (executor, _) = try hosted()
        await fiftySleepsRunAndWaitInItsTimers(executor)
        #expect(executor.counts.mostThreads == 0, "the watcher's thread ran every job")
    }

    /// Work resumed from a thread of its own (a blocking call's) wakes the waiting watcher.
    @Test func workFromAnotherThreadWakesTheWatcher() async throws {
        let (executor, _) = try hosted()
        let value = await Task(executorPreference: executor) { () -> Int in
            await withCheckedContinuation { continuation in
                try? OSThread.detach { continuation.resume(returning: 7) }
            }
        }.value
        #expect(value == 7)
        #expect(executor.counts.mostThreads == 0)
    }

    /// A job waiting for a descriptor is resumed by the same thread's watch.
    @Test func aJobWaitsForADescriptorOnItsOwnThread() async throws {
        let (executor, watcher) = try hosted()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        let readEnd = fds[0]
        let waiter = Task(executorPreference: executor) { await watcher.wait(for: .readable, on: readEnd) }
        var byte: UInt8 = 1
        #expect(write(fds[1], &byte, 1) == 1)
        #expect(await waiter.value)
        #expect(executor.counts.mostThreads == 0)
    }

    @Test func aCancelledSleepEndsAtOnce() async throws {
        await cancelledSleepEndsAtOnce(on: try hosted().0)
    }
}

/// 50 tasks that prefer `executor` sleep 1 ms each: all run, and each sleep asked the executor,
/// not Dispatch, to wake the task (a deadline already passed when it asked counts too).
private func fiftySleepsRunAndWaitInItsTimers(_ executor: QuietExecutor) async {
    let done = Flags()
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<50 {
            group.addTask(executorPreference: executor) {
                try? await Task.sleep(for: .milliseconds(1))
                done.count.add(1, ordering: .relaxed)
            }
        }
    }
    #expect(done.count.load(ordering: .relaxed) == 50)
    #expect(executor.counts.timersScheduled == 50)
}

/// A 600 s sleep on `executor`, cancelled once it waits, ends at once with CancellationError.
private func cancelledSleepEndsAtOnce(on executor: QuietExecutor) async {
    let sleeper = Task(executorPreference: executor) { () -> Bool in
        do {
            try await Task.sleep(for: .seconds(600))
            return false
        } catch {
            return error is CancellationError
        }
    }
    while executor.counts.timersScheduled == 0 { await Task.yield() }
    sleeper.cancel()
    #expect(await sleeper.value)
}
