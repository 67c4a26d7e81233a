import RegionEmulation
import Support
import SystemPackage
import VfioUserProto

/// A virtio-net NIC (virtio 1.x §5.1) on the modern PCI transport: one receive and one transmit
/// queue, a control queue for RX modes, MAC filters and the MAC address, and a backend (TAP,
/// datagram cable, sink/source) reached by a datapath thread of its own.
public final class VirtioNetDevice: DeviceModel, VirtioDeviceType {
    /// Vendor 1af4, device 0x1041 (0x1040 + virtio ID 1), non-transitional, revision 1, Ethernet.
    public static let identity = PCIIdentity(vendorID: 0x1AF4, deviceID: 0x1041, subsystemVendorID: 0x1AF4,
                                             subsystemID: 0x1100, revision: 1, classCode: 0x02_00_00)
    public static let receiveQueue = 0, transmitQueue = 1, controlQueue = 2
    /// Config vector plus one per queue.
    public static let msixVectors = 4

    public let function: PCIFunction
    public let transport: VirtioPCITransport
    public let backend: NetBackend
    let datapath: NetDatapath
    let state: Locked<NetState>
    /// Ring positions of a migrated-in state, applied when the device resumes.
    let pendingRestore = Locked<DatapathSnapshot?>(nil)

    struct NetState {
        var mac: [UInt8]
        var filter = RxFilter()
        /// Bumped on every change of `mac` or `filter`: the datapath re-reads them only then.
        var version = 0
    }

    /// `mac`: the station address reported in config space; `queueSize`: the largest ring the
    /// driver may set up; `msix`: false for a NIC without MSI-X, whose interrupts are INTx (QEMU
    /// 11.1 aborts when a vfio-user device with MSI-X is hot-unplugged, see README).
    /// Throws EMFILE or EAGAIN when the datapath's eventfd or thread cannot be made.
    public init(backend: NetBackend, mac: [UInt8], queueSize: UInt16 = 256, msix: Bool = true) throws(DeviceCreationError) {
        precondition(mac.count == 6)
        self.backend = backend
        transport = VirtioPCITransport(queueCount: 3, maxQueueSize: queueSize, msixVectors: msix ? Self.msixVectors : 0)
        function = try! PCIFunction(PCIFunctionDescription( // fixed, valid description: cannot fail
            identity: Self.identity, bars: transport.bars, capabilities: transport.capabilities))
        state = Locked(NetState(mac: mac))
        do throws(Errno) { datapath = try NetDatapath(backend: backend, transport: transport) } catch {
            throw DeviceCreationError("virtio-net: cannot start the datapath: \(error.name)", errno: error)
        }
        transport.bind(device: self, function: function)
        datapath.device = self
    }

    /// A locally administered MAC derived from a name (stable for a given instance).
    public static func mac(derivedFrom name: String) -> [UInt8] {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return [0x52, 0x54, 0x00, UInt8(truncatingIfNeeded: hash >> 16), UInt8(truncatingIfNeeded: hash >> 8), UInt8(truncatingIfNeeded: hash)]
    }

    public var mac: [UInt8] { state.withLock { $0.mac } }
    public var filter: RxFilter { state.withLock { $0.filter } }
    var filterVersion: Int { state.withLock { $0.version } }
    var filterSnapshot: (RxFilter, [UInt8], Int) { state.withLock { ($0.filter, $0.mac, $0.version) } }
    public var statistics: NetStatistics { datapath.statistics }

    // MARK: DeviceModel

