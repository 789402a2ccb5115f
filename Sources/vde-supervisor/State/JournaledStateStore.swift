import Glibc
import Shared

/// The supervisor's state on disk: a snapshot, `state.json` (written by ``StateStore``, so
/// atomic and with its previous generation `state.json.1`), and an append-only journal,
/// `state.journal`, of the changes since (``StateJournal``, ``StateChange``).
///
/// A commit appends one record, the new value of each unit it changed, and `fdatasync`s the
/// journal (or leaves that to ``syncDeferred()``: ``Durability``): its cost follows the size of
/// the change, not of the state (rewriting the whole `state.json` grew with the number of
/// networks; docs/architecture.md has the figures).
/// Loading reads the snapshot and replays the records after the one it includes.
///
/// When the journal outgrows max(snapshot, ``compactionFloor``), the commit that made it so
/// then compacts, in this order, each step safe to crash after:
/// 1. save the state as the snapshot, with the number of its last record (`journalSequence`):
///    from now on every record in the journal is included in it and replay skips them;
/// 2. rename the journal to `state.journal.1` (kept so that the snapshot's previous generation
///    plus it still give the state: an old snapshot restored by hand is replayed through it);
/// 3. create an empty journal (through a temporary file renamed into place);
/// 4. sync the directory. No record is appended before that sync has succeeded.
///
/// A failed append is undone (the file truncated back and synced) and the change refused, with
/// memory unchanged; if it cannot be undone, the next commit writes a snapshot and a new journal
/// before it appends. Used from one actor (``VDEPlugin``) only.
final class JournaledStateStore {
    let directory: String
    private var snapshots: StateStore<StateSnapshot>
    /// Called after each step of an append and of a compaction (tests copy the directory there:
    /// what a crash at that point would leave).
    var onStep: (JournalStep) -> Void = { _ in }
    /// `fdatasync` of the journal (tests inject failures). Returns 0 or sets errno.
    var syncData: (_ fd: Int32) -> Int32 = { fdatasync($0) }
    /// `fsync` of the directory, for the snapshot and the journal (tests inject failures).
    var syncDirectory: @Sendable (_ fd: Int32) -> Int32 = { fsync($0) } {
        didSet { snapshots.syncDirectory = syncDirectory }
    }
    /// The journal is compacted once it is larger than this and than the snapshot. 256 KiB: at
    /// 10 networks (a 30 KiB snapshot) that is a snapshot every few hundred commits, at 1000
    /// (about 3 MiB) one every about 1000: a fraction of a millisecond per commit either way.
    var compactionFloor = 256 * 1024

    /// The number of the last record written (or included in the snapshot).
    private(set) var sequence: UInt64 = 0
    private(set) var journalBytes = 0
    private(set) var snapshotBytes = 0
    /// Compactions done since ``open(userInfo:)``.
    private(set) var compactions = 0
    /// Why the last compaction failed, if it did (the commit had succeeded; the next try waits
    /// until the journal has grown again).
    private(set) var lastCompactionError: StateStoreError?
    private var compactionDeferredUntil = 0
    private var fd: Int32 = -1
    private var journal = JournalCondition.missing

    /// What the journal file needs before the next append.
    private enum JournalCondition {
        /// Open and its directory entry synced.
        case ready
        /// Created, but the directory sync failed: retried before the next append.
        case needsDirectorySync
        /// No usable file (none yet, or compaction stopped after its snapshot): an empty one is
        /// created, replacing whatever is there (the snapshot includes all of it).
        case missing
        /// Holds records the snapshot does not include, but a failed append could not be undone:
        /// the next commit writes a snapshot first, then replaces it.
        case damaged
    }

    init(directory: String) {
        self.directory = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        self.snapshots = StateStore(directory: self.directory)
    }

    deinit { if fd >= 0 { close(fd) } }

    var snapshotPath: String { snapshots.path }
    var journalPath: String { directory + "/state.journal" }
    var previousJournalPath: String { journalPath + ".1" }
    private var temporaryJournalPath: String { journalPath + ".tmp" }

    // MARK: Loading

