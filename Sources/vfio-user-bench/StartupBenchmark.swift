import ArgumentParser
import Support
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// Time from exec to a listening socket, and resident memory per idle instance.
struct StartupBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "startup",
        abstract: "Time from start to listening, resident memory of one idle mtty and of each extra instance.",
        discussion: """
        The server is started --starts times; the time is from posix_spawn until a connect to its \
        socket succeeds (polled every 100 µs), beside the echo peer started the same way. Memory is \
        VmRSS of the server process with one idle mtty-2, then after --instances more mtty-1 \
        instances made through the control socket, none attached.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: "Starts to time.")
    var starts: Int = 10

    @Option(help: "Extra instances for the per-instance memory figure.")
    var instances: Int = 20

    func run() throws {
        pinToCPU(common.cpu)
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        var recorder = ResultRecorder(path: common.results)

        var serverTimes: [Double] = []
        var echoTimes: [Double] = []
        for i in 0..<starts {
            let serverPath = directory + "/server-\(i).sock"
            serverTimes.append(try timeToListen(path: serverPath) {
                try BackgroundProcess([common.server, "--type", "mtty-2", "--socket-path", serverPath, "--no-control"])
            })
            let echoPath = directory + "/echo-\(i).sock"
            echoTimes.append(try timeToListen(path: echoPath) { try BackgroundProcess([common.echo, echoPath]) })
            unlink(echoPath)
        }
        let server = median(serverTimes)
        let echo = median(echoTimes)
        print("Start to listening (median of \(starts)): server \(String(format2: server)) ms, the echo peer \(String(format2: echo)) ms")
        recorder.record("startup_server_ms", server)
        recorder.record("startup_echo_ms", echo)

        let socketDirectory = directory + "/instances"
        mkdir(socketDirectory, 0o700)
        let control = socketDirectory + "/control.sock"
        let process = try BackgroundProcess([common.server, "--type", "mtty-2", "--socket-path", directory + "/first.sock",
                                             "--socket-dir", socketDirectory, "--control", control])
        try waitForSocket(control)
        usleep(200_000)
        let one = residentKiB(process.pid)
        let client = try ControlClient(path: control)
        for _ in 0..<instances {
            _ = try client.send(.start(type: "mtty-1", uuid: nil, parameters: [:]))
        }
        usleep(200_000)
        let many = residentKiB(process.pid)
        let perInstance = Double(many - one) / Double(instances)
        let echoPath = directory + "/echo.sock"
        let echoProcess = try BackgroundProcess([common.echo, echoPath])
        try waitForSocket(echoPath)
        let echoResident = residentKiB(echoProcess.pid)
        echoProcess.stop()
        unlink(echoPath)
        print("Resident memory: one idle mtty-2 \(String(format2: Double(one) / 1024)) MiB (the echo peer \(String(format2: Double(echoResident) / 1024)) MiB); "
              + "each extra idle instance \(String(format2: perInstance)) KiB (\(instances) mtty-1 made over the control socket)")
        recorder.record("memory_one_mib", Double(one) / 1024)
        recorder.record("memory_per_instance_kib", perInstance)
        recorder.record("memory_echo_mib", Double(echoResident) / 1024)
        process.stop()
        try recorder.save()
    }

    /// Milliseconds from starting the process to a successful connect on `path`.
    func timeToListen(path: String, start: () throws -> BackgroundProcess) throws -> Double {
        let begin = monotonicNanoseconds()
        let process = try start()
        defer {
            process.stop()
            unlink(path)
        }
        while monotonicNanoseconds() - begin < 10_000_000_000 {
            if let socket = try? UnixSocket.connect(path: path) {
                _ = socket
                return Double(monotonicNanoseconds() - begin) / 1e6
            }
            usleep(100)
        }
        throw BenchError("nothing listened on \(path) within 10 s")
    }
}
