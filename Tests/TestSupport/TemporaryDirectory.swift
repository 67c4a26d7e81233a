import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A private directory for sockets, removed with its contents.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init() {
        var template = Array("/tmp/vfio-user-test.XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    deinit {
        for name in entries { unlink("\(path)/\(name)") }
        rmdir(path)
    }

    /// The names in the directory (not "." and ".."), sorted.
    public var entries: [String] { directoryEntries(path) ?? [] }
}

/// The names in a directory (not "." and ".."), sorted; nil if it cannot be read.
public func directoryEntries(_ path: String) -> [String]? {
    guard let directory = opendir(path) else { return nil }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// What each open fd of a process refers to, as /proc shows it ("socket:[123]", "/memfd:x (deleted)").
public func openFileTargets(of pid: pid_t) -> [String] { openFiles(of: pid).sorted { $0.key < $1.key }.map(\.value) }

/// Each open fd of a process and what it refers to.
public func openFiles(of pid: pid_t) -> [Int: String] {
    var files: [Int: String] = [:]
    for fd in (directoryEntries("/proc/\(pid)/fd") ?? []).compactMap({ Int($0) }) {
        var target = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/\(pid)/fd/\(fd)", &target, target.count - 1)
        if length > 0 { files[fd] = String(decoding: target.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }
    return files
}

/// Writes `text` to a new file at `path`.
public func writeFile(_ text: String, to path: String) throws {
    guard let file = fopen(path, "w") else { throw Errno(rawValue: errno) }
    fputs(text, file)
    fclose(file)
}
