import Support
import SystemPackage
import VfioUserProto

/// A SET_IRQS request the interrupt engine refuses.
public enum InterruptError: ErrnoConvertible, Equatable, CustomStringConvertible {
    /// Malformed or out of range: EINVAL, as the kernel and libvfio-user answer.
    case invalid(String)
    /// A well-formed action this index does not implement: ENOTTY, the kernel's answer
    /// (e.g. MASK with an eventfd).
    case notImplemented(String)
    /// The process ran out of something the request needs (EMFILE, ENOMEM, EAGAIN).
    case outOfResources(Errno, String)

    /// The errno the SET_IRQS reply carries.
    public var errno: Errno {
        switch self {
        case .invalid: .invalidArgument
        case .notImplemented: .inappropriateIOCTLForDevice
        case let .outOfResources(errno, _): errno
        }
    }

    public var description: String {
        switch self {
        case let .invalid(why): why
        case let .notImplemented(what): "not implemented: \(what)"
        case let .outOfResources(errno, what): "\(what): \(errno.name)"
        }
    }
}
