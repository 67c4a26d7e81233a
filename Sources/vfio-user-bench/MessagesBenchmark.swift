import ArgumentParser
import CAllocationCounter
import MttyDevice
import RegionEmulation
import Support
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// Message round trips, posted writes and REGION_WRITE_MULTI: the server process beside the echo
/// peer, both pinned to one CPU with the client; then the server's allocations per message,
/// counted with the server in this process.
struct MessagesBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "messages",
        abstract: "Round-trip latency percentiles, posted-write and REGION_WRITE_MULTI throughput, allocations per message.",
        discussion: """
        The server serves an mtty-2 as its own process; the echo peer (vfio-user-echo) is the \
        socket's limit. Our client (prebuilt messages, one write per send) measures both in interleaved \
        rounds, so a slow moment of the machine hits both alike; a ratio is the median of each \
        round's ratio to the echo round just before it. Accesses go to the UART's scratch \
        register (BAR0 offset 7). Posted writes are sent 64 to a system call, as a busy guest's \
        exits pile up; both the server and the echo peer read as many as a system call brings.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: "Round trips per round.")
    var operations: Int = 10000

    @Option(help: "Rounds (a rate is the median round's; vs echo, the median of each round's ratio to the echo round before it).")
    var rounds: Int = 15

    @Option(help: "Posted writes per measurement.")
    var posted: Int = 400_000

    @Option(help: "Posted writes per system call.")
    var batch: Int = 64

    static let percentilePoints: [Double] = [50, 90, 99, 99.9]

    func run() throws {
        pinToCPU(common.cpu) // processes and threads started from here inherit it
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        let echoPath = directory + "/echo.sock"
        let serverPath = directory + "/server.sock"
        let echo = try BackgroundProcess([common.echo, echoPath])
        let server = try BackgroundProcess([common.server, "--type", "mtty-2", "--socket-path", serverPath, "--no-control"])
        defer {
            echo.stop()
            server.stop()
            unlink(echoPath)
        }
        try waitForSocket(echoPath)
        try waitForSocket(serverPath)
        var recorder = ResultRecorder(path: common.results)

        print("Messages: an mtty-2 (\(common.server)) beside the echo peer, both processes, our client; all on CPU \(common.cpu)")
        print("")
        try {
            let echoClient = try RawClient(path: echoPath, writeMultiple: false)
            let serverClient = try RawClient(path: serverPath, writeMultiple: true)
            print("Round trips, 1 byte, \(rounds) rounds of \(operations), interleaved (µs)")
            print("  " + pad("", 24) + Self.percentilePoints.map { pad("p" + String(format1: $0).replacingZeroDecimal, 8) }.joined()
                  + pad("rate", 11) + "vs echo")
            for command in [Command.regionRead, .regionWrite] {
                let name = command == .regionRead ? "REGION_READ" : "REGION_WRITE"
                var message = RawClient.access(command, region: .bar0, offset: 7)
                var echoSamples = LatencySamples(capacity: operations * rounds)
                var serverSamples = LatencySamples(capacity: operations * rounds)
                var echoRates: [Double] = []
                var serverRates: [Double] = []
                for _ in 0..<rounds {
                    echoRates.append(try timeRoundTrips(echoClient, &message, into: &echoSamples))
                    serverRates.append(try timeRoundTrips(serverClient, &message, into: &serverSamples))
                }
                let echoRate = median(echoRates)
                let serverRate = median(serverRates)
                let ratio = pairedRatio(serverRates, to: echoRates)
                let echoPercentiles = echoSamples.percentiles(Self.percentilePoints)
                let serverPercentiles = serverSamples.percentiles(Self.percentilePoints)
                print("  " + pad("\(name), echo peer", 24) + echoPercentiles.map { pad(String(format2: $0), 8) }.joined() + formatRate(echoRate))
                print("  " + pad("\(name), server", 24) + serverPercentiles.map { pad(String(format2: $0), 8) }.joined()
                      + pad(formatRate(serverRate), 11) + percent(ratio))
                let key = command == .regionRead ? "rtt_read" : "rtt_write"
                recorder.record("\(key)_echo_rate", echoRate)
                recorder.record("\(key)_server_rate", serverRate)
                recorder.record("\(key)_ratio", ratio)
                for (point, (e, s)) in zip(Self.percentilePoints, zip(echoPercentiles, serverPercentiles)) {
                    recorder.record("\(key)_echo_p\(String(format1: point).replacingZeroDecimal)", e)
                    recorder.record("\(key)_server_p\(String(format1: point).replacingZeroDecimal)", s)
                }
            }

            print("")
            print("Posted 1-byte REGION_WRITEs, \(batch) per system call, then one REGION_READ (median of 3)")
            var echoRates: [Double] = []
            var serverRates: [Double] = []
            for _ in 0..<3 {
                echoRates.append(try timePosted(echoClient))
                serverRates.append(try timePosted(serverClient))
            }
            let echoPosted = median(echoRates)
            let serverPosted = median(serverRates)
            print("  echo peer  " + formatRate(echoPosted))
            print("  server     " + pad(formatRate(serverPosted), 11) + String(format1: serverPosted / echoPosted) + "x echo")
            recorder.record("posted_echo_rate", echoPosted)
            recorder.record("posted_server_rate", serverPosted)
            recorder.record("posted_ratio", serverPosted / echoPosted)

            print("")
            print("REGION_WRITE_MULTI: \(RegionWriteMulti.maxEntries) one-byte writes per posted message (QEMU's batch)")
            let multi = RawClient.writeMulti(region: .bar0, offset: 7, count: RegionWriteMulti.maxEntries)
            let echoMulti = try timeWriteMulti(echoClient, multi)
            let serverMulti = try timeWriteMulti(serverClient, multi)
            print("  echo peer  " + pad(formatRate(echoMulti), 11) + "writes carried (it applies none)")
            print("  server     " + pad(formatRate(serverMulti), 11) + "writes applied, \(String(format1: serverMulti / serverPosted))x its posted REGION_WRITEs")
            recorder.record("multi_echo_writes", echoMulti)
            recorder.record("multi_server_writes", serverMulti)
        }()

        print("")
        let allocations = try countAllocations(directory: directory)
        print("Allocations per message in the server (served in this process, whose allocator counts them):")
        print("  " + allocations.entries.map { "\($0.name) \(String(format2: $0.perMessage))" }.joined(separator: ", ")
              + "  (our client alone, against the echo peer: \(String(format2: allocations.clientAlone)))")
        for entry in allocations.entries { recorder.record("allocations_\(entry.name.replacing(" ", with: "_"))", entry.perMessage) }

        try recorder.save()
    }

    struct AllocationFigures {
        var entries: [(name: String, perMessage: Double)]
        var clientAlone: Double
    }

    /// The same traffic against an mtty-2 served in this process: the process-wide allocation
    /// count, taken around each kind of message, is the server's (our client allocates nothing,
    /// which the run against the echo peer shows).
    func countAllocations(directory: String) throws -> AllocationFigures {
        let probe = allocation_count()
        let block = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
        block.deallocate()
        guard allocation_count() > probe else { throw BenchError("the allocation counter sees no allocations: is it linked in?") }
        let path = directory + "/in-process.sock"
        let endpoint = try DeviceEndpoint(path: path, device: EmulatedDevice(model: MttyDevice(ports: 2)),
                                          configuration: ServerConfiguration(), name: "bench")
        try endpoint.start()
        defer { endpoint.stop() }
        let client = try RawClient(path: path, writeMultiple: true)
        let echoClient = try RawClient(path: directory + "/echo.sock", writeMultiple: false)
        var entries: [(String, Double)] = []
        var samples = LatencySamples(capacity: operations)
        // BAR accesses, then config space: the status register (patched from the interrupt engine)
        // and the command register (whose write reaches the interrupt engine).
        let kinds: [(String, Command, RegionIndex, UInt64)] = [
            ("REGION_READ", .regionRead, .bar0, 7), ("REGION_WRITE", .regionWrite, .bar0, 7),
            ("config read", .regionRead, .config, 6), ("config write", .regionWrite, .config, 4),
        ]
        for (name, command, region, offset) in kinds {
            var message = RawClient.access(command, region: region, offset: offset)
            _ = try timeRoundTrips(client, &message, into: &samples) // warm up: first-use allocations
            samples = LatencySamples(capacity: operations)
            let before = allocation_count()
            _ = try timeRoundTrips(client, &message, into: &samples)
            entries.append((name, Double(allocation_count() - before) / Double(operations)))
            samples = LatencySamples(capacity: operations)
        }
        var before = allocation_count()
        _ = try timePosted(client)
        entries.append(("posted REGION_WRITE", Double(allocation_count() - before) / Double(posted)))
        let multi = RawClient.writeMulti(region: .bar0, offset: 7, count: RegionWriteMulti.maxEntries)
        before = allocation_count()
        _ = try timeWriteMulti(client, multi)
        entries.append(("REGION_WRITE_MULTI", Double(allocation_count() - before) / Double(posted / RegionWriteMulti.maxEntries)))
        var read = RawClient.access(.regionRead, region: .bar0, offset: 7)
        before = allocation_count()
        _ = try timeRoundTrips(echoClient, &read, into: &samples)
        let clientAlone = Double(allocation_count() - before) / Double(operations)
        return AllocationFigures(entries: entries, clientAlone: clientAlone)
    }

    /// `operations` round trips, each timed; returns the round's rate.
    func timeRoundTrips(_ client: RawClient, _ message: inout [UInt8], into samples: inout LatencySamples) throws -> Double {
        let start = monotonicNanoseconds()
        var last = start
        for _ in 0..<operations {
            try client.roundTrip(&message)
            let now = monotonicNanoseconds()
            samples.append(now - last)
            last = now
        }
        return Double(operations) * 1e9 / Double(last - start)
    }

    /// `posted` writes in batches, then a read whose reply says the server has applied them all.
    func timePosted(_ client: RawClient) throws -> Double {
        let one = RawClient.access(.regionWrite, region: .bar0, offset: 7, posted: true)
        var burst = [UInt8]()
        for _ in 0..<batch { burst += one }
        var read = RawClient.access(.regionRead, region: .bar0, offset: 7)
        let time = try measure {
            for _ in 0..<(posted / batch) {
                client.stampIDs(&burst)
                try client.send(burst)
            }
            try client.roundTrip(&read)
        }
        return Double(posted / batch * batch) * 1e9 / time
    }

    /// Posted WRITE_MULTI messages carrying `posted` writes, then a read; writes per second.
    func timeWriteMulti(_ client: RawClient, _ message: [UInt8]) throws -> Double {
        var message = message
        var read = RawClient.access(.regionRead, region: .bar0, offset: 7)
        let count = posted / RegionWriteMulti.maxEntries
        let time = try measure {
            for _ in 0..<count {
                client.stampIDs(&message)
                try client.send(message)
            }
            try client.roundTrip(&read)
        }
        return Double(count * RegionWriteMulti.maxEntries) * 1e9 / time
    }
}

extension String {
    /// "50.0" → "50", "99.9" stays.
    var replacingZeroDecimal: String { hasSuffix(".0") ? String(dropLast(2)) : self }
}
