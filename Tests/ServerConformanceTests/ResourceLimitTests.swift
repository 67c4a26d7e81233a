import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// A server out of fds or threads (a low RLIMIT_NOFILE or RLIMIT_NPROC, a storm of clients):
/// each request that cannot be served gets its errno, and every attached client keeps working.
/// The server runs under prlimit (and setpriv: RLIMIT_NPROC does not bind root), as a service
/// manager would limit it.
@Suite("Running out of fds and threads")
struct ResourceLimitTests {
    /// Clients that each connect and send VERSION at once; how each was answered: an errno name,
    /// "served", or what went wrong otherwise (a timeout among them).
    static func storm(_ path: String, clients: Int) -> [String] {
        let outcomes = Shared<[String]>([])
        let threads = (0..<clients).map { _ in
            Thread {
                let outcome: String
                do {
                    let client = try VfioUserClient(path: path)
                    var writer = ByteWriter()
                    VersionPayload(major: 0, minor: 0, json: VfioUserClient.qemuCapabilities.json).encode(into: &writer)
                    _ = try client.request(.version, payload: writer.bytes, timeoutMilliseconds: 10_000)
                    outcome = "served"
                } catch let ClientError.errorReply(_, errno) {
                    outcome = errno.name
                } catch {
                    outcome = "\(error)"
                }
                outcomes.withLock { $0.append(outcome) }
            }
        }
        threads.forEach { $0.join() }
        return outcomes.value
    }

    /// One management request on a new control connection: its reply, or the error it got.
    static func managementOutcome(_ controlPath: String, _ request: ManagementRequest) -> Result<JSONValue, ManagementError> {
        Result { () throws(ManagementError) in try ControlClient(path: controlPath).send(request) }
    }

