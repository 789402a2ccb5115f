import Foundation

/// The supervisor's stored state as the next supervisor would read it, read from outside by the
/// documented format (docs/architecture.md, "State"), not with the supervisor's own code:
/// `state.json`, then every record of `state.journal` after its `journalSequence` applied (a
/// record line is `<CRC-32> <JSON>`; it holds the new value of each changed network and pool,
/// a missing value being a deletion).
enum StoredState {
    /// The state as one JSON object; nil when the state dir holds neither file.
    static func json(stateDir: String) -> [String: Any]? {
        let snapshot = TempDir.readBytes(stateDir + "/state.json")
        let journal = TempDir.readText(stateDir + "/state.journal")
        guard snapshot != nil || journal != nil else { return nil }
        var state = snapshot.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] } ?? [:]
        let covered = (state["journalSequence"] as? NSNumber)?.uint64Value ?? 0
        var networks = state["networks"] as? [String: Any] ?? [:]
        var ipam = state["ipam"] as? [String: Any] ?? [:]
        var pools = ipam["pools"] as? [[String: Any]] ?? []
        for line in (journal ?? "").split(separator: "\n") {
            guard let space = line.firstIndex(of: " "),
                let record = try? JSONSerialization.jsonObject(with: Data(line[line.index(after: space)...].utf8))
                    as? [String: Any],
                let sequence = (record["sequence"] as? NSNumber)?.uint64Value, sequence > covered
            else { continue }
            for change in record["networks"] as? [[String: Any]] ?? [] {
                guard let id = change["id"] as? String else { continue }
                networks[id] = change["record"]
            }
            for change in record["pools"] as? [[String: Any]] ?? [] {
                guard let id = change["id"] as? String else { continue }
                let index = pools.firstIndex { $0["id"] as? String == id }
                switch (change["pool"] as? [String: Any], index) {
                case (let pool?, let index?): pools[index] = pool
                case (let pool?, nil): pools.append(pool)
                case (nil, let index?): pools.remove(at: index)
                case (nil, nil): break
                }
            }
            if let next = record["nextPoolNumber"] { ipam["nextPoolNumber"] = next }
            if let order = record["poolOrder"] as? [String] {
                pools = order.compactMap { id in pools.first { $0["id"] as? String == id } }
            }
        }
        ipam["pools"] = pools
        state["ipam"] = ipam
        state["networks"] = networks
        return state
    }

    /// ``json(stateDir:)`` as text (slashes unescaped, so a path can be searched for); "" when
    /// there is no state.
    static func text(stateDir: String) -> String {
        guard let state = json(stateDir: stateDir),
            let data = try? JSONSerialization.data(
                withJSONObject: state, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// The bytes of both files, to see whether anything was written; nil when neither exists.
    static func bytes(stateDir: String) -> [UInt8]? {
        let snapshot = TempDir.readBytes(stateDir + "/state.json")
        let journal = TempDir.readBytes(stateDir + "/state.journal")
        guard snapshot != nil || journal != nil else { return nil }
        return (snapshot ?? []) + Array("\n--- journal ---\n".utf8) + (journal ?? [])
    }
}
