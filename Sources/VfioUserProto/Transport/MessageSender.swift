import CLinux
import Support
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
            let rest = UnsafeRawBufferPointer(start: bytes.baseAddress.map { $0 + offset }, count: bytes.count - offset)
            var sent: Int
            repeat {
                // fds ride on the first byte; without any, send(2) takes the buffer directly (no
                // message header and iovec for the kernel to copy in: most replies, every round trip).
                sent = first && !fds.isEmpty ? sendWithFDs(rest, fds) : Glibc.send(socket.rawValue, rest.baseAddress, rest.count, CInt(MSG_NOSIGNAL))
            } while sent < 0 && errno == EINTR
            if sent < 0 {
                if errno == EPIPE || errno == ECONNRESET { throw .closed }
                throw UnixSocket.lastError("send")
            }
            first = false
            offset += sent
            if bytes.isEmpty { break }
        }
    }

    /// One sendmsg of `bytes` with `fds` as SCM_RIGHTS.
    private func sendWithFDs(_ bytes: UnsafeRawBufferPointer, _ fds: [FileDescriptor]) -> Int {
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        var message = msghdr()
        let controlSize = clinux_cmsg_space(MemoryLayout<CInt>.size * fds.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            return withUnsafeTemporaryAllocation(byteCount: controlSize, alignment: 16) { control in
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
                return sendmsg(socket.rawValue, &message, CInt(MSG_NOSIGNAL))
            }
        }
    }
}
