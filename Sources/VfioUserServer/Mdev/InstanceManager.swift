import CLinux
import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The mdev core of this server: the types the device models registered, the pools they draw
/// from, and every instance by UUID, each served on its own socket.
///
/// Create and remove may come from any number of threads at once. An instance has one owner at a
/// time: a UUID is claimed in the table (as `creating`, then `removing`) before any slow work, so a
/// second request for it fails at once instead of racing (the kernel's "vfio-mdev: Fix remove
/// race" keeps its device list for the same reason). Pool units are taken before the model is
/// made and given back if anything fails, so a failed creation leaves nothing behind.
public final class InstanceManager: @unchecked Sendable { // `slots`, `order`, `poolUsed`, `shutDown` under `lock`.
    /// Where an instance listens.
    public enum Placement: Sendable {
        /// `<socketDirectory>/<uuid>.sock`, the default.
        case socketDirectory
        /// A socket path of the caller's choosing (`--socket-path`).
        case path(String)
        /// A listening socket the server inherited (`--fd`).
        case listener(OwnedFileDescriptor)
        /// One client connected on a socket the server inherited (`--fd`): served once, no socket file.
        case connection(OwnedFileDescriptor)
    }

    public let types: [MediatedDeviceType]
    public let socketDirectory: String
    public let configuration: ServerConfiguration
    /// Pool capacities after configuration overrides, by pool name.
    public let poolCapacity: [String: Int]
    /// Whether instances are served by threads of this process or by worker processes.
    public let isolation: Isolation

    private enum Slot {
        case creating(MediatedDeviceType)
        case active(MediatedDeviceInstance)
        case removing(MediatedDeviceInstance)
    }

    private let lock = ConditionLock()
    private var slots: [MdevUUID: Slot] = [:]
    /// UUIDs in creation order, for a stable `list`.
    private var order: [MdevUUID] = []
    private var poolUsed: [String: Int] = [:]
    private var shutDown = false

    /// `poolCapacity` overrides the capacity a type's pool was registered with (by pool name).
    /// The socket directory is created (mode 0700) if it does not exist.
    public init(types: [MediatedDeviceType], socketDirectory: String, configuration: ServerConfiguration = ServerConfiguration(),
                poolCapacity overrides: [String: Int] = [:], isolation: Isolation = .none) throws(ManagementError) {
        self.types = types
        self.isolation = isolation
        self.socketDirectory = socketDirectory
        self.configuration = configuration
        var capacity: [String: Int] = [:]
        for type in types { capacity[type.pool.name] = overrides[type.pool.name] ?? type.pool.capacity }
        if let unknown = overrides.keys.first(where: { capacity[$0] == nil }) {
            throw ManagementError(.invalidArgument, "no pool named '\(unknown)'; pools: \(capacity.keys.sorted().joined(separator: ", "))")
        }
        poolCapacity = capacity
        try Self.makeDirectory(socketDirectory)
        // Workers get what needs CAP_NET_ADMIN (a TAP) opened for them: the manager holds it in
        // its effective set only while it opens one. Effective sets are per thread, and every
        // thread that serves requests is made after this.
        if case .process = isolation { _ = clinux_set_effective_capability(clinux_cap_net_admin(), 0) }
    }

    public func type(_ id: String) -> MediatedDeviceType? { types.first { $0.id == id } }

    // MARK: Queries

    /// Every type with its `available_instances` now.
    public func typeStatuses() -> [TypeStatus] {
        lock.withLock {
            types.map { type in
                let capacity = poolCapacity[type.pool.name] ?? 0
                return TypeStatus(id: type.id, name: type.name, description: type.description, deviceAPI: type.deviceAPI,
                                  availableInstances: max(0, capacity - poolUsed[type.pool.name, default: 0]) / type.cost,
                                  pool: type.pool.name, poolCapacity: capacity, cost: type.cost, parameters: type.parameters)
            }
        }
    }

