import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// One device served on one socket: accepts clients one at a time (the spec has no multiplexing),
/// runs a session per client on its own thread, and resets the device when a client goes away so
/// the next one finds it as new.
///
/// Clients that cannot be served (one is attached already, the instance is being removed, the
/// process is out of fds or threads) are refused by the acceptor itself: their first message gets
/// an error reply with the reason's errno (EBUSY, EMFILE, EAGAIN), then the connection closes. A
/// storm of them costs no thread, and one fd each only while they are answered.
public final class DeviceEndpoint: @unchecked Sendable { // Mutable state (`active`, `stopped`, counters) under `lock`.
    public let name: String
    public let device: EmulatedDevice
    public let configuration: ServerConfiguration
    public let socketPath: String?

    /// Where clients come from: a listening socket, or one connected client handed to the server.
    private enum Source {
        case listener(OwnedFileDescriptor)
        case connection(OwnedFileDescriptor)
    }

    private let source: Source
    private let socketIdentity: UnixSocket.FileIdentity?
    private let lock = ConditionLock()
    private var active: Session?
    private var stopped = false
    /// Removal has begun: new clients are refused, the attached one (if any) keeps its session.
    private var closedToNewClients = false
    private var acceptorRunning = false
    private var _sessionsServed = 0
    private var _clientsRefused = 0

    /// How long a refused client has to send its first message before it is closed unanswered.
    static let refusalMilliseconds = 2000

    /// Listens on `path` (mode `permissions`, 0600 by default; a stale socket is replaced).
    public init(path: String, access: SocketAccess = SocketAccess(), device: EmulatedDevice,
                configuration: ServerConfiguration, name: String) throws(TransportError) {
        self.name = name
        self.device = device
        self.configuration = configuration
        source = .listener(try UnixSocket.listen(path: path, access: access))
        socketPath = path
        socketIdentity = UnixSocket.identity(of: path)
    }

    /// Serves on a listening socket inherited from the parent (`--fd`).
    public init(listeningSocket: OwnedFileDescriptor, device: EmulatedDevice, configuration: ServerConfiguration, name: String) {
        self.name = name
        self.device = device
        self.configuration = configuration
        source = .listener(listeningSocket)
        socketPath = nil
        socketIdentity = nil
    }

    /// Serves the one client already connected on `connectedSocket` (`--fd` with a connected
    /// socket, the spec's backend convention): one session, no other client, no socket file.
    public init(connectedSocket: OwnedFileDescriptor, device: EmulatedDevice, configuration: ServerConfiguration, name: String) {
        self.name = name
        self.device = device
        self.configuration = configuration
        source = .connection(connectedSocket)
        socketPath = nil
        socketIdentity = nil
    }

    /// Starts accepting on a thread of its own (on a connected socket: starts its one session).
    /// Throws EAGAIN when no thread can be made.
    public func start() throws(Errno) {
        switch source {
        case let .listener(listener):
            lock.withLock { acceptorRunning = true }
            let acceptor = ReservingAcceptor(listener: listener) // its reserve fd exists once start returns
            do throws(Errno) {
                try spawnThread(name: "accept-\(name)") { [self] in
                    acceptLoop(acceptor)
                    lock.withLock {
                        acceptorRunning = false
                        lock.broadcast()
                    }
                }
            } catch {
                lock.withLock { acceptorRunning = false }
                throw error
            }
        case let .connection(connection):
            let session = Session(device: device, socket: connection, configuration: configuration, name: name)
            lock.withLock {
                active = session
                _sessionsServed += 1
            }
            do throws(Errno) { try runSession(session) } catch {
                lock.withLock { active = nil }
                throw error
            }
        }
    }

    /// A client waiting for its error reply.
    private struct Refusal {
        let connection: OwnedFileDescriptor
        let errno: Errno
        let deadline: UInt64
    }

