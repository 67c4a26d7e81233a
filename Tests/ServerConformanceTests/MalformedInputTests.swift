import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer

@Suite("Malformed input")
struct MalformedInputTests {
    /// A hand-made message that must be answered with EINVAL.
    struct Malformed: Sendable, CustomTestStringConvertible {
        let what: String
        let command: UInt16
        let payload: [UInt8]
        init(_ what: String, _ command: UInt16, _ payload: [UInt8]) {
            self.what = what
            self.command = command
            self.payload = payload
        }
        var testDescription: String { what }
    }

    static let malformed: [Malformed] = [
        Malformed("unknown command", 99, []),
        Malformed("DMA_READ from a client", 11, le(UInt64(0)) + le(UInt64(4))),
        Malformed("migration-v1 DIRTY_PAGES", 14, [UInt8](repeating: 0, count: 16)),
        Malformed("GET_INFO short payload", 4, le(UInt32(16))),
        Malformed("GET_INFO small argsz", 4, le(UInt32(8)) + [UInt8](repeating: 0, count: 12)),
        Malformed("GET_IRQ_INFO short", 7, le(UInt32(16)) + le(UInt32(0))),
        Malformed("SET_IRQS short", 8, le(UInt32(20)) + le(UInt32(0x21))),
        Malformed("SET_IRQS two DATA flags", 8, le(UInt32(20)) + le(UInt32(0x23)) + le(UInt32(0)) + le(UInt32(0)) + le(UInt32(1))),
        Malformed("SET_IRQS start past the end", 8, le(UInt32(20)) + le(UInt32(0x21)) + le(UInt32(0)) + le(UInt32(1)) + le(UInt32(1))),
        Malformed("SET_IRQS count overflow", 8, le(UInt32(20)) + le(UInt32(0x21)) + le(UInt32(0)) + le(UInt32(1)) + le(UInt32.max)),
        Malformed("REGION_READ with data", 9, le(UInt64(0)) + le(UInt32(7)) + le(UInt32(4)) + [1, 2, 3, 4]),
        Malformed("REGION_READ past the end", 9, le(UInt64(255)) + le(UInt32(7)) + le(UInt32(4))),
        Malformed("REGION_READ offset wraps", 9, le(UInt64.max - 1) + le(UInt32(7)) + le(UInt32(4))),
        Malformed("REGION_READ of an absent BAR", 9, le(UInt64(0)) + le(UInt32(3)) + le(UInt32(1))),
        Malformed("REGION_READ count zero", 9, le(UInt64(0)) + le(UInt32(7)) + le(UInt32(0))),
        Malformed("REGION_READ count above max_data_xfer_size", 9, le(UInt64(0)) + le(UInt32(7)) + le(UInt32(0x7FFF_FFFF))),
        Malformed("REGION_WRITE short data", 10, le(UInt64(0)) + le(UInt32(0)) + le(UInt32(4)) + [1]),
        Malformed("REGION_WRITE region 99", 10, le(UInt64(0)) + le(UInt32(99)) + le(UInt32(1)) + [1]),
        Malformed("DEVICE_RESET with a payload", 13, [0, 0, 0, 0]),
        Malformed("DMA_MAP short", 2, le(UInt32(32)) + le(UInt32(3))),
        Malformed("DMA_UNMAP bad flags", 3, le(UInt32(24)) + le(UInt32(8)) + le(UInt64(0)) + le(UInt64(4096))),
        Malformed("DMA_UNMAP ALL with a size", 3, le(UInt32(24)) + le(UInt32(2)) + le(UInt64(0)) + le(UInt64(4096))),
        Malformed("GET_REGION_IO_FDS with count", 6, le(UInt32(16)) + le(UInt32(0)) + le(UInt32(0)) + le(UInt32(1))),
    ]

    /// Each message gets EINVAL and the session goes on (checked with a read after each).
    @Test(arguments: malformed)
    func answeredWithEINVALAndTheSessionContinues(_ message: Malformed) throws {
        let (what, command, payload) = (message.what, message.command, message.payload)
        let server = try TestServer()
        let client = try server.attach()
        let id = client.allocateID()
        try client.sendRaw(rawMessage(id: id, command: command, payload: payload))
        do {
            _ = try client.awaitReply(id: id, command: Command(rawValue: command))
            Issue.record("\(what): expected EINVAL, got a reply")
        } catch let .errorReply(_, errno) {
            #expect(errno == .invalidArgument, "\(what): \(errno.name)")
        }
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348, "session alive after \(what)")
    }

    @Test func anOversizedMessageIsRefusedWithoutBufferingIt() throws {
        let server = try TestServer()
        let client = try server.attach()
        let data = [UInt8](repeating: 0x41, count: (1 << 20) + 4096)
        expectErrno(.invalidArgument) {
            try client.request(.regionWrite, payload: le(UInt64(0)) + le(UInt32(0)) + le(UInt32(data.count)) + data)
        }
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348)
    }

    @Test func anInvalidMessageTypeIsRefused() throws {
        let server = try TestServer()
        let client = try server.attach()
        let id = client.allocateID()
        try client.sendRaw(rawMessage(id: id, command: 4, payload: le(UInt32(16)) + [UInt8](repeating: 0, count: 12), flags: 2))
        expectErrno(.invalidArgument) { try client.awaitReply(id: id, command: .deviceGetInfo) }
    }

    @Test func noReplyMeansNoReplyEvenOnError() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.sendRaw(rawMessage(id: client.allocateID(), command: 99, payload: [], flags: 0x10))
        try client.sendRaw(rawMessage(id: client.allocateID(), command: 9, payload: le(UInt64(999)) + le(UInt32(7)) + le(UInt32(4)), flags: 0x10))
        #expect(try client.read(.config, offset: 2, as: UInt16.self) == 0x3253) // the next reply is this one
    }

    @Test func fdsWithACommandThatTakesNoneAreRefused() throws {
        let server = try TestServer()
        let client = try server.attach()
        let eventfd = try OwnedFileDescriptor.eventfd()
        let access = le(UInt64(0)) + le(UInt32(7)) + le(UInt32(2))
        expectErrno(.invalidArgument) { try client.request(.regionRead, payload: access, fds: [eventfd.descriptor]) }
        expectErrno(.invalidArgument) {
            try client.setIRQs(.intx, [.dataNone, .actionTrigger], fds: [eventfd.descriptor])
        }
    }

    @Test func aSizeFieldBelowTheHeaderClosesTheConnection() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.sendRaw(rawMessage(id: 1, command: 4, payload: [], size: 4))
        #expect(connectionClosed(client))
    }
}
