import SystemPackage
import VfioUserProto

/// A request the session refuses before it reaches the device.
enum SessionError: ErrnoConvertible, CustomStringConvertible {
    /// Wrong payload size, argsz, flags or fds for the command: EINVAL.
    case malformed(String)
    /// A command other than VERSION before negotiation, or VERSION twice: EINVAL.
    case outOfOrder(String)
    /// Not a command a client may send (or one this server does not implement): EINVAL,
    /// as libvfio-user answers unknown commands.
    case unknownCommand(Command)
    /// Negotiation failed: the error reply is sent and the connection closed.
    case negotiationFailed(Errno, String)
    /// A device feature this device does not have: ENOTTY, the kernel's answer.
    case unsupported(String)
    /// The server ran out of something the message needs (fds: EMFILE).
    case outOfResources(Errno, String)

    var errno: Errno {
        switch self {
        case .malformed, .outOfOrder, .unknownCommand: .invalidArgument
        case let .negotiationFailed(errno, _): errno
        case .unsupported: .inappropriateIOCTLForDevice
        case let .outOfResources(errno, _): errno
        }
    }

    var description: String {
        switch self {
        case let .malformed(why): why
        case let .outOfOrder(why): why
        case let .unknownCommand(command): "\(command) is not a command a client may send"
        case let .negotiationFailed(_, why): "negotiation failed: \(why)"
        case let .unsupported(what): what
        case let .outOfResources(_, what): what
        }
    }
}
