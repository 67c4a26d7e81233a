// A custom vfio-user device in a few dozen lines: a counter in BAR0 that QEMU can attach.
//
//   swift build --product example-counter-device
//   .build/debug/example-counter-device /tmp/counter.sock
//   vfio-user-server client /tmp/counter.sock 'write bar0 4.l=5 ; write bar0 8.l=1 ; read bar0 0.l'
//
// BAR0 (4 KiB of memory): 0x0 COUNT (read/write), 0x4 STEP (read/write), 0x8 DOORBELL (a write
// adds STEP to COUNT and raises INTx). The model sees register accesses only; config space,
// interrupts, DMA and the protocol are the library's. examples/README.md walks through it.
import Glibc
import VfioUser

final class CounterDevice: DeviceModel {
    let function = try! PCIFunction(PCIFunctionDescription(
        identity: PCIIdentity(vendorID: 0x1B36, deviceID: 0x10F0, subsystemVendorID: 0x1B36, subsystemID: 0x10F0,
                              revision: 1, classCode: 0xFF_00_00), // pick IDs of your own
        bars: [.memory(size: 0x1000)]))
    private let registers = Locked((count: UInt32(0), step: UInt32(1)))

    func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        registers.withLock { offset == 0 ? UInt64($0.count) : offset == 4 ? UInt64($0.step) : 0 }
    }

    func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        let doorbell = registers.withLock { registers -> Bool in
            switch offset {
            case 0: registers.count = UInt32(truncatingIfNeeded: value)
            case 4: registers.step = UInt32(truncatingIfNeeded: value)
            case 8: registers.count &+= registers.step
            default: return false
            }
            return offset == 8
        }
        if doorbell { function.interrupts.trigger(.intx, vector: 0) }
    }

    func reset(_ reason: ResetReason) {
        registers.withLock { $0 = (0, 1) }
    }
}

let path = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "/tmp/counter.sock"
do {
    try serveDevice(CounterDevice(), at: path) // until Ctrl-C or SIGTERM
} catch {
    print("cannot serve on \(path): \(error)")
    exit(1)
}
