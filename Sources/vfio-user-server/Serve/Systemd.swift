#if canImport(Glibc)
import Glibc
#endif

/// How systemd hands a service its sockets and hears that it is ready (sd_listen_fds(3),
/// sd_notify(3)), without libsystemd: both are a few environment variables and one datagram.
enum Systemd {
    /// The listening sockets systemd passed (fds 3, 4, …) when LISTEN_PID names this process. The
    /// variables are removed either way, so that no child takes them for its own.
    static func takeListenFDs() -> [CInt] {
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pid = environment("LISTEN_PID").flatMap(pid_t.init), pid == getpid(),
              let count = environment("LISTEN_FDS").flatMap(CInt.init), count > 0 else { return [] }
        return (0..<count).map { 3 + $0 }
    }

    /// The notification socket, taken from the environment once (workers do not inherit it).
    private static let notifySocket: String? = {
        defer { unsetenv("NOTIFY_SOCKET") }
        return environment("NOTIFY_SOCKET")
    }()

    /// Reads NOTIFY_SOCKET now; call before any child process is started.
    static func takeNotifySocket() { _ = notifySocket }

    /// Sends `state` ("READY=1", "STOPPING=1", "STATUS=…") to the service manager; nothing when
    /// not run by one. A path starting with "@" is in the abstract namespace.
    static func notify(_ state: String) {
        guard let path = notifySocket, !path.isEmpty else { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        var message = Array(state.utf8)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, &message, message.count, CInt(MSG_NOSIGNAL), $0, length) }
        }
    }

    private static func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}
