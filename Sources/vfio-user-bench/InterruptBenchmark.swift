import ArgumentParser
import MttyDevice
import RegionEmulation
import Support
import VfioUserProto
import VfioUserServer
import VirtioNetDevice
import VirtioDriver
#if canImport(Glibc)
import Glibc
#endif

/// From a device model raising an interrupt to the client's thread waking on its eventfd.
struct InterruptBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "interrupts",
        abstract: "INTx and MSI-X trigger-to-eventfd latency, beside a bare eventfd write.",
        discussion: """
        A device served in this process, its interrupts armed by a client over the socket as QEMU \
        arms them (SET_IRQS with eventfds). One thread raises the interrupt through the device's \
        interrupt engine; another, blocked in poll on the eventfd, notes when it wakes. Both are on \
        one CPU. The reference writes the eventfd directly: the wake-up alone.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: "Interrupts per figure.")
    var count: Int = 20000

    @Option(help: "Rounds: the three sources take turns, so a slow moment of the machine hits each alike.")
    var rounds: Int = 5

    /// Something that raises an interrupt, and the eventfd the client waits on for it.
    struct Source {
        let name: String
        let key: String
        let eventfd: OwnedFileDescriptor
        let raise: @Sendable () -> Void
    }

    func run() throws {
        pinToCPU(common.cpu)
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        var recorder = ResultRecorder(path: common.results)

        // INTx on an mtty-2: automasked when it fires, unmasked again before the next.
        let mttyPath = directory + "/mtty.sock"
        let mtty = try DeviceEndpoint(path: mttyPath, device: EmulatedDevice(model: MttyDevice(ports: 2)),
                                      configuration: ServerConfiguration(), name: "bench")
        try mtty.start()
        defer { mtty.stop() }
        let mttyClient = try VfioUserClient(path: mttyPath)
        try mttyClient.negotiate()
        let intx = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try mttyClient.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [intx.descriptor])
        let interrupts = mtty.device.function.interrupts

        // MSI-X on a virtio-net: the driver enables it as QEMU does, one eventfd per vector.
        let netPath = directory + "/net.sock"
        let net = try DeviceEndpoint(path: netPath, device: EmulatedDevice(model: try VirtioNetDevice(backend: SinkBackend(), mac: [0x52, 0x54, 0, 0, 0, 1])),
                                     configuration: ServerConfiguration(), name: "bench-net")
        try net.start()
        defer { net.stop() }
        let driver = try VirtioNetDriver(path: netPath)
        guard try driver.negotiate([.version1, .netMAC]) else { throw BenchError("FEATURES_OK refused") }
        try driver.start()
        let msix = net.device.function.interrupts

        let bare = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        let sources = [
            Source(name: "eventfd write (reference)", key: "eventfd", eventfd: bare) { try? bare.signalEventfd() },
            Source(name: "INTx (mtty)", key: "intx", eventfd: intx) {
                interrupts.setMasked(.intx, vector: 0, false)
                interrupts.trigger(.intx, vector: 0)
            },
            Source(name: "MSI-X (virtio-net)", key: "msix", eventfd: driver.vectors[0]) { msix.trigger(.msix, vector: 0) },
        ]
        var samples = sources.map { _ in LatencySamples(capacity: count) }
        var rates = sources.map { _ in [Double]() }
        for _ in 0..<rounds {
            for (i, source) in sources.enumerated() {
                try wakeUps(source, count: max(count / rounds, 1), into: &samples[i])
                rates[i].append(raiseRate(source))
            }
        }

        print("Interrupt latency, trigger to the waiting thread's wake-up, \(count) each in \(rounds) interleaved rounds, one CPU (µs)")
        print("  " + pad("", 26) + MessagesBenchmark.percentilePoints.map { pad("p" + String(format1: $0).replacingZeroDecimal, 8) }.joined() + "raised/s")
        for (i, source) in sources.enumerated() {
            let percentiles = samples[i].percentiles(MessagesBenchmark.percentilePoints)
            let rate = median(rates[i])
            print("  " + pad(source.name, 26) + percentiles.map { pad(String(format2: $0), 8) }.joined() + formatRate(rate))
            for (point, value) in zip(MessagesBenchmark.percentilePoints, percentiles) {
                recorder.record("irq_\(source.key)_p\(String(format1: point).replacingZeroDecimal)", value)
            }
            recorder.record("irq_\(source.key)_rate", rate)
        }
        try recorder.save()
    }

    /// Latencies of `count` raises, each waking a thread blocked in poll on the source's eventfd.
    func wakeUps(_ source: Source, count: Int, into samples: inout LatencySamples) throws {
        let eventfd = source.eventfd
        _ = try? eventfd.readEventfd()
        let ready = try OwnedFileDescriptor.eventfd(nonBlocking: false)
        defer { withExtendedLifetime(ready) {} } // used through its raw fd only: keep it open until the end
        let woken = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        defer { woken.deallocate() }
        let wokenAddress = UInt(bitPattern: woken)
        let waiterFD = eventfd.rawValue
        let readyFD = ready.rawValue
        try spawnThread(name: "waiter") {
            var poller = pollfd(fd: waiterFD, events: Int16(POLLIN), revents: 0)
            var value: UInt64 = 0
            for _ in 0..<count {
                var one: UInt64 = 1
                _ = write(readyFD, &one, 8) // armed: raise the next one
                _ = poll(&poller, 1, 1000)
                UnsafeMutablePointer<UInt64>(bitPattern: wokenAddress)!.pointee = monotonicNanoseconds()
                _ = read(waiterFD, &value, 8)
            }
            var one: UInt64 = 1
            _ = write(readyFD, &one, 8)
        }
        var value: UInt64 = 0
        _ = read(readyFD, &value, 8)
        for _ in 0..<count {
            let start = monotonicNanoseconds()
            source.raise()
            _ = read(readyFD, &value, 8) // the waiter woke, noted the time, and is armed again (or done)
            samples.append(woken.pointee &- start)
        }
    }

    /// Raises a second on the raising side alone: eventfd writes with nobody blocked on them.
    func raiseRate(_ source: Source) -> Double {
        let raises = 20_000
        let time = measure { for _ in 0..<raises { source.raise() } }
        _ = try? source.eventfd.readEventfd()
        return Double(raises) * 1e9 / time
    }
}
