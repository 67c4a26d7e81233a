/// Base64 (RFC 4648, with padding): how binary data, a screenshot's PNG, travels in the control
/// socket's JSON lines.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var text: [UInt8] = []
        text.reserveCapacity((bytes.count + 2) / 3 * 4)
        for start in stride(from: 0, to: bytes.count, by: 3) {
            let chunk = bytes[start ..< min(start + 3, bytes.count)]
            let value = chunk.enumerated().reduce(0) { $0 | Int($1.element) << (16 - 8 * $1.offset) }
            for k in 0..<4 {
                text.append(k <= chunk.count ? alphabet[(value >> (18 - 6 * k)) & 63] : UInt8(ascii: "="))
            }
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Nil for text that is not padded base64.
    public static func decode(_ text: String) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count % 4 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(characters.count / 4 * 3)
        for start in stride(from: 0, to: characters.count, by: 4) {
            var value = 0, padding = 0
            for (k, character) in characters[start ..< start + 4].enumerated() {
                if character == UInt8(ascii: "=") {
                    guard start + 4 == characters.count, k >= 2 else { return nil }
                    padding += 1
                    value <<= 6
                    continue
                }
                guard padding == 0, let digit = alphabet.firstIndex(of: character) else { return nil }
                value = value << 6 | digit
            }
            for k in 0..<(3 - padding) { bytes.append(UInt8(truncatingIfNeeded: value >> (16 - 8 * k))) }
        }
        return bytes
    }
}
