import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The server under a service manager, as sd_listen_fds(3) and sd_notify(3) describe it: its socket
/// comes as fd 3 with LISTEN_FDS=1 and LISTEN_PID set to its own pid, and it reports on the
/// datagram socket NOTIFY_SOCKET names.
@Suite("systemd")
struct SystemdTests {
    /// A datagram socket at `path`, as the service manager listens on.
    static func notificationSocket(_ path: String) throws -> OwnedFileDescriptor {
        let fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        return OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
    }

    /// The next notification, waiting up to 5 s; nil if none came.
    static func nextNotification(_ socket: OwnedFileDescriptor) -> String? {
        var poller = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 5000) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(socket.rawValue, $0.baseAddress, $0.count, 0) }
        return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
    }

    @Test func aSocketFromLISTENFDSIsServedAndReadinessIsReported() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/activated.sock", notify = directory.path + "/notify"
        let listener = try UnixSocket.listen(path: path)
        let notifications = try Self.notificationSocket(notify)
        // LISTEN_PID must be the server's own pid: a shell exports its own and becomes the server.
        let server = try ServerProcess(arguments: ["-c", "LISTEN_PID=$$ LISTEN_FDS=1 NOTIFY_SOCKET=\(notify) exec \"$0\" serve --type mtty-2 --no-control --socket-dir \(directory.path)",
                                                   ServerProcess.executable],
                                       inheriting: listener, serverOptions: false, program: "/bin/sh")
        let ready = try #require(Self.nextNotification(notifications), "no notification: \(server.errors)")
        #expect(ready.split(separator: "\n").first == "READY=1", "\(ready)")
        #expect(server.output.contains("on the inherited listening socket fd 3"), "\(server.output)")
        let client = try VfioUserClient(path: path)
        try client.negotiate()
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348, "the mtty sample's vendor id through the socket")
        kill(server.pid, SIGTERM)
        #expect(Self.nextNotification(notifications) == "STOPPING=1")
        #expect(server.waitForExit(milliseconds: 5000) == 0)
    }

    @Test func socketsForAnotherProcessAreLeftAlone() throws {
        // LISTEN_PID of another process: not this server's sockets; it serves its own path.
        let directory = TemporaryDirectory()
        let server = try ServerProcess(arguments: ["-c", "LISTEN_PID=1 LISTEN_FDS=1 exec \"$0\" serve --type mtty-1 --socket-path \(directory.path)/own.sock --no-control --socket-dir \(directory.path)",
                                                   ServerProcess.executable], serverOptions: false, waitFor: directory.path + "/own.sock", program: "/bin/sh")
        #expect(access(directory.path + "/own.sock", F_OK) == 0, "\(server.errors)")
        #expect(!server.hasExited)
    }

    @Test func moreThanOneSocketIsRefused() throws {
        let result = try ServerProcess.run(["-c", "LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" serve --type mtty-1 --no-control", ServerProcess.executable],
                                           program: "/bin/sh")
        #expect(result.status != 0)
        #expect(result.errors.contains("systemd passed 2 sockets"), "\(result.errors)")
    }
}
