#if canImport(Glibc)
import Glibc
#endif

/// Log lines on standard error, one per event, prefixed with the instance they concern.
public enum ServerLog {
    public static func info(_ message: String) { write("\(message)\n") }
    public static func warning(_ message: String) { write("warning: \(message)\n") }
    public static func error(_ message: String) { write("error: \(message)\n") }

    private static func write(_ line: String) {
        var line = line
        line.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
    }
}
