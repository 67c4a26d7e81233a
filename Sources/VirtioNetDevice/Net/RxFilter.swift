/// Which frames the device passes to the driver (virtio 1.x §5.1.6.5.1 and .2): the MAC address,
/// the unicast and multicast tables, and promiscuous / all-multicast modes.
///
/// Promiscuous until the driver says otherwise, as QEMU's virtio-net starts: a driver without
/// CTRL_RX then receives everything.
public struct RxFilter: Sendable, Equatable {
    public var promiscuous = true
    public var allMulticast = false
    public var unicast: [[UInt8]] = []
    public var multicast: [[UInt8]] = []

    public init() {}

    public func accepts(destination: UnsafeRawBufferPointer, deviceMAC: [UInt8]) -> Bool {
        guard destination.count >= 6 else { return false }
        if promiscuous { return true }
        let address = Array(destination.prefix(6))
        if address.allSatisfy({ $0 == 0xFF }) { return true } // broadcast
        if address[0] & 1 == 1 { return allMulticast || multicast.contains(address) }
        return address == deviceMAC || unicast.contains(address)
    }
}
