import ArgumentParser
import MttyDevice
import RegionEmulation
import VfioUserProto
import VfioUserServer
import VirtioNetDevice
import VirtioNetTestDriver
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


    func run() throws {
        pinToCPU(common.cpu)
        let directory = scratchDirectory()
        defer { rmdir(directory) }
        var recorder = ResultRecorder(path: common.results)
        print("Interrupt latency, trigger to the waiting thread's wake-up, \(count) each, one CPU (µs)")
        print("  " + pad("", 26) + MessagesBenchmark.percentilePoints.map { pad("p" + String(format1: $0).replacingZeroDecimal, 8) }.joined() + "raised/s")

        // INTx on an mtty-2: automasked when it fires, unmasked again before the next.
        let mttyPath = directory + "/mtty.sock"
        let mtty = try DeviceEndpoint(path: mttyPath, device: EmulatedDevice(model: MttyDevice(ports: 2)),
                                      configuration: ServerConfiguration(), name: "bench")
        mtty.start()
        defer { mtty.stop() }
        let mttyClient = try VfioUserClient(path: mttyPath)
        try mttyClient.negotiate()
        let intx = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try mttyClient.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [intx.descriptor])
        let interrupts = mtty.device.function.interrupts

        let bare = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        let reference = try latency(bare, name: "eventfd write (reference)") { try? bare.signalEventfd() }
        let intxFigures = try latency(intx, name: "INTx (mtty)") {
            interrupts.setMasked(.intx, vector: 0, false)
            interrupts.trigger(.intx, vector: 0)
        }

        // MSI-X on a virtio-net: the driver enables it as QEMU does, one eventfd per vector.
        let netPath = directory + "/net.sock"
        let net = try DeviceEndpoint(path: netPath, device: EmulatedDevice(model: VirtioNetDevice(backend: SinkBackend(), mac: [0x52, 0x54, 0, 0, 0, 1])),
                                     configuration: ServerConfiguration(), name: "bench-net")
        net.start()
        defer { net.stop() }
        let driver = try VirtioNetDriver(path: netPath)
        guard try driver.negotiate([.version1, .netMAC]) else { throw BenchError("FEATURES_OK refused") }
        try driver.start()
        let msix = net.device.function.interrupts
        let msixFigures = try latency(driver.vectors[0], name: "MSI-X (virtio-net)") { msix.trigger(.msix, vector: 0) }

        for (key, figures) in [("eventfd", reference), ("intx", intxFigures), ("msix", msixFigures)] {
            for (point, value) in zip(MessagesBenchmark.percentilePoints, figures.percentiles) {
                recorder.record("irq_\(key)_p\(String(format1: point).replacingZeroDecimal)", value)
            }
            recorder.record("irq_\(key)_rate", figures.rate)
        }
        try recorder.save()
    }

    struct Figures {
        var percentiles: [Double]
        var rate: Double
    }

    /// Latency percentiles of `raise` waking a thread blocked on `eventfd`, and how many raises a
    /// second the raising side manages when nobody waits.
    func latency(_ eventfd: OwnedFileDescriptor, name: String, raise: @escaping @Sendable () -> Void) throws -> Figures {
        _ = try? eventfd.readEventfd()
        let ready = try OwnedFileDescriptor.eventfd(nonBlocking: false)
        defer { withExtendedLifetime(ready) {} } // used through its raw fd only: keep it open until the end
        let woken = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        defer { woken.deallocate() }
        let wokenAddress = UInt(bitPattern: woken)
        let waiterFD = eventfd.rawValue
        let readyFD = ready.rawValue
        let rounds = count
        spawnThread(name: "waiter") {
            var poller = pollfd(fd: waiterFD, events: Int16(POLLIN), revents: 0)
            var value: UInt64 = 0
            for _ in 0..<rounds {
                var one: UInt64 = 1
                _ = write(readyFD, &one, 8) // armed: raise the next one
                _ = poll(&poller, 1, 1000)
                UnsafeMutablePointer<UInt64>(bitPattern: wokenAddress)!.pointee = monotonicNanoseconds()
                _ = read(waiterFD, &value, 8)
            }
            var one: UInt64 = 1
            _ = write(readyFD, &one, 8)
        }
        var samples = LatencySamples(capacity: count)
        var value: UInt64 = 0
        _ = read(readyFD, &value, 8)
        for _ in 0..<count {
            let start = monotonicNanoseconds()
            raise()
            _ = read(readyFD, &value, 8) // the waiter woke, noted the time, and is armed again (or done)
            samples.append(woken.pointee &- start)
        }
        // The raising side alone: eventfd writes with nobody blocked on them.
        let raises = 100_000
        let time = measure { for _ in 0..<raises { raise() } }
        _ = try? eventfd.readEventfd()
        let figures = Figures(percentiles: samples.percentiles(MessagesBenchmark.percentilePoints), rate: Double(raises) * 1e9 / time)
        print("  " + pad(name, 26) + figures.percentiles.map { pad(String(format2: $0), 8) }.joined() + formatRate(figures.rate))
        return figures
    }
}
