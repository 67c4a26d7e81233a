import RegionEmulation
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// One device served on one socket: accepts clients one at a time (the spec has no multiplexing),
/// runs a session per client on its own thread, and resets the device when a client goes away so
/// the next one finds it as new.
public final class DeviceEndpoint: @unchecked Sendable { // Mutable state (`active`, `stopped`, counters) under `lock`.
    public let name: String
    public let device: EmulatedDevice
    public let configuration: ServerConfiguration
    public let socketPath: String?

    private let listener: OwnedFileDescriptor
    private let socketIdentity: UnixSocket.FileIdentity?
    private let lock = ConditionLock()
    private var active: Session?
    private var stopped = false
    /// Removal has begun: new clients are refused, the attached one (if any) keeps its session.
    private var closedToNewClients = false
    private var acceptorRunning = false
    private var _sessionsServed = 0
    private var _clientsRefused = 0

    /// Listens on `path` (mode `permissions`, 0600 by default; a stale socket is replaced).
    public init(path: String, permissions: FilePermissions = [.ownerRead, .ownerWrite], device: EmulatedDevice,
                configuration: ServerConfiguration, name: String) throws(TransportError) {
        self.name = name
        self.device = device
        self.configuration = configuration
        listener = try UnixSocket.listen(path: path, permissions: permissions)
        socketPath = path
        socketIdentity = UnixSocket.identity(of: path)
    }

    /// Serves on a listening socket inherited from the parent (`--fd`).
    public init(listeningSocket: OwnedFileDescriptor, device: EmulatedDevice, configuration: ServerConfiguration, name: String) {
        self.name = name
        self.device = device
        self.configuration = configuration
        listener = listeningSocket
        socketPath = nil
        socketIdentity = nil
    }

    /// Starts accepting on a thread of its own.
    public func start() {
        lock.withLock { acceptorRunning = true }
        spawnThread(name: "accept-\(name)") { [self] in
            acceptLoop()
            lock.withLock {
                acceptorRunning = false
                lock.broadcast()
            }
        }
    }

    private func acceptLoop() {
        while true {
            let connection: OwnedFileDescriptor
            do {
                connection = try UnixSocket.accept(listener)
            } catch {
                if lock.withLock({ stopped }) { return }
                ServerLog.warning("\(name): accept: \(error)")
                usleep(10_000) // e.g. EMFILE: do not spin
                continue
            }
            let session: Session? = lock.withLock {
                waitForHungUpSessionLocked()
                guard !stopped, !closedToNewClients, active == nil else { return nil }
                let session = Session(device: device, socket: connection, configuration: configuration, name: name)
                active = session
                _sessionsServed += 1
                return session
            }
            guard let session else {
                if lock.withLock({ stopped }) { return }
                refuse(connection)
                continue
            }
            ServerLog.info("\(name): client attached")
            spawnThread(name: "session-\(name)") { [self] in
                session.run()
                ServerLog.info("\(name): client detached; device reset")
                lock.withLock {
                    active = nil
                    lock.broadcast()
                }
            }
        }
    }

    /// A client that closes and reconnects at once arrives before its old session has read the
    /// hang-up: that session is finishing (its last messages, then the device reset), so the
    /// newcomer waits for it, as it would in a listen backlog, rather than being refused. A session
    /// whose client is still connected is not waited for.
    private func waitForHungUpSessionLocked() {
        let deadline = monotonicNanoseconds() + 5_000_000_000
        while !stopped, let active, UnixSocket.peerHasHungUp(active.socket.descriptor), monotonicNanoseconds() < deadline {
            lock.wait(milliseconds: 50)
        }
    }

    /// A second client while one is attached, or any client while the instance is being removed:
    /// its first message gets an EBUSY error reply (so it knows why), then the connection closes.
    /// The attached client is not disturbed.
    private func refuse(_ connection: OwnedFileDescriptor) {
        let removing = lock.withLock {
            _clientsRefused += 1
            return closedToNewClients
        }
        ServerLog.warning("\(name): refused a client: " + (removing ? "the device is being removed" : "the device is attached"))
        let maxMessageSize = configuration.maxMessageSize
        spawnThread(name: "refuse-\(name)") {
            let receiver = MessageReceiver(socket: connection.descriptor, maxMessageSize: maxMessageSize, initialCapacity: 4096)
            if (try? receiver.waitReadable(milliseconds: 2000)) == true,
               let message = try? receiver.receive(), message.header.flags.isCommand,
               !message.header.flags.contains(.noReply) {
                var writer = ByteWriter(capacity: 16)
                message.header.errorReply(errno: UInt32(EBUSY)).encode(into: &writer)
                try? MessageSender(socket: connection.descriptor).send(writer.bytes)
            }
            UnixSocket.shutdown(connection)
        }
    }

    /// Serves one already-connected client on the calling thread (`--fd` with a connected socket).
    public func serve(connection: OwnedFileDescriptor) {
        let session = Session(device: device, socket: connection, configuration: configuration, name: name)
        lock.withLock {
            active = session
            _sessionsServed += 1
        }
        session.run()
        lock.withLock { active = nil }
    }

    public var isAttached: Bool { lock.withLock { active != nil } }
    public var sessionsServed: Int { lock.withLock { _sessionsServed } }
    public var clientsRefused: Int { lock.withLock { _clientsRefused } }

    /// Waits until no client is attached; false on timeout.
    public func waitUntilDetached(milliseconds: Int) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        return lock.withLock {
            while active != nil {
                let now = monotonicNanoseconds()
                guard now < deadline else { return false }
                lock.wait(milliseconds: Int((deadline - now) / 1_000_000) + 1)
            }
            return true
        }
    }

    /// Stops handing the device to new clients (they get EBUSY) and says whether one is attached:
    /// the first step of removing an instance, so that no client slips in between that check
    /// and the stop (the kernel's "Fix remove race" took the same care).
    public func closeToNewClients() -> Bool {
        lock.withLock {
            closedToNewClients = true
            return active != nil
        }
    }

    /// Undoes `closeToNewClients` (a removal that was refused).
    public func reopenToNewClients() {
        lock.withLock { closedToNewClients = false }
    }

    /// Disconnects the attached client, if any (its session ends and the device resets).
    public func disconnectClient() {
        lock.withLock { active }?.shutdown()
    }

    /// Stops accepting, ends the attached session, waits for both threads, removes the socket file.
    public func stop() {
        let session: Session? = lock.withLock {
            stopped = true
            return active
        }
        UnixSocket.shutdown(listener)
        session?.shutdown()
        lock.withLock {
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while (active != nil || acceptorRunning) && monotonicNanoseconds() < deadline { lock.wait(milliseconds: 50) }
        }
        if let socketPath { UnixSocket.removeSocketFile(path: socketPath, ifIdentity: socketIdentity) }
        device.shutdown()
    }
}
