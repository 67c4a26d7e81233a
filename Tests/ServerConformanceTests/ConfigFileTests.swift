import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Configuration files")
struct ConfigFileTests {
    static let serialUUID = "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01"
    static let nicUUID = "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c02"

    static let good = """
    {
      "pools": {"virtio-net": 2},
      "devices": [
        {"uuid": "\(serialUUID)", "type": "mtty-2"},
        {
          "uuid": "\(nicUUID)",
          "type": "virtio-net",
          "params": {"backend": "sink", "mac": "52:54:00:12:34:56"}
        }
      ]
    }
    """

    func parse(_ text: String) throws(ConfigFileError) -> ServerConfigFile {
        try ServerConfigFile(text: text, path: "test.json", types: ManagedServer.types)
    }

    @Test func aGoodFileGivesItsDevicesWithTheirLines() throws {
        let file = try parse(Self.good)
        #expect(file.pools == ["virtio-net": 2])
        #expect(file.devices.map(\.uuid.description) == [Self.serialUUID, Self.nicUUID])
        #expect(file.devices.map(\.line) == [4, 5])
        #expect(file.devices[1].parameters == ["backend": "sink", "mac": "52:54:00:12:34:56"])
        #expect(file.poll == nil, "sessions poll as the server's option says")
        #expect(try parse("{\"poll\": \"off\"}").poll == .off)
        #expect(try parse("{\"poll\": \"100\"}").poll?.maximumNanoseconds == 100_000)
        #expect(file.isolate == nil && file.user == nil)
        let isolated = try parse("{\"isolate\": \"process\", \"user\": \"root\"}")
        #expect(isolated.isolate == "process" && isolated.user == "root")
    }

