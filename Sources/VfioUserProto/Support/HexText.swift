/// `value` in hex for people: "0x"-prefixed unless told otherwise, zero-padded to `digits`.
/// The one formatter behind traces, `client` output and config-space reports.
public func hexText<T: BinaryInteger>(_ value: T, digits: Int = 0, prefix: Bool = true) -> String {
    let text = String(value, radix: 16)
    return (prefix ? "0x" : "") + String(repeating: "0", count: max(0, digits - text.count)) + text
}
