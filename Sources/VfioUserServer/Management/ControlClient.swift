import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The other end of the control socket: sends one request line, reads one reply line. Used by the
/// executable's `types`, `list`, `start` and `stop`, and by tests.
public final class ControlClient {
    private let socket: OwnedFileDescriptor
    private var pending: [UInt8] = []

    public init(path: String) throws(ManagementError) {
        do throws(TransportError) { socket = try UnixSocket.connect(path: path) } catch {
            throw ManagementError(error.errno, "cannot reach the server's control socket \(path): \(error.errno.name) (is the server running? see --control)")
        }
    }

    /// Sends `request` and returns the reply's members; a reply with `"ok":false` is thrown.
    public func send(_ request: ManagementRequest) throws(ManagementError) -> JSONValue {
        let reply = try exchange(request.json.text)
        if let error = ManagementError(reply: reply) { throw error }
        return reply
    }

    /// Sends one raw line (no newline) and parses the reply line, whatever it says.
    public func exchange(_ line: String) throws(ManagementError) -> JSONValue {
        do throws(TransportError) {
            try MessageSender(socket: socket.descriptor).send(Array((line + "\n").utf8))
        } catch {
            throw ManagementError(error.errno, "sending to the control socket: \(error)")
        }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                do throws(JSONError) { return try JSONValue(parsing: text) } catch {
                    throw ManagementError(.ioError, "the server's reply is not JSON: \(error)")
                }
            }
            let count = chunk.withUnsafeMutableBytes { Glibc.recv(socket.rawValue, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw ManagementError(.connectionReset, "the server closed the control connection") }
            pending += chunk[..<count]
        }
    }
}
