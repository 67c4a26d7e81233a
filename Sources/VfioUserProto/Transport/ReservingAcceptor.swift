import Support
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Accepts on a listening socket while keeping one fd in reserve. When the process is out of fds
/// (EMFILE, ENFILE) a client would otherwise wait in the backlog with no answer, and the listener
/// would stay readable, so a poll loop would spin. Instead the reserve is given up to accept that
/// client, so the caller can tell it why (its errno) and close it. The reserve is taken back by
/// `restoreReserve` once that client is closed; until then the listener is best left unpolled.
public final class ReservingAcceptor: @unchecked Sendable { // Made by one thread, then used by the accepting thread alone.
    public enum Outcome {
        /// A client to serve.
        case accepted(OwnedFileDescriptor)
        /// A client accepted with the reserve: answer it with `errno` and close it.
        case outOfDescriptors(OwnedFileDescriptor, Errno)
        /// Out of fds with the reserve already spent: nothing accepted.
        case exhausted(Errno)
    }

    public let listener: OwnedFileDescriptor
    private var reserve: OwnedFileDescriptor?

    public init(listener: OwnedFileDescriptor) {
        self.listener = listener
        reserve = try? OwnedFileDescriptor.eventfd()
    }

    /// Whether the reserve is held (a client can be answered even out of fds).
    public var holdsReserve: Bool { reserve != nil }

    /// Takes the reserve back when it was spent, once the client it accepted is closed (or tries
    /// to: the fd that freed may be taken by someone else already). Nothing when it is held.
    public func restoreReserve() {
        if reserve == nil { reserve = try? OwnedFileDescriptor.eventfd() }
    }

    /// Accepts one client. Errors other than running out of fds are thrown (EINVAL once the
    /// listener is shut down).
    public func accept() throws(TransportError) -> Outcome {
        restoreReserve()
        do throws(TransportError) {
            return .accepted(try UnixSocket.accept(listener))
        } catch {
            guard error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem else { throw error }
            guard reserve != nil else { return .exhausted(error.errno) }
            // accept(2) wants a free fd before it looks for a client: the reserve is given up only
            // once one is waiting (or the listener is shut down, which the next accept reports).
            var descriptor = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
            while poll(&descriptor, 1, -1) < 0 && errno == EINTR {}
            reserve = nil
            do throws(TransportError) {
                return .outOfDescriptors(try UnixSocket.accept(listener), error.errno)
            } catch {
                restoreReserve()
                throw error
            }
        }
    }
}
