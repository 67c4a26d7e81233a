import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The `--config` file: persistent instances started with the server (what `mdevctl define`
/// keeps for the kernel), and the server's directories and pool sizes.
///
///     {
///       "socket_dir": "/run/vfio-user-swift",
///       "control": "/run/vfio-user-swift/control.sock",
///       "socket_mode": "0660",
///       "socket_group": "kvm",
///       "poll": "adaptive",
///       "isolate": "process",
///       "user": "nobody",
///       "pools": {"virtio-net": 8},
///       "devices": [
///         {"uuid": "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01", "type": "mtty-2"},
///         {"uuid": "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c02", "type": "virtio-net", "params": {"tap": "vtap0"},
///          "socket_owner": "libvirt-qemu"}
///       ]
///     }
///
/// Every member is optional but `devices[].uuid` and `devices[].type`; unknown members are errors
/// (a typo must not pass silently). A bad file is refused as a whole, with its line and the reason.
public struct ServerConfigFile: Sendable {
    public struct Device: Sendable, Equatable {
        public var uuid: MdevUUID
        public var type: String
        public var parameters: [String: String]
        /// Its socket file's mode, owner and group, where they differ from the server's.
        public var socketAccess = SocketAccessOverride()
        /// Where the device's object starts in the file.
        public var line: Int
    }

    public var path: String
    public var socketDirectory: String?
    public var controlPath: String?
    /// Mode, owner and group of every socket file, e.g. 0660 and group kvm for QEMU's users.
    public var socketAccess = SocketAccessOverride()
    /// How sessions poll their sockets ("adaptive", "off" or microseconds; see `PollPolicy`).
    public var poll: PollPolicy?
    /// Whether each instance gets a worker process ("process") or not ("none").
    public var isolate: String?
    /// The user isolated workers run as.
    public var user: String?
    public var pools: [String: Int] = [:]
    public var devices: [Device] = []

    /// An octal file mode from "0" to "0777" (owner, group, others; no special bits).
    public static func socketMode(_ text: String) -> UInt16? {
        guard !text.isEmpty, text.count <= 4, let mode = UInt16(text, radix: 8), mode <= 0o777 else { return nil }
        return mode
    }

    /// Reads and checks `path` against the types the server has.
    public init(path: String, types: [MediatedDeviceType]) throws(ConfigFileError) {
        guard let text = Self.read(path) else {
            throw ConfigFileError(path: path, line: nil, reason: "cannot read it: \(String(cString: strerror(errno)))")
        }
        try self.init(text: text, path: path, types: types)
    }

    public init(text: String, path: String, types: [MediatedDeviceType]) throws(ConfigFileError) {
        self.path = path
        let root: JSONValue
        do throws(JSONError) { root = try JSONValue(parsing: text) } catch {
            throw ConfigFileError(path: path, line: error.offset.map { JSONTextPosition.line(atOffset: $0, in: text) },
                                  reason: "not valid JSON: \(error.message)")
        }
        func fail(_ at: [JSONTextPosition.PathElement], _ reason: String) -> ConfigFileError {
            ConfigFileError(path: path, line: JSONTextPosition.line(of: at, in: text), reason: reason)
        }
        guard case let .object(members) = root else { throw fail([], "the file holds \(root.typeName), not an object") }
        for member in members {
            let at: [JSONTextPosition.PathElement] = [.member(member.key)]
            switch (member.key, member.value) {
            case let ("socket_dir", .string(directory)): socketDirectory = directory
            case let ("control", .string(control)): controlPath = control
            case ("socket_dir", _), ("control", _): throw fail(at, "\"\(member.key)\" is a path string")
            case ("socket_mode", _), ("socket_owner", _), ("socket_group", _):
                if let reason = socketAccess.set(member.key, member.value) { throw fail(at, reason) }
            case let ("poll", .string(text)):
                guard let policy = PollPolicy(text) else { throw fail(at, "\"poll\" is \"adaptive\", \"off\" or a number of microseconds up to 10000") }
                poll = policy
            case ("poll", _): throw fail(at, "\"poll\" is a string: \"adaptive\", \"off\" or microseconds")
            case let ("isolate", .string(text)) where text == "none" || text == "process": isolate = text
            case ("isolate", _): throw fail(at, "\"isolate\" is \"none\" or \"process\"")
            case let ("user", .string(name)):
                guard WorkerUser(name: name) != nil else { throw fail(at, "\"user\": no user '\(name)' on this system") }
                user = name
            case ("user", _): throw fail(at, "\"user\" is a user name")
            case let ("pools", .object(pools)):
                let known = Set(types.map(\.pool.name))
                for pool in pools {
                    guard known.contains(pool.key) else {
                        throw fail(at + [.member(pool.key)], "no pool named \"\(pool.key)\"; pools: \(known.sorted().joined(separator: ", "))")
                    }
                    guard case let .int(size) = pool.value, (0...4096).contains(size) else {
                        throw fail(at + [.member(pool.key)], "pool \"\(pool.key)\" needs a size from 0 to 4096")
                    }
                    self.pools[pool.key] = Int(size)
                }
            case ("pools", _): throw fail(at, "\"pools\" is an object of pool sizes")
            case let ("devices", .array(devices)):
                for (index, device) in devices.enumerated() {
                    self.devices.append(try Self.device(device, at: at + [.element(index)], in: text, path: path, types: types))
                }
            case ("devices", _): throw fail(at, "\"devices\" is an array")
            default: throw fail(at, "unknown member \"\(member.key)\"; the file has socket_dir, control, socket_mode, socket_owner, socket_group, poll, isolate, user, pools, devices")
            }
        }
        var seen: [MdevUUID: Int] = [:]
        for device in devices {
            if let first = seen[device.uuid] {
                throw ConfigFileError(path: path, line: device.line, reason: "UUID \(device.uuid) is used on line \(first) already")
            }
            seen[device.uuid] = device.line
        }
    }

    private static func device(_ json: JSONValue, at path: [JSONTextPosition.PathElement], in text: String, path file: String,
                               types: [MediatedDeviceType]) throws(ConfigFileError) -> Device {
        func fail(_ at: [JSONTextPosition.PathElement], _ reason: String) -> ConfigFileError {
            ConfigFileError(path: file, line: JSONTextPosition.line(of: at, in: text), reason: reason)
        }
        guard case let .object(members) = json else { throw fail(path, "a device is an object with uuid, type and params") }
        let known = ["uuid", "type", "params", "socket_mode", "socket_owner", "socket_group"]
        if let extra = members.first(where: { !known.contains($0.key) }) {
            throw fail(path + [.member(extra.key)], "unknown member \"\(extra.key)\"; a device has \(known.joined(separator: ", "))")
        }
        var access = SocketAccessOverride()
        for member in members where member.key.hasPrefix("socket_") {
            if let reason = access.set(member.key, member.value) { throw fail(path + [.member(member.key)], reason) }
        }
        guard case let .string(uuidText)? = json["uuid"] else { throw fail(path, "the device has no \"uuid\" string") }
        guard let uuid = MdevUUID(uuidText) else {
            throw fail(path + [.member("uuid")], "\"\(uuidText)\" is not a UUID (8-4-4-4-12 hex digits)")
        }
        guard case let .string(typeID)? = json["type"] else { throw fail(path, "the device has no \"type\" string") }
        guard let type = types.first(where: { $0.id == typeID }) else {
            throw fail(path + [.member("type")], "unknown type \"\(typeID)\"; types: \(types.map(\.id).joined(separator: ", "))")
        }
        let parameters: [String: String]
        do throws(ManagementError) { parameters = try ManagementRequest.parameters(json["params"]) } catch {
            throw fail(path + [.member("params")], error.message)
        }
        if let unknown = parameters.keys.sorted().first(where: { type.parameters[$0] == nil }) {
            throw fail(path + [.member("params"), .member(unknown)], "\(typeID) has no parameter \"\(unknown)\"")
        }
        return Device(uuid: uuid, type: typeID, parameters: parameters, socketAccess: access, line: JSONTextPosition.line(of: path, in: text) ?? 0)
    }

    private static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count > 0 { bytes += chunk[..<count] }
            if count < chunk.count { break }
        }
        return ferror(file) == 0 ? String(decoding: bytes, as: UTF8.self) : nil
    }

    /// Starts every device, in file order. If one fails, those already started are removed again
    /// and the error names the failing device's line: the server never runs half-configured.
    public func start(on manager: InstanceManager) throws(ConfigFileError) -> [MediatedDeviceInstance] {
        var started: [MediatedDeviceInstance] = []
        for device in devices {
            do throws(ManagementError) {
                started.append(try manager.create(type: device.type, uuid: device.uuid, parameters: device.parameters, origin: .configFile,
                                                  access: device.socketAccess.applied(to: manager.configuration.socketAccess)))
            } catch {
                for instance in started.reversed() { _ = try? manager.remove(instance.uuid, force: true, timeoutMilliseconds: 0) }
                throw ConfigFileError(path: path, line: device.line, reason: "device \(device.uuid) (\(device.type)): \(error.message)")
            }
        }
        return started
    }
}

