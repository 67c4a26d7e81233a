import MttyDevice
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Mediated device types and instances")
struct MediatedDeviceTests {
    @Test func mttyTypesShareTwentyFourPorts() throws {
        let server = try ManagedServer()
        #expect(try server.available(except: "mbochs") == ["mtty-1": 24, "mtty-2": 12, "virtio-net": 64])
        let first = try server.start("mtty-2")
        #expect(try server.available(except: "mbochs") == ["mtty-1": 22, "mtty-2": 11, "virtio-net": 64])
        try server.start("mtty-1")
        #expect(try server.available(except: "mbochs") == ["mtty-1": 21, "mtty-2": 10, "virtio-net": 64])
        for _ in 0..<10 { try server.start("mtty-2") }
        #expect(try server.available(except: "mbochs") == ["mtty-1": 1, "mtty-2": 0, "virtio-net": 64])
        expectManagementError(.noSpace) { try server.start("mtty-2") }
        try server.start("mtty-1")
        expectManagementError(.noSpace) { try server.start("mtty-1") }
        #expect(try server.available(except: "mbochs") == ["mtty-1": 0, "mtty-2": 0, "virtio-net": 64])
        try server.send(.stop(uuid: first.uuid, force: false, timeoutMilliseconds: nil))
        #expect(try server.available(except: "mbochs") == ["mtty-1": 2, "mtty-2": 1, "virtio-net": 64])
    }

    @Test func typesReportTheSysfsAttributes() throws {
        let server = try ManagedServer(pools: ["virtio-net": 3])
        guard case let .array(types)? = try server.send(.types)["types"] else { throw ManagementError(.ioError, "no types") }
        #expect(types.map { $0["id"] } == ["mtty-1", "mtty-2", "virtio-net", "mbochs-small", "mbochs-medium", "mbochs-large"])
        #expect(types[1]["id"] == "mtty-2")
        #expect(types[1]["name"] == "Dual port serial")
        #expect(types[1]["device_api"] == "vfio-pci")
        #expect(types[1]["pool"] == "mtty-ports")
        #expect(types[1]["cost"] == 2)
        #expect(types[2]["available_instances"] == 3, "the pool size comes from the configuration")
        #expect(types[2]["parameters"]?["tap"] != nil)
    }

    @Test func uuidsAreValidatedAndDuplicatesRefused() throws {
        let server = try ManagedServer()
        for bad in ["", "1234", "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c0", "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c0g",
                    "0f3c5d2e7a41-4c1b-9d0e-2b6a8f4e1c011", "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c011", "{0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c}"] {
            expectManagementError(.invalidArgument) { try server.start("mtty-1", uuid: bad) }
        }
        let created = try server.start("mtty-1", uuid: "0F3C5D2E-7A41-4C1B-9D0E-2B6A8F4E1C01")
        #expect(created.uuid == "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01", "kept in canonical lower case")
        #expect(created.socket == server.directory.path + "/0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01.sock")
        expectManagementError(.fileExists) { try server.start("mtty-2", uuid: "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01") }
        expectManagementError(.invalidArgument) { try server.send(.stop(uuid: "nope", force: false, timeoutMilliseconds: nil)) }
        expectManagementError(.noSuchFileOrDirectory) {
            try server.send(.stop(uuid: "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c02", force: false, timeoutMilliseconds: nil))
        }
        #expect(try server.available()["mtty-1"] == 23, "failed requests took nothing from the pool")
    }

