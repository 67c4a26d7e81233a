import CLinux
import Support
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Frames vfio-user messages out of a stream socket, with the fds that came with them.
///
/// One `recvmsg` takes as many bytes as the socket holds (up to the buffer), so a run of posted
/// writes costs one system call, not two per message; messages split across reads are reassembled.
///
/// File descriptors: the spec says they arrive with the header bytes of their message. Linux's
/// AF_UNIX stream code ends a `recvmsg` right after the first segment that carries fds, so in a
/// batched read the fds belong to the *last* message that starts in the bytes just read (checked on
/// this kernel: `'AAAA' + 'BBBB'(fd)` arrive together with the fd, `'CCCC'` in the next read). This
/// holds when each message with fds is one `sendmsg`, which QEMU (one `writev` per message),
/// libvfio-user and our client all do.
public final class MessageReceiver {
    /// A framed message. `payload` points into the receiver's buffer and is valid only until the
    /// next call to `receive()`.
    public struct Message {
        public let header: MessageHeader
        public let payload: UnsafeRawBufferPointer
        /// The fds that came with the message; whatever the handler does not keep is closed.
        public var fds: [OwnedFileDescriptor]
        /// The message was larger than `maxMessageSize`: its payload was dropped, not buffered.
        public let isOversized: Bool
        /// The sender passed more fds than the control buffer holds; the kernel dropped some.
        public let fdsTruncated: Bool
    }

    /// The most fds one `sendmsg` can carry on Linux (SCM_MAX_FD).
    public static let maxFDsPerMessage = 253

    public let socket: FileDescriptor
    public let maxMessageSize: Int

    private var storage: UnsafeMutableRawBufferPointer
    private var head = 0
    private var tail = 0
    /// Stream offset of `storage[0]`: message starts are remembered as stream offsets.
    private var streamBase: UInt64 = 0
    /// Bytes of an oversized message still to be dropped.
    private var discard = 0
    private var pendingFDs: [(offset: UInt64, fds: [OwnedFileDescriptor], truncated: Bool)] = []
    private let control: UnsafeMutableRawBufferPointer
    /// Fds that arrived with no message starting in their read (a protocol violation); closed.
    public private(set) var strayFDCount = 0
    /// System calls made, for the benchmarks' "messages per read" figure.
    public private(set) var readCalls = 0

    /// How long to spin on the socket before sleeping until it is readable (off unless asked).
    private var polling: AdaptivePoll

    public init(socket: FileDescriptor, maxMessageSize: Int, initialCapacity: Int = 64 * 1024, poll: PollPolicy = .off) {
        self.socket = socket
        self.maxMessageSize = max(maxMessageSize, MessageHeader.size)
        polling = AdaptivePoll(poll)
        storage = .allocate(byteCount: max(initialCapacity, 256), alignment: 16)
        control = .allocate(byteCount: clinux_cmsg_space(MemoryLayout<CInt>.size * Self.maxFDsPerMessage), alignment: 16)
    }

    deinit {
        storage.deallocate()
        control.deallocate()
    }

    /// Bytes received but not yet handed out as messages.
    public var bufferedByteCount: Int { tail - head }

