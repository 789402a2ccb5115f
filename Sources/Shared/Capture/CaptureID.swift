import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// One running capture of a network (`vde-supervisor capture`): 12 lowercase hex digits, made
/// by the supervisor when the capture starts and used by the worker for the capture's socket
/// name (``NetworkPaths/captureSocket(_:)``) and by `status`.
public struct CaptureID: CheckedString {
    public static let length = 12
    public let rawValue: String

    public init(_ text: String) throws(VDEError) {
        let bytes = Array(text.utf8)
        guard bytes.count == Self.length, bytes.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else {
            throw .invalid("'\(UntrustedText(text))' is not a capture ID: \(Self.length) lowercase hex digits")
        }
        rawValue = text
    }

    /// A fresh ID from the kernel's random source.
    public static func random() -> CaptureID {
        var bytes = [UInt8](repeating: 0, count: length / 2)
        let filled = bytes.withUnsafeMutableBytes { getrandom($0.baseAddress, $0.count, 0) }
        if filled != bytes.count {
            // getrandom of 6 bytes does not fail after boot; fall back to the clock all the same.
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: now.tv_nsec >> (index * 8)) }
        }
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in bytes { text += [digits[Int(byte >> 4)], digits[Int(byte & 0xf)]] }
        return CaptureID(checkedHex: String(decoding: text, as: UTF8.self))
    }

    /// Twelve hex digits made above: they pass the rule by construction.
    private init(checkedHex text: String) { rawValue = text }
}