    /// What the files hold, read without changing anything.
    struct Loaded {
        var state: SupervisorState
        var sequence: UInt64
        /// No snapshot and no journal: a new state directory.
        var isNew: Bool
        /// The snapshot was written by a release before the journal (any journal is older than it).
        var snapshotPredatesJournal: Bool
        var snapshotBytes: Int
        /// The journal's contents; nil when there is none (or it is ignored).
        var journal: StateJournal.Contents?
    }

    /// The stored state (snapshot plus journal), changing nothing on disk; nil for a new state directory.
    static func read(
        directory: String, userInfo: [CodingUserInfoKey: any Sendable] = [:]
    ) throws(StateStoreError) -> SupervisorState? {
        let loaded = try JournaledStateStore(directory: directory).load(userInfo: userInfo)
        return loaded.isNew ? nil : loaded.state
    }

    func load(userInfo: [CodingUserInfoKey: any Sendable]) throws(StateStoreError) -> Loaded {
        let snapshot = try snapshots.load(userInfo: userInfo)
        let snapshotBytes = snapshot == nil ? 0 : Self.size(of: snapshotPath)
        var state = snapshot?.state ?? SupervisorState()
        let covered = snapshot?.journalSequence ?? 0
        guard snapshot == nil || snapshot?.journalSequence != nil else {
            return Loaded(
                state: state, sequence: 0, isNew: false, snapshotPredatesJournal: true, snapshotBytes: snapshotBytes,
                journal: nil)
        }
        guard let contents = try Self.readJournal(journalPath, userInfo: userInfo) else {
            return Loaded(
                state: state, sequence: covered, isNew: snapshot == nil, snapshotPredatesJournal: false,
                snapshotBytes: snapshotBytes, journal: nil)
        }
        var records = contents.records.filter { $0.sequence > covered }
        if records.first?.sequence != covered + 1 {
            records = try bridge(from: covered, to: records.first?.sequence, userInfo: userInfo) + records
        }
        var expected = covered + 1
        for record in records {
            guard record.sequence == expected else {
                throw .journalCorrupt(
                    path: journalPath, line: nil, offset: nil,
                    detail: "record \(record.sequence) where record \(expected) was expected")
            }
            do {
                try record.apply(to: &state)
            } catch {
                throw .journalCorrupt(path: journalPath, line: nil, offset: nil, detail: error.detail)
            }
            expected += 1
        }
        return Loaded(
            state: state, sequence: expected - 1, isNew: false, snapshotPredatesJournal: false,
            snapshotBytes: snapshotBytes, journal: contents)
    }

    /// The records after `covered` and before `next` (the journal's first record after
    /// `covered`, nil when it has none) from the previous journal: what a snapshot restored from
    /// `state.json.1` needs (after a compaction it holds only records the snapshot includes).
    /// Throws ``StateStoreError/journalGap`` when records before `next` are missing.
    private func bridge(
        from covered: UInt64, to next: UInt64?, userInfo: [CodingUserInfoKey: any Sendable]
    ) throws(StateStoreError) -> [StateChange] {
        let previous = (try? Self.readJournal(previousJournalPath, userInfo: userInfo)) ?? nil
        let bridge = previous?.records.filter { $0.sequence > covered && $0.sequence < next ?? .max } ?? []
        let end = next ?? (covered + 1 + UInt64(bridge.count))
        guard bridge.map(\.sequence) == Array(covered + 1..<end) else {
            throw .journalGap(path: journalPath, snapshot: snapshotPath, covered: covered, first: next ?? covered + 1)
        }
        return bridge
    }

