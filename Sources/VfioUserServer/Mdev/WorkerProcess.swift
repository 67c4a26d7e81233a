import CLinux
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// An instance served by a process of its own. The manager keeps the listening socket and any
/// fds handed over (a TAP), so a worker that died can be started again on the same socket while
/// clients wait in its backlog. The two talk over a socket pair with the control socket's own
/// requests, one JSON line each way; a worker exits when the manager closes its end.
public final class WorkerProcess: @unchecked Sendable { // `pid`, `channel`, `status`, `stopping` under `lock`.
    public let spec: WorkerSpec
    let launch: WorkerLaunch
    let listener: OwnedFileDescriptor
    let handedOver: [OwnedFileDescriptor]
    /// The socket file the manager made for it, removed with the instance.
    let socketPath: String?
    let socketIdentity: UnixSocket.FileIdentity?

    private let lock = ConditionLock()
    private var pid: pid_t?
    private var channel: OwnedFileDescriptor?
    /// The last worker's wait status once it was reaped.
    private var status: CInt?
    /// The manager ended this worker on purpose: its exit is no failure.
    private var stopping = false
    /// One request at a time on the channel; bytes read past a reply's newline.
    private let requestLock = ConditionLock()
    private var pending: [UInt8] = []

    /// How long a worker has to start and answer, and to exit when told to.
    static let startMilliseconds: Int32 = 10_000
    static let exitMilliseconds = 5000

    init(spec: WorkerSpec, launch: WorkerLaunch, listener: OwnedFileDescriptor, handedOver: [OwnedFileDescriptor],
         socketPath: String?, socketIdentity: UnixSocket.FileIdentity?) {
        self.spec = spec
        self.launch = launch
        self.listener = listener
        self.handedOver = handedOver
        self.socketPath = socketPath
        self.socketIdentity = socketIdentity
    }

    func removeSocketFile() {
        if let socketPath { UnixSocket.removeSocketFile(path: socketPath, ifIdentity: socketIdentity) }
    }

    /// The process id while it runs.
    public var processID: pid_t? { lock.withLock { pid } }

    /// Why the last worker ended without being asked to ("killed by SIGSEGV", "exited with status
    /// 1"); nil while it runs or after an orderly stop.
    public var failure: String? {
        lock.withLock {
            guard pid == nil, !stopping, let status else { return nil }
            return Self.describe(status)
        }
    }

    /// Waits up to `milliseconds` for a worker whose channel broke to be reaped, so that its
    /// `failure` says how it ended.
    func waitUntilReaped(milliseconds: Int) {
        lock.withLock {
            let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
            while pid != nil && monotonicNanoseconds() < deadline { lock.wait(milliseconds: 10) }
        }
    }

    /// Starts a worker and waits until it answers; a worker that cannot start is reaped and the
    /// reason thrown (EIO with its exit status).
    func start() throws(ManagementError) {
        let (ours, theirs): (OwnedFileDescriptor, OwnedFileDescriptor)
        do throws(TransportError) { (ours, theirs) = try UnixSocket.pair() } catch {
            throw ManagementError(error.errno, "no channel to a worker: \(error)")
        }
        let spawned: pid_t
        do throws(Errno) { spawned = try spawn(channel: theirs) } catch {
            throw ManagementError(error, "cannot start a worker (\(launch.executable)): \(error.name)")
        }
        requestLock.withLock { pending = [] }
        lock.withLock {
            pid = spawned
            channel = ours
            status = nil
            stopping = false
        }
        do throws(Errno) {
            try spawnThread(name: "reap-\(spawned)") { [self] in reap(spawned) }
        } catch {
            kill(spawned, SIGKILL)
            reap(spawned)
            throw ManagementError(error, "no thread to watch worker \(spawned)")
        }
        do throws(ManagementError) {
            _ = try request(.list, timeoutMilliseconds: Self.startMilliseconds)
        } catch {
            terminate()
            // A worker that could not make its device says why (EINVAL for a bad parameter, …).
            if ![.brokenPipe, .timedOut, .ioError].contains(error.errno) { throw error }
            throw ManagementError(.ioError, "the worker for \(spec.uuid) did not start: \(lock.withLock { status.map(Self.describe) } ?? error.message)")
        }
    }

