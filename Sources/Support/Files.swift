#if canImport(Glibc)
import Glibc
#endif

/// VmRSS of a process, in KiB (0 if it is gone): /proc/PID/status.
public func residentKiB(_ pid: pid_t) -> Int { memoryKiB(pid, "VmRSS:", in: "status") }

/// A process's proportional set size in KiB: its resident pages, each shared one divided among
/// the processes sharing it (what a process of the same binary really adds).
public func proportionalKiB(_ pid: pid_t) -> Int { memoryKiB(pid, "Pss:", in: "smaps_rollup") }

private func memoryKiB(_ pid: pid_t, _ field: String, in file: String) -> Int {
    procNumber(field, in: "/proc/\(pid)/\(file)") ?? 0
}

/// The number after `field` (as "VmRSS:") in a /proc file of "name: value" lines; nil if absent.
public func procNumber(_ field: String, in path: String) -> Int? {
    for line in readFile(path).split(separator: "\n") where line.hasPrefix(field) {
        return line.dropFirst(field.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }
    }
    return nil
}

/// The fields of a /proc stat file after the command name, which may hold spaces: the state
/// first (man 5 proc's field 3); nil if the file cannot be read.
public func procStatFields(_ path: String) -> [Substring]? {
    let text = readFile(path)
    guard let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(after: close)...].split(separator: " ")
}

/// The text of a C string in a char buffer: its bytes up to the first NUL (all of them if none).
public func textUpToNUL(_ chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// This process's executable, where /proc/self/exe links ("" if the link cannot be read).
public func executablePath() -> String {
    var path = [CChar](repeating: 0, count: 4096)
    _ = readlink("/proc/self/exe", &path, path.count - 1) // the zeroed buffer ends the text
    return textUpToNUL(path)
}

/// A whole file as text ("" if it cannot be read).
public func readFile(_ path: String) -> String {
    String(decoding: readBytes(path) ?? [], as: UTF8.self)
}

/// A whole file as bytes (nil if it cannot be read).
public func readBytes(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { bytes += chunk[..<count] }
    return bytes
}
