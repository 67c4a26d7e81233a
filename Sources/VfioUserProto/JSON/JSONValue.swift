import CJSONC

/// A JSON document as a Swift value, parsed and printed by json-c.
///
/// json-c does the text work (the VERSION capabilities and the management protocol); this enum is
/// what the rest of the code inspects, so no json-c pointer escapes this file.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    /// An integer above `Int64.max` (json-c keeps those as uint64).
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    /// Members in document order; keys are unique (a repeated key keeps its last value, as json-c does).
    case object([(key: String, value: JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case let (.bool(x), .bool(y)): x == y
        case let (.int(x), .int(y)): x == y
        case let (.uint(x), .uint(y)): x == y
        case let (.double(x), .double(y)): x == y
        case let (.string(x), .string(y)): x == y
        case let (.array(x), .array(y)): x == y
        case let (.object(x), .object(y)): x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: false
        }
    }

    /// Member lookup on an object; nil for a missing key or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.last { $0.key == key }?.value
    }

    /// The elements of an array; nil for any other value.
    public var arrayValue: [JSONValue]? { if case let .array(elements) = self { elements } else { nil } }
    /// The text of a string; nil for any other value.
    public var stringValue: String? { if case let .string(text) = self { text } else { nil } }
    /// A signed integer; nil for any other value.
    public var intValue: Int64? { if case let .int(value) = self { value } else { nil } }

    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .uint: "integer"
        case .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    /// Parses one JSON text strictly (no trailing garbage, no comments).
    public init(parsing text: String) throws(JSONError) {
        var utf8 = Array(text.utf8)
        let length = utf8.count
        guard let tokener = json_tokener_new() else { throw JSONError(message: "json-c: out of memory") }
        defer { json_tokener_free(tokener) }
        json_tokener_set_flags(tokener, JSON_TOKENER_STRICT)
        let object = utf8.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { json_tokener_parse_ex(tokener, $0.baseAddress, Int32(length)) }
        }
        let status = json_tokener_get_error(tokener)
        guard status == json_tokener_success else {
            let description = String(cString: json_tokener_error_desc(status))
            let reason = status == json_tokener_continue ? "unexpected end of text" : description
            json_object_put(object)
            let offset = Int(json_tokener_get_parse_end(tokener))
            throw JSONError(message: "\(reason) at offset \(offset)", offset: offset)
        }
        defer { json_object_put(object) }
        guard json_tokener_get_parse_end(tokener) == length else {
            let offset = Int(json_tokener_get_parse_end(tokener))
            throw JSONError(message: "trailing characters at offset \(offset)", offset: offset)
        }
        self = JSONValue(converting: object)
    }

    private init(converting object: OpaquePointer?) {
        guard let object else {
            self = .null
            return
        }
        switch json_object_get_type(object) {
        case json_type_boolean:
            self = .bool(json_object_get_boolean(object) != 0)
        case json_type_int:
            let signed = json_object_get_int64(object)
            if signed == Int64.max, json_object_get_uint64(object) > UInt64(Int64.max) {
                self = .uint(json_object_get_uint64(object))
            } else {
                self = .int(signed)
            }
        case json_type_double:
            self = .double(json_object_get_double(object))
        case json_type_string:
            let length = Int(json_object_get_string_len(object))
            let pointer = json_object_get_string(object)
            self = .string(pointer.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self) } ?? "")
        case json_type_array:
            let count = json_object_array_length(object)
            self = .array((0..<count).map { JSONValue(converting: json_object_array_get_idx(object, $0)) })
        case json_type_object:
            var members: [(key: String, value: JSONValue)] = []
            var iterator = json_object_iter_begin(object)
            var end = json_object_iter_end(object)
            while json_object_iter_equal(&iterator, &end) == 0 {
                let key = String(cString: json_object_iter_peek_name(&iterator))
                let value = JSONValue(converting: json_object_iter_peek_value(&iterator))
                members.removeAll { $0.key == key }
                members.append((key, value))
                json_object_iter_next(&iterator)
            }
            self = .object(members)
        default:
            self = .null
        }
    }

    /// The compact text of this value, printed by json-c (no spaces, `/` not escaped).
    public var text: String {
        let object = makeObject()
        defer { json_object_put(object) }
        guard let printed = json_object_to_json_string_ext(object, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) else {
            return "null"
        }
        return String(cString: printed)
    }

    private func makeObject() -> OpaquePointer? {
        switch self {
        case .null: return nil
        case let .bool(b): return json_object_new_boolean(b ? 1 : 0)
        case let .int(i): return json_object_new_int64(i)
        case let .uint(u): return json_object_new_uint64(u)
        case let .double(d): return json_object_new_double(d)
        case let .string(s):
            let bytes = Array(s.utf8)
            return bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { json_object_new_string_len($0.baseAddress, Int32(bytes.count)) }
            }
        case let .array(values):
            let array = json_object_new_array()
            for value in values { json_object_array_add(array, value.makeObject()) }
            return array
        case let .object(members):
            let object = json_object_new_object()
            for member in members { json_object_object_add(object, member.key, member.value.makeObject()) }
            return object
        }
    }
}

/// Why a JSON text did not parse.
public struct JSONError: Error, Equatable, CustomStringConvertible {
    public var message: String
    /// The byte offset in the text where parsing stopped, for a syntax error.
    public var offset: Int?
    public init(message: String, offset: Int? = nil) {
        self.message = message
        self.offset = offset
    }
    public var description: String { message }
}

extension JSONValue: ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral, ExpressibleByStringLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(elements.map { (key: $0.0, value: $0.1) })
    }
}
