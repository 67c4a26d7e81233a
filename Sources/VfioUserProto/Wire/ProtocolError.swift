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

extension Errno {
    private static let names: [(Errno, String)] = [
        (Errno(rawValue: Glibc.EPERM), "EPERM"),
        (Errno(rawValue: Glibc.ENOENT), "ENOENT"),
        (Errno(rawValue: Glibc.ESRCH), "ESRCH"),
        (Errno(rawValue: Glibc.EIO), "EIO"),
        (Errno(rawValue: Glibc.ENXIO), "ENXIO"),
        (Errno(rawValue: Glibc.E2BIG), "E2BIG"),
        (Errno(rawValue: Glibc.EBADF), "EBADF"),
        (Errno(rawValue: Glibc.ENOMEM), "ENOMEM"),
        (Errno(rawValue: Glibc.EACCES), "EACCES"),
        (Errno(rawValue: Glibc.EFAULT), "EFAULT"),
        (Errno(rawValue: Glibc.EBUSY), "EBUSY"),
        (Errno(rawValue: Glibc.EEXIST), "EEXIST"),
        (Errno(rawValue: Glibc.ENODEV), "ENODEV"),
        (Errno(rawValue: Glibc.EINVAL), "EINVAL"),
        (Errno(rawValue: Glibc.EMFILE), "EMFILE"),
        (Errno(rawValue: Glibc.ENOTTY), "ENOTTY"),
        (Errno(rawValue: Glibc.ENOSPC), "ENOSPC"),
        (Errno(rawValue: Glibc.EPIPE), "EPIPE"),
        (Errno(rawValue: Glibc.EDOM), "EDOM"),
        (Errno(rawValue: Glibc.ERANGE), "ERANGE"),
        (Errno(rawValue: Glibc.EAGAIN), "EAGAIN"),
        (Errno(rawValue: Glibc.ENOTSUP), "ENOTSUP"),
        (Errno(rawValue: Glibc.ECONNRESET), "ECONNRESET"),
        (Errno(rawValue: Glibc.ENOTCONN), "ENOTCONN"),
        (Errno(rawValue: Glibc.ETIMEDOUT), "ETIMEDOUT"),
        (Errno(rawValue: Glibc.ENOSYS), "ENOSYS"),
        (Errno(rawValue: Glibc.EOVERFLOW), "EOVERFLOW"),
        (Errno(rawValue: Glibc.ENOTDIR), "ENOTDIR"),
        (Errno(rawValue: Glibc.EADDRINUSE), "EADDRINUSE"),
        (Errno(rawValue: Glibc.ESHUTDOWN), "ESHUTDOWN"),
        (Errno(rawValue: Glibc.ENODATA), "ENODATA"),
        (Errno(rawValue: Glibc.ENFILE), "ENFILE"),
        (Errno(rawValue: Glibc.ENAMETOOLONG), "ENAMETOOLONG"),
    ]

    /// The symbolic name (`EINVAL`), for traces and human-readable output.
    public var name: String {
        Errno.names.first { $0.0 == self }?.1 ?? "errno \(rawValue)"
    }

    /// The errno for a symbolic name, as written in traces.
    public init?(name: String) {
        guard let hit = Errno.names.first(where: { $0.1 == name }) else { return nil }
        self = hit.0
    }
}
