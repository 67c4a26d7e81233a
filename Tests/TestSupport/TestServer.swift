import MttyDevice
import RegionEmulation
import SystemPackage
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// A device served in this process on a fresh socket, for conformance tests.
public final class TestServer {
    public let directory = TemporaryDirectory()
    public let path: String
    public let endpoint: DeviceEndpoint

    public init(model: DeviceModel = MttyDevice(ports: 2), configuration: ServerConfiguration = ServerConfiguration()) throws {
        path = directory.path + "/device.sock"
        endpoint = try DeviceEndpoint(path: path, device: EmulatedDevice(model: model), configuration: configuration, name: "test")
        endpoint.start()
    }

    deinit { endpoint.stop() }

    public var device: EmulatedDevice { endpoint.device }

    public func connect() throws -> VfioUserClient { try VfioUserClient(path: path) }

    /// Connected and negotiated with QEMU's capabilities.
    public func attach() throws -> VfioUserClient {
        let client = try connect()
        try client.negotiate()
        return client
    }

    /// Waits until the server noticed a disconnect (it resets the device on its session thread).
    public func waitDetached() { _ = endpoint.waitUntilDetached(milliseconds: 5000) }
}

/// Expects a client call to fail with an error reply carrying `errno`.
public func expectErrno<T>(_ errno: Errno, _ sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) {
    do {
        _ = try body()
        Issue.record("expected \(errno.name), the request succeeded", sourceLocation: sourceLocation)
    } catch let ClientError.errorReply(_, got) {
        #expect(got == errno, "expected \(errno.name), got \(got.name)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(errno.name), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Whether the server closed the connection: the next read sees end of stream.
public func connectionClosed(_ client: VfioUserClient) -> Bool {
    var byte: UInt8 = 0
    var poller = pollfd(fd: client.socket.rawValue, events: Int16(POLLIN), revents: 0)
    guard poll(&poller, 1, 2000) == 1 else { return false }
    return recv(client.socket.rawValue, &byte, 1, CInt(MSG_DONTWAIT)) == 0
}

public func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

/// A header plus payload, for hand-made (and malformed) messages.
public func rawMessage(id: UInt16, command: UInt16, payload: [UInt8], flags: UInt32 = 0, size: UInt32? = nil) -> [UInt8] {
    le(id) + le(command) + le(size ?? UInt32(16 + payload.count)) + le(flags) + le(UInt32(0)) + payload
}

/// The eventfd's counter, read without blocking (0 when it was not signalled).
public func fired(_ eventfd: OwnedFileDescriptor, waitingMilliseconds: Int32 = 0) -> UInt64 {
    if waitingMilliseconds > 0 {
        var poller = pollfd(fd: eventfd.rawValue, events: Int16(POLLIN), revents: 0)
        _ = poll(&poller, 1, waitingMilliseconds)
    }
    return ((try? eventfd.readEventfd()) ?? nil) ?? 0
}

/// The server executable next to the test bundle, run as its own process (fd counting needs a
/// process of its own: the tests run in parallel in this one).
public final class ServerProcess {
    public let directory = TemporaryDirectory()
    public let path: String
    public let pid: pid_t
    private var reaped = false

    /// Starts the server on a socket path, or (with `inheriting`) on that socket passed as fd 3.
    public init(arguments: [String] = ["--type", "mtty-2"], inheriting socket: OwnedFileDescriptor? = nil) throws {
        path = directory.path + "/device.sock"
        var exe = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &exe, exe.count - 1)
        let testBinary = String(decoding: exe.prefix(max(length, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var binDirectory = testBinary
        while !binDirectory.isEmpty && !binDirectory.hasSuffix("/debug") && !binDirectory.hasSuffix("/release") {
            binDirectory = String(binDirectory[..<(binDirectory.lastIndex(of: "/") ?? binDirectory.startIndex)])
        }
        let server = binDirectory + "/vfio-user-server"
        let argv = [server] + arguments + (socket == nil ? ["--socket-path", path] : ["--fd", "3"])
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        if let socket { posix_spawn_file_actions_adddup2(&actions, socket.rawValue, 3) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var spawned: pid_t = 0
        let result = posix_spawn(&spawned, server, &actions, nil, &cArguments, environ)
        posix_spawn_file_actions_destroy(&actions)
        guard result == 0 else { throw Errno(rawValue: result) }
        pid = spawned
        for _ in 0..<200 where socket == nil && access(path, F_OK) != 0 { usleep(20_000) }
    }

    deinit { _ = terminate() }

    /// Open fds of the server process.
    public var openFDCount: Int {
        guard let directory = opendir("/proc/\(pid)/fd") else { return -1 }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        return count - 2
    }

    /// Polls until the fd count settles at `expected` (the session thread cleans up asynchronously).
    public func waitForFDCount(_ expected: Int) -> Int {
        var count = openFDCount
        for _ in 0..<100 where count != expected {
            usleep(20_000)
            count = openFDCount
        }
        return count
    }

    /// Whether the process has exited (a zombie not yet reaped, in /proc).
    public var hasExited: Bool {
        guard let file = fopen("/proc/\(pid)/stat", "r") else { return true }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        guard fgets(&line, CInt(line.count), file) != nil else { return true }
        let text = String(cString: line)
        guard let close = text.lastIndex(of: ")") else { return false }
        return text[text.index(close, offsetBy: 2)] == "Z"
    }

    /// SIGTERM; returns the exit status.
    public func terminate() -> CInt {
        guard !reaped else { return 0 }
        reaped = true
        kill(pid, SIGTERM)
        var status: CInt = 0
        waitpid(pid, &status, 0)
        return status
    }
}
