import RegionEmulation
import Support
import VfioUserProto

/// What a virtio device type supplies to the PCI transport.
public protocol VirtioDeviceType: AnyObject, Sendable {
    /// Features the device offers.
    var offeredFeatures: VirtioFeatures { get }
    /// Whether the driver's choice is acceptable (dependencies between bits); FEATURES_OK stays clear otherwise.
    func accepts(_ features: VirtioFeatures) -> Bool
    func readDeviceConfig(offset: Int, size: Int) -> UInt64
    func writeDeviceConfig(offset: Int, size: Int, value: UInt64)
    /// The driver wrote to queue `queue`'s notification address.
    func queueNotified(_ queue: Int)
    /// The device status changed (DRIVER_OK set, or a reset to 0): start or stop the datapath.
    /// Called on the session thread before the new status is visible to the driver.
    func statusChanged(from old: VirtioStatus, to new: VirtioStatus)
}

/// The virtio 1.x "modern" PCI transport (§4.1): the vendor-specific capabilities and the common
/// configuration, ISR, device configuration and notification structures, all in one memory BAR,
/// with the MSI-X table and PBA in another. Reusable by any virtio device type.
public final class VirtioPCITransport: Sendable {
    /// Where the structures live. Each gets a 4 KiB page of `structuresBAR`.
    public struct Layout: Sendable {
        public var structuresBAR = 4
        public var msixBAR = 1
        public var commonOffset: UInt32 = 0x0000
        public var isrOffset: UInt32 = 0x1000
        public var deviceOffset: UInt32 = 0x2000
        public var notifyOffset: UInt32 = 0x3000
        /// Queue q is notified at `notifyOffset + q * notifyOffMultiplier`.
        public var notifyOffMultiplier: UInt32 = 4
        public var structuresSize: UInt64 = 0x4000
        public init() {}
    }

    public struct QueueConfiguration: Sendable, Equatable {
        public var size: UInt16
        public var msixVector: UInt16 = virtioNoVector
        public var enabled = false
        public var descriptorTable: UInt64 = 0
        public var availableRing: UInt64 = 0
        public var usedRing: UInt64 = 0
    }

    struct State {
        var status = VirtioStatus()
        var deviceFeatureSelect: UInt32 = 0
        var driverFeatureSelect: UInt32 = 0
        var driverFeatures: VirtioFeatures = []
        var configVector = virtioNoVector
        var configGeneration: UInt8 = 0
        var queueSelect: UInt16 = 0
        var queues: [QueueConfiguration]
        var isr: UInt8 = 0
    }

    public let layout: Layout
    public let queueCount: Int
    public let maxQueueSize: UInt16
    public let msixVectors: Int
    let state: Locked<State>

    /// The device type and PCI function, bound once by the device model after it built them.
    private struct Binding {
        weak var device: VirtioDeviceType?
        var function: PCIFunction?
    }

    private let binding = Locked(Binding())

    public init(layout: Layout = Layout(), queueCount: Int, maxQueueSize: UInt16 = 256, msixVectors: Int) {
        self.layout = layout
        self.queueCount = queueCount
        self.maxQueueSize = maxQueueSize
        self.msixVectors = msixVectors
        state = Locked(State(queues: Array(repeating: QueueConfiguration(size: maxQueueSize), count: queueCount)))
    }

    public func bind(device: VirtioDeviceType, function: PCIFunction) {
        binding.withLock { $0 = Binding(device: device, function: function) }
    }

    var function: PCIFunction? { binding.withLock { $0.function } }
    var device: VirtioDeviceType? { binding.withLock { $0.device } }

    // MARK: PCI shape

    /// The BARs: structures (64-bit memory) and MSI-X (32-bit memory; none with no vectors).
    public var bars: [BARDefinition?] {
        var bars = [BARDefinition?](repeating: nil, count: 6)
        if msixVectors > 0 { bars[layout.msixBAR] = .memory(size: 0x1000, maxAccessSize: 8) }
        // Registers are at most 32 bits wide; a 64-bit access is split in two, lower half first,
        // as drivers write 64-bit queue addresses.
        bars[layout.structuresBAR] = .memory(size: layout.structuresSize, is64Bit: true, maxAccessSize: 4)
        return bars
    }