    /// The contents of a journal file; nil when there is none.
    private static func readJournal(
        _ path: String, userInfo: [CodingUserInfoKey: any Sendable]
    ) throws(StateStoreError) -> StateJournal.Contents? {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.read(path, limit: .max)
        } catch {
            if error.errno == ENOENT { return nil }
            throw .read(path: path, errno: error.errno)
        }
        return try StateJournal.parse(bytes, path: path, userInfo: userInfo)
    }

    private static func size(of path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    /// Loads the state and gets the journal ready to append: drops a torn last record from the
    /// file; a snapshot of a release before the journal is saved again with its sequence (and
    /// a new journal), so that a journal is never read beside a snapshot that does not say
    /// which records it includes. Returns the state (empty for a new state directory).
    func open(userInfo: [CodingUserInfoKey: any Sendable] = [:]) throws(StateStoreError) -> SupervisorState {
        let loaded = try load(userInfo: userInfo)
        sequence = loaded.sequence
        snapshotBytes = loaded.snapshotBytes
        if loaded.snapshotPredatesJournal {
            try compact(loaded.state, keepJournal: false)
            return loaded.state
        }
        guard let contents = loaded.journal else {
            journal = .missing
            return loaded.state
        }
        journalBytes = contents.validLength
        let opened = Glibc.open(journalPath, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
        guard opened >= 0 else { throw .journalWrite(path: journalPath, step: "open", errno: errno, undone: true) }
        fd = opened
        journal = .ready
        if contents.tornBytes > 0, !truncate(to: contents.validLength) {
            // It stays readable (the tail is dropped again next time); it must not be appended to.
            journal = .damaged
        }
        return loaded.state
    }

    // MARK: Committing

    /// When a commit's record is synced.
    enum Durability: Sendable {
        /// Before ``commit(from:to:durability:)`` returns.
        case synced
        /// By ``syncDeferred()``, or by any later sync of the journal, whichever comes first:
        /// the record is written (a crash of the process cannot lose it) but a power cut before
        /// that sync can. For a change whose reply must not wait for the disk; see the caller.
        case syncLater
    }

    /// True while a record written with ``Durability/syncLater`` waits for its sync.
    private(set) var hasUnsyncedRecords = false

    /// Makes `new` the stored state, `old` being the state stored now: appends the units that
    /// differ as one record and syncs it (or, with `.syncLater`, leaves the sync to
    /// ``syncDeferred()``). Throws, leaving the stored state `old`, if that fails.
    /// May compact afterwards (see the type's comment); a failed compaction does not fail the
    /// commit (``lastCompactionError``).
    func commit(
        from old: SupervisorState, to new: SupervisorState, durability: Durability = .synced
    ) throws(StateStoreError) {
        var change = StateChange.between(old, new)
        guard !change.isEmpty else { return }
        try prepareJournal(holding: old)
        change.sequence = sequence + 1
        let line: [UInt8]
        do {
            line = try StateJournal.frame(change)
        } catch {
            throw .encoding(path: journalPath, detail: UntrustedText(JSONCoding.describe(error)).description)
        }
        do {
            try FileSystem.writeAll(line, to: fd, subject: journalPath)
        } catch {
            throw .journalWrite(path: journalPath, step: "write", errno: error.errno, undone: undoAppend())
        }
        onStep(.recordWritten)
        switch durability {
        case .synced:
            guard syncData(fd) == 0 else {
                let error = errno
                throw .journalWrite(path: journalPath, step: "fdatasync", errno: error, undone: undoAppend())
            }
            // One file: the sync covers every record before this one too.
            hasUnsyncedRecords = false
            onStep(.recordSynced)
        case .syncLater:
            hasUnsyncedRecords = true
        }
        sequence += 1
        journalBytes += line.count
        if journalBytes > max(snapshotBytes, compactionFloor, compactionDeferredUntil) {
            do {
                try compact(new, keepJournal: true)
                lastCompactionError = nil
            } catch {
                lastCompactionError = error
                compactionDeferredUntil = journalBytes * 2
            }
        }
    }

    /// Syncs the records written with ``Durability/syncLater`` since the last sync, if any.
    /// A failure cannot undo them (their replies are out, memory holds them): the journal is
    /// marked damaged, so the next commit first writes the whole state as the snapshot (synced),
    /// and the error says so.
    func syncDeferred() throws(StateStoreError) {
        guard hasUnsyncedRecords, fd >= 0 else { return }
        guard syncData(fd) == 0 else {
            let error = errno
            journal = .damaged
            throw .deferredSync(path: journalPath, errno: error)
        }
        hasUnsyncedRecords = false
        onStep(.recordSynced)
    }

    /// Truncates the journal back to before a failed append and syncs it; true when that worked.
    /// When it did not, the file may end in a record nobody confirmed: it is closed and
    /// replaced (after a snapshot) before the next append.
    private func undoAppend() -> Bool {
        if truncate(to: journalBytes) { return true }
        journal = .damaged
        return false
    }

    private func truncate(to length: Int) -> Bool {
        guard ftruncate(fd, off_t(length)) == 0, syncData(fd) == 0 else { return false }
        hasUnsyncedRecords = false
        return true
    }

    /// Makes the journal appendable: creates it, syncs its directory, or (after a failed undo)
    /// writes `current` as the snapshot and replaces it.
    private func prepareJournal(holding current: SupervisorState) throws(StateStoreError) {
        switch journal {
        case .ready: return
        case .needsDirectorySync: try syncJournalDirectory()
        case .missing: try createJournal()
        case .damaged: try compact(current, keepJournal: false)
        }
    }

    // MARK: Compaction

    /// Compacts if the journal holds any record: after a clean stop `state.json` alone holds
    /// the state, so a release before the journal reads all of it. `state` is the stored state.
    func checkpoint(_ state: SupervisorState) throws(StateStoreError) {
        guard journalBytes > 0 || journal == .damaged else { return }
        try compact(state, keepJournal: journal != .damaged)
    }

    /// Writes `state` (whose last record is ``sequence``) as the snapshot and starts an empty
    /// journal; `keepJournal` keeps the old one as `state.journal.1` (else it is replaced).
    func compact(_ state: SupervisorState, keepJournal: Bool) throws(StateStoreError) {
        snapshotBytes = try snapshots.save(StateSnapshot(state: state, journalSequence: sequence))
        onStep(.snapshotSaved)
        // The snapshot includes every record: whatever happens next, the journal's content is
        // no longer needed, and a file that fails below is replaced before the next append.
        if fd >= 0 { close(fd) }
        fd = -1
        journal = .missing
        journalBytes = 0
        hasUnsyncedRecords = false
        if keepJournal, rename(journalPath, previousJournalPath) != 0, errno != ENOENT {
            throw .journalWrite(path: previousJournalPath, step: "rename", errno: errno, undone: true)
        }
        onStep(.journalRetired)
        try createJournal()
        compactions += 1
        compactionDeferredUntil = 0
    }

    /// Creates an empty journal in place of whatever is at its path (a temporary file renamed
    /// over it) and syncs the directory.
    private func createJournal() throws(StateStoreError) {
        try StateStore<StateSnapshot>.makeDirectory(directory)
        let temporary = temporaryJournalPath
        let created = Glibc.open(
            temporary, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard created >= 0 else {
            throw .journalWrite(path: temporary, step: "create", errno: errno, undone: true)
        }
        guard rename(temporary, journalPath) == 0 else {
            let error = errno
            close(created)
            unlink(temporary)
            throw .journalWrite(path: journalPath, step: "rename", errno: error, undone: true)
        }
        if fd >= 0 { close(fd) }
        fd = created
        journalBytes = 0
        journal = .needsDirectorySync
        onStep(.journalCreated)
        try syncJournalDirectory()
    }

    private func syncJournalDirectory() throws(StateStoreError) {
        let dirFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let synced = dirFD >= 0 && syncDirectory(dirFD) == 0
        let error = errno
        if dirFD >= 0 { close(dirFD) }
        guard synced else {
            throw .journalWrite(path: journalPath, step: "directory fsync", errno: error, undone: true)
        }
        journal = .ready
        onStep(.directorySynced)
    }
}

/// The points of an append and of a compaction after which a crash is tested.
enum JournalStep: String, Sendable, CaseIterable {
    /// Append: the record is written, not yet synced.
    case recordWritten
    /// Append: the record is synced (memory is swapped and the reply sent after this).
    case recordSynced
    /// Compaction: `state.json` holds the state and the number of its last record.
    case snapshotSaved
    /// Compaction: the journal is renamed to `state.journal.1` (or was to be replaced).
    case journalRetired
    /// Compaction or first append: an empty journal is in place.
    case journalCreated
    /// The directory is synced after the journal was created.
    case directorySynced
}
