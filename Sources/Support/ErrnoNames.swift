import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Symbolic errno names, as replies, logs and the control socket spell them.
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
