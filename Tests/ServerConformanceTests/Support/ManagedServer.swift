import MbochsDevice
import MttyDevice
import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
import VirtioNetDevice

/// An instance manager with its control socket, in this process, in a private directory: the
/// server of `vfio-user-server serve` without the command line.
final class ManagedServer: Sendable {
    static let types = MttyDevice.mediatedTypes() + [VirtioNetDevice.mediatedType()] + MbochsDevice.mediatedTypes()

    let directory = TemporaryDirectory()
    let manager: InstanceManager
    let control: ControlServer

    init(pools: [String: Int] = [:]) throws {
        manager = try InstanceManager(types: Self.types, socketDirectory: directory.path, poolCapacity: pools)
        control = try ControlServer(manager: manager, path: directory.path + "/control.sock")
        try control.start()
    }

    deinit {
        control.stop()
        manager.shutdown()
    }

    func client() throws -> ControlClient { try ControlClient(path: control.path) }

    /// One request on a fresh control connection.
    @discardableResult
    func send(_ request: ManagementRequest) throws -> JSONValue { try client().send(request) }

    /// `available_instances` of every type, by type id; `except` leaves out the types whose id
    /// starts with it.
    func available(except prefix: String? = nil) throws -> [String: Int64] {
        guard case let .array(types)? = try send(.types)["types"] else { return [:] }
        var result: [String: Int64] = [:]
        for type in types {
            if case let .string(id)? = type["id"], case let .int(count)? = type["available_instances"], !id.hasPrefix(prefix ?? "\u{0}") {
                result[id] = count
            }
        }
        return result
    }

    /// A started instance's UUID and socket path.
    @discardableResult
    func start(_ type: String, uuid: String? = nil, _ parameters: [String: String] = [:]) throws -> (uuid: String, socket: String) {
        let instance = try send(.start(type: type, uuid: uuid, parameters: parameters))["instance"]
        guard case let .string(id)? = instance?["uuid"], case let .string(socket)? = instance?["socket"] else {
            throw ManagementError(.ioError, "start replied without uuid or socket")
        }
        return (id, socket)
    }

    /// The instances `list` reports: uuid → state.
    func states() throws -> [String: String] {
        guard case let .array(instances)? = try send(.list)["instances"] else { return [:] }
        var result: [String: String] = [:]
        for instance in instances {
            if case let .string(id)? = instance["uuid"], case let .string(state)? = instance["state"] { result[id] = state }
        }
        return result
    }

    /// The files in the socket directory, sorted.
    var files: [String] { directory.entries }
}

/// Expects a management request to fail with `errno`.
func expectManagementError(_ errno: Errno, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected \(errno.name), but it succeeded", sourceLocation: sourceLocation)
    } catch let error as ManagementError {
        #expect(error.errno == errno, "\(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(errno.name), got \(error)", sourceLocation: sourceLocation)
    }
}
