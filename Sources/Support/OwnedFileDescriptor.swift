import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// A file descriptor with exactly one owner: it is closed when the last reference goes away.
///
/// Fds arrive with messages (SCM_RIGHTS) wrapped in this type, so a handler that does not keep
/// one lets it close, and no path can leak one. A holder that needs the fd beyond the message keeps
/// the reference (the interrupt engine keeps eventfds this way).
public final class OwnedFileDescriptor: Sendable, CustomStringConvertible {
    /// The fd, owned by this object: do not close it.
    public let descriptor: FileDescriptor

    /// Takes ownership of `descriptor`.
    public init(taking descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// The fd number, for system calls.
    public var rawValue: CInt { descriptor.rawValue }

    deinit { try? descriptor.close() }

    public var description: String { "fd\(descriptor.rawValue)" }

    /// An eventfd (EFD_CLOEXEC), the way interrupts and notifications are signalled.
    public static func eventfd(nonBlocking: Bool = false) throws(Errno) -> OwnedFileDescriptor {
        let flags = CInt(EFD_CLOEXEC) | (nonBlocking ? CInt(EFD_NONBLOCK) : 0)
        let fd = clinux_eventfd(0, flags)
        guard fd >= 0 else { throw Errno(rawValue: Glibc.errno) }
        return OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
    }

    /// Adds `value` to an eventfd counter: raising an interrupt (spec SET_IRQS, "typical operation").
    public func signalEventfd(_ value: UInt64 = 1) throws(Errno) {
        var v = value
        let n = withUnsafeBytes(of: &v) { Glibc.write(descriptor.rawValue, $0.baseAddress, 8) }
        // EAGAIN means the counter is saturated: the reader has a pending wake-up already.
        guard n == 8 || Glibc.errno == EAGAIN else { throw Errno(rawValue: Glibc.errno) }
    }

    /// Reads and clears an eventfd counter; nil when it is non-blocking and zero.
    public func readEventfd() throws(Errno) -> UInt64? {
        var v: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &v) { Glibc.read(descriptor.rawValue, $0.baseAddress, 8) }
        if n == 8 { return v }
        if Glibc.errno == EAGAIN { return nil }
        throw Errno(rawValue: Glibc.errno)
    }
}
