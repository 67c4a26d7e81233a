import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Plays the guest's virtio-net driver against a vfio-user server, the way Linux's virtio_pci and
/// virtio_net do it: finds the structures through the vendor capabilities, negotiates features,
/// sets up the queues with MSI-X vectors, and moves frames. It knows virtio from the specification
/// (`VirtioSpec`), not from the device model it drives.
///
/// It is as strict as Linux where a kinder driver would hide a device's bug: a received frame is
/// taken only whole, from what the device has published when the driver looks (`pollReceived`).
///
/// Guest memory is a memfd mapped with DMA_MAP (with its fd, or without one in `messageMode`, when
/// the device reaches it with DMA_READ/DMA_WRITE that this driver serves). In message mode the
/// driver looks at the receive queue after every write the device makes to its used index: the
/// worst moment a guest's poll could come.
public final class VirtioNetDriver {
    public private(set) var client: VfioUserClient
    public let ram: GuestRAM
    public let messageMode: Bool
    public private(set) var features: VirtioSpec.Features = []
    public private(set) var rx: DriverQueue!
    public private(set) var tx: DriverQueue!
    public private(set) var ctrl: DriverQueue?
    /// MSI-X eventfds: vector 0 config, 1 receive, 2 transmit, 3 control.
    public private(set) var vectors: [OwnedFileDescriptor] = []
    public private(set) var kicks = 0
    /// Linux's `rx_length_errors`: received frames dropped because a buffer they span was not
    /// there when the driver looked (or a buffer too short for the header).
    public private(set) var lengthErrors = 0
    /// Whole frames taken off the receive queue, not yet handed out by `receive`.
    private var delivered: [Received] = []

    // Where the structures are, from the capabilities.
    public private(set) var structuresBAR = RegionIndex.bar4
    public private(set) var commonOffset: UInt64 = 0
    public private(set) var isrOffset: UInt64 = 0
    public private(set) var deviceOffset: UInt64 = 0
    public private(set) var notifyOffset: UInt64 = 0
    public private(set) var notifyMultiplier: UInt64 = 0

    public init(path: String, memorySize: Int = 16 << 20, messageMode: Bool = false) throws {
        client = try VfioUserClient(path: path)
        try client.negotiate()
        ram = try GuestRAM(size: memorySize)
        self.messageMode = messageMode
        try mapMemory(on: client)
        try findStructures()
    }

