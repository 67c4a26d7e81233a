import CLinux
import Support
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// AF_UNIX stream sockets: the only transport vfio-user specifies (spec "Socket"), and the only one
/// that can pass file descriptors.
public enum UnixSocket {
    /// Binds and listens on `path`, created with `permissions` (0600 by default).
    ///
    /// A stale socket file left by a dead server is replaced; a live one (something accepts
    /// connections on it) is an error (EADDRINUSE), and a path that is not a socket is never removed.
    ///
    /// The file appears at `path` only once the socket listens: it is bound under a provisional name
    /// beside it and renamed into place after `listen`, so a client that waits for the file (as
    /// scripts and tests do) never finds it refusing connections (ECONNREFUSED between bind and
    /// listen). Where no provisional name fits in `sun_path`, it is bound at `path` itself.
    public static func listen(path: String, access: SocketAccess = SocketAccess(),
                              backlog: CInt = 16) throws(TransportError) -> OwnedFileDescriptor {
        let permissions = access.permissions
        var address = try socketAddress(path)
        var status = stat()
        if lstat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFSOCK else {
                throw .system(.fileExists, "\(path) exists and is not a socket")
            }
            if (try? connect(path: path)) != nil {
                throw .system(Errno(rawValue: EADDRINUSE), "another server is listening on \(path)")
            }
            unlink(path)
        }
        let socket = try makeSocket()
        // Linux creates the socket file with the socket inode's mode (minus umask): setting it before
        // bind leaves no window in which the file is more open than asked.
        guard fchmod(socket.rawValue, permissions.rawValue) == 0 else { throw lastError("fchmod") }
        let provisional = provisionalPath(path, socket)
        if let provisional {
            address = try socketAddress(provisional)
            if lstat(provisional, &status) == 0 && status.st_mode & S_IFMT == S_IFSOCK { unlink(provisional) }
        }
        let boundPath = provisional ?? path
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw lastError("bind \(boundPath)") }
        do throws(TransportError) {
            // Undo what the umask took away, so the mode is exactly the one asked for.
            guard chmod(boundPath, permissions.rawValue) == 0 else { throw lastError("chmod \(boundPath)") }
            if access.owner != nil || access.group != nil {
                guard chown(boundPath, access.owner ?? uid_t.max, access.group ?? gid_t.max) == 0 else { throw lastError("chown \(boundPath)") }
            }
            guard Glibc.listen(socket.rawValue, backlog) == 0 else { throw lastError("listen \(path)") }
            // Never over a file that appeared at `path` meanwhile (bind would have refused it too).
            if let provisional, clinux_rename_noreplace(provisional, path) != 0 {
                throw lastError("rename \(provisional) to \(path)")
            }
        } catch {
            unlink(boundPath)
            throw error
        }
        return socket
    }

    /// A name for the socket beside `path` until it listens (see `listen`): hidden, and unique
    /// while `socket` is open (this process's id and the socket's descriptor). Nil if it does not
    /// fit in `sun_path`.
    private static func provisionalPath(_ path: String, _ socket: OwnedFileDescriptor) -> String? {
        let directory = path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
        let name = directory + ".vfio-user-" + String(getpid(), radix: 36) + "-" + String(socket.rawValue, radix: 36)
        return name.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) ? name : nil
    }

    public static func connect(path: String) throws(TransportError) -> OwnedFileDescriptor {
        var address = try socketAddress(path)
        let socket = try makeSocket()
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else { throw lastError("connect \(path)") }
        return socket
    }

    /// Waits for the next client. EINTR is retried; a shut-down listener reports EINVAL.
    public static func accept(_ listener: OwnedFileDescriptor) throws(TransportError) -> OwnedFileDescriptor {
        while true {
            let fd = clinux_accept4(listener.rawValue, CInt(SOCK_CLOEXEC.rawValue))
            if fd >= 0 { return OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd)) }
            if errno == EINTR || errno == ECONNABORTED { continue }
            throw lastError("accept")
        }
    }

    /// A connected pair, for in-process peers (tests, the proxy, twin sockets).
    public static func pair() throws(TransportError) -> (OwnedFileDescriptor, OwnedFileDescriptor) {
        var fds: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw lastError("socketpair")
        }
        return (OwnedFileDescriptor(taking: FileDescriptor(rawValue: fds[0])),
                OwnedFileDescriptor(taking: FileDescriptor(rawValue: fds[1])))
    }

    /// Whether an inherited fd is a listening socket (SO_ACCEPTCONN) rather than a connected one.
    public static func isListening(_ socket: FileDescriptor) throws(TransportError) -> Bool {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(socket.rawValue, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 else {
            throw lastError("getsockopt(SO_ACCEPTCONN) on fd \(socket.rawValue)")
        }
        return value != 0
    }

    /// Wakes every thread blocked on the socket (accept, recv) so it can wind down.
    public static func shutdown(_ socket: OwnedFileDescriptor) {
        _ = Glibc.shutdown(socket.rawValue, CInt(SHUT_RDWR))
    }

    /// Whether the peer has closed or shut down its end (a hang-up waiting to be read): polled, no wait.
    public static func peerHasHungUp(_ socket: FileDescriptor) -> Bool {
        var poller = pollfd(fd: socket.rawValue, events: clinux_pollrdhup, revents: 0)
        guard poll(&poller, 1, 0) == 1 else { return false }
        return poller.revents & (clinux_pollrdhup | Int16(POLLHUP | POLLERR)) != 0
    }

    /// Removes a socket file, but only if it is still the one this process created (same inode),
    /// so a server never deletes the socket of a newer server on the same path.
    public static func removeSocketFile(path: String, ifIdentity identity: FileIdentity?) {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else { return }
        if let identity, identity != FileIdentity(status) { return }
        unlink(path)
    }

    /// Device and inode of a path, to recognise the socket file this process made.
    public static func identity(of path: String) -> FileIdentity? {
        var status = stat()
        guard lstat(path, &status) == 0 else { return nil }
        return FileIdentity(status)
    }

    public struct FileIdentity: Equatable, Sendable {
        let device: UInt64
        let inode: UInt64
        init(_ status: stat) {
            device = UInt64(status.st_dev)
            inode = UInt64(status.st_ino)
        }
    }

    private static func makeSocket() throws(TransportError) -> OwnedFileDescriptor {
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw lastError("socket") }
        return OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
    }

    private static func socketAddress(_ path: String) throws(TransportError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw .system(.fileNameTooLong, "socket path must be 1 to \(capacity - 1) bytes: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    static func lastError(_ call: String) -> TransportError {
        .system(Errno(rawValue: errno), call)
    }
}

/// Who may connect to a socket file: its mode, and the user and group it belongs to (nil keeps
/// the server's own). 0600 by default: whoever can connect drives the device.
public struct SocketAccess: Sendable, Equatable {
    public var permissions: FilePermissions
    public var owner: uid_t?
    public var group: gid_t?

    public init(permissions: FilePermissions = [.ownerRead, .ownerWrite], owner: uid_t? = nil, group: gid_t? = nil) {
        self.permissions = permissions
        self.owner = owner
        self.group = group
    }
}
