import MttyDevice
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
import VirtioDriver
import WorkerSandbox
#if canImport(Glibc)
import Glibc
#endif

/// `serve --isolate process`: every instance in a sandboxed worker of its own, run as the real
/// executable. What a worker may do is read from /proc, as an administrator would check it; a
/// worker is crashed from outside (a signal) or made to break its sandbox (a test-build request).
@Suite("Isolated workers")
struct IsolationTests {
    /// A manager with no device of its own, its instances in workers.
    static func manager(_ extra: [String] = []) throws -> ServerProcess {
        let server = try ServerProcess(arguments: ["--isolate", "process", "--no-default-device"] + extra, firstDevice: false)
        try #require(access(server.controlPath, F_OK) == 0, "the manager did not start: \(server.errors)")
        return server
    }

    static func control(_ server: ServerProcess, _ request: ManagementRequest) throws -> JSONValue {
        try ControlClient(path: server.controlPath).send(request)
    }

    /// `list`'s entry for `uuid`.
    static func listed(_ server: ServerProcess, _ uuid: String) throws -> JSONValue? {
        try control(server, .list)["instances"]?.arrayValue?.first { $0["uuid"]?.stringValue == uuid }
    }

    static func start(_ server: ServerProcess, _ type: String, _ parameters: [String: String] = [:]) throws -> (uuid: String, socket: String, pid: pid_t) {
        let instance = try control(server, .start(type: type, uuid: nil, parameters: parameters))["instance"]
        let uuid = try #require(instance?["uuid"]?.stringValue), socket = try #require(instance?["socket"]?.stringValue)
        let pid = try #require(instance?["pid"]?.intValue, "an isolated instance shows its worker's pid")
        return (uuid, socket, pid_t(pid))
    }