/// A configuration file that cannot be used: where and why.
public struct ConfigFileError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var line: Int?
    public var reason: String

    public var description: String { line.map { "\(path):\($0): \(reason)" } ?? "\(path): \(reason)" }
}

/// Mode, owner and group of socket files as a configuration file gives them; what it leaves out
/// stays as the server has it.
public struct SocketAccessOverride: Sendable, Equatable {
    public var mode: UInt16?
    public var owner: uid_t?
    public var group: gid_t?

    public init(mode: UInt16? = nil, owner: uid_t? = nil, group: gid_t? = nil) {
        self.mode = mode
        self.owner = owner
        self.group = group
    }

    public func applied(to access: SocketAccess) -> SocketAccess {
        var result = access
        if let mode { result.permissions = FilePermissions(rawValue: CModeT(mode)) }
        if let owner { result.owner = owner }
        if let group { result.group = group }
        return result
    }

    /// Sets "socket_mode", "socket_owner" or "socket_group" from the file; the reason it cannot.
    mutating func set(_ key: String, _ value: JSONValue) -> String? {
        guard case let .string(text) = value else { return "\"\(key)\" is a string" }
        switch key {
        case "socket_mode":
            guard let mode = ServerConfigFile.socketMode(text) else { return "\"socket_mode\" is an octal mode from 0 to 0777, e.g. \"0660\"" }
            self.mode = mode
        case "socket_owner":
            guard let uid = Accounts.fileOwner(text) else { return "\"socket_owner\": no user '\(text)' on this system" }
            owner = uid
        default:
            guard let gid = Accounts.fileGroup(text) else { return "\"socket_group\": no group '\(text)' on this system" }
            group = gid
        }
        return nil
    }
}
