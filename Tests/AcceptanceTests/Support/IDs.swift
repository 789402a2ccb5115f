/// Random identifiers shaped like Docker's.
enum IDs {
    /// 64 lower-case hex digits, like a Docker network or endpoint ID.
    static func dockerID() -> String {
        let digits = Array("0123456789abcdef")
        return String((0..<64).map { _ in digits[Int.random(in: 0..<digits.count)] })
    }

    /// A short random tag for names (containers, networks, namespaces).
    static func tag(_ length: Int = 6) -> String {
        let characters = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<length).map { _ in characters[Int.random(in: 0..<characters.count)] })
    }
}
