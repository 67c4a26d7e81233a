import Support
import SystemPackage

/// Why a client request failed.
public enum ClientError: ErrnoConvertible, Equatable, CustomStringConvertible {
    /// The server answered with an error reply.
    case errorReply(Command, Errno)
    case transport(TransportError)
    case protocolViolation(String)
    case decoding(ProtocolError)
    case timedOut(Command)

    public var errno: Errno {
        switch self {
        case let .errorReply(_, errno): errno
        case let .transport(error): error.errno
        case .protocolViolation: .ioError
        case let .decoding(error): error.errno
        case .timedOut: .timedOut
        }
    }

    public var description: String {
        switch self {
        case let .errorReply(command, errno): "\(command) failed: \(errno.name) (\(errno))"
        case let .transport(error): error.description
        case let .protocolViolation(why): "protocol violation: \(why)"
        case let .decoding(error): "undecodable reply: \(error)"
        case let .timedOut(command): "\(command): no reply in time"
        }
    }
}
