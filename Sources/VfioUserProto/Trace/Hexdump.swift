/// Byte streams as people capture them: raw bytes, `xxd` output, plain hex, or `socat -x` dumps,
/// whose chunks carry a direction marker (`>` from the left address to the right one, `<` back).
public enum Hexdump {
    public enum Format: String, Sendable {
        case raw, xxd, socat, hex
    }

    /// A run of bytes and, when the capture says, which way it went.
    public struct Chunk: Sendable, Equatable {
        public var direction: MessageTrace.Direction?
        public var bytes: [UInt8]

        public init(direction: MessageTrace.Direction?, bytes: [UInt8]) {
            self.direction = direction
            self.bytes = bytes
        }
    }

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let line: Int
        public let reason: String
        public init(line: Int, reason: String) {
            self.line = line
            self.reason = reason
        }
        public var description: String { "line \(line): \(reason)" }
    }

    /// Recognises the format and returns the chunks. In a socat dump `leftIsClient` says which end
    /// socat's first address is (`socat -x -v UNIX-LISTEN:proxy.sock UNIX-CONNECT:server.sock`
    /// has the client on the left, so `>` is towards the server).
    public static func parse(_ data: [UInt8], leftIsClient: Bool = true) throws(ParseError) -> (Format, [Chunk]) {
        guard let text = String(validating: data, as: UTF8.self), !text.contains("\0"),
              text.unicodeScalars.allSatisfy({ $0.value >= 0x20 || $0 == "\n" || $0 == "\r" || $0 == "\t" }) else {
            return (.raw, [Chunk(direction: nil, bytes: data)])
        }
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init) // "\r\n" is one Character
        if lines.contains(where: isSocatHeader) { return (.socat, try socat(lines, leftIsClient: leftIsClient)) }
        if let first = lines.first(where: { !$0.isEmpty }), isXxdLine(first) { return (.xxd, [Chunk(direction: nil, bytes: try xxd(lines))]) }
        return (.hex, [Chunk(direction: nil, bytes: try plainHex(lines))])
    }

    /// `> 2024/05/01 10:00:00.123456  length=16 from=0 to=15`
    static func isSocatHeader(_ line: String) -> Bool {
        guard let first = line.first, first == ">" || first == "<" else { return false }
        return line.contains("length=")
    }

    /// `00000010: 0100 0000 ...  ................`
    static func isXxdLine(_ line: String) -> Bool {
        guard let colon = line.firstIndex(of: ":") else { return false }
        let offset = line[..<colon]
        return !offset.isEmpty && offset.allSatisfy(\.isHexDigit)
    }

    private static func socat(_ lines: [String], leftIsClient: Bool) throws(ParseError) -> [Chunk] {
        var chunks: [Chunk] = []
        for (number, line) in lines.enumerated() {
            if isSocatHeader(line) {
                let towardsRight = line.first == ">"
                chunks.append(Chunk(direction: towardsRight == leftIsClient ? .toServer : .fromServer, bytes: []))
            } else if line.hasPrefix(" "), !chunks.isEmpty {
                // " 01 00 ... 00  ascii": two-digit tokens up to the double space before the text.
                let hexPart = beforeDoubleSpace(line.dropFirst())
                for token in hexPart.split(separator: " ") {
                    guard token.count == 2, let byte = UInt8(token, radix: 16) else {
                        throw ParseError(line: number + 1, reason: "'\(token)' is not a hex byte")
                    }
                    chunks[chunks.count - 1].bytes.append(byte)
                }
            }
            // "--" separators and text lines of -v are skipped.
        }
        return chunks
    }

    private static func xxd(_ lines: [String]) throws(ParseError) -> [UInt8] {
        var bytes: [UInt8] = []
        for (number, line) in lines.enumerated() where !line.isEmpty {
            guard isXxdLine(line), let colon = line.firstIndex(of: ":") else {
                throw ParseError(line: number + 1, reason: "not an xxd line")
            }
            let rest = line[line.index(after: colon)...].drop { $0 == " " }
            let hexPart = beforeDoubleSpace(rest)
            try appendHex(hexPart.filter { $0 != " " }, to: &bytes, line: number + 1)
        }
        return bytes
    }

    private static func plainHex(_ lines: [String]) throws(ParseError) -> [UInt8] {
        var bytes: [UInt8] = []
        for (number, line) in lines.enumerated() {
            let digits = line.filter { !$0.isWhitespace }
            try appendHex(digits.hasPrefix("0x") ? String(digits.dropFirst(2)) : digits, to: &bytes, line: number + 1)
        }
        return bytes
    }

    /// A dump line's hex part: everything before the two spaces that start its text column.
    private static func beforeDoubleSpace(_ line: Substring) -> Substring {
        var previousWasSpace = false
        for index in line.indices {
            if line[index] == " " && previousWasSpace { return line[..<line.index(before: index)] }
            previousWasSpace = line[index] == " "
        }
        return line
    }

    private static func appendHex(_ digits: String, to bytes: inout [UInt8], line: Int) throws(ParseError) {
        guard digits.count % 2 == 0 else { throw ParseError(line: line, reason: "an odd number of hex digits") }
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            guard let byte = UInt8(digits[index..<next], radix: 16) else {
                throw ParseError(line: line, reason: "'\(digits[index..<next])' is not hex")
            }
            bytes.append(byte)
            index = next
        }
    }
}