    private func acceptLoop(_ acceptor: ReservingAcceptor) {
        var refusals: [Refusal] = []
        while !lock.withLock({ stopped }) {
            // Without its reserve (spent on a client that has been closed since, or out of fds
            // altogether), the listener waits: it is looked at again every 100 ms.
            acceptor.restoreReserve()
            let watchListener = acceptor.holdsReserve
            let now = monotonicNanoseconds()
            var fds = refusals.map { pollfd(fd: $0.connection.rawValue, events: Int16(POLLIN), revents: 0) }
            if watchListener { fds.append(pollfd(fd: acceptor.listener.rawValue, events: Int16(POLLIN), revents: 0)) }
            let wakeAt = (refusals.map(\.deadline) + (watchListener ? [] : [now + 100_000_000])).min()
            let timeout = wakeAt.map { CInt(min(($0 > now ? $0 - now : 0) / 1_000_000 + 1, 1000)) } ?? -1
            if poll(&fds, nfds_t(fds.count), timeout) < 0 && errno != EINTR {
                ServerLog.warning("\(name): poll: \(Errno(rawValue: errno).name)")
                usleep(10_000)
                continue
            }
            // Answer the refused clients whose first message came; drop those that sent none in time.
            let after = monotonicNanoseconds()
            var waiting: [Refusal] = []
            for (refusal, polled) in zip(refusals, fds) {
                if polled.revents != 0 {
                    answer(refusal)
                } else if after < refusal.deadline {
                    waiting.append(refusal)
                }
            }
            refusals = waiting // the others close here
            guard watchListener, fds.last?.revents ?? 0 != 0 else { continue }
            do throws(TransportError) {
                switch try acceptor.accept() {
                case let .accepted(connection):
                    if let refusal = admit(connection) { refusals.append(refusal) }
                case let .outOfDescriptors(connection, errno):
                    ServerLog.warning("\(name): out of file descriptors (\(errno.name)): refusing a client")
                    refusals.append(refuse(connection, errno))
                case .exhausted:
                    break // the listener waits until the reserve is back
                }
            } catch {
                if lock.withLock({ stopped }) { break }
                ServerLog.warning("\(name): accept: \(error)")
                usleep(10_000)
            }
        }
    }

    /// Starts a session for a new client, or says why not (a refusal to answer).
    private func admit(_ connection: OwnedFileDescriptor) -> Refusal? {
        let session: Session? = lock.withLock {
            waitForHungUpSessionLocked()
            guard !stopped, !closedToNewClients, active == nil else { return nil }
            let session = Session(device: device, socket: connection, configuration: configuration, name: name)
            active = session
            _sessionsServed += 1
            return session
        }
        guard let session else {
            let removing = lock.withLock { closedToNewClients }
            ServerLog.warning("\(name): refused a client: " + (removing ? "the device is being removed" : "the device is attached"))
            return refuse(connection, .resourceBusy)
        }
        do throws(Errno) {
            try runSession(session)
            ServerLog.info("\(name): client attached")
            return nil
        } catch {
            lock.withLock {
                active = nil
                _sessionsServed -= 1
                lock.broadcast()
            }
            ServerLog.warning("\(name): no thread for a session (\(error.name)): refusing a client")
            return refuse(connection, error)
        }
    }

    private func runSession(_ session: Session) throws(Errno) {
        try spawnThread(name: "session-\(name)") { [self] in
            session.run()
            ServerLog.info("\(name): client detached; device reset")
            lock.withLock {
                active = nil
                lock.broadcast()
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

    private func refuse(_ connection: OwnedFileDescriptor, _ errno: Errno) -> Refusal {
        lock.withLock { _clientsRefused += 1 }
        let deadline = monotonicNanoseconds() + UInt64(Self.refusalMilliseconds) * 1_000_000
        return Refusal(connection: connection, errno: errno, deadline: deadline)
    }

    /// Replies to a refused client's first message with its errno (unless that message asked for
    /// no reply); the connection closes when the refusal is dropped. What else the client sent is
    /// read and dropped first: a UNIX socket closed with unread data resets its peer, which would
    /// then see ECONNRESET instead of the reply and the end of the stream.
    private func answer(_ refusal: Refusal) {
        var bytes = [UInt8](repeating: 0, count: MessageHeader.size)
        let received = bytes.withUnsafeMutableBytes { recv(refusal.connection.rawValue, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }
        defer {
            var scratch = [UInt8](repeating: 0, count: 4096)
            while scratch.withUnsafeMutableBytes({ recv(refusal.connection.rawValue, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }) > 0 {}
        }
        guard received == MessageHeader.size else { return }
        let header: MessageHeader? = bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return try? MessageHeader(decoding: &reader)
        }
        guard let header, header.flags.isCommand, !header.flags.contains(.noReply) else { return }
        var writer = ByteWriter(capacity: MessageHeader.size)
        header.errorReply(errno: UInt32(refusal.errno.rawValue)).encode(into: &writer)
        try? MessageSender(socket: refusal.connection.descriptor).send(writer.bytes)
    }

    public var isAttached: Bool { lock.withLock { active != nil } }
    public var sessionsServed: Int { lock.withLock { _sessionsServed } }
    public var clientsRefused: Int { lock.withLock { _clientsRefused } }

    /// Waits until no client is attached (nil: for as long as it takes); false on timeout.
    public func waitUntilDetached(milliseconds: Int? = nil) -> Bool {
        guard let milliseconds else {
            lock.withLock { while active != nil { lock.wait() } }
            return true
        }
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
        if case let .listener(listener) = source { UnixSocket.shutdown(listener) }
        session?.shutdown()
        lock.withLock {
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while (active != nil || acceptorRunning) && monotonicNanoseconds() < deadline { lock.wait(milliseconds: 50) }
        }
        if let socketPath { UnixSocket.removeSocketFile(path: socketPath, ifIdentity: socketIdentity) }
        device.shutdown()
    }
}