    public func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        bar == transport.layout.structuresBAR ? transport.read(offset: offset, size: size) : 0
    }

    public func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        if bar == transport.layout.structuresBAR { transport.write(offset: offset, size: size, value: value) }
    }

    /// DEVICE_RESET, FLR or a lost connection: as if the driver wrote status 0 (the datapath stops
    /// and lets go of the rings, the registers and the filter go back to power-on).
    public func reset(_ reason: ResetReason) {
        pendingRestore.withLock { $0 = nil }
        transport.reset()
        datapath.resume() // a reset also ends a migration's pause
    }

    public func attach(dma: DMASpace) { datapath.attach(dma: dma) }

    public func configWritten(offset: Int, size: Int) { transport.configWritten(offset: offset, size: size, model: self) }

    public func patchConfigRead(offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        transport.patchConfigRead(offset: offset, into: buffer, model: self)
    }

    /// Ends the datapath thread (the instance is going away).
    public func shutdown() { datapath.terminate() }

    // MARK: VirtioDeviceType

    /// Every feature this device runs: what a migrated-in driver may have negotiated.
    public var supportedFeatures: VirtioFeatures {
        var features: VirtioFeatures = [.version1, .netMAC, .netStatus, .netMergeableRxBuffers, .netControlQueue,
                                        .netControlRx, .netControlMACAddress, .ringEventIndex, .ringIndirectDescriptors]
        if backend.carriesVirtioHeader { features.formUnion(backend.offloads) }
        return features
    }

    /// What the driver is offered. With guest RAM reached by messages an indirect table would cost
    /// each chain a round trip of its own; without one, a chain's descriptors come with the look at
    /// the ring. (The client maps RAM before the guest reads the features, as QEMU does at realize.)
    public var offeredFeatures: VirtioFeatures {
        var features = supportedFeatures
        if datapath.dma?.reachesRAMByMessages == true { features.remove(.ringIndirectDescriptors) }
        return features
    }

    /// The dependencies of virtio 1.x §5.1.3.1.
    public func accepts(_ features: VirtioFeatures) -> Bool {
        let guestOffloads: VirtioFeatures = [.netGuestTSO4, .netGuestTSO6, .netGuestECN, .netGuestUFO]
        let hostOffloads: VirtioFeatures = [.netHostTSO4, .netHostTSO6, .netHostUFO]
        let controlFeatures: VirtioFeatures = [.netControlRx, .netControlVLAN, .netControlMACAddress, .netGuestAnnounce, .netMultiqueue]
        if !features.isDisjoint(with: guestOffloads) && !features.contains(.netGuestChecksum) { return false }
        if !features.isDisjoint(with: hostOffloads) && !features.contains(.netChecksum) { return false }
        if features.contains(.netHostECN) && features.isDisjoint(with: [.netHostTSO4, .netHostTSO6]) { return false }
        if features.contains(.netGuestECN) && features.isDisjoint(with: [.netGuestTSO4, .netGuestTSO6]) { return false }
        if !features.isDisjoint(with: controlFeatures) && !features.contains(.netControlQueue) { return false }
        return true
    }

    /// `virtio_net_config`: mac[6] @0, status @6 (LINK_UP), max_virtqueue_pairs @8 (1).
    public func readDeviceConfig(offset: Int, size: Int) -> UInt64 {
        var bytes = [UInt8](repeating: 0, count: 12)
        bytes.replaceSubrange(0..<6, with: mac)
        bytes[6] = 1 // VIRTIO_NET_S_LINK_UP
        bytes[8] = 1 // one queue pair
        var value: UInt64 = 0
        for i in 0..<size where offset + i < bytes.count { value |= UInt64(bytes[offset + i]) << (8 * i) }
        return value
    }

    /// Config space is read-only for the driver in VERSION_1 (the MAC changes through the control
    /// queue), so writes are ignored.
    public func writeDeviceConfig(offset: Int, size: Int, value: UInt64) {}

    public func queueNotified(_ queue: Int) { datapath.kick(queue) }

    public func statusChanged(from old: VirtioStatus, to new: VirtioStatus) {
        if new.rawValue == 0 {
            datapath.stop()
            state.withLock {
                $0.filter = RxFilter()
                $0.version += 1
            }
            return
        }
        if new.contains(.featuresOK) && !old.contains(.featuresOK) {
            backend.setGuestOffloads(transport.negotiatedFeatures)
        }
        if new.contains(.driverOK) && !old.contains(.driverOK) {
            datapath.start(features: transport.negotiatedFeatures)
        }
    }

    // MARK: Control queue commands (virtio 1.x §5.1.6.5)

    static let controlOK: UInt8 = 0, controlError: UInt8 = 1

    /// Applies one control command (the class and command bytes, then the data); returns the ack
    /// byte. The datapath calls it for each control-queue chain; the fuzzers too.
    public func control(class commandClass: UInt8, command: UInt8, data: [UInt8], features: VirtioFeatures) -> UInt8 {
        switch (commandClass, command) {
        case (0, 0), (0, 1): // VIRTIO_NET_CTRL_RX: PROMISC, ALLMULTI
            guard features.contains(.netControlRx), data.count == 1 else { return Self.controlError }
            state.withLock { s in
                if command == 0 { s.filter.promiscuous = data[0] != 0 } else { s.filter.allMulticast = data[0] != 0 }
                s.version += 1
            }
            return Self.controlOK
        case (1, 0): // VIRTIO_NET_CTRL_MAC_TABLE_SET: unicast table, then multicast table
            guard let (unicast, rest) = Self.macTable(data[...]), let (multicast, tail) = Self.macTable(rest), tail.isEmpty else {
                return Self.controlError
            }
            state.withLock { s in
                s.filter.unicast = unicast
                s.filter.multicast = multicast
                s.version += 1
            }
            return Self.controlOK
        case (1, 1): // VIRTIO_NET_CTRL_MAC_ADDR_SET
            guard features.contains(.netControlMACAddress), data.count == 6 else { return Self.controlError }
            state.withLock {
                $0.mac = data
                $0.version += 1
            }
            return Self.controlOK
        default:
            return Self.controlError
        }
    }

    /// `{le32 entries; u8 macs[entries][6]}`, returning the rest of the data.
    static func macTable(_ data: ArraySlice<UInt8>) -> ([[UInt8]], ArraySlice<UInt8>)? {
        guard data.count >= 4 else { return nil }
        let start = data.startIndex
        let count = Int(data[start]) | Int(data[start + 1]) << 8 | Int(data[start + 2]) << 16 | Int(data[start + 3]) << 24
        guard count <= (data.count - 4) / 6 else { return nil }
        let entries = (0..<count).map { Array(data[(start + 4 + 6 * $0) ..< (start + 10 + 6 * $0)]) }
        return (entries, data[(start + 4 + 6 * count)...])
    }

}

extension VirtioPCITransport {
    /// Back to power-on registers (device reset): as if the driver wrote status 0.
    public func reset() {
        write(offset: UInt64(layout.commonOffset) + 0x14, size: 1, value: 0)
    }
}