    @Test func eachInstanceIsServedOnItsOwnSocketAndReleasedWhenItsClientLeaves() throws {
        let server = try ManagedServer()
        let serial = try server.start("mtty-2")
        let nic = try server.start("virtio-net", ["backend": "sink", "mac": "52:54:00:aa:bb:cc"])
        #expect(server.files == [serial.uuid + ".sock", nic.uuid + ".sock", "control.sock"].sorted())
        do {
            let a = try VfioUserClient(path: serial.socket)
            try a.negotiate()
            let b = try VfioUserClient(path: nic.socket)
            try b.negotiate()
            #expect(try a.read(.config, offset: 0, as: UInt32.self) == 0x3253_4348)
            #expect(try b.read(.config, offset: 0, as: UInt32.self) == 0x1041_1AF4)
            #expect(try server.states() == [serial.uuid: "attached", nic.uuid: "attached"])
        }
        for uuid in [serial.uuid, nic.uuid] {
            let instance = try #require(MdevUUID(uuid).flatMap(server.manager.instance))
            #expect(instance.endpoint?.waitUntilDetached(milliseconds: 5000) == true)
        }
        #expect(try server.states() == [serial.uuid: "idle", nic.uuid: "idle"])
        let list = try #require(try server.send(.list)["instances"]?.arrayValue)
        try #require(list.count == 2)
        #expect(list[0]["sessions"] == 1)
        #expect(list[1]["params"] == ["backend": "sink", "mac": "52:54:00:aa:bb:cc"])
        #expect(list[1]["origin"] == "control-socket")
    }

    @Test func aFailedCreationLeavesNothingBehind() throws {
        let server = try ManagedServer()
        let uuid = "6e2f1c3a-0b9d-4e8f-a7c6-5d4b3a2f1e01"
        expectManagementError(.invalidArgument) { try server.start("mtty-3", uuid: uuid) }
        expectManagementError(.invalidArgument) { try server.start("mtty-1", uuid: uuid, ["ports": "2"]) }
        expectManagementError(.invalidArgument) { try server.start("virtio-net", uuid: uuid, ["backend": "sink", "mac": "52:54:00:zz:00:01"]) }
        expectManagementError(.invalidArgument) { try server.start("virtio-net", uuid: uuid, ["backend": "sink", "queue-size": "100"]) }
        expectManagementError(.invalidArgument) { try server.start("virtio-net", uuid: uuid, ["backend": "sink", "msix": "maybe"]) }
        expectManagementError(.invalidArgument) { try server.start("virtio-net", uuid: uuid, ["backend": "sink", "tap": "x"]) }
        expectManagementError(.invalidArgument) { try server.start("virtio-net", uuid: uuid, ["datagram": "/nonexistent/a.sock,/nonexistent/b.sock"]) }
        #expect(try server.states().isEmpty)
        #expect(server.files == ["control.sock"])
        #expect(try server.available(except: "mbochs") == ["mtty-1": 24, "mtty-2": 12, "virtio-net": 64])
        #expect(try server.start("virtio-net", uuid: uuid, ["backend": "sink"]).uuid == uuid, "the UUID is free again")
    }

    @Test func aSocketThatCannotBeCreatedFailsTheCreationCleanly() throws {
        let server = try ManagedServer()
        let uuid = "6e2f1c3a-0b9d-4e8f-a7c6-5d4b3a2f1e02"
        mkdir(server.directory.path + "/\(uuid).sock", 0o700) // a directory where the socket would go
        defer { rmdir(server.directory.path + "/\(uuid).sock") }
        expectManagementError(.fileExists) { try server.start("mtty-2", uuid: uuid) }
        #expect(try server.states().isEmpty)
        #expect(try server.available()["mtty-2"] == 12)
    }

