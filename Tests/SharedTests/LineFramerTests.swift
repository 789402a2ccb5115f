import Shared
import Testing

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
private func line(_ text: String) -> LineFramer.Line { .line(bytes(text)) }

@Suite struct LineFramerTests {
    @Test func lineSplitAcrossChunks() {
        var framer = LineFramer(maxLineBytes: 100)
        #expect(framer.feed(bytes("{\"v\":")) == [])
        #expect(framer.pendingBytes == 5)
        #expect(framer.feed(bytes("1}")) == [])
        #expect(framer.feed(bytes("\n")) == [line("{\"v\":1}")])
        #expect(framer.pendingBytes == 0)
    }

    @Test func severalLinesInOneChunk() {
        var framer = LineFramer(maxLineBytes: 100)
        #expect(framer.feed(bytes("a\nbb\nccc\ndd")) == [line("a"), line("bb"), line("ccc")])
        #expect(framer.feed(bytes("\n")) == [line("dd")])
    }

    @Test func byteByByte() {
        var framer = LineFramer(maxLineBytes: 100)
        var out: [LineFramer.Line] = []
        for byte in bytes("one\ntwo\n") { out += framer.feed([byte]) }
        #expect(out == [line("one"), line("two")])
    }

    @Test func emptyLines() {
        var framer = LineFramer(maxLineBytes: 100)
        #expect(framer.feed(bytes("\n\nx\n")) == [line(""), line(""), line("x")])
    }

    @Test func oversizedLineIsDroppedAndReportedThenTheNextLineIsParsed() {
        var framer = LineFramer(maxLineBytes: 8)
        var out = framer.feed(bytes("0123456789"))
        #expect(out == [])
        #expect(framer.pendingBytes == 10)
        out = framer.feed(bytes("abc\nok\n"))
        #expect(out == [.oversized(length: 13), line("ok")])
        #expect(framer.pendingBytes == 0)
    }

    @Test func lineOfExactlyTheLimitIsKept() {
        var framer = LineFramer(maxLineBytes: 4)
        #expect(framer.feed(bytes("abcd\nabcde\nx\n")) == [line("abcd"), .oversized(length: 5), line("x")])
    }

    @Test func oversizedAcrossManyChunks() {
        var framer = LineFramer(maxLineBytes: 16)
        var out: [LineFramer.Line] = []
        for _ in 0..<100 { out += framer.feed([UInt8](repeating: UInt8(ascii: "x"), count: 10)) }
        out += framer.feed(bytes("\n{}\n"))
        #expect(out == [.oversized(length: 1000), line("{}")])
    }

    @Test func defaultLimitIsTheProtocolLimit() {
        #expect(LineFramer().maxLineBytes == WorkerProtocol.maxLineBytes)
    }
}
