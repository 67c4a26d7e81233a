import RegionEmulation
import Support
import SystemPackage
import VfioUserProto

/// One client connection to one device, run on its own thread.
///
/// Commands are handled strictly in the order they arrive. Each handler validates its payload
/// (size, argsz, flags, fds) before touching the device, writes its reply payload straight into a
/// reusable buffer, and throws an `ErrnoConvertible` error otherwise: the error becomes a
/// header-only reply with a positive errno. NO_REPLY is honoured on every command, errors included.
/// Only a framing error (a size field below 16) or the peer going away ends the session.
final class Session: @unchecked Sendable { // Used only by its own thread, except `dmaChannel` (own lock) and `shutdown()`.
    let device: EmulatedDevice
    let configuration: ServerConfiguration
    let socket: OwnedFileDescriptor
    let name: String
    let receiver: MessageReceiver
    let sender: MessageSender
    let dmaChannel: SessionDMAChannel

    var negotiated = false
    var clientCapabilities = VersionCapabilities()
    var writeMultipleEnabled = false
    /// The reply being built: header placeholder first, payload after. Reused for every message.
    var reply = ByteWriter(capacity: 64 * 1024)
    var replyFDs: [FileDescriptor] = []
    /// Set by a failed VERSION: the error reply goes out, then the connection closes.
    var closeAfterReply = false
    /// Client commands read while waiting for something else (an unmap waiting for pins), handled next.
    var deferred: [DeferredMessage] = []
    /// Bytes of `deferred` (headers and payloads).
    var deferredBytes = 0
    /// Messages handled, for statistics.
    private(set) var handledCount = 0
    /// Commands that asked for no reply (QEMU's posted writes), for the summary.
    private var postedCount = 0

    struct DeferredMessage {
        let header: MessageHeader
        let payload: [UInt8]
        var fds: [OwnedFileDescriptor]
        let fdsTruncated: Bool
        let isOversized: Bool
    }

    init(device: EmulatedDevice, socket: OwnedFileDescriptor, configuration: ServerConfiguration, name: String) {
        self.device = device
        self.socket = socket
        self.configuration = configuration
        self.name = name
        receiver = MessageReceiver(socket: socket.descriptor, maxMessageSize: configuration.maxMessageSize, poll: configuration.poll)
        sender = MessageSender(socket: socket.descriptor)
        dmaChannel = SessionDMAChannel(sender: sender, timeoutMilliseconds: configuration.dmaReplyTimeoutMilliseconds, name: name,
                                       poll: configuration.poll)
        dmaChannel.sessionThread = currentThreadID()
        dmaChannel.pump = { [unowned self] condition, milliseconds in pumpUntil(condition, milliseconds: milliseconds) }
    }

    /// Serves until the client goes away, then resets the device as on a lost connection.
    func run() {
        dmaChannel.sessionThread = currentThreadID()
        defer { end() }
        do {
            while !closeAfterReply {
                if !deferred.isEmpty {
                    // Taken as a whole (one by one from the front would be quadratic): handling one
                    // may set more aside (an unmap that waits), and those come after these.
                    var batch = deferred
                    deferred = []
                    deferredBytes = 0
                    for i in batch.indices where !closeAfterReply {
                        batch[i].payload.withUnsafeBytes { payload in
                            handle(batch[i].header, payload, &batch[i].fds, fdsTruncated: batch[i].fdsTruncated, isOversized: batch[i].isOversized)
                        }
                    }
                    continue
                }
                guard var message = try receiver.receive() else { return }
                handle(message.header, message.payload, &message.fds, fdsTruncated: message.fdsTruncated, isOversized: message.isOversized)
            }
        } catch .closed {
            return
        } catch {
            ServerLog.warning("\(name): closing the connection: \(error)")
        }
    }

    /// Wakes the session's thread so it winds down (server shutdown, forced removal).
    func shutdown() {
        UnixSocket.shutdown(socket)
    }

    /// DMA_MAPs seen, with and without an fd.
    var mapsWithFD = 0
    var mapsWithoutFD = 0
    /// Whether the session said, once, what guest RAM without fds costs.
    var warnedAboutMessageRAM = false

    private func end() {
        ServerLog.info("\(name): session summary: \(handledCount) messages handled (\(postedCount) posted), \(dmaChannel.messagesSent) DMA messages sent, "
                       + "\(mapsWithFD) DMA maps with an fd, \(mapsWithoutFD) without")
        dmaChannel.close()
        device.connectionLost()
        UnixSocket.shutdown(socket)
    }

    // MARK: Dispatch