    /// Whether `receive()` would return without blocking for at least the first read: a whole
    /// header is buffered, or the socket becomes readable within `milliseconds` (-1: forever).
    public func waitReadable(milliseconds: Int32) throws(TransportError) -> Bool {
        if tail - head >= MessageHeader.size && discard == 0 { return true }
        var descriptor = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&descriptor, 1, milliseconds)
            if ready >= 0 { return ready > 0 }
            if errno != EINTR { throw UnixSocket.lastError("poll") }
        }
    }

    /// The next message; nil when the peer closed the connection cleanly between messages.
    /// Throws `.closed` when it closed in the middle of one, `.framing` when a size field is below 16.
    public func receive() throws(TransportError) -> Message? {
        while true {
            if discard > 0 {
                let dropped = min(discard, tail - head)
                head += dropped
                discard -= dropped
                if discard > 0 {
                    guard try fill(needing: 1) else { throw .closed }
                    continue
                }
            }
            let available = tail - head
            if available >= MessageHeader.size {
                var reader = ByteReader(UnsafeRawBufferPointer(rebasing: storage[head ..< head + MessageHeader.size]))
                let header = try! MessageHeader(decoding: &reader) // 16 bytes are there: cannot fail
                let size = Int(header.messageSize)
                guard size >= MessageHeader.size else {
                    throw .framing("message \(header.id) (\(header.command)) has size \(size), below the 16-byte header")
                }
                let start = streamBase + UInt64(head)
                if size > maxMessageSize {
                    let (fds, truncated) = takeFDs(forMessageAt: start)
                    head += MessageHeader.size
                    discard = size - MessageHeader.size
                    return Message(header: header, payload: UnsafeRawBufferPointer(start: nil, count: 0), fds: fds,
                                   isOversized: true, fdsTruncated: truncated)
                }
                if available >= size {
                    let payload = UnsafeRawBufferPointer(rebasing: storage[head + MessageHeader.size ..< head + size])
                    let (fds, truncated) = takeFDs(forMessageAt: start)
                    head += size
                    return Message(header: header, payload: payload, fds: fds, isOversized: false, fdsTruncated: truncated)
                }
                guard try fill(needing: size) else { throw .closed }
            } else {
                guard try fill(needing: MessageHeader.size) else {
                    if available == 0 { return nil }
                    throw .closed
                }
            }
        }
    }

    /// Makes room for a message of `needed` bytes starting at `head`, then reads once.
    /// Returns false at end of stream.
    private func fill(needing needed: Int) throws(TransportError) -> Bool {
        if head == tail {
            streamBase += UInt64(head)
            head = 0
            tail = 0
        }
        if storage.count - head < needed || storage.count - tail < 4096 {
            compact()
            if storage.count < needed { grow(to: needed) }
        }
        return try read()
    }

    private func compact() {
        guard head > 0 else { return }
        let live = tail - head
        if live > 0 {
            storage.baseAddress!.copyMemory(from: storage.baseAddress! + head, byteCount: live)
        }
        streamBase += UInt64(head)
        head = 0
        tail = live
    }

    private func grow(to needed: Int) {
        var capacity = storage.count
        while capacity < needed { capacity *= 2 }
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        bigger.baseAddress!.copyMemory(from: storage.baseAddress! + head, byteCount: tail - head)
        storage.deallocate()
        storage = bigger
        streamBase += UInt64(head)
        tail -= head
        head = 0
    }

    private func read() throws(TransportError) -> Bool {
        let oldTail = tail
        var iov = iovec(iov_base: storage.baseAddress! + tail, iov_len: storage.count - tail)
        var message = msghdr()
        var received = 0
        withUnsafeMutablePointer(to: &iov) { iovPointer in
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            message.msg_control = control.baseAddress
            received = receive(&message)
        }
        readCalls += 1
        if received < 0 {
            if errno == ECONNRESET { return false }
            throw UnixSocket.lastError("recvmsg")
        }
        if received == 0 { return false }
        tail += received
        let fds = collectFDs(&message)
        if !fds.isEmpty || message.msg_flags & CInt(MSG_CTRUNC) != 0 {
            attribute(fds, truncated: message.msg_flags & CInt(MSG_CTRUNC) != 0, readFrom: oldTail)
        }
        return true
    }

    /// One `recvmsg`: first spinning through the poll window, if open, then sleeping.
    private func receive(_ message: inout msghdr) -> Int {
        var received = -1
        /// One read that does not block; true once it got bytes, end of stream or an error.
        func attempt() -> Bool {
            message.msg_controllen = control.count
            received = recvmsg(socket.rawValue, &message, CInt(MSG_CMSG_CLOEXEC | MSG_DONTWAIT))
            return received >= 0 || (errno != EAGAIN && errno != EINTR)
        }
        if polling.spin(until: attempt) { return received }
        // Sleeps in poll(POLLIN), not in a blocking recvmsg: a reader blocked in recvmsg is also
        // woken each time the peer reads what this socket sent (the kernel's write-space wake-up
        // is not filtered by event), a useless wake-up per reply; poll's wait filters it out.
        return polling.sleep {
            var descriptor = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
            while true {
                if poll(&descriptor, 1, -1) < 0, errno != EINTR { return -1 }
                if attempt() { return received }
            }
        }
    }

    private func collectFDs(_ message: inout msghdr) -> [OwnedFileDescriptor] {
        var fds: [OwnedFileDescriptor] = []
        var header = clinux_cmsg_firsthdr(&message)
        while let cmsg = header {
            if cmsg.pointee.cmsg_level == SOL_SOCKET, cmsg.pointee.cmsg_type == CInt(SCM_RIGHTS) {
                let bytes = Int(cmsg.pointee.cmsg_len) - clinux_cmsg_len(0)
                let data = UnsafeRawPointer(clinux_cmsg_data(cmsg)!)
                for i in 0..<(bytes / MemoryLayout<CInt>.size) {
                    let fd = data.loadUnaligned(fromByteOffset: i * MemoryLayout<CInt>.size, as: CInt.self)
                    fds.append(OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd)))
                }
            }
            header = clinux_cmsg_nxthdr(&message, cmsg)
        }
        return fds
    }

    /// Gives the fds of the read that ended at `tail` to the last message starting in it.
    private func attribute(_ fds: [OwnedFileDescriptor], truncated: Bool, readFrom oldTail: Int) {
        var position = head + discard
        while position + MessageHeader.size <= tail {
            let size = Int(UnsafeRawBufferPointer(storage).littleEndian(at: position + 4, as: UInt32.self))
            guard size >= MessageHeader.size, position + size < tail else { break }
            position += size
        }
        guard position >= oldTail, position < tail else {
            strayFDCount += fds.count
            return // no message starts in these bytes: the fds are closed as they go out of scope
        }
        pendingFDs.append((streamBase + UInt64(position), fds, truncated))
    }

    private func takeFDs(forMessageAt offset: UInt64) -> ([OwnedFileDescriptor], Bool) {
        guard !pendingFDs.isEmpty else { return ([], false) }
        pendingFDs.removeAll { $0.offset < offset } // stale: closed
        guard let first = pendingFDs.first, first.offset == offset else { return ([], false) }
        pendingFDs.removeFirst()
        return (first.fds, first.truncated)
    }
}