    /// Gives a device's server this driver's RAM: DMA_MAP (with the memfd unless in message mode)
    /// and the handler for its DMA messages.
    public func mapMemory(on client: VfioUserClient) throws {
        let memory = ram.memfd.handler(at: ram.base)
        client.dmaHandler = DMARequestHandler(read: memory.read) { [unowned self] address, data in
            let failure = memory.write(address, data)
            // The device moved the receive queue's used index: look now, as a guest's poll might.
            if failure == nil, let rx, address <= rx.usedRing + 2, address + UInt64(data.count) > rx.usedRing + 2 { pollReceived() }
            return failure
        }
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: ram.base, size: UInt64(ram.size)),
                          fd: messageMode ? nil : ram.memfd.fd.descriptor)
    }

    /// Continues on another server's device after a migration (its memory mapped with `mapMemory`):
    /// the same MSI-X eventfds, then every access goes there.
    public func move(to destination: VfioUserClient) throws {
        if !vectors.isEmpty {
            try destination.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: UInt32(vectors.count), fds: vectors.map(\.descriptor))
        }
        client = destination
    }

    // MARK: Discovery

    /// Walks the capability list for the virtio structures (virtio 1.x §4.1.4).
    func findStructures() throws {
        let config = try client.read(.config, offset: 0, count: 256)
        var next = Int(config[0x34])
        var seen = 0
        while next != 0 && seen < 48 {
            seen += 1
            if config[next] == 0x09 {
                let type = config[next + 3]
                let bar = RegionIndex.bar(Int(config[next + 4]))
                let offset = UInt64(config[next + 8]) | UInt64(config[next + 9]) << 8 | UInt64(config[next + 10]) << 16 | UInt64(config[next + 11]) << 24
                switch VirtioSpec.PCICapability(rawValue: type) {
                case .common: commonOffset = offset; structuresBAR = bar
                case .isr: isrOffset = offset
                case .device: deviceOffset = offset
                case .notify:
                    notifyOffset = offset
                    notifyMultiplier = UInt64(config[next + 16]) | UInt64(config[next + 17]) << 8
                default: break
                }
            }
            next = Int(config[next + 1])
        }
    }

    // MARK: Registers

    public func common<T: FixedWidthInteger>(_ offset: UInt64, as: T.Type) throws -> T {
        try client.read(structuresBAR, offset: commonOffset + offset, as: T.self)
    }

    public func setCommon<T: FixedWidthInteger>(_ offset: UInt64, _ value: T) throws {
        try client.write(structuresBAR, offset: commonOffset + offset, value: value)
    }

    public var status: VirtioSpec.Status { get throws { VirtioSpec.Status(rawValue: try common(0x14, as: UInt8.self)) } }

    public func setStatus(_ status: VirtioSpec.Status) throws { try setCommon(0x14, status.rawValue) }

    public func deviceFeatures() throws -> VirtioSpec.Features {
        try setCommon(0x00, UInt32(0))
        let low = UInt64(try common(0x04, as: UInt32.self))
        try setCommon(0x00, UInt32(1))
        let high = UInt64(try common(0x04, as: UInt32.self))
        return VirtioSpec.Features(rawValue: low | high << 32)
    }

    public func config(_ offset: UInt64, count: Int) throws -> [UInt8] {
        try client.read(structuresBAR, offset: deviceOffset + offset, count: count)
    }

    public func readISR() throws -> UInt8 { try client.read(structuresBAR, offset: isrOffset, as: UInt8.self) }

    // MARK: Bring-up (virtio 1.x §3.1.1)

    /// Resets, negotiates `wanted` (intersected with what the device offers), and returns whether
    /// the device kept FEATURES_OK.
    @discardableResult
    public func negotiate(_ wanted: VirtioSpec.Features, exactly: Bool = false) throws -> Bool {
        try setStatus([])
        try setStatus(.acknowledge)
        try setStatus([.acknowledge, .driver])
        let chosen = exactly ? wanted : wanted.intersection(try deviceFeatures())
        try writeDriverFeatures(chosen)
        try setStatus([.acknowledge, .driver, .featuresOK])
        features = chosen
        return try status.contains(.featuresOK)
    }

    /// Writes the driver feature words as they are (tests use this to try refused sets).
    public func writeDriverFeatures(_ chosen: VirtioSpec.Features) throws {
        try setCommon(0x08, UInt32(0))
        try setCommon(0x0C, UInt32(truncatingIfNeeded: chosen.rawValue))
        try setCommon(0x08, UInt32(1))
        try setCommon(0x0C, UInt32(truncatingIfNeeded: chosen.rawValue >> 32))
    }

    /// Sets up the receive, transmit (and control) queues with MSI-X vectors, then DRIVER_OK.
    public func start(queueSize: UInt16 = 256, useMSIX: Bool = true) throws {
        if useMSIX {
            vectors = try (0..<4).map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
            // As QEMU does: enable MSI-X with SET_IRQS, one eventfd per vector.
            try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 4, fds: vectors.map(\.descriptor))
            try setCommon(0x10, UInt16(0))
        }
        let eventIndex = features.contains(.ringEventIndex)
        rx = try setUpQueue(0, size: queueSize, vector: useMSIX ? 1 : VirtioSpec.noVector, eventIndex: eventIndex)
        tx = try setUpQueue(1, size: queueSize, vector: useMSIX ? 2 : VirtioSpec.noVector, eventIndex: eventIndex)
        if features.contains(.netControlQueue) {
            ctrl = try setUpQueue(2, size: 64, vector: useMSIX ? 3 : VirtioSpec.noVector, eventIndex: eventIndex)
        }
        try setStatus([.acknowledge, .driver, .featuresOK, .driverOK])
    }

    func setUpQueue(_ index: UInt16, size: UInt16, vector: UInt16, eventIndex: Bool) throws -> DriverQueue {
        try setCommon(0x16, index)
        let maximum = try common(0x18, as: UInt16.self)
        let queue = DriverQueue(index: Int(index), size: min(size, maximum), memory: ram, eventIndex: eventIndex)
        try setCommon(0x18, queue.size)
        try setCommon(0x1A, vector)
        try setCommon(0x20, UInt32(truncatingIfNeeded: queue.descriptorTable))
        try setCommon(0x24, UInt32(truncatingIfNeeded: queue.descriptorTable >> 32))
        try setCommon(0x28, UInt32(truncatingIfNeeded: queue.availableRing))
        try setCommon(0x2C, UInt32(truncatingIfNeeded: queue.availableRing >> 32))
        try setCommon(0x30, UInt32(truncatingIfNeeded: queue.usedRing))
        try setCommon(0x34, UInt32(truncatingIfNeeded: queue.usedRing >> 32))
        try setCommon(0x1C, UInt16(1))
        return queue
    }

    // MARK: Traffic

    /// Kicks `queue` (a posted write of its index to its notification address) if the device asked.
    public func kickIfNeeded(_ queue: DriverQueue, since old: UInt16, force: Bool = false) throws {
        guard force || queue.needsKick(since: old) else { return }
        kicks += 1
        try client.write(structuresBAR, offset: notifyOffset + UInt64(queue.index) * notifyMultiplier, value: UInt16(queue.index), posted: true)
    }

    /// Queues frames for transmission (a virtio-net header, then the frame) and kicks once (unless
    /// `kick` is false: the frames are then only published in the ring).
    /// Returns how many were queued (limited by free descriptors).
    @discardableResult
    public func transmit(_ frames: [[UInt8]], header: VirtioSpec.NetHeader = VirtioSpec.NetHeader(), indirect: Bool = false,
                         kick: Bool = true) throws -> Int {
        let old = tx.availableIndex
        var queued = 0
        for frame in frames {
            guard tx.freeCount >= (indirect ? 1 : 2) else { break }
            let headerAddress = ram.allocateRecycled(VirtioSpec.NetHeader.size)
            ram.write(headerAddress, header.bytes)
            let data = ram.allocateRecycled(frame.count)
            ram.write(data, frame)
            let chain: [(address: UInt64, length: UInt32, writable: Bool)] = [(headerAddress, UInt32(VirtioSpec.NetHeader.size), false), (data, UInt32(frame.count), false)]
            if indirect { tx.addIndirect(chain) } else { tx.add(chain, publish: false) }
            queued += 1
        }
        tx.publishAvailable()
        if kick { try kickIfNeeded(tx, since: old) }
        return queued
    }

    /// Posts `count` receive buffers of `size` bytes each (one writable descriptor per buffer, as
    /// Linux does with mergeable buffers).
    public func postReceiveBuffers(_ count: Int, size: Int = 2048) throws {
        let old = rx.availableIndex
        for _ in 0..<count {
            guard rx.freeCount > 0 else { break }
            let buffer = ram.allocate(size)
            rx.add([(buffer, UInt32(size), true)], token: Int(buffer - ram.base), publish: false)
        }
        rx.publishAvailable()
        try kickIfNeeded(rx, since: old)
    }

    /// A frame the device delivered: its header and the frame bytes, assembled from `num_buffers`.
    public struct Received {
        public let header: VirtioSpec.NetHeader
        public let frame: [UInt8]
    }

    /// Takes every whole frame the device has published on the receive queue, the way Linux's
    /// `virtnet_receive` does. With MRG_RXBUF a frame spans `num_buffers` used entries: if fewer
    /// are published than its header says, Linux's `receive_mergeable` counts `rx_length_errors`
    /// and drops the frame with the buffers that did arrive; so does this. Nothing is kept across
    /// looks, so a device that publishes half a frame loses it, as it would in a guest.
    public func pollReceived() {
        guard let rx else { return }
        let entries = rx.collectUsed()
        let mergeable = features.contains(.netMergeableRxBuffers)
        var next = 0
        while next < entries.count {
            let head = entries[next]
            next += 1
            let bytes = ram.read(ram.base + UInt64(head.token), Int(head.length))
            guard bytes.count >= VirtioSpec.NetHeader.size else {
                lengthErrors += 1 // Linux: "rx error: len %u < hdr_len"
                continue
            }
            let header = VirtioSpec.NetHeader(bytes)
            var frame = Array(bytes.dropFirst(VirtioSpec.NetHeader.size))
            if mergeable {
                let spans = Int(header.bufferCount)
                guard spans >= 1, spans - 1 <= entries.count - next else {
                    lengthErrors += 1
                    next = entries.count
                    continue
                }
                for entry in entries[next ..< next + spans - 1] {
                    frame += ram.read(ram.base + UInt64(entry.token), Int(entry.length))
                }
                next += spans - 1
            }
            delivered.append(Received(header: header, frame: frame))
        }
    }

    /// Every frame delivered so far, waiting up to `milliseconds` for at least `count`.
    public func receive(count: Int, milliseconds: Int = 5000) throws -> [Received] {
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        pollReceived()
        while delivered.count < count && monotonicNanoseconds() < deadline {
            try wait(milliseconds: 5)
            pollReceived()
        }
        defer { delivered.removeAll() }
        return delivered
    }

    /// Returns transmitted buffers; how many came back.
    @discardableResult
    public func reclaimTransmitted(waitingFor count: Int = 0, milliseconds: Int = 5000) throws -> Int {
        var total = tx.collectUsed().count
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while total < count && monotonicNanoseconds() < deadline {
            try wait(milliseconds: 5)
            total += tx.collectUsed().count
        }
        return total
    }

    /// Sends a control command, returns the device's ack byte. In message mode, `racing` more of
    /// the device's messages are served after the answer appears before this returns: the next
    /// command then lands while the device is still finishing this one, as a vCPU's may.
    public func control(class commandClass: UInt8, command: UInt8, data: [UInt8], racing: Int = 0) throws -> UInt8 {
        guard let ctrl else { return 0xFF }
        let request = ram.allocate(2 + data.count)
        ram.write(request, [commandClass, command] + data)
        let ack = ram.allocate(1)
        ram.write(ack, [0xEE])
        let old = ctrl.availableIndex
        ctrl.add([(request, UInt32(2 + data.count), false), (ack, 1, true)])
        try kickIfNeeded(ctrl, since: old)
        // Like Linux, which spins on the used ring, this returns as soon as the used entry is
        // there: the next command can follow before the device asked for the next kick.
        var answered = false
        var linger = racing
        let isAnswered = { () -> Bool in
            if !answered { answered = !ctrl.collectUsed().isEmpty; return answered && linger == 0 }
            linger -= 1
            return linger <= 0
        }
        if messageMode {
            try client.serveRequests(milliseconds: 5000, until: isAnswered)
        } else {
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while !isAnswered() && monotonicNanoseconds() < deadline { sched_yield() }
        }
        return ram.read(ack, 1)[0]
    }

    /// Sleeps, serving the device's DMA messages meanwhile in message mode.
    public func wait(milliseconds: Int) throws {
        if messageMode {
            try client.serveRequests(milliseconds: Int32(milliseconds))
        } else {
            usleep(UInt32(milliseconds) * 1000)
        }
    }
}

extension GuestRAM {
    /// A buffer for transmit data: allocated afresh (tests are short; the RAM is large enough).
    func allocateRecycled(_ count: Int) -> UInt64 { allocate(max(count, 1), alignment: 16) }
}
