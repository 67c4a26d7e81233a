import RegionEmulation
import VfioUserProto

extension UART16550 {
    /// The port's registers, FIFO and latches, field by field (the meaning of the kernel sample's
    /// `struct serial_port`, not its memory layout).
    func encode(into writer: inout ByteWriter) {
        for register in [ier, fcr, lcr, mcr, scr] { writer.write(register) }
        writer.write(divisor)
        for flag in [overrun, thrEmptyPending] { writer.write(UInt8(flag ? 1 : 0)) }
        for value in [msrDeltas, msrLines, lastReceived] { writer.write(value) }
        writer.write(UInt8(fifo.count))
        writer.write(fifo)
        writer.write(UInt64(bytesLooped))
        writer.write(UInt64(bytesOverrun))
    }

    /// Reads what `encode` wrote, refusing values no 16550A could hold.
    init(decoding reader: inout ByteReader) throws(ProtocolError) {
        self.init()
        ier = try reader.read()
        fcr = try reader.read()
        lcr = try reader.read()
        mcr = try reader.read()
        scr = try reader.read()
        guard ier & ~0x0F == 0, fcr & ~0xC9 == 0, mcr & ~0x3F == 0 else {
            throw .invalid("register values IER 0x\(String(ier, radix: 16)) FCR 0x\(String(fcr, radix: 16)) MCR 0x\(String(mcr, radix: 16)) are impossible")
        }
        divisor = try reader.read()
        overrun = try Self.flag(&reader)
        thrEmptyPending = try Self.flag(&reader)
        msrDeltas = try reader.read()
        msrLines = try reader.read()
        lastReceived = try reader.read()
        guard msrDeltas & 0xF0 == 0, msrLines & 0x0F == 0 else { throw .invalid("impossible modem status bits") }
        let count: UInt8 = try reader.read()
        guard Int(count) <= depth else { throw .invalid("\(count) bytes in a FIFO of \(depth)") }
        fifo = Array(try reader.bytes(count: Int(count)))
        let looped: UInt64 = try reader.read()
        let overran: UInt64 = try reader.read()
        guard looped <= UInt64(Int.max), overran <= UInt64(Int.max) else { throw .invalid("counter out of range") }
        bytesLooped = Int(looped)
        bytesOverrun = Int(overran)
    }

    private static func flag(_ reader: inout ByteReader) throws(ProtocolError) -> Bool {
        let value: UInt8 = try reader.read()
        guard value <= 1 else { throw .invalid("flag byte \(value)") }
        return value == 1
    }
}