    /// Lines of /proc/PID/status, by field.
    static func status(_ pid: pid_t) -> [String: String] {
        var fields: [String: String] = [:]
        for line in readFile("/proc/\(pid)/status").split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1].drop { $0 == " " || $0 == "\t" }) }
        }
        return fields
    }

    /// Bytes through both UARTs of an mtty-2 and back (loopback), checked; a new client each time.
    static func serialWorks(_ socket: String, seed: UInt8) throws {
        let client = try VfioUserClient(path: socket)
        try client.negotiate()
        for bar in [RegionIndex.bar0, .bar1] {
            try client.write(bar, offset: 2, value: UART16550.fcrEnable)
            let bytes = (0..<8).map { seed &+ UInt8($0) }
            for byte in bytes { try client.write(bar, offset: 0, value: byte) }
            var back: [UInt8] = []
            while try client.read(bar, offset: 5, as: UInt8.self) & UART16550.lsrDataReady != 0 {
                back.append(try client.read(bar, offset: 0, as: UInt8.self))
            }
            #expect(back == bytes, "\(bar): wrote \(bytes), read back \(back)")
        }
    }

    /// How a worker that got SIGSEGV is reported. AddressSanitizer's own handler reads /proc
    /// for its report, which the sandbox forbids: under it the worker dies of that call instead.
    #if SANITIZER
    static let crashReports: Set<String> = ["killed by SIGSEGV", "killed by SIGSYS"]
    #else
    static let crashReports: Set<String> = ["killed by SIGSEGV"]
    #endif

    static func waitForState(_ server: ServerProcess, _ uuid: String, _ state: String) throws -> JSONValue? {
        for _ in 0..<200 {
            let entry = try listed(server, uuid)
            if entry?["state"]?.stringValue == state { return entry }
            usleep(20_000)
        }
        return try listed(server, uuid)
    }

    @Test func aWorkerRunsSandboxedWithOnlyItsOwnFDs() throws {
        let server = try Self.manager()
        let serial = try Self.start(server, "mtty-2")
        let fields = Self.status(serial.pid)
        #expect(fields["Seccomp"] == "2", "seccomp filter mode: \(fields["Seccomp"] ?? "none")")
        #expect(fields["NoNewPrivs"] == "1")
        #expect(fields["CapEff"] == "0000000000000000")
        #expect(fields["CapPrm"] == "0000000000000000")
        #expect(fields["CapBnd"] == "0000000000000000" || getuid() != 0, "a worker of root empties its bounding set")
        // 0-2, the instance's socket, the channel to the manager, and what the device made (eventfds).
        let targets = openFiles(of: serial.pid)
        #expect(targets[0] == "/dev/null")
        #expect(targets[3]?.hasPrefix("socket:") == true && targets[4]?.hasPrefix("socket:") == true, "\(targets)")
        let others = targets.filter { $0.key > 4 && !$0.value.hasPrefix("anon_inode:") }
        #expect(others.isEmpty, "a worker holds nothing else: \(targets)")
        // And it serves: the protocol through the sandbox.
        try Self.serialWorks(serial.socket, seed: 0x30)
        #expect(try Self.waitForState(server, serial.uuid, "idle")?["sessions"]?.intValue == 1)
    }

    /// The conversation the fault tests cut (VERSION, the queries, SET_IRQS and DMA_MAP with fds,
    /// config and BAR accesses, posted and multi writes, the migration query, DMA_UNMAP, RESET), in
    /// one go through a sandboxed worker: every reply a success, the guest memory mapped by the
    /// worker while the client holds it and let go when it leaves.
    @Test func theTypicalConversationGoesThroughAWorker() throws {
        let server = try Self.manager()
        let serial = try Self.start(server, "mtty-2")
        let name = "isolated-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let memory = try Memfd(size: 0x1_0000, name: name)
        let client = try VfioUserClient(path: serial.socket)
        let replies = try Conversation.run(on: client, fd: memory.fd.descriptor)
        #expect(replies == Conversation.messages.count - 2, "every request answered, the two posted writes not")
        let mapped = { readFile("/proc/\(serial.pid)/maps").split(separator: "\n").filter { $0.contains("/memfd:\(name)") }.count }
        #expect(mapped() > 0, "the worker maps the client's memory")
        #expect(openFiles(of: getpid()).values.contains("/memfd:\(name) (deleted)"))
        _ = consume client
        _ = try Self.waitForState(server, serial.uuid, "idle")
        #expect(mapped() == 0, "and unmaps it when the client leaves")
        #expect(!openFiles(of: serial.pid).values.contains { $0.contains(name) }, "keeping no copy of its fd")
        withExtendedLifetime(memory) {}
    }

    @Test(.enabled(if: getuid() == 0, "the capability sets of root"))
    func theManagerHoldsNetAdminOnlyWhileItOpensATAP() throws {
        let server = try Self.manager()
        let fields = Self.status(server.pid)
        let netAdmin: UInt64 = 1 << 12 // CAP_NET_ADMIN
        let effective = try #require(UInt64(fields["CapEff"] ?? "", radix: 16)), permitted = try #require(UInt64(fields["CapPrm"] ?? "", radix: 16))
        #expect(permitted & netAdmin != 0, "kept in the permitted set, to open TAPs on request")
        #expect(effective & netAdmin == 0, "but not effective meanwhile: \(fields["CapEff"] ?? "")")
    }

    @Test(.enabled(if: getuid() == 0, "changing user needs root"))
    func aWorkerRunsAsTheUserGiven() throws {
        let server = try Self.manager(["--user", "nobody"])
        let serial = try Self.start(server, "mtty-2")
        let uid = Self.status(serial.pid)["Uid"]?.split(whereSeparator: \.isWhitespace).map(String.init)
        let nobody = try #require(getpwnam("nobody")).pointee.pw_uid
        #expect(uid == Array(repeating: String(nobody), count: 4), "real, effective, saved and fs uid: \(uid ?? [])")
        #expect(Self.status(serial.pid)["Groups"] == "", "no supplementary groups")
        try Self.serialWorks(serial.socket, seed: 0x40)
    }

    @Test func theConfigurationFileIsolatesItsDevices() throws {
        let directory = TemporaryDirectory()
        let uuid = "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c21"
        let path = directory.path + "/devices.json"
        let text = "{\"isolate\": \"process\", \"devices\": [{\"uuid\": \"\(uuid)\", \"type\": \"mtty-2\"}]}"
        try writeFile(text, to: path)
        let server = try ServerProcess(arguments: ["--config", path], firstDevice: false)
        let entry = try #require(try Self.listed(server, uuid), "the file's device runs: \(server.errors)")
        let pid = try #require(entry["pid"]?.intValue, "in a worker")
        #expect(Self.status(pid_t(pid))["Seccomp"] == "2")
        try Self.serialWorks(try #require(entry["socket"]?.stringValue), seed: 0x70)
    }

    @Test func aDeviceTheWorkerCannotMakeIsRefusedWithItsReason() throws {
        let server = try Self.manager()
        do {
            _ = try Self.control(server, .start(type: "virtio-net", uuid: nil, parameters: ["datagram": "/nonexistent/a.sock,/nonexistent/b.sock"]))
            Issue.record("a datagram cable in a missing directory was accepted")
        } catch let error as ManagementError {
            #expect(error.errno == .invalidArgument, "\(error)")
            #expect(error.message.contains("cannot bind /nonexistent/a.sock"), "\(error)")
        }
        #expect(try Self.control(server, .list)["instances"]?.arrayValue?.isEmpty == true, "nothing left behind")
        #expect(directoryEntries(server.directory.path)?.filter { $0.hasSuffix(".sock") && $0 != "control.sock" } == [], "no socket file")
    }

    @Test func anUnknownUserIsRefusedAtStart() throws {
        let result = try ServerProcess.run(["--isolate", "process", "--user", "no-such-user-here", "--no-control"])
        #expect(result.status != 0)
        #expect(result.errors.contains("no user 'no-such-user-here'"), "\(result.errors)")
    }

    @Test func aForbiddenSystemCallKillsOnlyThatWorker() throws {
        let server = try Self.manager()
        let victim = try Self.start(server, "mtty-2"), bystander = try Self.start(server, "mtty-2")
        let client = try VfioUserClient(path: bystander.socket)
        try client.negotiate()

        #expect(throws: ManagementError.self) { try Self.control(server, .forbiddenCall(uuid: victim.uuid)) }
        let failed = try Self.waitForState(server, victim.uuid, "failed")
        #expect(failed?["state"]?.stringValue == "failed")
        #expect(failed?["failure"]?.stringValue == "killed by SIGSYS", "\(failed?.text ?? "")")
        #expect(server.errors.contains("killed by SIGSYS"), "the manager says so in its log")
        // The other instance's client goes on, on the same connection, and the manager too.
        try client.write(.bar0, offset: 2, value: UART16550.fcrEnable)
        try client.write(.bar0, offset: 0, value: UInt8(0x5A))
        #expect(try client.read(.bar0, offset: 0, as: UInt8.self) == 0x5A)
        #expect(try Self.listed(server, bystander.uuid)?["state"]?.stringValue == "attached")
        #expect(!server.hasExited)
    }

    @Test func aCrashUnderTrafficIsContainedAndTheInstanceRestarts() throws {
        let server = try Self.manager()
        let cable = server.directory.path
        let left = try Self.start(server, "virtio-net", ["datagram": "\(cable)/left,\(cable)/right", "mac": "52:54:00:00:20:01"])
        let right = try Self.start(server, "virtio-net", ["datagram": "\(cable)/right,\(cable)/left", "mac": "52:54:00:00:20:02"])
        let serial = try Self.start(server, "mtty-2")
        let serialClient = try VfioUserClient(path: serial.socket)
        try serialClient.negotiate()

        let drivers = [try VirtioNetDriver(path: left.socket), try VirtioNetDriver(path: right.socket)]
        for driver in drivers {
            #expect(try driver.negotiate([.version1, .netMAC]))
            try driver.start(queueSize: 256)
            try driver.postReceiveBuffers(64)
        }
        let to: [UInt8] = [0x52, 0x54, 0, 0, 0x20, 0x02]
        var sent = 0, received = 0
        for batch in 0..<20 {
            if batch == 10 {
                kill(serial.pid, SIGSEGV) // halfway: the serial card's worker dies
                #expect(connectionClosed(serialClient), "the crashed worker's client sees its connection end")
            }
            let frames = (0..<16).map { TestFrame.make(to: to, length: 60 + batch * 50 + $0, tag: sent + $0) }
            #expect(try drivers[0].transmit(frames) == frames.count)
            let arrived = try drivers[1].receive(count: frames.count, milliseconds: 5000)
            #expect(arrived.map(\.frame) == frames, "batch \(batch): \(arrived.count) of \(frames.count) frames arrived as sent")
            _ = try drivers[0].reclaimTransmitted(waitingFor: frames.count)
            try drivers[1].postReceiveBuffers(arrived.count)
            sent += frames.count
            received += arrived.count
        }
        #expect(received == sent, "the NICs' traffic went on: \(received) of \(sent) frames")

        let failed = try Self.waitForState(server, serial.uuid, "failed")
        #expect(Self.crashReports.contains(failed?["failure"]?.stringValue ?? ""), "\(failed?.text ?? "")")
        #expect(try Self.listed(server, left.uuid)?["state"]?.stringValue == "attached")

        let restarted = try Self.control(server, .restart(uuid: serial.uuid))["instance"]
        let newPID = try #require(restarted?["pid"]?.intValue)
        #expect(pid_t(newPID) != serial.pid)
        #expect(restarted?["state"]?.stringValue == "idle")
        try Self.serialWorks(serial.socket, seed: 0x60)
        // A running instance is not restarted.
        expectManagementError(.resourceBusy) { _ = try Self.control(server, .restart(uuid: left.uuid)) }
    }

    @Test func aManagerThatDiesTakesItsWorkersWithIt() throws {
        let server = try Self.manager()
        let serial = try Self.start(server, "mtty-2")
        kill(server.pid, SIGKILL)
        _ = server.waitForExit(milliseconds: 5000)
        // Its channel closed, the worker ends by itself (a zombie of a reaper that never reaps counts as ended).
        var running = true
        for _ in 0..<500 where running {
            running = kill(serial.pid, 0) == 0 && Self.status(serial.pid)["State"]?.hasPrefix("Z") != true
            if running { usleep(20_000) }
        }
        #expect(!running, "worker \(serial.pid) still runs 10 s after its manager died")
    }

    @Test func stopAndSIGTERMEndTheWorkersAndTakeTheSocketsAway() throws {
        let server = try Self.manager()
        let first = try Self.start(server, "mtty-1"), second = try Self.start(server, "mtty-2")
        let client = try VfioUserClient(path: second.socket)
        try client.negotiate()
        expectManagementError(.resourceBusy) { _ = try Self.control(server, .stop(uuid: second.uuid, force: false, timeoutMilliseconds: nil)) }
        _ = try Self.control(server, .stop(uuid: first.uuid, force: false, timeoutMilliseconds: nil))
        #expect(access(first.socket, F_OK) != 0, "the stopped instance's socket is gone")
        #expect(kill(first.pid, 0) != 0, "its worker has exited")

        kill(server.pid, SIGTERM)
        #expect(server.waitForExit(milliseconds: 10_000) == 0, "the manager exits 0: \(server.errors)")
        #expect(access(second.socket, F_OK) != 0, "every socket is gone")
        #expect(kill(second.pid, 0) != 0, "every worker is gone")
        #expect(connectionClosed(client))
    }
}

@Suite("Isolation docs")
struct IsolationDocsTests {
    /// RELIABILITY.md's table of allowed system calls is the filter's list, no more, no less.
    @Test func theDocumentedSystemCallsAreTheFiltersList() throws {
        let lines = readFile(repositoryRoot + "/RELIABILITY.md").split(separator: "\n", omittingEmptySubsequences: false)
        let start = try #require(lines.firstIndex { $0.hasPrefix("**The allowed system calls**") }, "RELIABILITY.md has the list")
        let table = lines[start...].drop { !$0.hasPrefix("|") }.prefix { $0.hasPrefix("|") }.dropFirst(2)
        var documented: [String] = []
        for row in table {
            let cells: [Substring] = row.split(separator: "|")
            guard cells.count >= 2 else { continue }
            let pieces: [Substring] = cells[1].split(separator: "`", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() where index % 2 == 1 { documented.append(String(piece)) }
        }
        #expect(documented.sorted() == Sandbox.rules.map(\.name).sorted())
    }
}
