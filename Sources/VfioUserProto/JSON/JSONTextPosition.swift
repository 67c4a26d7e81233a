/// Where things are in a JSON text, so that an error in a file that parsed can name its line.
///
/// json-c keeps no positions in the objects it builds; this walks the text once more along a path
/// (members and array elements) without building anything. It is only called on text json-c has
/// already accepted, so it needs no error handling beyond "not found".
public enum JSONTextPosition {
    public enum PathElement: Sendable, Equatable {
        case member(String)
        case element(Int)
    }

    /// The 1-based line of the value at `path` (the root for an empty path); nil if absent.
    /// A repeated member resolves to its last occurrence, the one json-c keeps.
    public static func line(of path: [PathElement], in text: String) -> Int? {
        let bytes = Array(text.utf8)
        var scanner = Scanner(bytes: bytes)
        scanner.skipWhitespace()
        for element in path {
            guard scanner.enter(element) else { return nil }
        }
        return line(atOffset: scanner.position, in: bytes)
    }

    /// The 1-based line of a byte offset (json-c reports syntax errors by offset).
    public static func line(atOffset offset: Int, in text: String) -> Int {
        line(atOffset: offset, in: Array(text.utf8))
    }

    private static func line(atOffset offset: Int, in bytes: [UInt8]) -> Int {
        1 + bytes.prefix(max(0, offset)).reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    private struct Scanner {
        let bytes: [UInt8]
        var position = 0

        var current: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skipWhitespace() {
            while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { position += 1 }
        }

        /// From the start of a container to the start of its member or element; false if absent.
        mutating func enter(_ element: PathElement) -> Bool {
            switch element {
            case let .member(wanted):
                guard current == UInt8(ascii: "{") else { return false }
                position += 1
                let key = Array(wanted.utf8)
                var found: Int?
                while true {
                    skipWhitespace()
                    guard current == UInt8(ascii: "\"") else { break } // "}" or the end
                    let name = readString()
                    skipWhitespace()
                    position += 1 // ":"
                    skipWhitespace()
                    if name == key { found = position }
                    skipValue()
                    skipWhitespace()
                    if current == UInt8(ascii: ",") { position += 1 }
                }
                guard let found else { return false }
                position = found
                return true
            case let .element(wanted):
                guard current == UInt8(ascii: "[") else { return false }
                position += 1
                var index = 0
                while true {
                    skipWhitespace()
                    guard let c = current, c != UInt8(ascii: "]") else { return false }
                    if index == wanted { return true }
                    skipValue()
                    skipWhitespace()
                    if current == UInt8(ascii: ",") { position += 1 }
                    index += 1
                }
            }
        }

        /// The raw bytes of a string (escapes left as written), leaving the position after it.
        mutating func readString() -> [UInt8] {
            position += 1
            let start = position
            while let c = current, c != UInt8(ascii: "\"") { position += c == UInt8(ascii: "\\") ? 2 : 1 }
            let raw = Array(bytes[start..<min(position, bytes.count)])
            position += 1
            return raw
        }

        mutating func skipValue() {
            switch current {
            case UInt8(ascii: "\""):
                _ = readString()
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while let c = current {
                    if c == UInt8(ascii: "\"") {
                        _ = readString()
                        continue
                    }
                    if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
                    if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") { depth -= 1 }
                    position += 1
                    if depth == 0 { return }
                }
            default: // a number, true, false or null
                while let c = current, c != UInt8(ascii: ","), c != UInt8(ascii: "}"), c != UInt8(ascii: "]"),
                      c != 0x20, c != 0x09, c != 0x0A, c != 0x0D { position += 1 }
            }
        }
    }
}
