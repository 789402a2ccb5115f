#if canImport(Glibc)
    import Glibc
#endif

/// What `/proc/self/cmdline` (and so `ps`, `pgrep -f`) shows of this process.
///
/// The kernel shows the memory where exec placed the argument strings, one after the other. A
/// worker forked by the fork server would show the server's command line; it writes its own
/// there instead (the way `setproctitle` does), so that the supervisor's adoption check and an
/// operator's `ps` see `vde-networker --network-id ID`. The server is started with room to
/// spare (`--argv-room`) so that any worker's command line fits.
public enum ProcessCommandLine {
    /// The bytes exec gave this process for its arguments (from the first argument's first
    /// byte to the last one's NUL), when the strings lie one after the other as the kernel
    /// places them; nil otherwise. Found once, before the first ``replace(with:)``: a shorter
    /// command line written there would end the area early (a fork server's spare shows its own
    /// before it becomes a worker and shows the worker's). The fork server finds it before it
    /// forks, so that its children inherit it.
    nonisolated(unsafe) public static let area: UnsafeMutableBufferPointer<CChar>? = {
        let count = Int(CommandLine.argc)
        let argv = CommandLine.unsafeArgv
        guard count > 0, let first = argv[0] else { return nil }
        var end = first
        for index in 0..<count {
            guard let argument = argv[index], argument == end else { return nil }
            end = argument + strlen(argument) + 1
        }
        return UnsafeMutableBufferPointer(start: first, count: end - first)
    }()

    /// Shows `arguments` as this process's command line, NUL-padded to the area's end. False,
    /// changing nothing, when they do not fit in ``area`` or none can be found.
    @discardableResult
    public static func replace(with arguments: [String]) -> Bool {
        let bytes: [UInt8] = arguments.flatMap { Array($0.utf8) + [UInt8(0)] }
        guard let area, !arguments.isEmpty, bytes.count <= area.count else { return false }
        for index in area.indices { area[index] = index < bytes.count ? CChar(bitPattern: bytes[index]) : 0 }
        return true
    }
}
