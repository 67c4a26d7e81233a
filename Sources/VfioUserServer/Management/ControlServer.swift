import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The control socket: management requests for an `InstanceManager`, one JSON object per line
/// (see `ManagementRequest`), each answered by one line. Any number of management clients may be
/// connected; each has a thread, so a slow `stop --force` does not hold up a `list`.
public final class ControlServer: @unchecked Sendable { // `connections`, `stopped`, `threads` under `lock`.
    /// A request line longer than this is refused and the connection closed.
    public static let maxLineLength = 64 * 1024

    public let manager: InstanceManager
    public let path: String
    private let service: ManagementService
    private let listener: OwnedFileDescriptor
    private let identity: UnixSocket.FileIdentity?
    private let lock = ConditionLock()
    private var connections: [ObjectIdentifier: OwnedFileDescriptor] = [:]
    private var stopped = false
    private var threads = 0

    /// Listens on `path` with the manager's socket mode (0600 by default): whoever can connect can
    /// create and remove devices.
    public init(manager: InstanceManager, path: String) throws(TransportError) {
        self.manager = manager
        self.path = path
        service = ManagementService(manager: manager)
        listener = try UnixSocket.listen(path: path, access: manager.configuration.socketAccess)
        identity = UnixSocket.identity(of: path)
    }

    /// Starts accepting management clients; throws EAGAIN when no thread can be made.
    public func start() throws(Errno) {
        track(+1)
        let acceptor = ReservingAcceptor(listener: listener) // its reserve fd exists once start returns
        do throws(Errno) {
            try spawnThread(name: "control-accept") { [self] in
                acceptLoop(acceptor)
                track(-1)
            }
        } catch {
            track(-1)
            throw error
        }
    }

    /// A client that cannot be served (out of fds or threads) hears why in one error line and is
    /// closed; the loop goes on.
    private func acceptLoop(_ acceptor: ReservingAcceptor) {
        while !lock.withLock({ stopped }) {
            let connection: OwnedFileDescriptor
            do throws(TransportError) {
                switch try acceptor.accept() {
                case let .accepted(accepted):
                    connection = accepted
                case let .outOfDescriptors(refused, errno):
                    // Closed when this case ends; the next accept takes the reserve back.
                    refuse(refused, ManagementError(errno, "the server is out of file descriptors"))
                    continue
                case .exhausted:
                    usleep(100_000)
                    continue
                }
            } catch {
                if lock.withLock({ stopped }) { return }
                ServerLog.warning("control socket: accept: \(error)")
                usleep(10_000)
                continue
            }
            let admitted = lock.withLock {
                guard !stopped else { return false }
                connections[ObjectIdentifier(connection)] = connection
                threads += 1
                return true
            }
            guard admitted else { return }
            do throws(Errno) {
                try spawnThread(name: "control") { [self] in
                    service.serve(connection)
                    lock.withLock { connections[ObjectIdentifier(connection)] = nil }
                    track(-1)
                }
            } catch {
                lock.withLock { connections[ObjectIdentifier(connection)] = nil }
                track(-1)
                refuse(connection, ManagementError(error, "no thread for this management connection"))
            }
        }
    }

    /// Closes the socket and every management connection, and waits for their threads.
    public func stop() {
        let open: [OwnedFileDescriptor] = lock.withLock {
            stopped = true
            return Array(connections.values)
        }
        UnixSocket.shutdown(listener)
        open.forEach(UnixSocket.shutdown)
        lock.withLock {
            let deadline = monotonicNanoseconds() + 10_000_000_000
            while threads > 0 && monotonicNanoseconds() < deadline { lock.wait(milliseconds: 50) }
        }
        UnixSocket.removeSocketFile(path: path, ifIdentity: identity)
    }

    private func track(_ delta: Int) {
        lock.withLock {
            threads += delta
            lock.broadcast()
        }
    }

    /// Answers a client that cannot be served with one error line. Its request is read (briefly
    /// waited for) and dropped first: a UNIX socket closed with unread data resets its peer, which
    /// might then miss the line.
    private func refuse(_ connection: OwnedFileDescriptor, _ error: ManagementError) {
        var poller = pollfd(fd: connection.rawValue, events: Int16(POLLIN), revents: 0)
        if poll(&poller, 1, 500) > 0 {
            var scratch = [UInt8](repeating: 0, count: 4096)
            while scratch.withUnsafeMutableBytes({ recv(connection.rawValue, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }) > 0 {}
        }
        _ = ManagementService.send(error.json.text + "\n", on: connection)
    }

    /// Answers one request line with one reply line (no newline).
    public func handle(line: String) -> String { service.handle(line: line) }
}

/// Management requests for an `InstanceManager`, one JSON line in and one out: on the control
/// socket's connections, and on the channel between a manager and an isolated worker.
public struct ManagementService: Sendable {
    public let manager: InstanceManager

