import CLinux
import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

extension ForkServer {
    /// A worker forked ahead of the request it will serve: the server forks the next spare after
    /// each reply, so that a request is answered by handing the spare its network and link
    /// (one `sendmsg`) instead of two forks while `docker network create` waits (0.79–1.46 ms,
    /// median 1.07 ms of 60 requests to a fork server of 9.7 MB resident; the two forks and the
    /// intermediate's exit copy and tear down its page tables).
    ///
    /// A spare is forked exactly as a worker is (``clinux_fork_detached_worker``: the
    /// supervisor's child, a process group of its own), with its end of a seqpacket socket pair
    /// as stdin and stdout, and shows `vde-networker --fork-spare ...` until it has a network.
    /// It runs on a fresh thread (as a forked worker does: see ``NetworkerMain``), starts what
    /// every worker starts first, and waits there, in its descriptor watcher, for one message,
    /// the request itself: a network ID with the link's two descriptors, which become its stdin
    /// and stdout. At the end of its input (the server exited or was killed) it exits.
    struct Spare {
        let pid: Int32
        /// Handed to the supervisor with the reply, as a forked worker's pidfd is.
        let pidfd: Int32
        /// The server's end of the spare's socket.
        let socket: Int32

        enum Outcome {
            case made(Spare)
            /// Returned in the spare itself.
            case inSpare(Assignee)
            case failed
        }

        /// What a spare needs to become the worker of the network it is given.
        struct Assignee {
            let executable: String
            let logLevel: Logger.Level
            let runDir: String

            /// Waits for the network on stdin, in the process's descriptor watcher (the spare's
            /// one thread serves it, its runtime already running), then takes it.
            func assignment() async -> WorkerArguments {
                // Should no watch be possible, the receive below waits on this thread instead.
                _ = await DescriptorWatcher.shared?.wait(for: .readable, on: STDIN_FILENO)
                return take()
            }

            /// Receives the network on stdin and makes the link's descriptors stdin and stdout.
            /// Exits at the end of input (the server is gone before it had a network for it).
            private func take() -> WorkerArguments {
                let message: DescriptorMessages.Message?
                do {
                    message = try DescriptorMessages.receive(on: 0, capacity: ForkServerProtocol.maxRequestBytes)
                } catch {
                    exit(71)  // EX_OSERR
                }
                guard let message else { exit(0) }
                guard
                    message.descriptors.count == 2,
                    let networkID = try? NetworkID(String(decoding: message.bytes, as: UTF8.self))
                else {
                    message.closeDescriptors()
                    exit(76)  // EX_PROTOCOL: the server sends only what it validated
                }
                // Replaces both ends of the spare's socket, which was stdin and stdout.
                guard dup2(message.descriptors[0], 0) == 0, dup2(message.descriptors[1], 1) == 1 else { exit(71) }
                message.closeDescriptors()
                ProcessCommandLine.replace(
                    with: ForkServerProtocol.workerArguments(
                        executable: executable, networkID: networkID, logLevel: logLevel.rawValue, runDir: runDir,
                        forked: true))
                return WorkerArguments(networkID: networkID, logLevel: logLevel)
            }
        }

        /// Forks a spare. Call only while the server runs one thread.
        static func fork(_ assignee: Assignee, logger: Logger) -> Outcome {
            let pair: (server: Int32, spare: Int32)
            do {
                pair = try DescriptorMessages.socketPair()
            } catch {
                logger.warning("cannot make a spare worker's socket: \(error)")
                return .failed
            }
            var pid: Int32 = 0
            var pidfd: Int32 = -1
            let forked = clinux_fork_detached_worker(pair.spare, pair.spare, &pid, &pidfd)
            if forked == 0 {
                ProcessCommandLine.replace(
                    with: ForkServerProtocol.spareArguments(
                        executable: assignee.executable, logLevel: assignee.logLevel.rawValue, runDir: assignee.runDir))
                return .inSpare(assignee)
            }
            Glibc.close(pair.spare)
            guard forked > 0 else {
                Glibc.close(pair.server)
                logger.warning("cannot fork a spare worker: \(SystemCallError.text(-forked))")
                return .failed
            }
            return .made(Spare(pid: pid, pidfd: pidfd, socket: pair.server))
        }

        /// False once the spare has exited (its pidfd is readable).
        var isRunning: Bool {
            var entry = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            return poll(&entry, 1, 0) == 0
        }

        /// Hands the spare its request (network ID and link descriptors); false when it is gone.
        func assign(_ request: DescriptorMessages.Message) -> Bool {
            (try? DescriptorMessages.send(request, on: socket)) != nil
        }

        /// The server's descriptors of the spare; closing the socket ends a spare never assigned.
        func close() {
            Glibc.close(socket)
            Glibc.close(pidfd)
        }

        /// Ends a spare never assigned and waits (at most `grace`, then SIGKILL) until it has
        /// exited, so that a supervisor that waits for the server's exit finds no spare left
        /// after it. The supervisor, its parent, reaps it.
        func retire(grace: Duration = .seconds(1)) {
            Glibc.close(socket)
            var entry = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, Int32(grace.milliseconds)) == 0 {
                _ = clinux_pidfd_send_signal(pidfd, SIGKILL)
                _ = poll(&entry, 1, 1000)
            }
            Glibc.close(pidfd)
        }
    }
}
