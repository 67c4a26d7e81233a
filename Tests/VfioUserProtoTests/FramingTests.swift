import CLinux
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// A message as bytes: header plus payload.
func message(id: UInt16, command: Command, payload: [UInt8], flags: MessageFlags = .command) -> [UInt8] {
    encoded { MessageHeader(id: id, command: command, messageSize: UInt32(16 + payload.count), flags: flags).encode(into: &$0) } + payload
}

func writeAll(_ fd: OwnedFileDescriptor, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count { offset += Glibc.write(fd.rawValue, raw.baseAddress! + offset, raw.count - offset) }
    }
}

@Suite("Framing over a socket")
struct FramingTests {
    @Test func messagesSplitAcrossWritesAreReassembled() throws {
        let (a, b) = try UnixSocket.pair()
        let receiver = MessageReceiver(socket: b.descriptor, maxMessageSize: 4096, initialCapacity: 256)
        let bytes = message(id: 1, command: .regionWrite, payload: Array(0..<200))
        let writer = Thread { for byte in bytes { writeAll(a, [byte]) } }
        let first = try #require(try receiver.receive())
        #expect(first.header.id == 1 && Array(first.payload) == Array(0..<200))
        writer.join()
    }

    @Test func manyMessagesPackedIntoOneWriteComeOutOneByOne() throws {
        let (a, b) = try UnixSocket.pair()
        let receiver = MessageReceiver(socket: b.descriptor, maxMessageSize: 4096)
        var stream: [UInt8] = []
        for i in 0..<500 { stream += message(id: UInt16(i), command: .regionWrite, payload: [UInt8(i & 0xFF)], flags: .noReply) }
        writeAll(a, stream)
        for i in 0..<500 {
            let m = try #require(try receiver.receive())
            #expect(m.header.id == UInt16(i) && m.payload.first == UInt8(i & 0xFF))
        }
        #expect(receiver.readCalls < 10)
    }

    @Test func fdsBelongToTheMessageTheyWereSentWithInABatchedRead() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = MessageSender(socket: a.descriptor)
        let receiver = MessageReceiver(socket: b.descriptor, maxMessageSize: 4096)
        let eventfd = try OwnedFileDescriptor.eventfd()
        try sender.send(message(id: 1, command: .regionRead, payload: Array(repeating: 0, count: 16)))
        try sender.send(message(id: 2, command: .deviceSetIRQs, payload: Array(repeating: 0, count: 20)), fds: [eventfd.descriptor])
        try sender.send(message(id: 3, command: .regionRead, payload: Array(repeating: 0, count: 16)))
        try sender.send(message(id: 4, command: .dmaMap, payload: Array(repeating: 0, count: 32)), fds: [eventfd.descriptor, eventfd.descriptor])
        let counts = try (1...4).map { _ in
            let m = try #require(try receiver.receive())
            return (m.header.id, m.fds.count)
        }
        #expect(counts.map(\.0) == [1, 2, 3, 4])
        #expect(counts.map(\.1) == [0, 1, 0, 2])
    }

    @Test func anOversizedMessageIsReportedAndItsBodyDropped() throws {
        let (a, b) = try UnixSocket.pair()
        let receiver = MessageReceiver(socket: b.descriptor, maxMessageSize: 1024)
        writeAll(a, message(id: 1, command: .regionWrite, payload: Array(repeating: 7, count: 5000)))
        writeAll(a, message(id: 2, command: .deviceGetInfo, payload: Array(repeating: 0, count: 16)))
        let big = try #require(try receiver.receive())
        #expect(big.isOversized && big.header.id == 1 && big.payload.isEmpty)
        let next = try #require(try receiver.receive())
        #expect(!next.isOversized && next.header.id == 2 && next.payload.count == 16)
    }

    @Test func aSizeBelowTheHeaderIsAFramingError() throws {
        let (a, b) = try UnixSocket.pair()
        let receiver = MessageReceiver(socket: b.descriptor, maxMessageSize: 1024)
        writeAll(a, encoded { MessageHeader(id: 1, command: .version, messageSize: 8).encode(into: &$0) })
        #expect(throws: TransportError.self) { try receiver.receive() }
    }

    @Test func endOfStreamBetweenMessagesIsNilAndInsideOneIsClosed() throws {
        let (a, b) = try UnixSocket.pair()
        let receiver = MessageReceiver(socket: b.descriptor, maxMessageSize: 1024)
        writeAll(a, message(id: 1, command: .deviceReset, payload: []))
        writeAll(a, Array(message(id: 2, command: .deviceGetInfo, payload: Array(repeating: 0, count: 16)).prefix(20)))
        UnixSocket.shutdown(a)
        #expect(try receiver.receive()?.header.id == 1)
        #expect(throws: TransportError.closed) { try receiver.receive() }

        let (c, d) = try UnixSocket.pair()
        let clean = MessageReceiver(socket: d.descriptor, maxMessageSize: 1024)
        UnixSocket.shutdown(c)
        #expect(try clean.receive() == nil)
    }

    /// A reply is read by the peer while the receiver sleeps for the next request, at every
    /// trapped access. The kernel wakes a reader blocked in `recvmsg` when its own sent bytes are
    /// consumed; a receiver must sleep so that only incoming bytes wake it.
    @Test func theReceiverSleepsThroughThePeerReadingItsReply() throws {
        let (server, peer) = try UnixSocket.pair()
        let reply = message(id: 1, command: .regionRead, payload: [0x5A], flags: .reply)
        let thread = TaskInfo()
        let sleeper = Thread {
            let receiver = MessageReceiver(socket: server.descriptor, maxMessageSize: 1024)
            thread.identify()
            writeAll(server, reply)
            #expect((try? receiver.receive())??.header.id == 2)
        }
        // Asleep for good: 20 ms in a row without a switch, so a passing sleep before the wait is not it.
        var before: Int?
        var quiet = 0
        for _ in 0..<5000 where quiet < 20 {
            usleep(1000)
            let now = thread.state == "S" ? thread.voluntarySwitches : nil
            quiet = now != nil && now == before ? quiet + 1 : 0
            before = now
        }
        try #require(quiet == 20, "the receiver never went to sleep")

        var buffer = [UInt8](repeating: 0, count: reply.count)
        #expect(Glibc.read(peer.rawValue, &buffer, buffer.count) == reply.count && buffer == reply)
        usleep(50_000)
        #expect(thread.voluntarySwitches == before, "the receiver woke when its reply was read")

        writeAll(peer, message(id: 2, command: .deviceReset, payload: []))
        sleeper.join()
    }
}

/// One thread of this process as /proc shows it.
final class TaskInfo: Sendable {
    private let tid = Locked<pid_t>(0)
    /// Makes this the calling thread.
    func identify() { tid.withLock { $0 = pid_t(clinux_gettid()) } }
    private var path: String { "/proc/self/task/\(tid.withLock { $0 })/" }
    /// The scheduler state letter ("S": asleep), or nil before `identify()`.
    var state: String? { procStatFields(path + "stat")?.first.map(String.init) }
    var voluntarySwitches: Int? { procNumber("voluntary_ctxt_switches:", in: path + "status") }
}

extension MessageReceiver.Message: Equatable {
    public static func == (a: Self, b: Self) -> Bool { a.header == b.header }
}