    /// The capability list: the five virtio structures, then MSI-X (with vectors) and power
    /// management. Without MSI-X the driver takes interrupts on INTx and reads the ISR.
    public var capabilities: [PCICapability] {
        func virtioCap(_ type: VirtioPCICapabilityType, offset: UInt32, length: UInt32, extra: [UInt8] = []) -> [UInt8] {
            // cfg_type, bar, id, padding[2], offset, length (the vndr/next/len bytes come from the builder)
            [type.rawValue, UInt8(layout.structuresBAR), 0, 0, 0] + le(offset) + le(length) + extra
        }
        let pciConfigMask: [UInt8] = [0, 0xFF, 0, 0, 0] + [UInt8](repeating: 0xFF, count: 12)
        let msix: [PCICapability] = msixVectors > 0
            ? [.msix(MSIXLayout(vectors: msixVectors, tableBAR: layout.msixBAR, tableOffset: 0, pbaBAR: layout.msixBAR, pbaOffset: 0x800))]
            : []
        return [
            .vendorSpecific(payload: virtioCap(.common, offset: layout.commonOffset, length: 0x1000)),
            .vendorSpecific(payload: virtioCap(.isr, offset: layout.isrOffset, length: 0x1000)),
            .vendorSpecific(payload: virtioCap(.device, offset: layout.deviceOffset, length: 0x1000)),
            .vendorSpecific(payload: virtioCap(.notify, offset: layout.notifyOffset, length: 0x1000, extra: le(layout.notifyOffMultiplier))),
            // PCI_CFG: an alternative access window; bar, offset, length and data are the driver's.
            .vendorSpecific(payload: [VirtioPCICapabilityType.pciConfig.rawValue, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 12),
                            writableMask: pciConfigMask),
        ] + msix + [.powerManagement]
    }

    // MARK: Register access (BAR of the structures)

