import CLinux
import RegionEmulation
import Support
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The control queue: RX modes, MAC filters, the MAC address.
extension NetDatapath {
    // MARK: Control queue

    func serveControl(_ memory: GuestMemory) throws(VirtqueueError) {
        guard var queue = ctrl, let device else { return }
        defer { ctrl = queue }
        var served = false
        while true {
            guard try queue.pop(into: &controlChain, memory) else {
                // Idle: ask for a kick, then look once more. The driver spins on each command's
                // used entry and may add the next one before avail_event moved; it would not kick.
                if try queue.setNotifications(true, memory), try queue.pendingCount(memory) > 0 { continue }
                break
            }
            let chain = controlChain
            var ack = VirtioNetDevice.controlError
            let length = chain.readableLength
            if length >= 2 && length <= 65536 && chain.writableLength >= 1 {
                let command = try memory.gather(chain.readable, length: length)
                ack = device.control(class: command[0], command: command[1], data: Array(command[2...]), features: features)
            }
            var written = 0
            if chain.writableLength >= 1 {
                written = try memory.scatter([ack], into: chain.writable)
            }
            try queue.push(head: chain.head, length: UInt32(written), memory)
            served = true
        }
        if served, try queue.needsInterrupt(memory) { signal(VirtioNetDevice.controlQueue) }
    }
}
