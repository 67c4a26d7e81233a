import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Log lines on standard error, one per event, prefixed with the instance they concern.
public enum ServerLog {
    public static func info(_ message: String) { write("\(message)\n") }
    public static func warning(_ message: String) { write("warning: \(message)\n") }
    public static func error(_ message: String) { write("error: \(message)\n") }

    /// Drops every line (a fuzzer runs millions of sessions).
    public static let muted = Atomic<Bool>(false)

    private static func write(_ line: String) {
        guard !muted.load(ordering: .relaxed) else { return }
        var line = line
        line.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
    }
}
