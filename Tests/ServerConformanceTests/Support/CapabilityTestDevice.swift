import RegionEmulation
import Support
import VfioUserProto

/// A PCI Express function with every capability the builder offers, and a register to raise any
/// interrupt vector: for capability and interrupt tests.
///
/// BAR0 (4 KiB memory): write 0x00 = raise MSI-X vector n, 0x04 = raise MSI vector n, 0x08 = pulse
/// INTx, 0x0C = raise ERR, 0x10 = raise REQ; reads of 0x20 count resets. BAR2 (64 KiB, 64-bit):
/// the MSI-X table at 0x0000 and its PBA at 0x8000.
final class CapabilityTestDevice: DeviceModel {
    static let msixVectors = 2048
    static let msiVectors = 4
    let function: PCIFunction
    private let resets = Locked(0)

    init() {
        function = try! PCIFunction(PCIFunctionDescription(
            identity: PCIIdentity(vendorID: 0x1B36, deviceID: 0x0010, subsystemVendorID: 0x1B36, subsystemID: 0x0010,
                                  revision: 2, classCode: 0x01_08_02),
            bars: [.memory(size: 4096), nil, .memory(size: 0x10000, is64Bit: true), nil],
            configSize: ConfigSpace.expressSize,
            capabilities: [
                .powerManagement,
                .msi(vectors: Self.msiVectors, is64Bit: true, perVectorMasking: true),
                .msix(MSIXLayout(vectors: Self.msixVectors, tableBAR: 2, tableOffset: 0, pbaBAR: 2, pbaOffset: 0x8000)),
                .pciExpress(.endpoint, functionLevelReset: true),
                .vendorSpecific(payload: [0xAA, 0xBB, 0xCC, 0, 0], writableMask: [0, 0, 0xFF, 0, 0]),
            ],
            extendedCapabilities: [.deviceSerialNumber(0x0102_0304_0506_0708)]))
    }

    func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        offset == 0x20 ? UInt64(resets.withLock { $0 }) : 0
    }

    func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        let vector = Int(value)
        switch offset {
        case 0x00: function.interrupts.trigger(.msix, vector: vector)
        case 0x04: function.interrupts.trigger(.msi, vector: vector)
        case 0x08: function.interrupts.trigger(.intx, vector: 0)
        case 0x0C: function.interrupts.trigger(.err, vector: 0)
        case 0x10: function.interrupts.trigger(.req, vector: 0)
        default: break
        }
    }

    func reset(_ reason: ResetReason) { resets.withLock { $0 += 1 } }
}