    @Test func outOfFileDescriptorsEveryRequestGetsEMFILEAndTheAttachedClientGoesOn() throws {
        let server = try ServerProcess(arguments: ["--nofile=48:48", "--", ServerProcess.executable,
                                                   "--type", "virtio-net", "--param", "backend=sink"], program: "prlimit")
        let attached = try VfioUserClient(path: server.path)
        try attached.negotiate()
        let vectors = try (0..<4).map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
        try attached.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 4, fds: vectors.map(\.descriptor))
        let memory = try Memfd(size: 1 << 20)
        try attached.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Conversation.iova, size: 1 << 20), fd: memory.fd.descriptor)
        let control = try ControlClient(path: server.controlPath)
        _ = try control.send(.types) // answered: the server has accepted the connection
        let baseline = server.openFDCount

        // Instances until one cannot be made: its socket finds no fd.
        var made: [String] = []
        var refusal: ManagementError?
        while refusal == nil && made.count < 48 {
            switch Result(catching: { () throws(ManagementError) in try control.send(.start(type: "mtty-1", uuid: nil, parameters: [:])) }) {
            case let .success(reply): made.append(try #require(reply["instance"]?["uuid"]?.stringValue))
            case let .failure(error): refusal = error
            }
        }
        let refused = try #require(refusal, "48 instances made under a limit of 48 fds")
        #expect(refused.errno == .tooManyOpenFiles, "\(refused.message)")
        #expect(!made.isEmpty)
        // Management connections until one is refused: now not one fd is left but the reserves.
        var held: [ControlClient] = []
        while held.count < 48 {
            let connection = try ControlClient(path: server.controlPath)
            do throws(ManagementError) {
                _ = try connection.send(.types)
                held.append(connection)
            } catch {
                #expect(error.errno == .tooManyOpenFiles, "\(error.message)")
                break
            }
        }
        #expect(held.count < 48)

        // Out of fds: SET_IRQS and DMA_MAP with fds fail with EMFILE and change nothing.
        let fresh = try (0..<4).map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
        expectErrno(.tooManyOpenFiles) {
            try attached.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 4, fds: fresh.map(\.descriptor))
        }
        try attached.setIRQs(.msix, [.dataNone, .actionTrigger], start: 0, count: 4)
        #expect(vectors.map { fired($0, waitingMilliseconds: 2000) } == [1, 1, 1, 1], "the eventfds assigned before still fire")
        #expect(fresh.map { fired($0) } == [0, 0, 0, 0])
        expectErrno(.tooManyOpenFiles) {
            try attached.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: Conversation.iova + (1 << 20), size: 4096), fd: memory.fd.descriptor)
        }
        // A storm of clients: each hears EMFILE, one after another through the acceptor's reserve.
        let outcomes = Self.storm(server.path, clients: 12)
        #expect(outcomes == Array(repeating: "EMFILE", count: 12), "\(outcomes)")
        switch Self.managementOutcome(server.controlPath, .list) {
        case let .success(reply): Issue.record("a new management client was served: \(reply.text)")
        case let .failure(error): #expect(error.errno == .tooManyOpenFiles, "\(error.message)")
        }
        // The attached client did not notice.
        #expect(try attached.read(.config, offset: 0, as: UInt32.self) == 0x1041_1AF4)
        // An acceptor that just refused a client takes its reserve fd back a moment later.
        #expect(server.waitForFDCount(48) == 48, "every fd the limit allows is in use, the reserves among them")

        // Fds back: everything works again.
        held.removeAll()
        for uuid in made { _ = try control.send(.stop(uuid: uuid, force: false, timeoutMilliseconds: nil)) }
        #expect(server.waitForFDCount(baseline) == baseline)
        try attached.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 4, fds: fresh.map(\.descriptor))
        try attached.setIRQs(.msix, [.dataNone, .actionTrigger], start: 0, count: 1)
        #expect(fired(fresh[0], waitingMilliseconds: 2000) == 1)
        let instance = try control.send(.start(type: "mtty-2", uuid: nil, parameters: [:]))
        let newcomer = try VfioUserClient(path: try #require(instance["instance"]?["socket"]?.stringValue))
        try newcomer.negotiate()
        #expect(try newcomer.read(.config, offset: 0, as: UInt32.self) == 0x3253_4348)
        #expect(server.terminate() == 0)
    }

    /// Threads of every process of `uid` (RLIMIT_NPROC counts them all).
    static func tasks(ofUser uid: uid_t) -> Int {
        var count = 0
        for pid in directoryEntries("/proc") ?? [] where pid.allSatisfy(\.isNumber) {
            let owner = readFile("/proc/\(pid)/status").split(separator: "\n").first { $0.hasPrefix("Uid:") }
            guard let owner, owner.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first == Substring(String(uid)) else { continue }
            count += directoryEntries("/proc/\(pid)/task")?.count ?? 0
        }
        return count
    }

    @Test(.enabled(if: geteuid() == 0, "the server runs as nobody, under a thread limit only root can set for it"))
    func outOfThreadsEveryRequestGetsEAGAINAndTheAttachedClientGoesOn() throws {
        let nobody: uid_t = 65534
        func start(threadLimit: Int) throws -> ServerProcess {
            try ServerProcess(arguments: ["--nproc=\(threadLimit):\(threadLimit)", "setpriv", "--reuid=\(nobody)", "--regid=\(nobody)",
                                          "--clear-groups", "--", ServerProcess.executable, "--type", "mtty-2"],
                              program: "prlimit", directoryOwner: nobody)
        }
        // How many threads the server starts with, then a limit three above that: RLIMIT_NPROC
        // counts every thread of the user, so the user's other threads are added in.
        let probe = try start(threadLimit: 4096)
        let serverThreads = directoryEntries("/proc/\(probe.pid)/task")?.count ?? 0
        try #require(serverThreads > 1 && probe.terminate() == 0)
        let server = try start(threadLimit: Self.tasks(ofUser: nobody) + serverThreads + 3)
        try #require(!server.hasExited, "\(server.errors)")

        let attached = try VfioUserClient(path: server.path) // a session thread: the first of three
        try attached.negotiate()
        let control = try ControlClient(path: server.controlPath) // a management connection's thread
        // An instance's acceptor thread: the last one.
        let idle = try #require(try control.send(.start(type: "mtty-1", uuid: nil, parameters: [:]))["instance"]?["socket"]?.stringValue)
        // Another instance needs an acceptor thread (a virtio-net also its datapath's), and that
        // was the last one.
        expectManagementError(.resourceTemporarilyUnavailable) {
            _ = try control.send(.start(type: "mtty-1", uuid: nil, parameters: [:]))
        }
        expectManagementError(.resourceTemporarilyUnavailable) {
            _ = try control.send(.start(type: "virtio-net", uuid: nil, parameters: ["backend": "sink"]))
        }
        // INTx's unmask eventfd needs the eventfd watcher's thread.
        let unmask = try OwnedFileDescriptor.eventfd()
        expectErrno(.resourceTemporarilyUnavailable) {
            try attached.setIRQs(.intx, [.dataEventfd, .actionUnmask], fds: [unmask.descriptor])
        }
        // A client at an idle instance needs a session thread: refused with EAGAIN, by the acceptor.
        #expect(Self.storm(idle, clients: 8) == Array(repeating: "EAGAIN", count: 8))
        // A management client needs a thread: its request is answered EAGAIN.
        switch Self.managementOutcome(server.controlPath, .list) {
        case let .success(reply): Issue.record("a new management client was served: \(reply.text)")
        case let .failure(error): #expect(error.errno == .resourceTemporarilyUnavailable, "\(error.message)")
        }
        // The attached client did not notice.
        try attached.write(.bar0, offset: 7, value: UInt8(0x5A))
        #expect(try attached.read(.bar0, offset: 7, as: UInt8.self) == 0x5A)

        // A thread back (the attached client leaves): the idle instance serves a client again.
        UnixSocket.shutdown(attached.socket)
        var served = false
        for _ in 0..<100 where !served {
            served = (try? VfioUserClient(path: idle).negotiate()) != nil
            if !served { usleep(20_000) }
        }
        #expect(served)
        #expect(server.terminate() == 0)
    }
}