    /// Every instance, in creation order.
    public func statuses() -> [InstanceStatus] {
        let snapshot: [(MdevUUID, Slot)] = lock.withLock { order.compactMap { uuid in slots[uuid].map { (uuid, $0) } } }
        return snapshot.map { uuid, slot in
            switch slot {
            case let .creating(type):
                InstanceStatus(uuid: uuid, type: type.id, state: .creating, socketPath: nil, parameters: [:], origin: nil, sessions: 0)
            case let .active(instance):
                status(instance)
            case let .removing(instance):
                status(instance, state: .removing)
            }
        }
    }

    public func instance(_ uuid: MdevUUID) -> MediatedDeviceInstance? {
        lock.withLock {
            if case let .active(instance) = slots[uuid] { return instance }
            return nil
        }
    }

    /// What `list` shows of an instance. An isolated one is asked through its worker; a worker that
    /// died, or does not answer, shows as failed.
    public func status(_ instance: MediatedDeviceInstance, state: InstanceStatus.State? = nil) -> InstanceStatus {
        var status = InstanceStatus(uuid: instance.uuid, type: instance.type.id, state: state ?? .idle,
                                    socketPath: instance.socketPath, parameters: instance.parameters, origin: instance.origin, sessions: 0)
        if let endpoint = instance.endpoint {
            if state == nil { status.state = endpoint.isAttached ? .attached : .idle }
            status.sessions = endpoint.sessionsServed
        } else if let worker = instance.worker {
            status.pid = worker.processID
            guard state == nil else { return status }
            do throws(ManagementError) {
                let reply = try worker.request(.list, timeoutMilliseconds: 2000)
                let reported = reply["instances"]?.arrayValue?.first
                status.state = reported?["state"]?.stringValue.flatMap(InstanceStatus.State.init(rawValue:)) ?? .failed
                status.sessions = Int(reported?["sessions"]?.intValue ?? 0)
            } catch {
                if error.errno == .brokenPipe { worker.waitUntilReaped(milliseconds: 1000) }
                status.state = .failed
                status.failure = worker.failure ?? error.message
                status.pid = worker.processID
            }
        }
        return status
    }

    // MARK: Create

    /// Makes an instance of `typeID` and starts serving it. `uuid` nil picks a random one; `access`
    /// (mode, owner, group of its socket file) replaces the server's for this instance.
    ///
    /// Errors: EINVAL (unknown type or parameter, or the model refused its parameters), EEXIST (the
    /// UUID is taken), ENOSPC (the type's pool is exhausted), the socket's errno (e.g. EADDRINUSE),
    /// ESHUTDOWN (the server is stopping).
    @discardableResult
    public func create(type typeID: String, uuid requested: MdevUUID? = nil, parameters: [String: String] = [:],
                       placement: Placement = .socketDirectory, origin: MediatedDeviceInstance.Origin = .controlSocket,
                       access: SocketAccess? = nil) throws(ManagementError) -> MediatedDeviceInstance
    {
        guard let type = type(typeID) else {
            throw ManagementError(.invalidArgument, "unknown type '\(typeID)'; types: \(types.map(\.id).joined(separator: ", "))")
        }
        if let unknown = parameters.keys.sorted().first(where: { type.parameters[$0] == nil }) {
            let known = type.parameters.isEmpty ? "it takes none" : "it takes: \(type.parameters.keys.sorted().joined(separator: ", "))"
            throw ManagementError(.invalidArgument, "\(type.id) has no parameter '\(unknown)'; \(known)")
        }
        let uuid = requested ?? MdevUUID.random()
        try reserve(uuid, type)
        if case let .process(launch) = isolation {
            switch placement {
            case .connection: break // one client on an inherited connection: served here, see Serve
            default: return try createWorker(type: type, uuid: uuid, parameters: parameters, placement: placement, origin: origin, access: access, launch: launch)
            }
        }

        let model: DeviceModel
        do throws(DeviceCreationError) {
            model = try type.make(MediatedDeviceRequest(uuid: uuid.description, parameters: parameters))
        } catch {
            release(uuid, type)
            throw ManagementError(error.errno, "\(type.id): \(error.description)")
        }
        let device = EmulatedDevice(model: model, maxDMAMappings: configuration.maxDMAMaps)
        let name = "\(type.id) \(uuid.description.prefix(8))"
        let endpoint: DeviceEndpoint
        do throws(TransportError) {
            switch placement {
            case .socketDirectory:
                endpoint = try DeviceEndpoint(path: socketPath(for: uuid), access: access ?? configuration.socketAccess, device: device, configuration: configuration, name: name)
            case let .path(path):
                endpoint = try DeviceEndpoint(path: path, access: access ?? configuration.socketAccess, device: device, configuration: configuration, name: name)
            case let .listener(socket):
                endpoint = DeviceEndpoint(listeningSocket: socket, device: device, configuration: configuration, name: name)
            case let .connection(socket):
                endpoint = DeviceEndpoint(connectedSocket: socket, device: device, configuration: configuration, name: name)
            }
        } catch {
            device.shutdown()
            release(uuid, type)
            throw ManagementError(error.errno, "\(type.id) \(uuid): \(error)")
        }
        let instance = MediatedDeviceInstance(uuid: uuid, type: type, parameters: parameters, endpoint: endpoint, origin: origin)
        do throws(Errno) { try endpoint.start() } catch {
            endpoint.stop()
            release(uuid, type)
            throw ManagementError(error, "\(type.id) \(uuid): no thread to serve it (\(error.name))")
        }
        let stopping = lock.withLock {
            if !shutDown { slots[uuid] = .active(instance) }
            return shutDown
        }
        if stopping { // a shutdown began meanwhile: it does not know this instance, so stop it here
            endpoint.stop()
            release(uuid, type)
            throw ManagementError(Errno(rawValue: ESHUTDOWN), "the server is stopping")
        }
        ServerLog.info("created \(type.id) instance \(uuid) on \(instance.socketPath ?? "an inherited socket")")
        return instance
    }

