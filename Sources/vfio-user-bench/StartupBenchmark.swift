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
        abstract: "Time from start to listening, memory of one idle mtty and of each extra instance, threads and isolated workers.",
        discussion: """
        The server is started --starts times; the time is from posix_spawn until a connect to its \
        socket succeeds (polled every 100 µs), beside the echo peer started the same way. Memory is \
        VmRSS of the server process with one idle mtty-2, then after --instances more mtty-1 \
        instances made through the control socket, none attached. Then the same with --isolate \
        process: the time from a start request to a negotiated client on the new instance, and what \
        each worker costs (its VmRSS, and its PSS, which divides the binary's shared pages among \
        the workers), beside the same with threads.
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

        let threads = try instanceCosts(isolate: "none", directory: directory + "/threads")
        let workers = try instanceCosts(isolate: "process", directory: directory + "/workers")
        print("Start request to a negotiated client (median of \(instances)): threads \(String(format2: threads.attachMilliseconds)) ms, "
              + "isolated workers \(String(format2: workers.attachMilliseconds)) ms")
        print("Each extra idle instance: threads \(String(format2: threads.perInstanceKiB)) KiB of the server; isolated, "
              + "\(String(format2: workers.perInstanceKiB)) KiB of the manager plus a worker of VmRSS \(String(format2: workers.workerRSSKiB / 1024)) MiB, "
              + "PSS \(String(format2: workers.workerPSSKiB / 1024)) MiB")
        recorder.record("attach_threads_ms", threads.attachMilliseconds)
        recorder.record("attach_isolated_ms", workers.attachMilliseconds)
        recorder.record("worker_rss_mib", workers.workerRSSKiB / 1024)
        recorder.record("worker_pss_mib", workers.workerPSSKiB / 1024)
        try recorder.save()
    }

    struct InstanceCosts {
        var attachMilliseconds: Double
        var perInstanceKiB: Double
        var workerRSSKiB: Double
        var workerPSSKiB: Double
    }

    /// `instances` mtty-1 made one by one in a server with `--isolate isolate`, each attached by a
    /// client that negotiates and leaves; then the memory they hold idle.
    func instanceCosts(isolate: String, directory: String) throws -> InstanceCosts {
        mkdir(directory, 0o700)
        defer { rmdir(directory) }
        let control = directory + "/control.sock"
        let process = try BackgroundProcess([common.server, "--no-default-device", "--isolate", isolate, "--socket-dir", directory, "--control", control])
        defer { process.stop() }
        try waitForSocket(control)
        usleep(200_000)
        let before = residentKiB(process.pid)
        let client = try ControlClient(path: control)
        var times: [Double] = []
        var workers: [pid_t] = []
        for _ in 0..<instances {
            let begin = monotonicNanoseconds()
            let instance = try client.send(.start(type: "mtty-1", uuid: nil, parameters: [:]))["instance"]
            guard let socket = instance?["socket"]?.stringValue else { throw BenchError("start replied without a socket") }
            let device = try VfioUserClient(path: socket)
            _ = try device.negotiate()
            times.append(Double(monotonicNanoseconds() - begin) / 1e6)
            if let pid = instance?["pid"]?.intValue { workers.append(pid_t(pid)) }
        }
        usleep(200_000)
        let count = Double(max(workers.count, 1))
        return InstanceCosts(attachMilliseconds: median(times), perInstanceKiB: Double(residentKiB(process.pid) - before) / Double(instances),
                             workerRSSKiB: Double(workers.map(residentKiB).reduce(0, +)) / count,
                             workerPSSKiB: Double(workers.map(proportionalKiB).reduce(0, +)) / count)
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
