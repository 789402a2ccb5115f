/// Random identifiers shaped like Docker's.
enum IDs {
    /// 64 lower-case hex digits, like a Docker network or endpoint ID.
    static func dockerID() -> String {
        (0..<64).map { _ in String("0123456789abcdef".randomElement()!) }.joined()
    }

    /// A short random tag for names (containers, networks, namespaces).
    static func tag(_ length: Int = 6) -> String {
        (0..<length).map { _ in String("abcdefghijklmnopqrstuvwxyz0123456789".randomElement()!) }.joined()
    }
}
