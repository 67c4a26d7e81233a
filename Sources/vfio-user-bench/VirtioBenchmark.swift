import ArgumentParser
import Support
import VfioUserProto
import VirtioNetDevice
import VirtioDriver
#if canImport(Glibc)
import Glibc
#endif

/// virtio-net packets per second, transmit into a sink and receive from a source, driven by the
/// test driver playing the guest over a real socket with memfd guest memory.
struct VirtioBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtio",
        abstract: "virtio-net packets per second (TX into a sink, RX from a source) and socket messages per packet.",
        discussion: """
        The server runs as its own process on --cpu with a sink (TX) or source (RX) backend; the \
        driver keeps the ring full from another CPU (--driver-cpu), kicking only when the device asks \
        (EVENT_IDX). The figure is what the device's datapath thread sustains on its one core.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: "CPU of the driver (the guest side).")
    var driverCPU: Int = 0

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 2

    @Option(help: "Frame sizes.")
    var sizes: [Int] = [64, 1500]

    @Option(help: "Ring size.")
    var queueSize: UInt16 = 256


    func run() throws {
        print("virtio-net benchmark: device datapath on CPU \(common.cpu), driver on CPU \(driverCPU), \(queueSize)-entry rings, memfd guest memory")
        print("  direction  frame  packets/s    copied   kicks/packet  messages/packet")
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        var recorder = ResultRecorder(path: common.results)
        defer { try? recorder.save() }
        for size in sizes {
            for direction in ["tx", "rx"] {
                let result = try measure(direction: direction, frameSize: size, directory: directory)
                recorder.record("virtio_\(direction)_\(size)_pps", result.packetsPerSecond)
                let copied = String(format1: result.packetsPerSecond * Double(size) / 1e9) + " GB/s"
                print("  " + pad(direction.uppercased(), 9) + "  " + pad(String(size), 5) + "  " + pad(formatRate(result.packetsPerSecond), 11)
                      + "  " + pad(copied, 7) + "  " + pad(String(format5: result.kicksPerPacket), 12)
                      + "  " + String(format5: result.messagesPerPacket))
            }
        }
        print("The sink and the source only count frames: these are the datapath's rates (rings, descriptors and")
        print("the copy between guest memory and the backend), a memory-copy rate for large frames, not a NIC's.")
    }

    struct Result {
        var packetsPerSecond: Double
        var kicksPerPacket: Double
        var messagesPerPacket: Double
    }

    func measure(direction: String, frameSize: Int, directory: String) throws -> Result {
        let path = directory + "/net-\(direction)-\(frameSize).sock"
        let backend = direction == "tx" ? ["--param", "backend=sink"] : ["--param", "backend=source", "--param", "frame-size=\(frameSize)"]
        let server = try BackgroundProcess(["taskset", "-c", String(common.cpu), common.server, "--type", "virtio-net",
                                            "--mac", "52:54:00:00:00:01", "--socket-path", path] + backend)
        defer {
            server.stop()
            unlink(path)
        }
        try waitForSocket(path)
        pinToCPU(driverCPU)
        let driver = try VirtioNetDriver(path: path, memorySize: 64 << 20)
        let features: VirtioSpec.Features = [.version1, .netMAC, .netStatus, .netMergeableRxBuffers, .ringEventIndex]
        guard try driver.negotiate(features) else { throw BenchError("FEATURES_OK refused") }
        try driver.start(queueSize: queueSize)
        let messagesBefore = driver.client.messagesSent
        let kicksBefore = driver.kicks

        // One buffer per descriptor slot, allocated once: header + frame for TX, room for RX.
        let slot = (VirtioSpec.NetHeader.size + max(frameSize, 64) + 63) / 64 * 64
        let ring = direction == "tx" ? driver.tx! : driver.rx!
        let buffers = (0..<Int(ring.size)).map { _ in driver.ram.allocate(slot) }
        if direction == "tx" {
            for buffer in buffers {
                driver.ram.write(buffer, [UInt8](repeating: 0, count: VirtioSpec.NetHeader.size) + [UInt8](repeating: 0xAB, count: frameSize))
            }
        }
        let length = UInt32(direction == "tx" ? VirtioSpec.NetHeader.size + frameSize : slot)
        var free = Array(buffers.indices)
        var completed = 0
        let start = monotonicNanoseconds()
        let deadline = start + UInt64(seconds * 1e9)
        while monotonicNanoseconds() < deadline {
            completed += ring.drainUsed { _, _, token in free.append(token) }
            let old = ring.availableIndex
            while let index = free.popLast() {
                _ = ring.addSingle(address: buffers[index], length: length, writable: direction == "rx", token: index)
            }
            if ring.availableIndex != old {
                ring.publishAvailable()
                try driver.kickIfNeeded(ring, since: old)
            }
        }
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        let messages = Double(driver.client.messagesSent - messagesBefore)
        let kicks = Double(driver.kicks - kicksBefore)
        return Result(packetsPerSecond: Double(completed) / elapsed, kicksPerPacket: kicks / Double(max(completed, 1)),
                      messagesPerPacket: messages / Double(max(completed, 1)))
    }
}

extension String {
    init(format5 value: Double) {
        let scaled = (value * 100_000).rounded() / 100_000
        self = String(scaled)
    }
}
