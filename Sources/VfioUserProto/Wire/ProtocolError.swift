import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Anything that can become the errno of a vfio-user error reply.
///
/// Each layer has its own error type (protocol, region emulation, DMA, session); all of them
/// conform so that the session turns whatever a handler threw into the right reply.
public protocol ErrnoConvertible: Error {
    var errno: Errno { get }
}

/// A message that does not follow the wire format.
public enum ProtocolError: ErrnoConvertible, Equatable, CustomStringConvertible {
    /// The payload ended before a field: EINVAL, as libvfio-user answers a short payload.
    case truncated(needed: Int, available: Int)
    /// A field holds a value the spec does not allow.
    case invalid(String)
    /// A well-formed request for something this server does not do.
    case unsupported(String)
    /// The capabilities JSON of VERSION is not acceptable.
    case badCapabilities(String)

    public var errno: Errno {
        switch self {
        case .truncated, .invalid, .badCapabilities: .invalidArgument
        case .unsupported: .notSupported
        }
    }

    public var description: String {
        switch self {
        case let .truncated(needed, available): "truncated payload: needed \(needed) bytes, \(available) left"
        case let .invalid(why): why
        case let .unsupported(what): "unsupported: \(what)"
        case let .badCapabilities(why): "bad capabilities: \(why)"
        }
    }
}

