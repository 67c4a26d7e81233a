import Support
import SystemPackage
/// A transparent proxy for one connection: every message from the client goes to the server and
/// back unchanged, file descriptors included (which socat cannot pass), and each is described on
/// its way, as `--trace` does. Messages are forwarded whole, one `sendmsg` each, so the fds stay
/// attached to the message they came with.
public final class MessageRelay: Sendable {
    public let client: OwnedFileDescriptor
    public let server: OwnedFileDescriptor
    public let dmaLayout: DMATransferLayout
    private let log: @Sendable (String) -> Void

    /// The largest message either side may send: 64 MiB is far above any limit a peer negotiates.
    public static let maxMessageSize = 64 << 20

    public init(client: OwnedFileDescriptor, server: OwnedFileDescriptor, dmaLayout: DMATransferLayout = .spec,
                log: @escaping @Sendable (String) -> Void) {
        self.client = client
        self.server = server
        self.dmaLayout = dmaLayout
        self.log = log
    }

    /// Relays until either side closes or breaks the framing; then closes both. Returns the number
    /// of messages passed each way. Throws when no thread can be made for the replies' direction.
    public func run() throws(Errno) -> (toServer: Int, fromServer: Int) {
        let replies = RepliesPumped()
        try spawnThread(name: "relay-reply") { [self] in
            let count = pump(from: server, to: client, .fromServer)
            replies.lock.withLock {
                replies.count = count
                replies.lock.broadcast()
            }
        }
        let requests = pump(from: client, to: server, .toServer)
        let fromServer = replies.lock.withLock {
            while replies.count == nil { replies.lock.wait() }
            return replies.count ?? 0
        }
        return (requests, fromServer)
    }

    /// The server-to-client thread's result.
    private final class RepliesPumped: @unchecked Sendable { // `count` under `lock`.
        let lock = ConditionLock()
        var count: Int?
    }

    private func pump(from source: OwnedFileDescriptor, to destination: OwnedFileDescriptor, _ direction: MessageTrace.Direction) -> Int {
        let receiver = MessageReceiver(socket: source.descriptor, maxMessageSize: Self.maxMessageSize)
        let sender = MessageSender(socket: destination.descriptor)
        var count = 0
        defer {
            // One side is gone: so is the conversation.
            UnixSocket.shutdown(client)
            UnixSocket.shutdown(server)
        }
        while true {
            let message: MessageReceiver.Message
            do throws(TransportError) {
                guard let next = try receiver.receive() else { return count }
                message = next
            } catch {
                if error != .closed { log("\(direction.arrow) \(error): the relay stops") }
                return count
            }
            guard !message.isOversized else {
                log("\(direction.arrow) a message of \(message.header.messageSize) bytes is larger than the relay takes: it stops")
                return count
            }
            log(MessageTrace.line(direction: direction, header: message.header, payload: message.payload,
                                  fdCount: message.fds.count, dmaLayout: dmaLayout))
            if message.fdsTruncated { log("\(direction.arrow) the sender passed more fds than one message can carry; some were lost") }
            var writer = ByteWriter(capacity: MessageHeader.size + message.payload.count)
            message.header.encode(into: &writer)
            writer.write(message.payload)
            do throws(TransportError) {
                try sender.send(writer.bytes, fds: message.fds.map(\.descriptor))
            } catch {
                log("\(direction.arrow) forwarding failed: \(error)")
                return count
            }
            count += 1
        }
    }
}