    /// Sends a control request and returns the worker's reply (an error reply is thrown as it is).
    /// EPIPE when the worker is gone, ETIMEDOUT when it does not answer in time.
    func request(_ request: ManagementRequest, timeoutMilliseconds: Int32 = 10_000) throws(ManagementError) -> JSONValue {
        try requestLock.withLock { () throws(ManagementError) in
            guard let channel = lock.withLock({ self.channel }) else { throw ManagementError(.brokenPipe, "the worker for \(spec.uuid) is not running") }
            do throws(TransportError) { try MessageSender(socket: channel.descriptor).send(Array((request.json.text + "\n").utf8)) } catch {
                throw ManagementError(.brokenPipe, "the worker for \(spec.uuid) is gone")
            }
            let line = try readLine(channel, timeoutMilliseconds: timeoutMilliseconds)
            let reply: JSONValue
            do throws(JSONError) { reply = try JSONValue(parsing: line) } catch {
                throw ManagementError(.ioError, "the worker for \(spec.uuid) answered with no JSON: \(error)")
            }
            if let error = ManagementError(reply: reply) { throw error }
            return reply
        }
    }

    private func readLine(_ channel: OwnedFileDescriptor, timeoutMilliseconds: Int32) throws(ManagementError) -> String {
        let deadline = monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                defer { pending.removeSubrange(...newline) }
                return String(decoding: pending[..<newline], as: UTF8.self)
            }
            let now = monotonicNanoseconds()
            guard now < deadline else { throw ManagementError(.timedOut, "the worker for \(spec.uuid) did not answer in \(timeoutMilliseconds) ms") }
            var poller = pollfd(fd: channel.rawValue, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, CInt((deadline - now) / 1_000_000) + 1) >= 0 || errno == EINTR else {
                throw ManagementError(Errno(rawValue: errno), "polling the worker's channel")
            }
            guard poller.revents != 0 else { continue }
            let count = chunk.withUnsafeMutableBytes { recv(channel.rawValue, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard count > 0 else { throw ManagementError(.brokenPipe, "the worker for \(spec.uuid) is gone") }
            pending += chunk[..<count]
        }
    }

    /// Ends the worker: closing the channel tells it to stop serving and exit; SIGKILL if it has
    /// not after a few seconds. Returns once it is reaped.
    func terminate() {
        let running: pid_t? = lock.withLock {
            stopping = true
            if let channel { UnixSocket.shutdown(channel) }
            return pid
        }
        guard let running else { return }
        lock.withLock {
            let deadline = monotonicNanoseconds() + UInt64(Self.exitMilliseconds) * 1_000_000
            while pid != nil && monotonicNanoseconds() < deadline { lock.wait(milliseconds: 50) }
            if pid != nil {
                ServerLog.warning("worker \(running) for \(spec.uuid) did not exit: killing it")
                kill(running, SIGKILL)
                while pid != nil { lock.wait(milliseconds: 50) }
            }
        }
    }

    private func reap(_ worker: pid_t) {
        var result: CInt = 0
        while waitpid(worker, &result, 0) < 0 && errno == EINTR {}
        let expected = lock.withLock {
            pid = nil
            channel = nil
            status = result
            lock.broadcast()
            return stopping
        }
        if !expected { ServerLog.warning("the worker for \(spec.uuid) (pid \(worker)) \(Self.describe(result)): the instance has failed") }
    }

    /// "killed by SIGSEGV" or "exited with status 3".
    static func describe(_ status: CInt) -> String {
        let signal = status & 0x7f
        guard signal != 0 else { return "exited with status \((status >> 8) & 0xff)" }
        return "killed by " + (clinux_signal_name(signal).map { "SIG" + String(cString: $0) } ?? "signal \(signal)")
    }

    /// posix_spawn with exactly the worker's fds (0-2, the listener, the channel, what is handed
    /// over), in a process group of its own (a terminal's Ctrl-C goes to the manager, which stops
    /// it in order), with default signal handling and nothing blocked.
    private func spawn(channel: OwnedFileDescriptor) throws(Errno) -> pid_t {
        // Sources are moved above every target first: dup2 onto itself would keep close-on-exec.
        let sources = [listener, channel] + handedOver
        let lifted = sources.map { fcntl($0.rawValue, F_DUPFD_CLOEXEC, 100) }
        defer { lifted.filter { $0 >= 0 }.forEach { close($0) } }
        guard !lifted.contains(-1) else { throw Errno(rawValue: errno) }

        // Swift's crash backtracer would read /proc and run a helper, which the sandbox forbids:
        // a crash would then be reported as SIGSYS. Without it the worker dies of its own signal.
        return try spawnProcess(launch.executable, arguments: [launch.name] + launch.arguments + ["--spec", spec.json.text],
                                environment: ["SWIFT_BACKTRACE=enable=no"], newProcessGroup: true) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            for (index, fd) in lifted.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, WorkerSpec.listenerFD + CInt(index)) }
            clinux_spawn_close_from(&actions, WorkerSpec.listenerFD + CInt(lifted.count))
        }
    }
}
