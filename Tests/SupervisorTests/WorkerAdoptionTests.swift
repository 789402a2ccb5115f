import Glibc
import Logging
import Shared
import Testing

@testable import vde_supervisor

/// ``WorkerAdoption``: only a running `vde-networker --network-id ID` on the network's socket is
/// adopted; no socket, a stale one, or another process there is not.
@Suite struct WorkerAdoptionTests {
    let network = NetworkID(stringLiteral: "adopt" + String(UInt32.random(in: 0...UInt32.max), radix: 16))

    @Test func theCommandLineMustBeThisNetworksWorker() {
        #expect(
            WorkerAdoption.isWorker(["/usr/local/bin/vde-networker", "--network-id", network.rawValue], of: network))
        #expect(
            WorkerAdoption.isWorker(
                ["vde-networker", "--network-id", network.rawValue, "--log-level", "debug"], of: network))
        #expect(!WorkerAdoption.isWorker(["vde-networker", "--network-id", "other"], of: network))
        #expect(!WorkerAdoption.isWorker(["/bin/vde-networker-x", "--network-id", network.rawValue], of: network))
        #expect(!WorkerAdoption.isWorker(["vde-networker", "--network-id"], of: network))
        #expect(!WorkerAdoption.isWorker([], of: network))
    }

    @Test func nothingIsAdoptedWithoutALiveSocketOrFromAnotherProgram() throws {
        var template = Array("/tmp/adopt-tests-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer {
            unlink(dir + "/net/worker.sock")
            rmdir(dir + "/net")
            rmdir(dir)
        }
        mkdir(dir + "/net", 0o755)
        let paths = try NetworkPaths(networkDir: dir + "/net", ctlDir: dir + "/net/ctl", managementSocket: nil)
        let logger = Logger(label: "test")
        #expect(WorkerAdoption.connect(networkID: network, paths: paths, logger: logger) == nil, "no socket")

        let listener = try UnixListener.bind(paths.workerSocket)
        // This test process listens there: it is no vde-networker, so it is not adopted.
        #expect(WorkerAdoption.connect(networkID: network, paths: paths, logger: logger) == nil, "another program")
        close(listener.fd)
        #expect(WorkerAdoption.connect(networkID: network, paths: paths, logger: logger) == nil, "a stale socket")
    }
}
