/// What `state.json` holds: the state, and the last journal record it includes.
///
/// Encoded as the state's own keys plus `journalSequence`, so the file keeps the format of a
/// release before the journal, which reads it and ignores the key. A file without the key was
/// written by such a release (``JournaledStateStore`` then ignores any journal beside it).
struct StateSnapshot: Codable, Sendable {
    var state: SupervisorState
    /// The last journal record included; nil in a file of a release before the journal.
    var journalSequence: UInt64?

    init(state: SupervisorState, journalSequence: UInt64?) {
        self.state = state
        self.journalSequence = journalSequence
    }

    private enum CodingKeys: String, CodingKey { case journalSequence }

    init(from decoder: any Decoder) throws {
        state = try SupervisorState(from: decoder)
        journalSequence = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(
            UInt64.self, forKey: .journalSequence)
    }

    func encode(to encoder: any Encoder) throws {
        try state.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(journalSequence, forKey: .journalSequence)
    }
}
