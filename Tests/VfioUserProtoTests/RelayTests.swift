import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

@Suite("The proxy's relay")
struct RelayTests {
    /// Reads exactly `count` bytes and whatever fds come with them.
    func receive(_ socket: OwnedFileDescriptor, count: Int) throws -> ([UInt8], [OwnedFileDescriptor]) {
        let receiver = MessageReceiver(socket: socket.descriptor, maxMessageSize: 1 << 20)
        var bytes: [UInt8] = []
        var fds: [OwnedFileDescriptor] = []
        while bytes.count < count {
            guard let message = try receiver.receive() else { break }
            var writer = ByteWriter()
            message.header.encode(into: &writer)
            writer.write(message.payload)
            bytes += writer.bytes
            fds += message.fds
        }
        return (bytes, fds)
    }

    func inode(_ fd: CInt) -> UInt64 {
        var status = stat()
        fstat(fd, &status)
        return UInt64(status.st_ino)
    }

    @Test func messagesPassByteForByteWithTheirFdsBothWays() throws {
        let (client, clientSide) = try UnixSocket.pair()
        let (serverSide, server) = try UnixSocket.pair()
        let lines = Shared<[String]>([])
        let relay = MessageRelay(client: clientSide, server: serverSide) { line in lines.withLock { $0.append(line) } }
        let done = Shared<(Int, Int)?>(nil)
        let thread = Thread { done.value = try? relay.run() }

        let eventfd = try OwnedFileDescriptor.eventfd()
        let request = message(id: 5, command: .deviceSetIRQs,
                              payload: encoded(SetIRQs(flags: [.dataEventfd, .actionTrigger], index: .intx, start: 0, count: 1).encode))
        let posted = message(id: 6, command: .regionWrite, payload: le(UInt64(7)) + le(UInt32(0)) + le(UInt32(1)) + [0x5A], flags: .noReply)
        try MessageSender(socket: client.descriptor).send(request, fds: [eventfd.descriptor])
        try MessageSender(socket: client.descriptor).send(posted)
        let (arrived, fds) = try receive(server, count: request.count + posted.count)
        #expect(arrived == request + posted)
        #expect(fds.count == 1 && inode(fds[0].rawValue) == inode(eventfd.rawValue), "the eventfd itself went through")

        let region = try Memfd(size: 4096)
        let reply = message(id: 5, command: .deviceSetIRQs, payload: [], flags: .reply)
        try MessageSender(socket: server.descriptor).send(reply, fds: [region.fd.descriptor])
        let (back, backFDs) = try receive(client, count: reply.count)
        #expect(back == reply)
        #expect(backFDs.count == 1 && inode(backFDs[0].rawValue) == inode(region.fd.rawValue))

        UnixSocket.shutdown(client)
        thread.join()
        #expect(done.value.map { [$0.0, $0.1] } == [2, 1])
        #expect(lines.value == [
            "→ #5 DEVICE_SET_IRQS argsz=20 index=intx flags=EVENTFD|TRIGGER start=0 count=1 fds=1",
            "→ #6 REGION_WRITE no-reply offset=0x7 region=bar0 count=1 data=5a",
            "← #5 DEVICE_SET_IRQS reply fds=1",
        ])
        #expect(connectionClosed(VfioUserClient(socket: server)), "the server side is closed with the client")
    }
}
