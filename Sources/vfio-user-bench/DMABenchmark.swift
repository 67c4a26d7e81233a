import ArgumentParser
import CLinux
import RegionEmulation
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// DMA map, unmap and translation rates with 1, 1,000 and 65,535 mappings in the table.
struct DMABenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dma",
        abstract: "DMA map/unmap and translation rates at several table sizes, beside vfu-bench dma and the echo peer.",
        discussion: """
        Steady state: the table is first filled to N mappings (one 4 KiB page every 8 KiB), then an \
        extra mapping is mapped and unmapped in a gap, over and over, and random mapped addresses are \
        translated. In process this is the DMA space alone; over the socket it is the server process \
        with our client. vfu-bench dma N (fill N, then unmap N) is the independent client's figure.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: "Table sizes to measure.")
    var sizes: [Int] = [1, 1000, 65535]

    @Option(help: "Map+unmap cycles per size.")
    var cycles: Int = 20000

    @Option(help: "Rounds per figure; the median is printed.")
    var rounds: Int = 9

    static let base: UInt64 = 0x1_0000_0000

    static func slot(_ i: Int, extra: Bool = false) -> DMAMapRequest {
        DMAMapRequest(flags: [.read, .write], offset: UInt64(i) * 4096,
                      address: base + UInt64(i) * 8192 + (extra ? 4096 : 0), size: 4096)
    }

    func run() throws {
        pinToCPU(common.cpu)
        let vfuBench = try vfuBenchBinary(common.vfuBench)
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        let largest = sizes.max() ?? 1
        let memory = try BenchMemory(pages: largest + 1)

        print("DMA benchmark (both ends on CPU \(common.cpu))")
        print("")
        print("In process, the DMA space alone: rates with N mappings in the table (median of \(rounds) rounds)")
        print("  N          map (fd)     unmap        translate (random)  translate (sequential)")
        let spaces = try sizes.map { try filledSpace($0, memory: memory) }
        let (translateRandom, translateSequential) = translateRates(spaces, sizes: sizes)
        for (i, size) in sizes.enumerated() {
            let (map, unmap) = try mapUnmapRates(spaces[i], size: size, memory: memory)
            print("  " + pad(String(size), 9) + "  " + [map, unmap].map { pad(formatRate($0), 11) }.joined(separator: "  ")
                  + "  " + pad(formatRate(translateRandom[i]), 18) + "  " + formatRate(translateSequential[i]))
        }
        print("  translate with \(sizes.last!) / with \(sizes.first!) mappings: random \(percent(translateRandom.last! / translateRandom.first!)), "
              + "sequential \(percent(translateSequential.last! / translateSequential.first!))")
        // What the machine allows: a random translation in a big table reads at least one record
        // that is in no cache. Time one such read alone, over 4 MiB: more than the L2 of the
        // machines this runs on, less than the table holds at 65,535 mappings (keys and entries).
        let load = dependentLoadNanoseconds(bufferBytes: 4 << 20)
        let budget = 1e9 / translateRandom.first! / 0.7 - 1e9 / translateRandom.first!
        print("  the machine: one dependent random load over 4 MiB takes \(String(format1: load)) ns; "
              + "70% of the rate at 1 leaves \(String(format1: budget)) ns for all a bigger table adds")
        var recorder = ResultRecorder(path: common.results)
        defer { try? recorder.save() }
        recorder.record("dma_dependent_load_ns", load)
        recorder.record("dma_translate_random_ratio", translateRandom.last! / translateRandom.first!)
        recorder.record("dma_translate_sequential_ratio", translateSequential.last! / translateSequential.first!)

        print("")
        print("Over the socket, with a memfd fd on every DMA_MAP")
        let echoPath = directory + "/echo.sock"
        let echo = try BackgroundProcess(["taskset", "-c", String(common.cpu), vfuBench, "echo", echoPath])
        try waitForSocket(echoPath)
        let echoRate = fields(try runCommand([vfuBench, "rtt", echoPath, "7", "0", "50000"]))["ops_per_sec"] ?? 0
        echo.stop()
        unlink(echoPath)
        print("  echo peer round trips (the socket's limit, no work): \(formatRate(echoRate))")
        print("  N          our client: map+unmap  vs echo   vfu-bench dma N: map    unmap      map+unmap  vs echo")
        for size in sizes {
            let path = directory + "/server.sock"
            let server = try BackgroundProcess(["taskset", "-c", String(common.cpu), common.server, "--type", "mtty-2", "--socket-path", path])
            try waitForSocket(path)
            let ours = try measureOverSocket(path, size: size, memory: memory)
            server.stop()
            let server2 = try BackgroundProcess(["taskset", "-c", String(common.cpu), common.server, "--type", "mtty-2", "--socket-path", path])
            try waitForSocket(path)
            let result = fields(try runCommand([vfuBench, "dma", path, String(size)]))
            server2.stop()
            let map = result["map_per_sec"] ?? 0
            let unmap = result["unmap_per_sec"] ?? 0
            let both = 2 / (1 / map + 1 / unmap)
            recorder.record("dma_\(size)_ours_ratio", ours / echoRate)
            recorder.record("dma_\(size)_vfubench_ratio", both / echoRate)
            print("  " + pad(String(size), 9) + "  " + pad(formatRate(ours), 21) + "  " + pad(percent(ours / echoRate), 8)
                  + "  " + pad(formatRate(map), 21) + "  " + pad(formatRate(unmap), 9) + "  " + pad(formatRate(both), 9)
                  + "  " + percent(both / echoRate) + (size == 1 ? "  (one operation each)" : ""))
        }
        print("")
        print("map+unmap rates count messages (two per cycle); vs echo compares them with the echo peer's round trips.")
    }

    /// A DMA space holding `size` mappings: one 4 KiB page every 8 KiB.
    func filledSpace(_ size: Int, memory: BenchMemory) throws -> DMASpace {
        let space = DMASpace(maxMappings: size + 1)
        for i in 0..<size { try space.map(Self.slot(i), fd: memory.duplicate()) }
        return space
    }

    /// Steady-state map and unmap rates: an extra mapping in a gap, mapped and unmapped `cycles` times.
    func mapUnmapRates(_ space: DMASpace, size: Int, memory: BenchMemory) throws -> (Double, Double) {
        var maps: [Double] = []
        var unmaps: [Double] = []
        let perRound = max(cycles / rounds, 1)
        for round in 0..<rounds {
            var mapTime = 0.0
            var unmapTime = 0.0
            for cycle in 0..<perRound {
                let extra = Self.slot((round * perRound + cycle) % size, extra: true)
                let fd = memory.duplicate()
                mapTime += try measure { try space.map(extra, fd: fd) }
                unmapTime += try measure { try space.unmap(DMAUnmapRequest(address: extra.address, size: extra.size)) }
            }
            maps.append(Double(perRound) * 1e9 / mapTime)
            unmaps.append(Double(perRound) * 1e9 / unmapTime)
        }
        return (median(maps), median(unmaps))
    }

    /// Translation rates (pin, host address, release) for each space, random and sequential, measured
    /// in interleaved rounds so that a slow (or fast) moment of the machine hits every size and both
    /// orders alike. Random addresses are the worst case for caches; sequential ones walk the
    /// mappings in order, as a device walking a ring does.
    /// Addresses are computed in the loop (xorshift for random ones): a list of them made up front
    /// would stream 800 KB through the 1 MiB L2 the table competes for. The host address is not
    /// dereferenced: that would time page faults, not the table.
    func translateRates(_ spaces: [DMASpace], sizes: [Int]) -> (random: [Double], sequential: [Double]) {
        let lookups = 100_000
        var rates = [[[Double]]](repeating: [[Double]](repeating: [], count: spaces.count), count: 2)
        var sink = 0
        var random: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<rounds {
            for (i, space) in spaces.enumerated() {
                let size = UInt64(sizes[i])
                for (order, sequential) in [false, true].enumerated() {
                    var next: UInt64 = 0
                    let time = measure {
                        for _ in 0..<lookups {
                            random ^= random << 13
                            random ^= random >> 7
                            random ^= random << 17
                            // A multiply and a shift, not a division: the harness's own cost stays small.
                            let slot = sequential ? next : ((random >> 32) &* size) >> 32
                            next = next + 1 == size ? 0 : next + 1
                            let address = Self.base + slot * 8192 + 64
                            sink &+= (try? space.withPinned(address, length: 64, access: .read) { Int(bitPattern: $0.baseAddress) }) ?? 0
                        }
                    }
                    rates[order][i].append(Double(lookups) * 1e9 / time)
                }
            }
        }
        if sink == 42 { print("") } // keep the results alive
        return (rates[0].map(median), rates[1].map(median))
    }

    /// Nanoseconds per load when each load's address comes from the previous one (a random cycle
    /// through the buffer's cache lines): the latency a lookup pays for each record it misses.
    func dependentLoadNanoseconds(bufferBytes: Int) -> Double {
        let lines = max(bufferBytes / 64, 2)
        let buffer = UnsafeMutablePointer<Int>.allocate(capacity: lines * 8)
        defer { buffer.deallocate() }
        var order = Array(0..<lines)
        var generator = SystemRandomNumberGenerator()
        order.shuffle(using: &generator)
        for i in 0..<lines { buffer[order[i] * 8] = order[(i + 1) % lines] * 8 }
        let loads = 2_000_000
        var samples: [Double] = []
        var at = 0
        for _ in 0..<rounds {
            let time = measure { for _ in 0..<loads { at = buffer[at] } }
            samples.append(time / Double(loads))
        }
        if at == -1 { print("") } // keep the chain alive
        return median(samples)
    }

    /// Messages per second for steady map+unmap cycles with `size` mappings in the server's table.
    func measureOverSocket(_ path: String, size: Int, memory: BenchMemory) throws -> Double {
        let client = try VfioUserClient(path: path)
        try client.negotiate()
        // N mappings including the extra one: the server holds at most 65,535.
        for i in 0..<(size - 1) { try client.dmaMap(Self.slot(i), fd: memory.fd.descriptor) }
        let count = min(cycles, 10000)
        let time = try measure {
            for cycle in 0..<count {
                let extra = Self.slot(cycle % max(size - 1, 1), extra: true)
                try client.dmaMap(extra, fd: memory.fd.descriptor)
                try client.dmaUnmap(DMAUnmapRequest(address: extra.address, size: extra.size))
            }
        }
        return Double(2 * count) * 1e9 / time
    }
}

/// A memfd standing in for guest RAM.
final class BenchMemory {
    let fd: OwnedFileDescriptor

    init(pages: Int) throws {
        let raw = clinux_memfd_create("vfio-user-bench", 1)
        guard raw >= 0, ftruncate(raw, off_t(pages * 4096)) == 0 else { throw BenchError("memfd failed") }
        fd = OwnedFileDescriptor(taking: .init(rawValue: raw))
    }

    /// A new fd for the same memory, as a received SCM_RIGHTS fd would be.
    func duplicate() -> OwnedFileDescriptor { OwnedFileDescriptor(taking: .init(rawValue: dup(fd.rawValue))) }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// The median of each measurement's ratio to the reference taken just before it: a slow moment of
/// the machine that spans a pair changes both sides alike.
func pairedRatio(_ measured: [Double], to reference: [Double]) -> Double { median(zip(measured, reference).map { $0 / $1 }) }

func percent(_ ratio: Double) -> String { String(Int((ratio * 100).rounded())) + "%" }
