import Support
import SystemPackage

/// A vfio-user client over the same codec the server uses: the tests, the command-line tools and the
/// benchmarks speak to servers through it.
///
/// Synchronous and single-threaded: each call sends one request and reads until its reply. Requests
/// the server sends meanwhile (DMA_READ/DMA_WRITE) are answered in between by `dmaHandler`, the way
/// QEMU serves them; without a handler they get ENOSYS, as QEMU answers commands it does not serve.
public final class VfioUserClient {
    public let socket: OwnedFileDescriptor
    private let receiver: MessageReceiver
    private let sender: MessageSender
    private var nextID: UInt16 = 0
    private var outgoing = ByteWriter(capacity: 4096)

    /// The server's capabilities from the VERSION reply.
    public internal(set) var serverCapabilities = VersionCapabilities()
    /// Serves the server's DMA_READ / DMA_WRITE. Set before traffic that needs it.
    public var dmaHandler: DMARequestHandler?
    /// The DMA_READ/WRITE layout this client speaks (the spec's, or the one in older QEMU sources).
    public var dmaLayout: DMATransferLayout = .spec
    /// Receives one line per message, both directions, when set.
    public var trace: ((String) -> Void)?
    /// Server requests answered so far.
    public internal(set) var servedRequests = 0
    /// Of those, the ones sent with No_reply (posted), which get no answer.
    public internal(set) var postedRequests = 0
    /// Messages this client sent (requests and replies).
    public var messagesSent: Int { sender.sentCount }

    public init(socket: OwnedFileDescriptor, maxMessageSize: Int = (1 << 20) + 4096) {
        self.socket = socket
        receiver = MessageReceiver(socket: socket.descriptor, maxMessageSize: maxMessageSize, initialCapacity: 16 * 1024)
        sender = MessageSender(socket: socket.descriptor)
    }

    public convenience init(path: String) throws(ClientError) {
        do { self.init(socket: try UnixSocket.connect(path: path)) } catch { throw .transport(error) }
    }

    /// A reply: the header, the payload copied out of the receive buffer, and any fds.
    public struct Reply {
        public let header: MessageHeader
        public let payload: [UInt8]
        public var fds: [OwnedFileDescriptor]
    }

    // MARK: Raw messages

    /// Sends a request and, unless `noReply`, waits for its reply. An error reply throws.
    @discardableResult
    public func request(_ command: Command, payload: [UInt8] = [], fds: [FileDescriptor] = [],
                        noReply: Bool = false, timeoutMilliseconds: Int32 = -1) throws(ClientError) -> Reply? {
        let id = try send(command, payload: payload, fds: fds, noReply: noReply)
        if noReply { return nil }
        return try awaitReply(id: id, command: command, timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Sends raw bytes as they are (for malformed-input tests): nothing is checked or added.
    public func sendRaw(_ bytes: [UInt8], fds: [FileDescriptor] = []) throws(ClientError) {
        do { try sender.send(bytes, fds: fds) } catch { throw .transport(error) }
    }

    /// Sends a request and returns its id without waiting.
    @discardableResult
    public func send(_ command: Command, payload: [UInt8], fds: [FileDescriptor] = [], noReply: Bool = false,
                     id explicitID: UInt16? = nil, messageSize: UInt32? = nil) throws(ClientError) -> UInt16 {
        let id = explicitID ?? allocateID()
        outgoing.reset()
        let size = messageSize ?? UInt32(MessageHeader.size + payload.count)
        MessageHeader(id: id, command: command, messageSize: size, flags: noReply ? .noReply : .command).encode(into: &outgoing)
        outgoing.write(payload)
        let failure = outgoing.withUnsafeBytes { bytes -> TransportError? in
            traceMessage(.toServer, bytes, fdCount: fds.count)
            do throws(TransportError) { try sender.send(bytes, fds: fds) } catch { return error }
            return nil
        }
        if let failure { throw .transport(failure) }
        return id
    }

    public func allocateID() -> UInt16 {
        nextID &+= 1
        return nextID
    }

    /// Reads until the reply with `id` arrives, serving server requests met on the way.
    public func awaitReply(id: UInt16, command: Command, timeoutMilliseconds: Int32 = -1) throws(ClientError) -> Reply {
        while true {
            if timeoutMilliseconds >= 0 {
                let ready: Bool
                do { ready = try receiver.waitReadable(milliseconds: timeoutMilliseconds) } catch { throw .transport(error) }
                guard ready else { throw .timedOut(command) }
            }
            guard var message = try receiveMessage() else { throw .transport(.closed) }
            if message.header.flags.isCommand {
                try serveRequest(&message)
                continue
            }
            guard message.header.flags.isReply, message.header.id == id else {
                throw .protocolViolation("expected the reply to #\(id) \(command), got #\(message.header.id) \(message.header.command) flags=0x\(String(message.header.flags.rawValue, radix: 16))")
            }
            guard message.header.command == command else {
                throw .protocolViolation("reply #\(id) is for \(message.header.command), not \(command)")
            }
            if message.header.flags.contains(.error) {
                throw .errorReply(command, Errno(rawValue: CInt(bitPattern: message.header.error)))
            }
            return Reply(header: message.header, payload: Array(message.payload), fds: message.fds)
        }
    }

    /// Serves server requests (DMA_READ/WRITE) for up to `milliseconds`, or until `done` says so.
    public func serveRequests(milliseconds: Int32, until done: () -> Bool = { false }) throws(ClientError) {
        var remaining = Int(milliseconds)
        while !done() && remaining > 0 {
            let ready: Bool
            do { ready = try receiver.waitReadable(milliseconds: 10) } catch { throw .transport(error) }
            remaining -= 10
            guard ready else { continue }
            guard var message = try receiveMessage() else { throw .transport(.closed) }
            guard message.header.flags.isCommand else {
                throw .protocolViolation("unsolicited reply #\(message.header.id) \(message.header.command)")
            }
            try serveRequest(&message)
        }
    }

    private func receiveMessage() throws(ClientError) -> MessageReceiver.Message? {
        let message: MessageReceiver.Message?
        do { message = try receiver.receive() } catch { throw .transport(error) }
        if let message, let trace {
            trace(MessageTrace.line(direction: .fromServer, header: message.header, payload: message.payload,
                                    fdCount: message.fds.count, dmaLayout: dmaLayout))
        }
        return message
    }

    private func traceMessage(_ direction: MessageTrace.Direction, _ bytes: UnsafeRawBufferPointer, fdCount: Int) {
        guard let trace else { return }
        var reader = ByteReader(bytes)
        guard let header = try? MessageHeader(decoding: &reader) else { return }
        trace(MessageTrace.line(direction: direction, header: header, payload: reader.rest(), fdCount: fdCount, dmaLayout: dmaLayout))
    }
}
