import Shared
import Testing

/// The capture stream format (CaptureRecord.swift): what the switch's plugin and the worker
/// write, and what the capture command reads, in any split.
struct CaptureRecordTests {
    let frame = CaptureRecord(
        flags: CaptureRecord.outgoingFlag, port: 3, originalLength: 1514,
        timestampNanoseconds: 1_764_000_000_123_456_789,
        payload: Array(0..<60))

    @Test func aFrameRecordIsA24ByteLittleEndianHeaderAndItsPayload() {
        let bytes = frame.bytes
        #expect(bytes.count == CaptureRecord.headerLength + 60)
        #expect(Array(bytes[0..<4]) == [1, 0, 1, 0], "kind 1 (frame), flags bit 0 (outgoing)")
        #expect(Array(bytes[4..<8]) == [3, 0, 0, 0], "port")
        #expect(Array(bytes[8..<12]) == [60, 0, 0, 0], "captured length")
        #expect(Array(bytes[12..<16]) == [0xea, 0x05, 0, 0], "original length 1514")
        #expect(Array(bytes[24...]) == Array(0..<60))
    }

    @Test func theReaderGivesBackEveryRecordWhateverTheSplit() throws {
        let end = CaptureRecord.end(frames: 7, dropped: 2, reason: "the endpoint was removed", timestampNanoseconds: 9)
        let unknownPort = CaptureRecord(port: -1, timestampNanoseconds: -5, payload: [])
        let stream = frame.bytes + unknownPort.bytes + end.bytes
        for split in 0...stream.count {
            var reader = CaptureRecordReader()
            var records: [CaptureRecord] = []
            reader.append(stream[..<split])
            while let record = try reader.next() { records.append(record) }
            reader.append(stream[split...])
            while let record = try reader.next() { records.append(record) }
            #expect(records == [frame, unknownPort, end], "split at \(split)")
            #expect(reader.pendingBytes == 0)
        }
    }

    @Test func anEndRecordCarriesFramesDroppedAndTheReason() throws {
        let end = CaptureRecord.end(frames: 1 << 40, dropped: 3, reason: "the switch exited", timestampNanoseconds: 1)
        var reader = CaptureRecordReader()
        reader.append(end.bytes)
        let read = try #require(try reader.next())
        #expect(read.kind == .end)
        let counters = try #require(read.endCounters)
        #expect(counters.frames == 1 << 40 && counters.dropped == 3 && counters.reason == "the switch exited")
        #expect(frame.endCounters == nil, "a frame record has no end counters")
        #expect(!CaptureRecord(timestampNanoseconds: 0, payload: []).isOutgoing && frame.isOutgoing)
    }

    @Test func aBrokenStreamIsAnErrorNotGarbage() {
        var unknownKind = CaptureRecordReader()
        unknownKind.append([9, 0] + [UInt8](repeating: 0, count: 22))
        #expect(throws: VDEError.self) { try unknownKind.next() }

        var tooLong = CaptureRecordReader()
        tooLong.append([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0] + [UInt8](repeating: 0, count: 12))
        #expect(throws: VDEError.self) { try tooLong.next() }
    }
}
