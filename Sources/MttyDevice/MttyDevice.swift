import RegionEmulation
import Support
import VfioUserProto

/// The kernel's mtty sample as a vfio-user device model: a PCI serial card with one or two 16550A
/// UARTs (one per I/O BAR) whose output loops back into their input, sharing one interrupt.
///
/// Its IRQ info follows its config space, not the sample's table (quirk 8): INTx with one vector,
/// no MSI (the sample advertises one MSI vector that no guest can enable, having no MSI
/// capability), and, as for every device of this server, ERR and REQ with one eventfd each (REQ
/// asks the client to let go when the instance is removed by force).
public final class MttyDevice: DeviceModel {
    /// The sample's identity (mtty_create_config_space; Documentation/driver-api/vfio-mediated-device.rst): "Serial controller: Device 4348:3253 (rev 10)
    /// (prog-if 02 [16550])".
    public static let identity = PCIIdentity(vendorID: 0x4348, deviceID: 0x3253, subsystemVendorID: 0x4348,
                                             subsystemID: 0x3253, revision: 0x10, classCode: 0x07_00_02)
    /// Each port decodes 8 bytes of I/O space.
    public static let portSize: UInt64 = 8

    public let function: PCIFunction
    public let portCount: Int
    private let ports: Locked<[UART16550]>

    /// `ports` is 1 (type mtty-1) or 2 (mtty-2).
    public init(ports portCount: Int) {
        precondition(portCount == 1 || portCount == 2, "mtty has one or two ports")
        self.portCount = portCount
        // UART registers are bytes: wider accesses are split into byte cycles, as the ISA/LPC bus does.
        let bars = (0..<portCount).map { _ in BARDefinition?.some(.io(size: Self.portSize, maxAccessSize: 1)) }
        var description = PCIFunctionDescription(identity: Self.identity, bars: bars)
        // The sample's config space is 255 bytes (quirk 6); QEMU sizes config from it, so report 256.
        description.configSize = ConfigSpace.conventionalSize
        function = try! PCIFunction(description) // a fixed, valid description: cannot fail
        ports = Locked(Array(repeating: UART16550(), count: portCount))
    }

    public func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard bar < portCount else { return 0xFF }
        let (value, line) = ports.withLock { ports in
            let value = ports[bar].read(Int(offset))
            return (value, ports.contains { $0.interruptPending })
        }
        function.setINTx(asserted: line)
        return UInt64(value)
    }

    public func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar < portCount else { return }
        let line = ports.withLock { ports in
            ports[bar].write(Int(offset), UInt8(truncatingIfNeeded: value))
            return ports.contains { $0.interruptPending }
        }
        function.setINTx(asserted: line)
    }

    /// Unlike the sample (quirk 7), a reset really resets the UARTs.
    public func reset(_ reason: ResetReason) {
        ports.withLock { ports in ports = Array(repeating: UART16550(), count: portCount) }
    }

    /// A snapshot of the ports' registers (tests, inspection, migration).
    public var portStates: [UART16550] { ports.withLock { $0 } }

    /// Loads migrated ports; the interrupt line follows them.
    func replacePorts(_ new: [UART16550]) {
        let line = ports.withLock { ports in
            ports = new
            return ports.contains { $0.interruptPending }
        }
        function.setINTx(asserted: line)
    }
}
