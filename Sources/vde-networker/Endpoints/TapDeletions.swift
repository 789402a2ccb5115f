import Logging
import Shared

/// Taps of removed endpoints, deleted after DeleteEndpoint has been answered.
///
/// `ip link del` of a tap takes about 20 ms, most of it the kernel unregistering the device, and
/// dockerd waits for DeleteEndpoint on every container removal. The endpoint is gone once the
/// reply is sent and its tap's name is its own, so nothing needs the tap gone before the reply.
/// A marker file `<network run dir>/deleting/<tap>` is written first: a worker that dies before
/// the deletion finished leaves the job to the next one (``Worker/deleteMarkedTaps(_:keeping:what:)``),
/// and a worker that shuts down waits for its deletions.
///
/// The same kind of directory, `<network run dir>/creating`, marks taps being made for an
/// endpoint the supervisor may not record: a marker is written before the tap is made and
/// removed when the tap is deleted (a failed add, removeEndpoint), at Join (dockerd joins only
/// an endpoint whose CreateEndpoint succeeded, so it is recorded), or when the next worker start
/// is given the endpoint to restore (likewise). A worker killed during an add, a
/// supervisor that died before recording the endpoint, or an add that timed out and was never
/// undone thus leave the tap to the next worker (``Worker/deleteMarkedTaps(_:keeping:what:)``).
struct TapMarkers: Sendable {
    /// `<network run dir>/deleting` (or `/creating`).
    var directory: String

    func path(tapName: TapName) -> String { "\(directory)/\(tapName)" }

    /// Writes the marker; false when it cannot (the caller then deletes the tap at once).
    @discardableResult
    func mark(tapName: TapName, logger: Logger) -> Bool {
        do {
            try FileSystem.makeDirectories(directory, mode: 0o755)
            try FileSystem.writeAtomically(path(tapName: tapName), contents: "")
            return true
        } catch {
            logger.warning("cannot keep a tap marker: \(error)")
            return false
        }
    }

    func unmark(tapName: TapName) {
        FileSystem.removeFile(path(tapName: tapName))
    }

    /// Tap names with a marker (temporary files of an interrupted write are skipped).
    func marked() -> [TapName] {
        (FileSystem.listDirectory(directory) ?? []).filter { !$0.hasSuffix(FileSystem.temporarySuffix) }.compactMap {
            try? TapName($0)
        }
    }

    /// Removes the directory when no marker is left in it.
    func removeDirectoryIfEmpty() {
        FileSystem.removeIfEmpty(directory)
    }
}

extension Worker {
    /// Deletes the tap `name` (if it is a tap) in the background, after writing its marker. Without
    /// a marker it deletes at once, as before: a crash must never leave a tap nobody deletes.
    func deleteTapInBackground(_ name: TapName) async throws {
        // A repeated DeleteEndpoint while the first deletion runs: that one deletes it.
        guard tapDeletions[name] == nil, taps.exists(name), taps.isTunTap(name) else { return }
        guard let markers = tapMarkers, markers.mark(tapName: name, logger: logger) else {
            try await taps.deleteIfTap(name: name)
            return
        }
        let taps = self.taps
        let logger = self.logger
        tapDeletions[name] = Task {
            do {
                try await taps.delete(name: name)
                markers.unmark(tapName: name)
                logger.debug("tap deleted", metadata: ["tap": "\(name)"])
            } catch {
                logger.warning(
                    "cannot delete the tap \(name) of a removed endpoint; the next start of this network's worker tries again: \(error)"
                )
            }
            self.tapDeletionEnded(name)
        }
    }

    private func tapDeletionEnded(_ name: TapName) {
        tapDeletions[name] = nil
    }

    /// Waits until the background deletion of `name`, if one runs, has ended.
    func waitForTapDeletion(_ name: TapName) async {
        await tapDeletions[name]?.value
    }

    /// Waits until every background deletion has ended.
    func waitForTapDeletions() async {
        while let (_, task) = tapDeletions.first {
            await task.value
        }
    }

    /// Deletes the taps an earlier worker marked in `markers` but did not finish with (removed
    /// endpoints in `deleting/`; endpoints it never recorded in `creating/`: it died, or the add
    /// was undone while it was down), except those of endpoints being restored (their markers
    /// are stale), and removes the markers. `what` names such an endpoint in the log.
    func deleteMarkedTaps(_ markers: TapMarkers?, keeping kept: Set<TapName>, what: String) async {
        guard let markers else { return }
        for name in markers.marked() {
            if !kept.contains(name) {
                do {
                    try await taps.deleteIfTap(name: name)
                    logger.info("deleted the tap \(name) of \(what)")
                } catch {
                    logger.warning("cannot delete the tap \(name) of \(what): \(error)")
                    continue
                }
            }
            markers.unmark(tapName: name)
        }
    }
}