    public func read(offset: UInt64, size: Int) -> UInt64 {
        let offset = UInt32(truncatingIfNeeded: offset)
        switch offset {
        case layout.commonOffset ..< layout.commonOffset + 0x1000:
            return readCommon(Int(offset - layout.commonOffset), size: size)
        case layout.isrOffset ..< layout.isrOffset + 0x1000:
            // Read-to-clear, and it de-asserts INTx.
            let isr = state.withLock { s in
                let isr = s.isr
                s.isr = 0
                return isr
            }
            function?.setINTx(asserted: false)
            return offset == layout.isrOffset ? UInt64(isr) : 0
        case layout.deviceOffset ..< layout.deviceOffset + 0x1000:
            return device?.readDeviceConfig(offset: Int(offset - layout.deviceOffset), size: size) ?? 0
        default:
            return 0
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let offset = UInt32(truncatingIfNeeded: offset)
        switch offset {
        case layout.commonOffset ..< layout.commonOffset + 0x1000:
            writeCommon(Int(offset - layout.commonOffset), size: size, value: value)
        case layout.deviceOffset ..< layout.deviceOffset + 0x1000:
            device?.writeDeviceConfig(offset: Int(offset - layout.deviceOffset), size: size, value: value)
        case layout.notifyOffset ..< layout.notifyOffset + 0x1000:
            let queue = Int((offset - layout.notifyOffset) / layout.notifyOffMultiplier)
            if queue < queueCount { device?.queueNotified(queue) }
        default:
            break
        }
    }

    private func readCommon(_ offset: Int, size: Int) -> UInt64 {
        // Asked only where it is read: the device may look through its DMA mappings to answer.
        let offered = offset == 0x04 ? device?.offeredFeatures ?? [] : []
        return state.withLock { s in
            let q = Int(s.queueSelect)
            let queue = q < s.queues.count ? s.queues[q] : nil
            switch offset {
            case 0x00: return UInt64(s.deviceFeatureSelect)
            case 0x04: return s.deviceFeatureSelect < 2 ? (offered.rawValue >> (32 * UInt64(s.deviceFeatureSelect))) & 0xFFFF_FFFF : 0
            case 0x08: return UInt64(s.driverFeatureSelect)
            case 0x0C: return s.driverFeatureSelect < 2 ? (s.driverFeatures.rawValue >> (32 * UInt64(s.driverFeatureSelect))) & 0xFFFF_FFFF : 0
            case 0x10: return UInt64(s.configVector)
            case 0x12: return UInt64(queueCount)
            case 0x14: return UInt64(s.status.rawValue)
            case 0x15: return UInt64(s.configGeneration)
            case 0x16: return UInt64(s.queueSelect)
            case 0x18: return UInt64(queue?.size ?? 0)
            case 0x1A: return UInt64(queue?.msixVector ?? virtioNoVector)
            case 0x1C: return queue?.enabled == true ? 1 : 0
            case 0x1E: return UInt64(queue == nil ? 0 : q) // queue_notify_off: queue index
            case 0x20: return (queue?.descriptorTable ?? 0) & 0xFFFF_FFFF
            case 0x24: return (queue?.descriptorTable ?? 0) >> 32
            case 0x28: return (queue?.availableRing ?? 0) & 0xFFFF_FFFF
            case 0x2C: return (queue?.availableRing ?? 0) >> 32
            case 0x30: return (queue?.usedRing ?? 0) & 0xFFFF_FFFF
            case 0x34: return (queue?.usedRing ?? 0) >> 32
            case 0x38: return 0 // queue_notify_data
            default: return 0
            }
        }
    }

    private func writeCommon(_ offset: Int, size: Int, value: UInt64) {
        if offset == 0x14 {
            writeStatus(VirtioStatus(rawValue: UInt8(truncatingIfNeeded: value)))
            return
        }
        state.withLock { s in
            let v32 = UInt32(truncatingIfNeeded: value)
            let q = Int(s.queueSelect)
            // Queue registers can change only while the driver sets the device up (before DRIVER_OK)
            // and only for a queue that is not enabled (virtio 1.x §4.1.4.3.2).
            let queueWritable = q < s.queues.count && !s.queues[q].enabled && !s.status.contains(.driverOK)
            switch offset {
            case 0x00: s.deviceFeatureSelect = v32
            case 0x08: s.driverFeatureSelect = v32
            case 0x0C:
                guard !s.status.contains(.featuresOK), s.driverFeatureSelect < 2 else { return }
                let shift = 32 * UInt64(s.driverFeatureSelect)
                let mask: UInt64 = 0xFFFF_FFFF << shift
                s.driverFeatures = VirtioFeatures(rawValue: s.driverFeatures.rawValue & ~mask | UInt64(v32) << shift)
            case 0x10: s.configVector = validVector(UInt16(truncatingIfNeeded: value))
            case 0x16: s.queueSelect = UInt16(truncatingIfNeeded: value)
            case 0x18 where queueWritable:
                let requested = UInt16(truncatingIfNeeded: value)
                // Only powers of two up to the maximum; anything else is ignored.
                if requested > 0, requested <= maxQueueSize, requested.nonzeroBitCount == 1 { s.queues[q].size = requested }
            case 0x1A where q < s.queues.count:
                s.queues[q].msixVector = validVector(UInt16(truncatingIfNeeded: value))
            case 0x1C where queueWritable:
                if value & 1 == 1 { s.queues[q].enabled = true } // writing 0 is not allowed (no RING_RESET)
            case 0x20 where queueWritable: s.queues[q].descriptorTable = s.queues[q].descriptorTable & ~0xFFFF_FFFF | UInt64(v32)
            case 0x24 where queueWritable: s.queues[q].descriptorTable = s.queues[q].descriptorTable & 0xFFFF_FFFF | UInt64(v32) << 32
            case 0x28 where queueWritable: s.queues[q].availableRing = s.queues[q].availableRing & ~0xFFFF_FFFF | UInt64(v32)
            case 0x2C where queueWritable: s.queues[q].availableRing = s.queues[q].availableRing & 0xFFFF_FFFF | UInt64(v32) << 32
            case 0x30 where queueWritable: s.queues[q].usedRing = s.queues[q].usedRing & ~0xFFFF_FFFF | UInt64(v32)
            case 0x34 where queueWritable: s.queues[q].usedRing = s.queues[q].usedRing & 0xFFFF_FFFF | UInt64(v32) << 32
            default: break
            }
        }
    }

    /// A vector beyond the MSI-X table reads back as NO_VECTOR: how a device says it could not
    /// assign it (virtio 1.x §4.1.5.1.2).
    private func validVector(_ vector: UInt16) -> UInt16 {
        vector == virtioNoVector || Int(vector) < msixVectors ? vector : virtioNoVector
    }

    /// Status writes: 0 resets; FEATURES_OK is kept only for an acceptable feature set (the driver
    /// re-reads the status to find out); bits are otherwise only ever added.
    private func writeStatus(_ requested: VirtioStatus) {
        let offered = requested.contains(.featuresOK) ? device?.offeredFeatures ?? [] : []
        let (old, new): (VirtioStatus, VirtioStatus) = state.withLock { s in
            let old = s.status
            if requested.rawValue == 0 { return (old, []) }
            var new = requested.union(old.intersection(.needsReset))
            if new.contains(.featuresOK) && !old.contains(.featuresOK) {
                let chosen = s.driverFeatures
                let acceptable = chosen.isSubset(of: offered) && chosen.contains(.version1) && (device?.accepts(chosen) ?? false)
                if !acceptable { new.remove(.featuresOK) }
            }
            return (old, new)
        }
        // The device stops or starts its datapath first (a reset waits for it), then the new
        // status becomes visible.
        device?.statusChanged(from: old, to: new)
        state.withLock { s in
            if new.rawValue == 0 {
                let queues = Array(repeating: QueueConfiguration(size: maxQueueSize), count: queueCount)
                s = State(queues: queues)
                s.configGeneration = 0
            } else {
                s.status = new
            }
        }
        if new.rawValue == 0 { function?.setINTx(asserted: false) }
    }

    // MARK: Device side

    public var status: VirtioStatus { state.withLock { $0.status } }
    public var negotiatedFeatures: VirtioFeatures { state.withLock { $0.driverFeatures } }

    public func queueConfiguration(_ queue: Int) -> QueueConfiguration? {
        state.withLock { queue < $0.queues.count ? $0.queues[queue] : nil }
    }

    /// A used-buffer notification for `queue`: its MSI-X vector, or INTx with ISR bit 0.
    public func signalQueue(_ queue: Int) {
        let vector = state.withLock { queue < $0.queues.count ? $0.queues[queue].msixVector : virtioNoVector }
        signal(vector: vector, isrBit: 1)
    }

    /// A configuration-change notification (link status, NEEDS_RESET): the config vector or ISR bit 1.
    public func signalConfigChange() {
        let vector = state.withLock { s in
            s.configGeneration &+= 1
            return s.configVector
        }
        signal(vector: vector, isrBit: 2)
    }

    /// Marks the device broken (a malformed queue) and tells the driver (virtio 1.x §2.1.1).
    public func setNeedsReset() {
        let changed = state.withLock { s in
            guard s.status.contains(.driverOK), !s.status.contains(.needsReset) else { return false }
            s.status.insert(.needsReset)
            return true
        }
        if changed { signalConfigChange() }
    }

    private func signal(vector: UInt16, isrBit: UInt8) {
        guard let function else { return }
        if function.interruptMode == .msix {
            if vector != virtioNoVector { function.interrupts.trigger(.msix, vector: Int(vector)) }
            return
        }
        state.withLock { $0.isr |= isrBit }
        function.setINTx(asserted: true)
    }

    // MARK: The PCI_CFG window (virtio 1.x §4.1.4.9)

    /// Config offset of the PCI_CFG capability, found in the function's layout.
    func pciConfigCapabilityOffset(_ function: PCIFunction) -> Int? {
        function.layout.standard.first { entry in
            if case let .vendorSpecific(payload, _) = entry.capability { return payload.first == VirtioPCICapabilityType.pciConfig.rawValue }
            return false
        }?.offset
    }

    /// After a config write: a write to pci_cfg_data goes to the BAR the window selects.
    public func configWritten(offset: Int, size: Int, model: DeviceModel) {
        guard let function, let cap = pciConfigCapabilityOffset(function) else { return }
        let data = cap + 16
        guard offset < data + 4, data < offset + size else { return }
        guard let window = pciConfigWindow(function, cap: cap) else { return }
        var value: UInt32 = 0
        withUnsafeMutableBytes(of: &value) { function.readConfig(offset: data, into: $0) }
        model.writeBAR(window.bar, offset: window.offset, size: window.length, value: UInt64(UInt32(littleEndian: value)))
    }

    /// On a config read covering pci_cfg_data: the data comes from the selected BAR.
    public func patchConfigRead(offset: Int, into buffer: UnsafeMutableRawBufferPointer, model: DeviceModel) {
        guard let function, let cap = pciConfigCapabilityOffset(function) else { return }
        let data = cap + 16
        guard offset < data + 4, data < offset + buffer.count, let window = pciConfigWindow(function, cap: cap) else { return }
        let value = model.readBAR(window.bar, offset: window.offset, size: window.length)
        for i in 0..<4 where data + i >= offset && data + i < offset + buffer.count {
            buffer[data + i - offset] = i < window.length ? UInt8(truncatingIfNeeded: value >> (8 * i)) : 0
        }
    }

    private func pciConfigWindow(_ function: PCIFunction, cap: Int) -> (bar: Int, offset: UInt64, length: Int)? {
        var bytes = [UInt8](repeating: 0, count: 12)
        bytes.withUnsafeMutableBytes { function.readConfig(offset: cap + 4, into: $0) }
        let bar = Int(bytes[0])
        let offset = UInt64(bytes[4]) | UInt64(bytes[5]) << 8 | UInt64(bytes[6]) << 16 | UInt64(bytes[7]) << 24
        let length = Int(bytes[8])
        guard bar == layout.structuresBAR, [1, 2, 4].contains(length), offset % UInt64(length) == 0,
              offset + UInt64(length) <= layout.structuresSize else { return nil }
        return (bar, offset, length)
    }
}

func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
