import Support
import SystemPackage
import VfioUserProto

/// A request on the control socket: one JSON object per line, `command` naming what to do.
///
///     {"command":"types"}
///     {"command":"list"}
///     {"command":"start","type":"virtio-net","uuid":"…","params":{"tap":"vtap0"}}
///     {"command":"stop","uuid":"…","force":true,"timeout_ms":2000}
///     {"command":"screenshot","uuid":"…"}
///     {"command":"restart","uuid":"…"}
///
/// `uuid` is optional for `start` (a random one is made); `params`, `force` and `timeout_ms` are
/// optional. Any request may carry an `id` (any JSON value), echoed in its reply. The reply is
/// one line too: `{"ok":true,…}` with the result, or `{"ok":false,"errno":"EBUSY","error":"…"}`.
public enum ManagementRequest: Equatable, Sendable {
    case types
    case list
    case start(type: String, uuid: String?, parameters: [String: String])
    case stop(uuid: String, force: Bool, timeoutMilliseconds: Int?)
    /// The picture on a display instance's screen, as a PNG (base64 in the reply's "png").
    case screenshot(uuid: String)
    /// Starts the worker of a failed isolated instance again.
    case restart(uuid: String)
    #if DEBUG
    /// Test builds only: the instance's worker attempts a system call its sandbox forbids (execve).
    case forbiddenCall(uuid: String)
    #endif

    /// Reads a request; EINVAL with a message naming the member at fault.
    public init(_ json: JSONValue) throws(ManagementError) {
        guard case .object = json else { throw Self.invalid("a request is a JSON object, not \(json.typeName)") }
        guard case let .string(command)? = json["command"] else { throw Self.invalid("the request has no \"command\" string") }
        let allowed: Set<String>
        switch command {
        case "types":
            self = .types
            allowed = []
        case "list":
            self = .list
            allowed = []
        case "start":
            guard case let .string(type)? = json["type"] else { throw Self.invalid("start needs a \"type\" string") }
            self = .start(type: type, uuid: try Self.string(json, "uuid"), parameters: try Self.parameters(json["params"]))
            allowed = ["type", "uuid", "params"]
        case "stop":
            guard case let .string(uuid)? = json["uuid"] else { throw Self.invalid("stop needs a \"uuid\" string") }
            var force = false
            switch json["force"] {
            case nil: break
            case let .bool(value)?: force = value
            case let other?: throw Self.invalid("\"force\" is a boolean, not \(other.typeName)")
            }
            var timeout: Int?
            switch json["timeout_ms"] {
            case nil: break
            case let .int(value)? where (0...600_000).contains(value): timeout = Int(value)
            default: throw Self.invalid("\"timeout_ms\" is an integer from 0 to 600000")
            }
            self = .stop(uuid: uuid, force: force, timeoutMilliseconds: timeout)
            allowed = ["uuid", "force", "timeout_ms"]
        case "screenshot":
            guard case let .string(uuid)? = json["uuid"] else { throw Self.invalid("screenshot needs a \"uuid\" string") }
            self = .screenshot(uuid: uuid)
            allowed = ["uuid"]
        case "restart":
            guard case let .string(uuid)? = json["uuid"] else { throw Self.invalid("restart needs a \"uuid\" string") }
            self = .restart(uuid: uuid)
            allowed = ["uuid"]
        #if DEBUG
        case "debug-forbidden-call":
            guard case let .string(uuid)? = json["uuid"] else { throw Self.invalid("debug-forbidden-call needs a \"uuid\" string") }
            self = .forbiddenCall(uuid: uuid)
            allowed = ["uuid"]
        #endif
        default:
            throw Self.invalid("unknown command '\(command)'; commands: types, list, start, stop, screenshot, restart")
        }
        guard case let .object(members) = json else { return }
        if let extra = members.first(where: { !allowed.contains($0.key) && $0.key != "command" && $0.key != "id" }) {
            throw Self.invalid("\(command) takes no member \"\(extra.key)\"")
        }
    }

    /// The request as the control client sends it.
    public var json: JSONValue {
        switch self {
        case .types: return ["command": "types"]
        case .list: return ["command": "list"]
        case let .start(type, uuid, parameters):
            var members: [(key: String, value: JSONValue)] = [("command", "start"), ("type", .string(type))]
            if let uuid { members.append(("uuid", .string(uuid))) }
            if !parameters.isEmpty {
                members.append(("params", .object(parameters.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
            }
            return .object(members)
        case let .stop(uuid, force, timeout):
            var members: [(key: String, value: JSONValue)] = [("command", "stop"), ("uuid", .string(uuid))]
            if force { members.append(("force", true)) }
            if let timeout { members.append(("timeout_ms", .int(Int64(timeout)))) }
            return .object(members)
        case let .screenshot(uuid):
            return ["command": "screenshot", "uuid": .string(uuid)]
        case let .restart(uuid):
            return ["command": "restart", "uuid": .string(uuid)]
        #if DEBUG
        case let .forbiddenCall(uuid):
            return ["command": "debug-forbidden-call", "uuid": .string(uuid)]
        #endif
        }
    }

    /// `params`: an object of strings (numbers and booleans are taken as their text).
    static func parameters(_ json: JSONValue?) throws(ManagementError) -> [String: String] {
        guard let json else { return [:] }
        guard case let .object(members) = json else { throw invalid("\"params\" is an object, not \(json.typeName)") }
        var result: [String: String] = [:]
        for member in members {
            switch member.value {
            case let .string(text): result[member.key] = text
            case .int, .uint, .bool: result[member.key] = member.value.text
            default: throw invalid("parameter \"\(member.key)\" is a string, not \(member.value.typeName)")
            }
        }
        return result
    }

    private static func string(_ json: JSONValue, _ key: String) throws(ManagementError) -> String? {
        switch json[key] {
        case nil: return nil
        case let .string(text)?: return text
        case let other?: throw invalid("\"\(key)\" is a string, not \(other.typeName)")
        }
    }

    static func invalid(_ message: String) -> ManagementError { ManagementError(.invalidArgument, message) }
}

// MARK: Replies

extension TypeStatus {
    public var json: JSONValue {
        ["id": .string(id), "name": .string(name), "description": .string(description), "device_api": .string(deviceAPI),
         "available_instances": .int(Int64(availableInstances)), "pool": .string(pool),
         "pool_capacity": .int(Int64(poolCapacity)), "cost": .int(Int64(cost)),
         "parameters": .object(parameters.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })]
    }
}

extension InstanceStatus {
    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("uuid", .string(uuid.description)), ("type", .string(type)), ("state", .string(state.rawValue)),
        ]
        if let socketPath { members.append(("socket", .string(socketPath))) }
        members.append(("params", .object(parameters.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        if let origin { members.append(("origin", .string(origin.rawValue))) }
        members.append(("sessions", .int(Int64(sessions))))
        if let pid { members.append(("pid", .int(Int64(pid)))) }
        if let failure { members.append(("failure", .string(failure))) }
        return .object(members)
    }
}

extension ManagementError {
    /// `{"ok":false,"errno":"EBUSY","error":"…"}`.
    public var json: JSONValue { ["ok": false, "errno": .string(errno.name), "error": .string(message)] }

    /// The error a reply reports; nil for a successful reply.
    public init?(reply: JSONValue) {
        guard reply["ok"] != .bool(true) else { return nil }
        guard case let .string(name)? = reply["errno"], case let .string(message)? = reply["error"] else {
            self.init(.ioError, "malformed reply: \(reply.text)")
            return
        }
        self.init(Errno(name: name) ?? .ioError, message)
    }
}