/// Cuts captured bytes into messages and describes each as `--trace` does. Each direction is its
/// own stream; bytes of unknown direction (a plain dump) go by the message: commands travel to the
/// server, except DMA_READ and DMA_WRITE, which the server sends, and replies go the other way.
public struct StreamDecoder {
    public var dmaLayout: DMATransferLayout
    private var pending: [MessageTrace.Direction?: [UInt8]] = [:]
    private var broken: Set<MessageTrace.Direction?> = []

    public init(dmaLayout: DMATransferLayout = .spec) {
        self.dmaLayout = dmaLayout
    }

    /// The lines for every message this chunk completes.
    public mutating func feed(_ chunk: Hexdump.Chunk) -> [String] {
        guard !broken.contains(chunk.direction) else { return [] }
        var buffer = pending[chunk.direction, default: []] + chunk.bytes
        var lines: [String] = []
        var consumed = 0
        while buffer.count - consumed >= MessageHeader.size {
            let result: (MessageHeader, Int)? = buffer[consumed...].withUnsafeBytes { raw in
                var reader = ByteReader(raw)
                guard let header = try? MessageHeader(decoding: &reader) else { return nil }
                return (header, Int(header.messageSize))
            }
            guard let (header, size) = result else { break }
            guard size >= MessageHeader.size else {
                lines.append("framing error: a message of size \(size) (below the 16-byte header); the rest of this stream is not decoded")
                broken.insert(chunk.direction)
                buffer = []
                consumed = 0
                break
            }
            guard buffer.count - consumed >= size else { break }
            let direction = chunk.direction ?? Self.direction(of: header)
            buffer[(consumed + MessageHeader.size)..<(consumed + size)].withUnsafeBytes { payload in
                lines.append(MessageTrace.line(direction: direction, header: header, payload: payload, fdCount: 0, dmaLayout: dmaLayout))
            }
            consumed += size
        }
        pending[chunk.direction] = Array(buffer[consumed...])
        return lines
    }

    /// What is left over at the end: partial messages, one line per direction.
    public func finish() -> [String] {
        pending.compactMap { direction, bytes in
            bytes.isEmpty ? nil : "\(direction?.arrow ?? "?") incomplete message: \(bytes.count) bytes at the end"
        }.sorted()
    }

    static func direction(of header: MessageHeader) -> MessageTrace.Direction {
        let serverInitiated = header.command == .dmaRead || header.command == .dmaWrite
        return header.flags.isReply == serverInitiated ? .toServer : .fromServer
    }
}
