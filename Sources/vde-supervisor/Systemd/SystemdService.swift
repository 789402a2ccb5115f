import Glibc
import Logging
import ServiceLifecycle
import Shared
import UnixSignals

/// Ties the supervisor to systemd: `READY=1` once the state is restored and the API is
/// served, a `STATUS=` line kept current, `WATCHDOG=1` at half of `WATCHDOG_USEC` but only
/// while the plugin's actor answers, `RELOADING=1`/`READY=1` around a SIGHUP reload, and
/// `STOPPING=1` on shutdown.
struct SystemdService: Service, CustomStringConvertible {
    let plugin: VDEPlugin
    let listening: AsyncStream<Void>
    let reload: @Sendable () async -> Void
    let logger: Logger

    var description: String { "SystemdService" }

    func run() async throws {
        // Trap SIGHUP first: its default action ends the process, and `systemctl reload` may
        // follow READY=1 at once.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        // Wait until the plugin socket accepts connections.
        for await _ in listening { break }
        let initialStatus = await plugin.statusLine()
        Systemd.notify("READY=1\nSTATUS=\(initialStatus)")
        logger.info("ready", metadata: ["status": "\(initialStatus)"])
        // Without systemd listening there is nothing to keep current: only reloads are served.
        let notifying = getenv("NOTIFY_SOCKET") != nil

        await withGracefulShutdownHandler {
            // Cancelled at shutdown, so that no WATCHDOG=1 follows STOPPING=1.
            await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await handleReloads(hangups) }
                    if notifying {
                        await keepAlive(lastStatus: initialStatus)
                    } else {
                        try? await gracefulShutdown()
                    }
                    group.cancelAll()
                }
            }
        } onGracefulShutdown: {
            Systemd.notify("STOPPING=1\nSTATUS=stopping")
        }
    }

    private func handleReloads(_ hangups: UnixSignalsSequence) async {
        for await _ in hangups {
            Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Self.monotonicMicroseconds())")
            await reload()
            Systemd.notify("READY=1\nSTATUS=\(await plugin.statusLine())")
        }
    }

    /// Keeps STATUS= current and pings the watchdog while the plugin actor answers: one wakeup
    /// per watchdog ping (5 s with the unit's `WatchdogSec=10s`), or every
    /// ``statusRefreshWithoutWatchdog`` without a watchdog. The status line asks every worker
    /// handle for its phase, so a refresh each second (as before) cost a wakeup and N actor
    /// hops per second at N networks; STATUS= may now lag a change by one interval.
    private func keepAlive(lastStatus initial: String) async {
        let watchdogInterval = Systemd.watchdogPingInterval()
        let interval = watchdogInterval ?? Self.statusRefreshWithoutWatchdog
        var lastStatus = initial
        while true {
            do { try await Task.sleep(for: interval) } catch { return }
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            // Awaiting the actor proves the supervisor's loop is alive.
            let status = await plugin.statusLine()
            if status != lastStatus {
                Systemd.notify("STATUS=\(status)")
                lastStatus = status
            }
            if watchdogInterval != nil { Systemd.notify("WATCHDOG=1") }
        }
    }

    static let statusRefreshWithoutWatchdog: Duration = .seconds(5)

    static func monotonicMicroseconds() -> UInt64 { MonotonicClock.now / 1000 }
}