    /// Starts an isolated instance: the socket is made here and kept, the model is made by the
    /// worker. What the type needs opened with the manager's privileges (a TAP) is handed over.
    private func createWorker(type: MediatedDeviceType, uuid: MdevUUID, parameters: [String: String], placement: Placement,
                              origin: MediatedDeviceInstance.Origin, access: SocketAccess?, launch: WorkerLaunch) throws(ManagementError) -> MediatedDeviceInstance {
        let listener: OwnedFileDescriptor
        let path: String?
        do throws(TransportError) {
            switch placement {
            case .socketDirectory: path = socketPath(for: uuid)
            case let .path(chosen): path = chosen
            case .listener, .connection: path = nil
            }
            switch placement {
            case let .listener(socket), let .connection(socket): listener = socket
            default: listener = try UnixSocket.listen(path: path!, access: access ?? configuration.socketAccess)
            }
        } catch {
            release(uuid, type)
            throw ManagementError(error.errno, "\(type.id) \(uuid): \(error)")
        }
        let identity = path.flatMap(UnixSocket.identity(of:))
        var workerParameters = parameters
        var handedOver: [OwnedFileDescriptor] = []
        do throws(DeviceCreationError) {
            _ = clinux_set_effective_capability(clinux_cap_net_admin(), 1)
            defer { _ = clinux_set_effective_capability(clinux_cap_net_admin(), 0) }
            for (key, fd) in try type.handOver?(parameters).sorted(by: { $0.key < $1.key }) ?? [] {
                workerParameters[key] = String(WorkerSpec.firstHandedOverFD + CInt(handedOver.count))
                handedOver.append(fd)
            }
        } catch {
            if let path { UnixSocket.removeSocketFile(path: path, ifIdentity: identity) }
            release(uuid, type)
            throw ManagementError(error.errno, "\(type.id): \(error.description)")
        }
        let spec = WorkerSpec(type: type.id, uuid: uuid, parameters: workerParameters, socketDirectory: socketDirectory,
                              configuration: configuration, user: launch.user, handedOver: handedOver.count)
        let worker = WorkerProcess(spec: spec, launch: launch, listener: listener, handedOver: handedOver, socketPath: path, socketIdentity: identity)
        do throws(ManagementError) { try worker.start() } catch {
            worker.removeSocketFile()
            release(uuid, type)
            throw error
        }
        let instance = MediatedDeviceInstance(uuid: uuid, type: type, parameters: parameters, worker: worker, socketPath: path, origin: origin)
        let stopping = lock.withLock {
            if !shutDown { slots[uuid] = .active(instance) }
            return shutDown
        }
        if stopping {
            worker.terminate()
            worker.removeSocketFile()
            release(uuid, type)
            throw ManagementError(Errno(rawValue: ESHUTDOWN), "the server is stopping")
        }
        ServerLog.info("created \(type.id) instance \(uuid) on \(path ?? "an inherited socket"), served by worker \(worker.processID.map(String.init) ?? "?")")
        return instance
    }

