import Shared
import Testing

@testable import vde_networker

/// The worker's cutting of the plugin's stream (RecordFramer): every record whole and
/// unchanged whatever the reads' boundaries, and a broken stream said so.
@Suite struct CaptureFramerTests {
    let records = [
        CaptureRecord(port: 1, timestampNanoseconds: 1, payload: Array(0..<60)),
        CaptureRecord(port: 2, timestampNanoseconds: 2, payload: []),
        CaptureRecord(port: 3, timestampNanoseconds: 3, payload: [UInt8](repeating: 7, count: 1514)),
    ]

    func cut(_ stream: [UInt8], at cuts: [Int]) -> (records: [[UInt8]], failure: String?) {
        var framer = RecordFramer()
        var out: [[UInt8]] = []
        var start = 0
        for end in cuts + [stream.count] where end >= start {
            let failure = stream[start..<end].withUnsafeBytes { framer.feed($0) { out.append(Array($0)) } }
            if let failure { return (out, failure) }
            start = end
        }
        #expect(framer.pending.isEmpty)
        return (out, nil)
    }

    @Test func everyRecordComesWholeAndUnchangedWhateverTheCut() {
        let stream = records.flatMap(\.bytes)
        let whole = records.map(\.bytes)
        for first in stride(from: 0, through: stream.count, by: 7) {
            for second in [first, first + 1, first + 23, first + 24, first + 85] {
                let (out, failure) = cut(stream, at: [first, min(second, stream.count)])
                #expect(failure == nil && out == whole, "cut at \(first) and \(second)")
            }
        }
    }

    @Test func aBrokenStreamIsReportedNotPassedOn() {
        let end = CaptureRecord.end(frames: 1, dropped: 0, reason: "", timestampNanoseconds: 1)
        let (out, failure) = cut(records[0].bytes + end.bytes, at: [])
        #expect(out == [records[0].bytes])
        #expect(failure?.contains("kind 2") == true)
        var tooLong = records[1].bytes
        tooLong[10] = 1  // 65536 bytes
        #expect(cut(tooLong, at: [5]).failure?.contains("longer than any frame") == true)
    }
}
