import CLinux
import Locking
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes whole messages to a stream socket, fds attached to the first byte (so they arrive with
/// the header, as the spec requires), one message at a time.
///
/// Several threads may send on one connection (the session's replies, a device thread's DMA
/// requests): the lock keeps each message contiguous on the wire.
public final class MessageSender: Sendable {
    public let socket: FileDescriptor
    private let lock = Locked<Int>(0)

    public init(socket: FileDescriptor) {
        self.socket = socket
    }

    /// Messages sent so far.
    public var sentCount: Int { lock.withLock { $0 } }

    public func send(_ bytes: UnsafeRawBufferPointer, fds: [FileDescriptor] = []) throws(TransportError) {
        let failure = lock.withLock { (count: inout Int) -> TransportError? in
            do throws(TransportError) {
                try sendLocked(bytes, fds: fds)
                count += 1
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    public func send(_ bytes: [UInt8], fds: [FileDescriptor] = []) throws(TransportError) {
        let failure = bytes.withUnsafeBytes { raw -> TransportError? in
            do throws(TransportError) {
                try send(raw, fds: fds)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    private func sendLocked(_ bytes: UnsafeRawBufferPointer, fds: [FileDescriptor]) throws(TransportError) {
        var offset = 0
        var first = true
        while offset < bytes.count || (first && bytes.isEmpty) {
            var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress.map { $0 + offset }),
                            iov_len: bytes.count - offset)
            var message = msghdr()
            let controlSize = fds.isEmpty || !first ? 0 : clinux_cmsg_space(MemoryLayout<CInt>.size * fds.count)
            let sent: Int = withUnsafeMutablePointer(to: &iov) { iovPointer in
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                return withUnsafeTemporaryAllocation(byteCount: max(controlSize, 1), alignment: 16) { control in
                    if controlSize > 0 {
                        control.initializeMemory(as: UInt8.self, repeating: 0)
                        message.msg_control = control.baseAddress
                        message.msg_controllen = controlSize
                        let cmsg = clinux_cmsg_firsthdr(&message)!
                        cmsg.pointee.cmsg_level = SOL_SOCKET
                        cmsg.pointee.cmsg_type = CInt(SCM_RIGHTS)
                        cmsg.pointee.cmsg_len = clinux_cmsg_len(MemoryLayout<CInt>.size * fds.count)
                        let data = UnsafeMutableRawPointer(clinux_cmsg_data(cmsg)!)
                        for (i, fd) in fds.enumerated() {
                            data.storeBytes(of: fd.rawValue, toByteOffset: i * MemoryLayout<CInt>.size, as: CInt.self)
                        }
                    }
                    var result: Int
                    repeat {
                        result = sendmsg(socket.rawValue, &message, CInt(MSG_NOSIGNAL))
                    } while result < 0 && errno == EINTR
                    return result
                }
            }
            if sent < 0 {
                if errno == EPIPE || errno == ECONNRESET { throw .closed }
                throw UnixSocket.lastError("sendmsg")
            }
            first = false
            offset += sent
            if bytes.isEmpty { break }
        }
    }
}
