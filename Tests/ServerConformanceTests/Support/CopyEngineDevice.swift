import RegionEmulation
import Support
import Synchronization
import VfioUserProto

/// A test device that copies client memory when told to, from a thread of its own, the way a DMA
/// engine does: it exercises the DMA space through mmapped and message-mode regions alike.
///
/// BAR0 (4 KiB memory): 0x00 source IOVA (u64), 0x08 destination IOVA (u64), 0x10 length (u32),
/// 0x14 doorbell (write anything: start), 0x18 status (0 idle, 1 busy, 2 done, 3 failed, errno in
/// bits 8-31). Completion pulses INTx.
final class CopyEngineDevice: DeviceModel, @unchecked Sendable { // Registers under `lock`; `dma` set once before use.
    let function: PCIFunction
    private let lock = ConditionLock()
    private var source: UInt64 = 0
    private var destination: UInt64 = 0
    private var length: UInt32 = 0
    private var status: UInt32 = 0
    private var pending = false
    private var dma: DMASpace?
    /// Pins taken by `pinAndHold` (released by unmap notifications).
    private var heldPins: [DMAPin] = []

    init() {
        function = try! PCIFunction(PCIFunctionDescription(
            identity: PCIIdentity(vendorID: 0x1B36, deviceID: 0x0005, subsystemVendorID: 0x1B36, subsystemID: 0x0005,
                                  revision: 1, classCode: 0xFF_00_00),
            bars: [.memory(size: 4096)]))
        try! spawnThread(name: "copy-engine") { [weak self] in self?.run() } // tests never run out of threads
    }

    func attach(dma: DMASpace) {
        self.dma = dma
        dma.onUnmap { [weak self] iova, size in
            // The kernel's DMA-unmap notifier: drop our pins on that range.
            guard let self else { return }
            let released = lock.withLock {
                let inRange = heldPins.filter { $0.iova >= iova && $0.iova < iova + size }
                heldPins.removeAll { $0.iova >= iova && $0.iova < iova + size }
                return inRange
            }
            for pin in released { pin.release() }
        }
    }

    func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        lock.withLock {
            switch offset {
            case 0x00: source
            case 0x08: destination
            case 0x10: UInt64(length)
            case 0x18: UInt64(status)
            default: 0
            }
        }
    }

    func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        lock.withLock {
            switch offset {
            case 0x00: source = value
            case 0x08: destination = value
            case 0x10: length = UInt32(truncatingIfNeeded: value)
            case 0x14:
                status = 1
                pending = true
                lock.broadcast()
            default: break
            }
        }
    }

    func reset(_ reason: ResetReason) {
        lock.withLock {
            source = 0
            destination = 0
            length = 0
            status = 0
        }
    }

    /// Whether the last copy ended (done or failed); the posted doorbell may not have arrived yet.
    var isFinished: Bool { lock.withLock { status == 2 || status & 0xFF == 3 } }

    /// Pins a range from the device side and keeps it until an unmap notification (tests).
    func pinAndHold(_ iova: UInt64, length: Int) throws {
        let pin = try dma!.pin(iova, length: length, access: .read)
        lock.withLock { heldPins.append(pin) }
    }

    private func run() {
        while true {
            let job: (UInt64, UInt64, Int) = lock.withLock {
                while !pending { lock.wait() }
                pending = false
                return (source, destination, Int(length))
            }
            var buffer = [UInt8](repeating: 0, count: job.2)
            var result: UInt32 = 2
            do {
                try buffer.withUnsafeMutableBytes { try dma!.read(job.0, into: $0) }
                try buffer.withUnsafeBytes { try dma!.write(job.1, from: $0) }
            } catch let error as DMAError {
                result = 3 | UInt32(error.errno.rawValue) << 8
            } catch {
                result = 3
            }
            lock.withLock { status = result }
            function.signal(vector: 0)
        }
    }
}
