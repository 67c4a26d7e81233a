import CLinux
import MttyDevice
import RegionEmulation
import Support
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
        try endpoint.start()
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
/// process of its own: the tests run in parallel in this one). The process ends with this object:
/// a test that fails half-way, or forgets `terminate`, leaves no server behind.
public final class ServerProcess {
    public let directory = TemporaryDirectory()
    public let path: String
    public let pid: pid_t
    /// The server's control socket.
    public let controlPath: String
    /// The wait status once the process was reaped.
    private var exitStatus: CInt?

    /// Starts the server on a socket path, or (with `inheriting`) on that socket passed as fd 3.
    /// Its socket directory and control socket are in `directory`; with `firstDevice` false no
    /// `--socket-path` is added (for `--config` or `--no-default-device` runs).
    /// `serverOptions` false runs another subcommand (the proxy, a tool) as it is, waiting for
    /// `waitFor` if given.
    /// `program` replaces the server executable (an example built with the package, or a wrapper
    /// such as prlimit or setpriv that runs it); `directoryOwner` hands the directory to the user
    /// the server will run as.
    public init(arguments: [String] = ["--type", "mtty-2"], inheriting socket: OwnedFileDescriptor? = nil,
                firstDevice: Bool = true, serverOptions: Bool = true, waitFor: String? = nil,
                program: String = ServerProcess.executable, directoryOwner: uid_t? = nil) throws {
        if let directoryOwner { chown(directory.path, directoryOwner, gid_t(directoryOwner)) }
        path = directory.path + "/device.sock"
        controlPath = directory.path + "/control.sock"
        var argv = arguments
        if serverOptions {
            argv += ["--socket-dir", directory.path, "--control", controlPath]
            if socket != nil { argv += ["--fd", "3"] } else if firstDevice { argv += ["--socket-path", path] }
        }
        pid = try Self.spawn(program, argv, output: directory.path + "/stdout.txt", errors: directory.path + "/stderr.txt", fd3: socket)
        // A serving process is ready once it has printed its announcements (every device and the
        // control socket listen by then); another command when the file it makes (`waitFor`) is,
        // or at once.
        if let waitFor {
            for _ in 0..<200 where access(waitFor, F_OK) != 0 && !hasExited { usleep(20_000) }
        } else if serverOptions {
            for _ in 0..<200 where output.isEmpty && !hasExited { usleep(20_000) }
        }
    }

    deinit { _ = terminate() }

    /// The vfio-user-server binary beside this test binary.
    public static var executable: String {
        var directory = executablePath()
        while !directory.isEmpty && !directory.hasSuffix("/debug") && !directory.hasSuffix("/release") {
            directory = String(directory[..<(directory.lastIndex(of: "/") ?? directory.startIndex)])
        }
        return directory + "/vfio-user-server"
    }

    /// The program's own signal dispositions and an empty signal mask: not the test runner's,
    /// which blocks signals (a child inheriting that mask would ignore SIGTERM).
    private static func spawn(_ program: String, _ arguments: [String], environment: [String] = [],
                              output: String, errors: String, fd3: OwnedFileDescriptor? = nil) throws -> pid_t {
        try spawnProcess(program, arguments: [program] + arguments, environment: environment, searchPath: true) { actions in
            if let fd3 { posix_spawn_file_actions_adddup2(&actions, fd3.rawValue, 3) }
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            // Only the fds given here: tests running alongside hold fds of their own without
            // close-on-exec, which a child would otherwise inherit (and count, and keep open).
            clinux_spawn_close_from(&actions, fd3 == nil ? 3 : 4)
        }
    }

    /// Runs a program (the server executable unless given) to completion: exit status, standard
    /// output and standard error. `environment` entries come before the inherited ones. A program
    /// still running after `timeoutSeconds` is killed (SIGKILL shows in the status), so a hung
    /// command fails its test instead of hanging the suite.
    public static func run(_ arguments: [String], program: String = executable, environment: [String] = [],
                           timeoutSeconds: Int = 60) throws -> (status: CInt, output: String, errors: String) {
        let directory = TemporaryDirectory()
        let pid = try spawn(program, arguments, environment: environment,
                            output: directory.path + "/stdout.txt", errors: directory.path + "/stderr.txt")
        let status = reap(pid, killingAfterMilliseconds: timeoutSeconds * 1000)
        return (status, readFile(directory.path + "/stdout.txt"), readFile(directory.path + "/stderr.txt"))
    }

    /// Waits for `pid` to exit; SIGKILL once `milliseconds` have passed. Its wait status.
    static func reap(_ pid: pid_t, killingAfterMilliseconds milliseconds: Int) -> CInt {
        var status: CInt = 0
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while waitpid(pid, &status, WNOHANG) == 0 {
            if monotonicNanoseconds() > deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                break
            }
            usleep(5_000)
        }
        return status
    }

    /// What the server printed so far on standard output and standard error.
    public var output: String { readFile(directory.path + "/stdout.txt") }
    public var errors: String { readFile(directory.path + "/stderr.txt") }

    /// Waits for the process to exit by itself (up to `milliseconds`); its exit status, or nil.
    public func waitForExit(milliseconds: Int) -> CInt? {
        if let exitStatus { return exitStatus }
        for _ in 0..<(milliseconds / 10 + 1) {
            var status: CInt = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                exitStatus = status
                return status
            }
            usleep(10_000)
        }
        return nil
    }

    /// Open fds of the server process.
    public var openFDCount: Int { directoryEntries("/proc/\(pid)/fd")?.count ?? -1 }

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
        guard let fields = procStatFields("/proc/\(pid)/stat") else { return true }
        return fields.first == "Z"
    }

    /// Sends `signal` (SIGTERM by default) and waits for the exit; SIGKILL if the process is still
    /// there after 10 s. The wait status (the one it had if it exited by itself before).
    @discardableResult
    public func terminate(_ signal: CInt = SIGTERM) -> CInt {
        if let exitStatus { return exitStatus }
        kill(pid, signal)
        let status = Self.reap(pid, killingAfterMilliseconds: 10_000)
        exitStatus = status
        return status
    }
}
