import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Message-mode DMA for one session: DMA_READ / DMA_WRITE sent to the client on the session's
/// socket, their replies routed back by message id.
///
/// Which layout the client speaks is asked, not guessed (QEMU's hw/vfio-user/pci.c and the spec disagree): before the first message
/// a zero-length DMA_WRITE goes out in the 32-byte form, which is valid in both layouts. A client
/// with the spec's layout (libvfio-user's, and QEMU 11.1.3 as tested here: u64 count, data at 16)
/// answers it with an echo of address and count; one with the `{u64 offset; u32 count}` layout in
/// QEMU's hw/vfio-user sources (data at 12) answers header-only.
///
/// Device threads call `read`/`write` and sleep until the session thread, the socket's only reader,
/// delivers the reply, so server requests and the client's own commands never tangle. A call from
/// the session thread itself is refused (EDEADLK): QEMU serves these requests from its main loop
/// while a vCPU waiting on a reply holds the big lock, so a reply that waits on a DMA message
/// would deadlock it until its 5-second timeout.
final class SessionDMAChannel: DMAMessageChannel, @unchecked Sendable { // All mutable state under `lock`.
    private let sender: MessageSender
    private let name: String
    private let lock = ConditionLock()
    private var sent = 0
    private let timeoutMilliseconds: Int
    private var pending: [UInt16: Pending] = [:]
    private var nextID: UInt16 = 0
    private var closed = false
    /// nil until the probe (or the configuration) said.
    private var _layout: DMATransferLayout?
    private var _maxTransferSize = 1 << 20
    var sessionThread: pthread_t?
    /// Keeps the session's socket serviced while the session thread waits (set by the session).
    var pump: ((_ until: () -> Bool, _ milliseconds: Int) -> Bool)?

    private final class Pending {
        let id: UInt16
        let command: Command
        var reply: (MessageHeader, [UInt8])?
        init(id: UInt16, command: Command) {
            self.id = id
            self.command = command
        }
    }

    /// How long a device thread spins for its reply before it sleeps.
    private var replyPoll: AdaptivePoll

    init(sender: MessageSender, timeoutMilliseconds: Int, name: String, poll: PollPolicy = .off) {
        self.sender = sender
        self.name = name
        self.timeoutMilliseconds = timeoutMilliseconds
        replyPoll = AdaptivePoll(poll)
    }

    /// `layout` nil: find out with the probe at the first message.
    func configure(layout: DMATransferLayout?, maxTransferSize: Int) {
        lock.withLock {
            _layout = layout
            _maxTransferSize = maxTransferSize
        }
    }

    /// The layout in use, as far as known (the tracer's view; `.spec` before the probe).
    var layout: DMATransferLayout { lock.withLock { _layout } ?? .spec }

