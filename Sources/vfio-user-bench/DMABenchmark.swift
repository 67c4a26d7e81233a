import ArgumentParser
import CLinux
import RegionEmulation
import Support
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// DMA map, unmap and translation rates with 1 to 65,535 mappings in the table, and with QEMU's own map.
struct DMABenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dma",
        abstract: "DMA map/unmap and translation rates at several table sizes, beside the echo peer.",
        discussion: """
        Steady state: the table is first filled to N mappings (one 4 KiB page every 8 KiB), then an \
        extra mapping is mapped and unmapped in a gap, over and over, and random or sequential \
        mapped addresses are translated. In process this is the DMA space alone; over the socket it \
        is the server process, beside the echo peer given the same messages (with their fds).
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: "Table sizes to measure (the first is the reference for the translation ratios).")
    var sizes: [Int] = [1, 32, 1000, 65535]

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
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        let largest = sizes.max() ?? 1
        let memory = try BenchMemory(pages: largest + 1)
        var recorder = ResultRecorder(path: common.results)
        defer { try? recorder.save() }

        print("DMA benchmark (both ends on CPU \(common.cpu))")
        print("")
        print("In process, the DMA space alone: rates with N mappings in the table (median of \(rounds) rounds)")
        print("  N          map (fd)     unmap        translate (random)  translate (sequential)")
        let spaces = try sizes.map { try filledSpace($0, memory: memory) }
        let qemu = try qemuSpace()
        let rates = translateRates(spaces + [qemu], sizes: sizes + [0])
        for (i, size) in sizes.enumerated() {
            let (map, unmap) = try mapUnmapRates(spaces[i], size: size, memory: memory)
            print("  " + pad(String(size), 9) + "  " + [map, unmap].map { pad(formatRate($0), 11) }.joined(separator: "  ")
                  + "  " + pad(formatRate(rates.random[i]), 18) + "  " + formatRate(rates.sequential[i]))
        }
        print("  QEMU's map (\(Self.qemuRegions.count) regions), addresses anywhere in guest RAM: translate "
              + formatRate(rates.random[sizes.count]))
        for (i, size) in sizes.enumerated().dropFirst() {
            let random = rates.random[i] / rates.random[0], sequential = rates.sequential[i] / rates.sequential[0]
            print("  translate with \(size) / with \(sizes[0]) mappings: random \(percent(random)), sequential \(percent(sequential))")
            recorder.record("dma_translate_\(size)_random_ratio", random)
            recorder.record("dma_translate_\(size)_sequential_ratio", sequential)
        }
        let qemuRatio = rates.random[sizes.count] / rates.random[0]
        print("  translate with QEMU's map / with \(sizes[0]) mapping: \(percent(qemuRatio))")
        recorder.record("dma_translate_qemu_ratio", qemuRatio)
        // What one cache miss costs here: 65,535 mappings take about 1 MiB of slots.
        let near = dependentLoadNanoseconds(bufferBytes: 1 << 20), far = dependentLoadNanoseconds(bufferBytes: 4 << 20)
        print("  the machine: a dependent random load takes \(String(format1: near)) ns over 1 MiB, \(String(format1: far)) ns over 4 MiB")
        recorder.record("dma_dependent_load_1mib_ns", near)
        recorder.record("dma_dependent_load_4mib_ns", far)

        print("")
        print("Over the socket, with a memfd fd on every DMA_MAP: map+unmap messages per second")
        print("  N          echo peer    server       vs echo")
        for size in sizes {
            var rates: [(echo: Double, server: Double)] = []
            for _ in 0..<3 {
                let echoPath = directory + "/echo.sock"
                let echo = try BackgroundProcess(["taskset", "-c", String(common.cpu), common.echo, echoPath])
                try waitForSocket(echoPath)
                let echoRate = try measureOverSocket(echoPath, size: size, memory: memory)
                echo.stop()
                unlink(echoPath)
                let path = directory + "/server.sock"
                let server = try BackgroundProcess(["taskset", "-c", String(common.cpu), common.server, "--type", "mtty-2",
                                                    "--socket-path", path, "--no-control"])
                try waitForSocket(path)
                rates.append((echoRate, try measureOverSocket(path, size: size, memory: memory)))
                server.stop()
            }
            let ratio = pairedRatio(rates.map(\.server), to: rates.map(\.echo))
            recorder.record("dma_\(size)_ratio", ratio)
            print("  " + pad(String(size), 9) + "  " + pad(formatRate(median(rates.map(\.echo))), 11) + "  "
                  + pad(formatRate(median(rates.map(\.server))), 11) + "  " + percent(ratio))
        }
    }

    /// The DMA_MAPs QEMU 11.1.3 sends for the end-to-end guest (q35, 256 MiB of memfd RAM): low
    /// RAM, two option-ROM windows, RAM from 1 MiB, the BIOS below 4 GiB. (address, size, writable)
    static let qemuRegions: [(UInt64, UInt64, Bool)] = [
        (0x0, 0xC0000, true), (0xC0000, 0x20000, false), (0xE0000, 0x20000, false),
        (0x100000, 0xFF00000, true), (0xFFFC0000, 0x40000, false),
    ]

    /// A DMA space holding QEMU's regions, all backed by one sparse memfd (nothing is touched).
    func qemuSpace() throws -> DMASpace {
        let memory = try BenchMemory(pages: 0x10000000 / 4096)
        let space = DMASpace()
        for (address, size, writable) in Self.qemuRegions {
            let flags: DMAMapFlags = writable ? [.read, .write] : [.read]
            try space.map(DMAMapRequest(flags: flags, offset: address % 0x10000000, address: address, size: size), fd: memory.duplicate())
        }
        return space
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
    /// orders alike. Random addresses pick a mapping at random, the worst case for caches and for
    /// branch prediction; sequential ones walk the mappings in order. A size of 0 is QEMU's map,
    /// translated at addresses spread over guest RAM as a guest's buffers are.
    /// Addresses are computed in the loop (xorshift): a list of them made up front would stream
    /// through the cache the table competes for. The host address is not dereferenced: that would
    /// time page faults, not the table.
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
                            let address: UInt64
                            if size == 0 { // QEMU's map: a buffer anywhere in guest RAM, whatever the order
                                address = random >> 36
                            } else {
                                let slot = sequential ? next : ((random >> 32) &* size) >> 32
                                next = next + 1 == size ? 0 : next + 1
                                address = Self.base + slot * 8192 + 64
                            }
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

    /// The time of one load whose address comes from the load before, over a buffer of random
    /// cache lines: the latency a lookup pays for each line of its table that is not cached.
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

    /// Messages per second for steady map+unmap cycles with `size` mappings in the peer's table.
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