    func handle(_ header: MessageHeader, _ payload: UnsafeRawBufferPointer, _ fds: inout [OwnedFileDescriptor],
                fdsTruncated: Bool, isOversized: Bool) {
        handledCount += 1
        if configuration.trace {
            trace(.toServer, header, payload, fdCount: fds.count)
        }
        if header.flags.isReply {
            // The reply to a DMA_READ/DMA_WRITE this server sent from a device thread.
            dmaChannel.deliver(header, payload)
            return
        }
        // A posted command's reply is never sent: no header placeholder, and the hot handlers skip
        // their payload (the rest write one that is dropped).
        let replying = !header.flags.contains(.noReply)
        if !replying { postedCount += 1 }
        reply.reset()
        if replying { reply.writeZeros(MessageHeader.size) }
        if !replyFDs.isEmpty { replyFDs.removeAll(keepingCapacity: true) }
        do {
            guard header.flags.isCommand else { throw SessionError.malformed("message type \(header.flags.type) is neither command nor reply") }
            guard header.flags.rawValue & ~MessageFlags.known == 0 else {
                throw SessionError.malformed("unknown header flags 0x\(String(header.flags.rawValue, radix: 16))")
            }
            guard !isOversized else {
                throw SessionError.malformed("message of \(header.messageSize) bytes exceeds \(configuration.maxMessageSize)")
            }
            // The receive buffer holds as many fds as one message can carry (SCM_MAX_FD), so the
            // kernel cuts the list short only when this process has no room for them.
            guard !fdsTruncated else {
                throw SessionError.outOfResources(.tooManyOpenFiles, "the fds sent with this message did not fit in the server's fd table")
            }
            guard fds.count <= configuration.maxMessageFDs else {
                throw SessionError.malformed("\(fds.count) fds exceed max_msg_fds \(configuration.maxMessageFDs)")
            }
            try dispatch(header, payload, &fds, replying: replying)
        } catch {
            fds.removeAll() // close them before the client hears back
            respondWithError(header, error)
            return
        }
        // Handlers kept (retained) the fds they use; the rest close here, before the reply.
        if !fds.isEmpty { fds.removeAll() }
        guard replying else { return }
        let size = UInt32(reply.count)
        reply.patch(header.id, at: 0)
        reply.patch(header.command.rawValue, at: 2)
        reply.patch(size, at: 4)
        reply.patch(MessageFlags.reply.rawValue, at: 8)
        reply.patch(UInt32(0), at: 12)
        reply.withUnsafeBytes { send($0, fds: replyFDs) }
    }

    private func dispatch(_ header: MessageHeader, _ payload: UnsafeRawBufferPointer, _ fds: inout [OwnedFileDescriptor],
                          replying: Bool) throws {
        // The hot commands first.
        switch header.command {
        case .regionWrite where negotiated:
            try requireNoFDs(fds)
            return try handleRegionWrite(payload, replying: replying)
        case .regionRead where negotiated:
            try requireNoFDs(fds)
            return try handleRegionRead(payload)
        case .version:
            return try handleVersion(payload, fds: fds)
        default:
            break
        }
        guard negotiated else { throw SessionError.outOfOrder("\(header.command) before VERSION") }
        switch header.command {
        case .dmaMap: try handleDMAMap(payload, fds: &fds)
        case .dmaUnmap: try requireNoFDs(fds); try handleDMAUnmap(payload)
        case .deviceGetInfo: try requireNoFDs(fds); try handleGetInfo(payload)
        case .deviceGetRegionInfo: try requireNoFDs(fds); try handleGetRegionInfo(payload)
        case .deviceGetRegionIOFDs: try requireNoFDs(fds); try handleGetRegionIOFDs(payload)
        case .deviceGetIRQInfo: try requireNoFDs(fds); try handleGetIRQInfo(payload)
        case .deviceSetIRQs: try handleSetIRQs(payload, fds: &fds)
        case .deviceReset: try requireNoFDs(fds); try handleReset(payload)
        case .regionWriteMulti where writeMultipleEnabled: try requireNoFDs(fds); try handleWriteMulti(header, payload)
        case .deviceFeature: try requireNoFDs(fds); try handleDeviceFeature(payload)
        case .migDataRead: try requireNoFDs(fds); try handleMigrationDataRead(payload)
        case .migDataWrite: try requireNoFDs(fds); try handleMigrationDataWrite(payload)
        default: throw SessionError.unknownCommand(header.command)
        }
    }

    func requireNoFDs(_ fds: [OwnedFileDescriptor]) throws {
        // The fds are closed when the message goes away; the command still fails, to be explicit.
        guard fds.isEmpty else { throw SessionError.malformed("\(fds.count) fds sent with a command that takes none") }
    }

    /// Checks the payload holds at least `size` bytes and `argsz` (its first word) is at least `minimum`.
    func requirePayload(_ payload: UnsafeRawBufferPointer, atLeast size: Int, _ command: Command) throws {
        guard payload.count >= size else {
            throw SessionError.malformed("\(command) payload is \(payload.count) bytes, needs \(size)")
        }
    }

    func requireArgsz(_ argsz: UInt32, atLeast minimum: Int, _ command: Command) throws {
        guard Int(argsz) >= minimum else { throw SessionError.malformed("\(command) argsz \(argsz) is below \(minimum)") }
    }

    // MARK: Replies

    private func respondWithError(_ header: MessageHeader, _ error: Error) {
        let errno = (error as? ErrnoConvertible)?.errno ?? .invalidArgument
        if header.flags.contains(.noReply) {
            ServerLog.warning("\(name): posted \(header.command) #\(header.id) failed (\(errno.name)): \(error)")
            return
        }
        if configuration.trace || errno != .invalidArgument || header.command == .version {
            ServerLog.info("\(name): \(header.command) #\(header.id) → \(errno.name): \(error)")
        }
        reply.reset()
        header.errorReply(errno: UInt32(errno.rawValue)).encode(into: &reply)
        reply.withUnsafeBytes { send($0, fds: []) }
    }

    func send(_ bytes: UnsafeRawBufferPointer, fds: [FileDescriptor]) {
        if configuration.trace {
            var reader = ByteReader(bytes)
            if let header = try? MessageHeader(decoding: &reader) {
                trace(.fromServer, header, reader.rest(), fdCount: fds.count)
            }
        }
        do {
            try sender.send(bytes, fds: fds)
        } catch {
            // The receive side sees the same failure and ends the session.
            UnixSocket.shutdown(socket)
        }
    }

    func trace(_ direction: MessageTrace.Direction, _ header: MessageHeader, _ payload: UnsafeRawBufferPointer, fdCount: Int) {
        ServerLog.info("\(name): " + MessageTrace.line(direction: direction, header: header, payload: payload,
                                                       fdCount: fdCount, dmaLayout: dmaChannel.layout))
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The kernel thread id of the caller, to tell the session thread from device threads.
func currentThreadID() -> pthread_t { pthread_self() }
