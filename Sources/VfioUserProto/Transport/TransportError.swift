import Support
import SystemPackage

/// Why a connection cannot go on.
public enum TransportError: ErrnoConvertible, Equatable, CustomStringConvertible {
    /// The peer closed the connection (at a message boundary or in the middle of one).
    case closed
    /// The byte stream cannot be framed any more (a size field below 16): unrecoverable.
    case framing(String)
    /// A system call failed.
    case system(Errno, String)

    public var errno: Errno {
        switch self {
        case .closed: .socketNotConnected
        case .framing: .invalidArgument
        case let .system(errno, _): errno
        }
    }

    public var description: String {
        switch self {
        case .closed: "connection closed by peer"
        case let .framing(why): "framing error: \(why)"
        case let .system(errno, call): "\(call): \(errno.name) (\(errno))"
        }
    }
}