    /// Starts the worker of a failed isolated instance again, on the same socket.
    ///
    /// Errors: ENOENT (no such instance), EINVAL (it is not isolated), EBUSY (its worker is running,
    /// or the instance is being created or removed), and the worker's own failure to start.
    public func restart(_ uuid: MdevUUID) throws(ManagementError) {
        let instance: MediatedDeviceInstance = try lock.withLock { () throws(ManagementError) in
            switch slots[uuid] {
            case nil: throw ManagementError(.noSuchFileOrDirectory, "no instance \(uuid)")
            case .creating, .removing: throw ManagementError(.resourceBusy, "instance \(uuid) is being created or removed")
            case let .active(instance):
                guard instance.worker != nil else { throw ManagementError(.invalidArgument, "instance \(uuid) is served in the server process, not by a worker") }
                slots[uuid] = .removing(instance) // one restart or removal at a time
                return instance
            }
        }
        defer { lock.withLock { slots[uuid] = .active(instance) } }
        guard let worker = instance.worker, worker.processID == nil else {
            throw ManagementError(.resourceBusy, "instance \(uuid) is running; only a failed instance is restarted")
        }
        try worker.start()
        ServerLog.info("restarted instance \(uuid): worker \(worker.processID.map(String.init) ?? "?")")
    }

    /// Passes a request about an isolated instance to its worker and returns the worker's reply.
    public func forward(_ request: ManagementRequest, to instance: MediatedDeviceInstance) throws(ManagementError) -> JSONValue {
        guard let worker = instance.worker else { throw ManagementError(.invalidArgument, "instance \(instance.uuid) has no worker") }
        return try worker.request(request)
    }

    /// `<socketDirectory>/<uuid>.sock`.
    public func socketPath(for uuid: MdevUUID) -> String { "\(socketDirectory)/\(uuid).sock" }

    private func reserve(_ uuid: MdevUUID, _ type: MediatedDeviceType) throws(ManagementError) {
        try lock.withLock { () throws(ManagementError) in
            guard !shutDown else { throw ManagementError(Errno(rawValue: ESHUTDOWN), "the server is stopping") }
            guard slots[uuid] == nil else { throw ManagementError(.fileExists, "an instance \(uuid) exists already") }
            let capacity = poolCapacity[type.pool.name] ?? 0
            let used = poolUsed[type.pool.name, default: 0]
            guard capacity - used >= type.cost else {
                throw ManagementError(.noSpace, "\(type.id) needs \(type.cost) of pool \(type.pool.name), which has \(capacity - used) of \(capacity) left")
            }
            poolUsed[type.pool.name] = used + type.cost
            slots[uuid] = .creating(type)
            order.append(uuid)
        }
    }

    /// Gives back what `reserve` took and forgets the UUID.
    private func release(_ uuid: MdevUUID, _ type: MediatedDeviceType) {
        lock.withLock {
            poolUsed[type.pool.name, default: 0] -= type.cost
            slots[uuid] = nil
            order.removeAll { $0 == uuid }
            lock.broadcast()
        }
    }

    // MARK: Remove

