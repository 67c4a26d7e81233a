import CLinux
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Runs a command, returns its standard output (standard error passes through).
func runCommand(_ arguments: [String]) throws -> String {
    var pipeFDs: [CInt] = [-1, -1]
    guard pipe(&pipeFDs) == 0 else { throw BenchError("pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    var argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let result = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
    posix_spawn_file_actions_destroy(&actions)
    close(pipeFDs[1])
    guard result == 0 else {
        close(pipeFDs[0])
        throw BenchError("cannot run \(arguments[0]): errno \(result)")
    }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(pipeFDs[0], &buffer, buffer.count)
        if n <= 0 { break }
        output += buffer[0..<n]
    }
    close(pipeFDs[0])
    var status: CInt = 0
    waitpid(pid, &status, 0)
    guard status == 0 else { throw BenchError("\(arguments.joined(separator: " ")) failed (status \(status))") }
    return String(decoding: output, as: UTF8.self)
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A process started in the background and terminated at the end.
final class BackgroundProcess {
    let pid: pid_t

    init(_ arguments: [String], quiet: Bool = true) throws {
        do throws(Errno) {
            pid = try spawnProcess(arguments[0], arguments: arguments, searchPath: true) { actions in
                if quiet {
                    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
                }
            }
        } catch {
            throw BenchError("cannot start \(arguments[0]): \(error.name)")
        }
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: CInt = 0
        waitpid(pid, &status, 0)
    }

    deinit { stop() }
}

/// Waits for a socket file to appear.
func waitForSocket(_ path: String) throws {
    for _ in 0..<300 {
        if access(path, F_OK) == 0 { return }
        usleep(10_000)
    }
    throw BenchError("nothing listens on \(path)")
}

/// Pins this process (and the threads it starts later) to one CPU.
func pinToCPU(_ cpu: Int) {
    _ = clinux_pin_to_cpu(CInt(cpu))
}

/// An executable built with this one, in the same directory.
func siblingExecutable(_ name: String) -> String {
    let me = executablePath()
    return String(me[..<(me.lastIndex(of: "/") ?? me.startIndex)]) + "/" + name
}

func formatRate(_ rate: Double) -> String {
    if rate >= 1_000_000 { return String(format1: rate / 1_000_000) + " M/s" }
    if rate >= 1000 { return String(format1: rate / 1000) + " k/s" }
    return String(format1: rate) + " /s"
}

extension String {
    init(format1 value: Double) {
        let scaled = (value * 10).rounded() / 10
        self = scaled == scaled.rounded() ? String(Int(scaled)) + ".0" : String(scaled)
    }
}

/// A fresh directory for sockets.
func scratchDirectory() -> String {
    var template = Array("/tmp/vfio-user-bench.XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
}

/// Nanoseconds of monotonic time spent running `body`.
func measure(_ body: () throws -> Void) rethrows -> Double {
    let start = monotonicNanoseconds()
    try body()
    return Double(monotonicNanoseconds() - start)
}

extension Substring {
    var trimmingWhitespace: Substring {
        var text = self
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        return text
    }
}