    /// The client's layout, probing it the first time.
    private func resolvedLayout(probing address: UInt64) throws(DMAError) -> DMATransferLayout {
        if let known = lock.withLock({ _layout }) { return known }
        let (header, payload) = try send(.dmaWrite, address: address, count: 0, data: UnsafeRawBufferPointer(start: nil, count: 0),
                                         layout: .qemu) // the 32-byte form: a valid message in either layout
        let detected: DMATransferLayout = header.flags.contains(.error) || payload.count >= 16 ? .spec : .qemu
        let first = lock.withLock { () -> Bool in
            guard _layout == nil else { return false }
            _layout = detected
            return true
        }
        if first { ServerLog.info("\(name): message-mode DMA: the client speaks the \(detected == .spec ? "spec's" : "older QEMU") DMA_READ/WRITE layout") }
        return detected
    }
    var maxTransferSize: Int { lock.withLock { _maxTransferSize } }

    func read(_ pieces: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)]) throws(DMAError) {
        guard let first = pieces.first else { return }
        let layout = try resolvedLayout(probing: first.address)
        var submitted: [Pending] = []
        submitted.reserveCapacity(pieces.count)
        // After a failure nothing more is awaited: the replies still due are dropped as they come.
        defer { lock.withLock { for entry in submitted { pending.removeValue(forKey: entry.id) } } }
        for piece in pieces {
            submitted.append(try submit(.dmaRead, address: piece.address, count: piece.buffer.count, data: nil, layout: layout))
        }
        for (piece, entry) in zip(pieces, submitted) {
            let (header, payload) = try checked(.dmaRead, try awaitReply(entry))
            // QEMU: data at payload offset 12 (its struct is 32 bytes with tail padding); spec: at 16.
            let dataOffset = layout.fixedSize
            guard payload.count >= dataOffset + piece.buffer.count else {
                throw .channel(.ioError, "DMA_READ reply #\(header.id) has \(payload.count) payload bytes for \(piece.buffer.count)")
            }
            try checkEcho(payload, address: piece.address, count: piece.buffer.count, layout: layout)
            payload.withUnsafeBytes { raw in
                piece.buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[dataOffset ..< dataOffset + piece.buffer.count]))
            }
        }
    }

    func write(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        let layout = try resolvedLayout(probing: address)
        let (_, payload) = try exchange(.dmaWrite, address: address, count: data.count, data: data, layout: layout)
        // The older QEMU layout answers header-only; the spec's reply echoes address and count.
        if layout == .spec { try checkEcho(payload, address: address, count: data.count, layout: layout) }
    }

    func post(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        let layout = try resolvedLayout(probing: address)
        _ = try send(.dmaWrite, address: address, count: data.count, data: data, layout: layout, posted: true)
    }

    private func checkEcho(_ payload: [UInt8], address: UInt64, count: Int, layout: DMATransferLayout) throws(DMAError) {
        let echo: DMATransferHeader? = payload.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return try? DMATransferHeader(decoding: &reader, layout: layout)
        }
        guard let echo, echo.address == address, echo.count == UInt64(count) else {
            throw .channel(.ioError, "DMA reply does not echo address 0x\(String(address, radix: 16)) count \(count)")
        }
    }

    /// Sends one request and waits for its reply; an error reply throws.
    private func exchange(_ command: Command, address: UInt64, count: Int, data: UnsafeRawBufferPointer?,
                          layout: DMATransferLayout) throws(DMAError) -> (MessageHeader, [UInt8]) {
        try checked(command, try send(command, address: address, count: count, data: data, layout: layout))
    }

    private func checked(_ command: Command, _ reply: (MessageHeader, [UInt8])) throws(DMAError) -> (MessageHeader, [UInt8]) {
        if reply.0.flags.contains(.error) {
            throw .channel(Errno(rawValue: CInt(bitPattern: reply.0.error)), "client refused \(command) #\(reply.0.id)")
        }
        return reply
    }

    /// Sends one request and waits for its reply, error replies included; a posted one (No_reply)
    /// returns once sent, with no reply.
    private func send(_ command: Command, address: UInt64, count: Int, data: UnsafeRawBufferPointer?,
                      layout: DMATransferLayout, posted: Bool = false) throws(DMAError) -> (MessageHeader, [UInt8]) {
        let entry = try submit(command, address: address, count: count, data: data, layout: layout, posted: posted)
        if posted { return (MessageHeader(id: entry.id, command: command, messageSize: UInt32(MessageHeader.size)), []) }
        return try awaitReply(entry)
    }

    /// Sends one request; unless it is posted, its reply is then awaited with `awaitReply`.
    private func submit(_ command: Command, address: UInt64, count: Int, data: UnsafeRawBufferPointer?,
                        layout: DMATransferLayout, posted: Bool = false) throws(DMAError) -> Pending {
        if let sessionThread, pthread_equal(sessionThread, pthread_self()) != 0 {
            throw .channel(Errno(rawValue: EDEADLK), "message-mode DMA from the session thread")
        }
        let entry: Pending = try lock.withLock { () throws(DMAError) in
            guard !closed else { throw .channel(.socketNotConnected, "client gone") }
            sent += 1
            nextID &+= 1
            let entry = Pending(id: nextID, command: command)
            if !posted { pending[nextID] = entry }
            return entry
        }
        var writer = ByteWriter(capacity: 64 + (data?.count ?? 0))
        // In the older QEMU layout the struct is 32 bytes (`size >= 32`, a write's `count <= size - 32`):
        // 4 bytes of tail padding follow the data.
        let padding = layout == .qemu ? 4 : 0
        let payloadSize = layout.fixedSize + (data?.count ?? 0) + padding
        MessageHeader(id: entry.id, command: command, messageSize: UInt32(MessageHeader.size + payloadSize),
                      flags: posted ? [.noReply] : []).encode(into: &writer)
        DMATransferHeader(address: address, count: UInt64(count)).encode(into: &writer, layout: layout)
        if let data { writer.write(data) }
        writer.writeZeros(padding)
        do {
            try writer.withUnsafeBytes { bytes throws(TransportError) in try sender.send(bytes) }
        } catch {
            _ = lock.withLock { pending.removeValue(forKey: entry.id) }
            throw .channel(error.errno, "\(error)")
        }
        return entry
    }

    /// Waits for the reply to a request `submit` sent, error replies included.
    private func awaitReply(_ entry: Pending) throws(DMAError) -> (MessageHeader, [UInt8]) {
        // Spinning for a reply that comes soon spares the wake-up: one per round trip.
        _ = lock.withLock { replyPoll }.spin { lock.withLock { entry.reply != nil || closed } }
        let reply: (MessageHeader, [UInt8])? = lock.withLock {
            if entry.reply == nil && !closed {
                let deadline = monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
                replyPoll.sleep {
                    while entry.reply == nil && !closed {
                        let now = monotonicNanoseconds()
                        if now >= deadline { break }
                        lock.wait(milliseconds: Int((deadline - now) / 1_000_000) + 1)
                    }
                }
            }
            pending.removeValue(forKey: entry.id)
            return entry.reply
        }
        guard let reply else {
            throw .channel(closed ? .socketNotConnected : .timedOut, "no reply to \(entry.command) #\(entry.id)")
        }
        return reply
    }

    func waitServicing(until condition: () -> Bool, milliseconds: Int) -> Bool {
        if let sessionThread, pthread_equal(sessionThread, pthread_self()) != 0, let pump {
            return pump(condition, milliseconds)
        }
        return pollUntil(condition, milliseconds: milliseconds)
    }

    /// Called by the session thread with a reply it read.
    func deliver(_ header: MessageHeader, _ payload: UnsafeRawBufferPointer) {
        lock.withLock {
            guard let entry = pending[header.id], header.command == .dmaRead || header.command == .dmaWrite else {
                ServerLog.warning("unexpected reply #\(header.id) \(header.command) from the client, dropped")
                return
            }
            entry.reply = (header, Array(payload))
            lock.broadcast()
        }
    }

    /// DMA_READ/DMA_WRITE messages sent so far.
    var messagesSent: Int { lock.withLock { sent } }

    /// The client went away: every waiter fails with ENOTCONN.
    func close() {
        lock.withLock {
            closed = true
            lock.broadcast()
        }
    }
}