    public init(manager: InstanceManager) { self.manager = manager }

    /// Answers requests on `connection` until its peer closes it (or sends a line too long).
    public func serve(_ connection: OwnedFileDescriptor) {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                guard newline <= ControlServer.maxLineLength else { return refuseLongLine(on: connection) }
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if line.allSatisfy(\.isWhitespace) { continue }
                guard Self.send(handle(line: line) + "\n", on: connection) else { return }
            }
            if pending.count > ControlServer.maxLineLength { return refuseLongLine(on: connection) }
            let count = chunk.withUnsafeMutableBytes { Glibc.recv(connection.rawValue, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            pending += chunk[..<count]
        }
    }

    private func refuseLongLine(on connection: OwnedFileDescriptor) {
        let error = ManagementError(.invalidArgument, "request line longer than \(ControlServer.maxLineLength) bytes")
        _ = Self.send(error.json.text + "\n", on: connection)
    }

    static func send(_ text: String, on connection: OwnedFileDescriptor) -> Bool {
        (try? MessageSender(socket: connection.descriptor).send(Array(text.utf8))) != nil
    }

    /// Answers one request line with one reply line (no newline).
    public func handle(line: String) -> String {
        let json: JSONValue
        do throws(JSONError) { json = try JSONValue(parsing: line) } catch {
            return ManagementError(.invalidArgument, "not JSON: \(error)").json.text
        }
        var reply: JSONValue
        do throws(ManagementError) {
            reply = try perform(ManagementRequest(json))
        } catch {
            reply = error.json
        }
        if let id = json["id"], case var .object(members) = reply {
            members.insert((key: "id", value: id), at: 0)
            reply = .object(members)
        }
        return reply.text
    }

    private func perform(_ request: ManagementRequest) throws(ManagementError) -> JSONValue {
        switch request {
        case .types:
            return ["ok": true, "types": .array(manager.typeStatuses().map(\.json))]
        case .list:
            return ["ok": true, "instances": .array(manager.statuses().map(\.json))]
        case let .start(type, uuidText, parameters):
            let uuid = try uuidText.map(Self.parseUUID)
            let instance = try manager.create(type: type, uuid: uuid, parameters: parameters)
            return ["ok": true, "instance": manager.status(instance).json]
        case let .stop(uuidText, force, timeout):
            let uuid = try Self.parseUUID(uuidText)
            let outcome = try manager.remove(uuid, force: force, timeoutMilliseconds: timeout ?? 5000)
            return ["ok": true, "uuid": .string(uuid.description), "client": .string(outcome.rawValue)]
        case let .screenshot(uuidText):
            let instance = try instance(uuidText)
            guard let device = instance.device else { return try manager.forward(request, to: instance) }
            let picture = try Screenshot.take(device, of: instance)
            return ["ok": true, "uuid": .string(instance.uuid.description), "width": .int(Int64(picture.width)),
                    "height": .int(Int64(picture.height)), "png": .string(Base64.encode(try Screenshot.png(picture)))]
        case let .restart(uuidText):
            let uuid = try Self.parseUUID(uuidText)
            try manager.restart(uuid)
            guard let instance = manager.instance(uuid) else { throw ManagementError(.noSuchFileOrDirectory, "no instance \(uuid)") }
            return ["ok": true, "instance": manager.status(instance).json]
        #if DEBUG
        case let .forbiddenCall(uuidText):
            let instance = try instance(uuidText)
            guard instance.device != nil else { return try manager.forward(request, to: instance) }
            // A sandboxed worker dies here; a process without a sandbox sees the path missing.
            let result = execve("/nonexistent/forbidden-call", [nil], [nil])
            throw ManagementError(Errno(rawValue: errno), "execve returned \(result): this process has no sandbox")
        #endif
        }
    }

    private func instance(_ uuidText: String) throws(ManagementError) -> MediatedDeviceInstance {
        let uuid = try Self.parseUUID(uuidText)
        guard let instance = manager.instance(uuid) else { throw ManagementError(.noSuchFileOrDirectory, "no instance \(uuid)") }
        return instance
    }

    static func parseUUID(_ text: String) throws(ManagementError) -> MdevUUID {
        guard let uuid = MdevUUID(text) else {
            throw ManagementError(.invalidArgument, "'\(text)' is not a UUID (8-4-4-4-12 hex digits)")
        }
        return uuid
    }
}