    /// Each bad file, the line the error must name, and words its reason must contain.
    static let bad: [(String, Int?, String)] = [
        ("{\n  \"devices\": [\n    {\"uuid\": \"x\" \"type\": \"mtty-1\"}\n  ]\n}", 3, "not valid JSON"),
        ("{\n  \"devices\": [\n", 3, "not valid JSON"),
        ("[]", 1, "not an object"),
        ("{\n  \"device\": []\n}", 2, "unknown member \"device\""),
        ("{\n  \"devices\": {}\n}", 2, "\"devices\" is an array"),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"mtty-1\"},\n  {\"uuid\": \"not-a-uuid\", \"type\": \"mtty-1\"}\n]}", 3, "not a UUID"),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\",\n   \"type\": \"mtty-9\"}\n]}", 3, "unknown type \"mtty-9\""),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"mtty-1\"},\n\n  {\"uuid\": \"\(serialUUID.uppercased())\", \"type\": \"mtty-2\"}\n]}", 4, "used on line 2"),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"virtio-net\",\n   \"params\": {\"backend\": \"sink\",\n     \"colour\": \"red\"}}\n]}", 4, "no parameter \"colour\""),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"virtio-net\", \"params\": {\"backend\": []}}\n]}", 2, "is a string"),
        ("{\"devices\": [\n  {\"type\": \"mtty-1\"}\n]}", 2, "no \"uuid\""),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"mtty-1\", \"start\": \"auto\"}\n]}", 2, "unknown member \"start\""),
        ("{\n  \"pools\": {\n    \"gpus\": 4\n  }\n}", 3, "no pool named \"gpus\""),
        ("{\n  \"pools\": {\"virtio-net\": -1}\n}", 2, "size from 0 to 4096"),
        ("{\n  \"socket_dir\": 7\n}", 2, "path string"),
        ("{\n  \"poll\": \"fast\"\n}", 2, "\"poll\" is \"adaptive\", \"off\" or a number of microseconds"),
        ("{\n  \"poll\": 50\n}", 2, "\"poll\" is a string"),
        ("{\n  \"isolate\": \"vm\"\n}", 2, "\"isolate\" is \"none\" or \"process\""),
        ("{\n  \"socket_group\": \"no-such-group-here\"\n}", 2, "no group 'no-such-group-here'"),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"mtty-1\",\n   \"socket_owner\": \"no-such-user-here\"}\n]}", 3, "no user 'no-such-user-here'"),
        ("{\"devices\": [\n  {\"uuid\": \"\(serialUUID)\", \"type\": \"mtty-1\",\n   \"socket_mode\": 660}\n]}", 3, "\"socket_mode\" is a string"),
        ("{\n  \"user\": \"no-such-user-here\"\n}", 2, "no user 'no-such-user-here'"),
    ]

    @Test(arguments: bad)
    func aBadFileIsRefusedWithItsLineAndReason(text: String, line: Int?, reason: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.line == line, "\(error)")
            #expect(error.description.contains(reason), "\(error)")
            #expect(error.description.hasPrefix("test.json:\(line.map(String.init) ?? "")"))
        }
    }

    @Test func aDeviceThatFailsToStartUndoesTheOnesBeforeIt() throws {
        let server = try ManagedServer()
        let text = """
        {"devices": [
          {"uuid": "\(Self.serialUUID)", "type": "mtty-2"},
          {"uuid": "\(Self.nicUUID)", "type": "virtio-net", "params": {"datagram": "/nonexistent/a,/nonexistent/b"}}
        ]}
        """
        let file = try parse(text)
        do {
            _ = try file.start(on: server.manager)
            Issue.record("the second device cannot start")
        } catch {
            #expect(error.line == 3)
            #expect(error.description.contains("cannot bind /nonexistent/a"), "\(error)")
        }
        #expect(server.manager.statuses().isEmpty)
        #expect(server.files == ["control.sock"])
        #expect(try server.available()["mtty-2"] == 12)
    }

    @Test func theServerStartsTheFileDevicesAndManagesThemThroughItsControlSocket() throws {
        let directory = TemporaryDirectory()
        let config = directory.path + "/devices.json"
        try writeFile(Self.good, to: config)
        let server = try ServerProcess(arguments: ["--config", config], firstDevice: false)
        #expect(server.output.contains(Self.serialUUID), "\(server.errors)")

        let control = ["--control", server.controlPath]
        let list = try ServerProcess.run(["list", "--json"] + control)
        #expect(list.status == 0, "\(list.errors)")
        let instances = try JSONValue(parsing: list.output.trimmingTrailingNewline)
        guard case let .array(entries) = instances, entries.count == 2 else {
            Issue.record("list: \(list.output)")
            return
        }
        #expect(entries[0]["uuid"] == .string(Self.serialUUID))
        #expect(entries[0]["origin"] == "config-file")
        #expect(entries[1]["socket"] == .string(server.directory.path + "/\(Self.nicUUID).sock"))

        let types = try ServerProcess.run(["types"] + control)
        #expect(types.output.contains("mtty-2\n  Available instances: 11\n  Device API: vfio-pci\n  Name: Dual port serial"), "\(types.output)")
        #expect(types.output.contains("virtio-net\n  Available instances: 1\n"), "the file's pool size")

        let started = try ServerProcess.run(["start", "--type", "mtty-1", "--uuid", "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03"] + control)
        #expect(started.status == 0, "\(started.errors)")
        #expect(started.output.hasPrefix("0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03 mtty-1 on \(server.directory.path)/0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03.sock"))
        let client = try VfioUserClient(path: server.directory.path + "/0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03.sock")
        try client.negotiate()

        let refused = try ServerProcess.run(["stop", "--uuid", "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03"] + control)
        #expect(refused.status != 0)
        #expect(refused.errors.contains("EBUSY"), "\(refused.errors)")
        let forced = try ServerProcess.run(["stop", "--uuid", "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03", "--force", "--timeout", "100", "--json"] + control)
        #expect(forced.output == "{\"uuid\":\"0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03\",\"client\":\"disconnected\"}\n")
        #expect(connectionClosed(client))

        #expect(server.terminate() == 0)
        #expect(directory.entries == ["devices.json"])
        #expect(server.directory.entries == ["stderr.txt", "stdout.txt"], "SIGTERM removed every socket")
    }

    @Test func theServerRefusesToStartHalfConfigured() throws {
        let directory = TemporaryDirectory()
        let config = directory.path + "/devices.json"
        try writeFile("""
        {"devices": [
          {"uuid": "\(Self.serialUUID)", "type": "mtty-2"},
          {"uuid": "\(Self.nicUUID)", "type": "virtio-net", "params": {"backend": "sink", "queue-size": "3"}}
        ]}
        """, to: config)
        let server = try ServerProcess(arguments: ["--config", config], firstDevice: false)
        let status = server.waitForExit(milliseconds: 10_000)
        #expect(status.map { $0 >> 8 } == 1)
        #expect(server.errors.contains("\(config):3: device \(Self.nicUUID) (virtio-net): virtio-net: queue-size must be a power of two"), "\(server.errors)")
        #expect(server.directory.entries == ["stderr.txt", "stdout.txt"], "nothing left listening")
    }
}

extension String {
    var trimmingTrailingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}

@Suite("The program's description and examples")
struct ProgramDescriptionTests {
    @Test func describePrintsJSONForManagementTools() throws {
        let run = try ServerProcess.run(["describe"])
        #expect(run.status == 0)
        let description = try JSONValue(parsing: run.output.trimmingTrailingNewline)
        #expect(description["binary"] == .string(ServerProcess.executable))
        #expect(description["type"] == "vfio-user-server")
        let types = try #require(description["types"]?.arrayValue, "no types: \(run.output)")
        #expect(types.map { $0["id"] } == ["mtty-1", "mtty-2", "virtio-net", "mbochs-small", "mbochs-medium", "mbochs-large"])
        #expect(types.allSatisfy { $0["device_api"] == "vfio-pci" })
    }

    @Test func theExampleConfigurationIsValid() throws {
        let file = try ServerConfigFile(path: repositoryRoot + "/examples/devices.json", types: ManagedServer.types)
        #expect(file.devices.map(\.type) == ["mtty-2", "mtty-1", "virtio-net"])
        #expect(file.pools == ["virtio-net": 8])
    }
}