    @Test func removingAnAttachedInstanceIsRefusedAndTheClientKeepsWorking() throws {
        let server = try ManagedServer()
        let serial = try server.start("mtty-1")
        let client = try VfioUserClient(path: serial.socket)
        try client.negotiate()
        try client.write(.bar0, offset: 7, value: UInt8(0x5A))
        expectManagementError(.resourceBusy) { try server.send(.stop(uuid: serial.uuid, force: false, timeoutMilliseconds: nil)) }
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 0x5A)
        #expect(try server.states() == [serial.uuid: "attached"])
        #expect(server.files.contains(serial.uuid + ".sock"))
        UnixSocket.shutdown(client.socket)
        let instance = try #require(MdevUUID(serial.uuid).flatMap(server.manager.instance))
        #expect(instance.endpoint?.waitUntilDetached(milliseconds: 5000) == true)
        #expect(try server.send(.stop(uuid: serial.uuid, force: false, timeoutMilliseconds: nil))["client"] == "no-client")
        #expect(server.files == ["control.sock"])
    }

    @Test func forcedRemovalRaisesREQAndWaitsForTheClientToLetGo() throws {
        let server = try ManagedServer()
        let serial = try server.start("mtty-2")
        let client = try VfioUserClient(path: serial.socket)
        try client.negotiate()
        let request = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.req, [.dataEventfd, .actionTrigger], fds: [request.descriptor])
        // The client plays QEMU's part: on REQ it lets go of the device.
        let socket = client.socket
        let letGo = Thread {
            if fired(request, waitingMilliseconds: 10_000) == 1 { UnixSocket.shutdown(socket) }
        }
        let started = monotonicNanoseconds()
        let reply = try server.send(.stop(uuid: serial.uuid, force: true, timeoutMilliseconds: 10_000))
        letGo.join()
        #expect(reply["client"] == "released")
        #expect(monotonicNanoseconds() - started < 5_000_000_000, "it went as soon as the client let go")
        #expect(server.files == ["control.sock"])
        #expect(try server.available()["mtty-2"] == 12)
    }

    @Test func forcedRemovalDisconnectsAClientThatHoldsOn() throws {
        let server = try ManagedServer()
        for registersREQ in [true, false] {
            let serial = try server.start("mtty-2")
            let client = try VfioUserClient(path: serial.socket)
            try client.negotiate()
            let request = try OwnedFileDescriptor.eventfd(nonBlocking: true)
            if registersREQ { try client.setIRQs(.req, [.dataEventfd, .actionTrigger], fds: [request.descriptor]) }
            let reply = try server.send(.stop(uuid: serial.uuid, force: true, timeoutMilliseconds: 200))
            #expect(reply["client"] == "disconnected")
            #expect(fired(request) == (registersREQ ? 1 : 0))
            #expect(connectionClosed(client))
        }
        #expect(try server.states().isEmpty)
        #expect(server.files == ["control.sock"])
    }

    @Test func racingCreatesAndRemovesOfOneUUIDHaveExactlyOneWinner() throws {
        let server = try ManagedServer()
        let uuid = "1b4e28ba-2fa1-4d2d-883f-0016d3cca427"
        for _ in 0..<5 {
            let outcomes = Shared<[String]>([])
            let threads = (0..<8).map { _ in
                Thread {
                    let result = outcome { try server.start("mtty-1", uuid: uuid) }
                    outcomes.withLock { $0.append(result) }
                }
            }
            threads.forEach { $0.join() }
            let created = outcomes.withLock { $0 }
            #expect(created.filter { $0 == "ok" }.count == 1)
            #expect(created.filter { $0 == "EEXIST" }.count == 7)

            outcomes.withLock { $0 = [] }
            let removers = (0..<8).map { _ in
                Thread {
                    let result = outcome { try server.send(.stop(uuid: uuid, force: false, timeoutMilliseconds: nil)) }
                    outcomes.withLock { $0.append(result) }
                }
            }
            removers.forEach { $0.join() }
            let removed = outcomes.withLock { $0 }
            #expect(removed.filter { $0 == "ok" }.count == 1)
            #expect(removed.allSatisfy { ["ok", "ENOENT", "EBUSY"].contains($0) }, "\(removed)")
        }
        #expect(try server.available()["mtty-1"] == 24)
        #expect(server.files == ["control.sock"])
    }

    /// The kernel's remove race: one thread creating devices while several remove them.
    @Test func concurrentCreationAndRemovalKeepThePoolExact() throws {
        let server = try ManagedServer()
        let stop = Shared(false), created = Shared(0), removed = Shared(0)
        // Each creator makes 30 instances, waiting for ports when the pool is empty; four removers
        // take instances away as fast as they can see them.
        let unconnected = Shared(0)
        let creators = (0..<2).map { n in
            Thread {
                guard let control = try? server.client() else { return unconnected.withLock { $0 += 1 } }
                var made = 0
                for attempt in 0..<5000 where made < 30 {
                    let type = (attempt + n) % 2 == 0 ? "mtty-1" : "mtty-2"
                    if (try? control.send(.start(type: type, uuid: nil, parameters: [:]))) != nil {
                        made += 1
                        created.withLock { $0 += 1 }
                    } else {
                        usleep(200)
                    }
                }
            }
        }
        let removers = (0..<4).map { _ in
            Thread {
                guard let control = try? server.client() else { return unconnected.withLock { $0 += 1 } }
                while !stop.value {
                    guard case let .array(instances)? = try? control.send(.list)["instances"], !instances.isEmpty,
                          case let .string(uuid)? = instances.randomElement()?["uuid"] else { continue }
                    if (try? control.send(.stop(uuid: uuid, force: false, timeoutMilliseconds: nil))) != nil { removed.withLock { $0 += 1 } }
                }
            }
        }
        creators.forEach { $0.join() }
        stop.value = true
        removers.forEach { $0.join() }
        #expect(unconnected.value == 0, "every thread reached the control socket")
        #expect(created.value == 60, "every creation eventually found ports")
        #expect(removed.value >= 60 - 24, "at most 24 instances can be left")

        let left = try #require(try server.send(.list)["instances"]?.arrayValue)
        var portsUsed: Int64 = 0
        for instance in left {
            #expect(instance["state"] == "idle")
            portsUsed += instance["type"] == "mtty-2" ? 2 : 1
        }
        #expect(try server.available()["mtty-1"] == 24 - portsUsed)
        #expect(server.files.count == left.count + 1, "one socket per instance and the control socket")
        for instance in left {
            guard case let .string(uuid)? = instance["uuid"] else { continue }
            let client = try VfioUserClient(path: server.manager.socketPath(for: try #require(MdevUUID(uuid))))
            defer { _ = client }
            try client.negotiate()
            try server.send(.stop(uuid: uuid, force: true, timeoutMilliseconds: 0))
        }
        #expect(try server.available(except: "mbochs") == ["mtty-1": 24, "mtty-2": 12, "virtio-net": 64])
        #expect(server.files == ["control.sock"])
    }

    @Test func sixtyFourInstancesAreAttachedAtOnce() throws {
        let server = try ManagedServer(pools: ["mtty-ports": 32, "virtio-net": 32])
        var serials: [String] = []
        var nics: [String] = []
        for _ in 0..<32 { serials.append(try server.start("mtty-1").socket) }
        for _ in 0..<32 { nics.append(try server.start("virtio-net", ["backend": "sink"]).socket) }
        var clients: [VfioUserClient] = []
        for (index, socket) in serials.enumerated() {
            let client = try VfioUserClient(path: socket)
            try client.negotiate()
            try client.write(.bar0, offset: 2, value: UART16550.fcrEnable)
            try client.write(.bar0, offset: 0, value: UInt8(index))
            clients.append(client)
        }
        for socket in nics {
            let client = try VfioUserClient(path: socket)
            try client.negotiate()
            clients.append(client)
        }
        #expect(try server.states().values.filter { $0 == "attached" }.count == 64)
        // Every device is its own: each UART gives back the byte its own client wrote.
        for (index, client) in clients.prefix(32).enumerated() {
            #expect(try client.read(.bar0, offset: 0, as: UInt8.self) == UInt8(index))
        }
        for client in clients.suffix(32) {
            #expect(try client.read(.config, offset: 0, as: UInt32.self) == 0x1041_1AF4)
        }
    }

    @Test func shutdownDisconnectsClientsRemovesSocketsAndRefusesNewInstances() throws {
        let server = try ManagedServer()
        let serial = try server.start("mtty-2")
        try server.start("virtio-net", ["backend": "sink"])
        let client = try VfioUserClient(path: serial.socket)
        try client.negotiate()
        server.manager.shutdown()
        #expect(connectionClosed(client))
        #expect(server.files == ["control.sock"])
        expectManagementError(Errno(rawValue: ESHUTDOWN)) { try server.start("mtty-1") }
    }
}

/// "ok", or the errno name of the management error `body` threw.
private func outcome(_ body: () throws -> Any) -> String {
    do {
        _ = try body()
        return "ok"
    } catch let error as ManagementError {
        return error.errno.name
    } catch {
        return "\(error)"
    }
}

@Suite("The control socket")
struct ControlSocketTests {
    @Test func badRequestsGetAnErrorReplyAndTheConnectionKeepsServing() throws {
        let server = try ManagedServer()
        let control = try server.client()
        let cases: [(String, String)] = [
            ("{\"command\":", "not JSON"),
            ("[1,2]", "a request is a JSON object"),
            ("{}", "no \"command\""),
            ("{\"command\":\"explode\"}", "unknown command"),
            ("{\"command\":\"start\"}", "needs a \"type\""),
            ("{\"command\":\"start\",\"type\":\"mtty-1\",\"params\":[1]}", "\"params\" is an object"),
            ("{\"command\":\"stop\",\"uuid\":\"x\",\"force\":1}", "\"force\" is a boolean"),
            ("{\"command\":\"stop\",\"uuid\":\"x\",\"timeout_ms\":-1}", "timeout_ms"),
            ("{\"command\":\"list\",\"verbose\":true}", "takes no member \"verbose\""),
        ]
        for (line, reason) in cases {
            let reply = try control.exchange(line)
            #expect(reply["ok"] == false)
            #expect(reply["errno"] == "EINVAL")
            guard case let .string(message)? = reply["error"] else { continue }
            #expect(message.contains(reason), "\(line) → \(message)")
        }
        #expect(try control.exchange("{\"command\":\"list\",\"id\":7}") == ["id": 7, "ok": true, "instances": []])
    }

    @Test func anOverlongLineIsRefusedAndTheConnectionClosed() throws {
        let server = try ManagedServer()
        let control = try server.client()
        let reply = try control.exchange(String(repeating: " ", count: ControlServer.maxLineLength + 10) + "{}")
        #expect(reply["errno"] == "EINVAL")
        #expect(throws: ManagementError.self) { try control.exchange("{\"command\":\"list\"}") }
        #expect(try server.send(.list)["ok"] == true, "other connections are not affected")
    }

    @Test func requestsRoundTripThroughTheirJSON() throws {
        let requests: [ManagementRequest] = [
            .types, .list, .start(type: "virtio-net", uuid: "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01", parameters: ["tap": "t0", "mac": "52:54:00:00:00:01"]),
            .start(type: "mtty-1", uuid: nil, parameters: [:]), .stop(uuid: "u", force: true, timeoutMilliseconds: 10),
            .stop(uuid: "u", force: false, timeoutMilliseconds: nil),
        ]
        for request in requests {
            #expect(try ManagementRequest(JSONValue(parsing: request.json.text)) == request)
        }
    }
}

@Suite("Mediated device UUIDs")
struct MdevUUIDTests {
    @Test func parsesAndPrintsTheCanonicalForm() {
        #expect(MdevUUID("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001")?.description == "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")
        #expect(MdevUUID("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")?.bytes.first == 0x83)
        #expect(MdevUUID("83b8f4f2-509f-382f-3c1e-e6bfe0fa100") == nil)
        #expect(MdevUUID("83b8f4f2:509f-382f-3c1e-e6bfe0fa1001") == nil)
        #expect(MdevUUID("83b8f4f2-509f-382f-3c1e-e6bfe0fa100x") == nil)
    }

    @Test func randomUUIDsAreVersionFourAndDistinct() {
        let uuids = (0..<100).map { _ in MdevUUID.random() }
        #expect(Set(uuids).count == 100)
        for uuid in uuids {
            #expect(uuid.bytes[6] >> 4 == 4)
            #expect(uuid.bytes[8] >> 6 == 2)
            #expect(MdevUUID(uuid.description) == uuid)
        }
    }
}