    /// Removes an instance. One with a client attached is refused (EBUSY) unless `force`: then the
    /// device raises REQ and the client gets `timeoutMilliseconds` to let go before its connection
    /// is closed. The socket file goes, the pool units come back.
    ///
    /// Errors: ENOENT (no such instance), EBUSY (attached and not forced, or being created or
    /// removed by another request).
    @discardableResult
    public func remove(_ uuid: MdevUUID, force: Bool = false, timeoutMilliseconds: Int = 5000) throws(ManagementError) -> RemovalOutcome {
        let instance: MediatedDeviceInstance = try lock.withLock { () throws(ManagementError) in
            switch slots[uuid] {
            case nil: throw ManagementError(.noSuchFileOrDirectory, "no instance \(uuid)")
            case .creating: throw ManagementError(.resourceBusy, "instance \(uuid) is being created")
            case .removing: throw ManagementError(.resourceBusy, "instance \(uuid) is being removed")
            case let .active(instance):
                slots[uuid] = .removing(instance)
                return instance
            }
        }
        if let worker = instance.worker { return try removeWorker(instance, worker, force: force, timeoutMilliseconds: timeoutMilliseconds) }
        guard let endpoint = instance.endpoint else { return .noClient }
        var outcome = RemovalOutcome.noClient
        if endpoint.closeToNewClients() {
            guard force else {
                endpoint.reopenToNewClients()
                lock.withLock { slots[uuid] = .active(instance) }
                throw ManagementError(.resourceBusy, "instance \(uuid) has a client attached; force removal to ask it to let go (REQ) and then disconnect it")
            }
            let heard = endpoint.device.requestRelease()
            ServerLog.info("removing \(uuid): " + (heard ? "REQ raised, waiting up to \(timeoutMilliseconds) ms for the client to let go" : "the client has no REQ eventfd"))
            outcome = heard && endpoint.waitUntilDetached(milliseconds: timeoutMilliseconds) ? .released : .disconnected
        }
        endpoint.stop()
        release(uuid, instance.type)
        ServerLog.info("removed \(instance.type.id) instance \(uuid) (\(outcome.rawValue))")
        return outcome
    }

    /// The worker removes its instance as `remove` does in this process (EBUSY, REQ, the timeout),
    /// then exits; the manager removes the socket. A failed instance just goes.
    private func removeWorker(_ instance: MediatedDeviceInstance, _ worker: WorkerProcess, force: Bool,
                              timeoutMilliseconds: Int) throws(ManagementError) -> RemovalOutcome {
        var outcome = RemovalOutcome.noClient
        if worker.processID != nil {
            do throws(ManagementError) {
                let reply = try worker.request(.stop(uuid: instance.uuid.description, force: force, timeoutMilliseconds: timeoutMilliseconds),
                                               timeoutMilliseconds: Int32(timeoutMilliseconds) + 10_000)
                if case let .string(text)? = reply["client"], let reported = RemovalOutcome(rawValue: text) { outcome = reported }
            } catch where error.errno == .resourceBusy {
                lock.withLock { slots[instance.uuid] = .active(instance) }
                throw error
            } catch {
                ServerLog.warning("removing \(instance.uuid): \(error.message); ending its worker")
                outcome = .disconnected
            }
        }
        worker.terminate()
        worker.removeSocketFile()
        release(instance.uuid, instance.type)
        ServerLog.info("removed \(instance.type.id) instance \(instance.uuid) (\(outcome.rawValue))")
        return outcome
    }

    /// SIGTERM: no more creations, every instance stopped (clients disconnected, sockets removed).
    public func shutdown() {
        let instances: [MediatedDeviceInstance] = lock.withLock {
            shutDown = true
            return order.compactMap {
                guard case let .active(instance) = slots[$0] else { return nil }
                slots[$0] = .removing(instance) // a concurrent remove now gets EBUSY
                return instance
            }
        }
        for instance in instances {
            instance.endpoint?.stop()
            instance.worker?.terminate()
            instance.worker?.removeSocketFile()
            release(instance.uuid, instance.type)
        }
        // Creations and removals in flight finish on their own threads; wait a little for them.
        lock.withLock {
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while !slots.isEmpty && monotonicNanoseconds() < deadline { lock.wait(milliseconds: 50) }
        }
    }

    private static func makeDirectory(_ path: String) throws(ManagementError) {
        var status = stat()
        if stat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFDIR else { throw ManagementError(.notDirectory, "\(path) is not a directory") }
            return
        }
        guard mkdir(path, 0o700) == 0 || errno == EEXIST else {
            throw ManagementError(Errno(rawValue: errno), "cannot create the socket directory \(path)")
        }
    }
}
