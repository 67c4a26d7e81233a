/// A 16550A UART whose transmitter loops back into its own receive FIFO: the serial port of the
/// kernel's mtty sample (`samples/vfio-mdev/mtty.c`, `handle_bar_read`/`handle_bar_write`).
///
/// Where the sample is sloppy this model behaves like a real 16550A:
/// 1. The receive trigger level follows FCR bits 7:6 (1/4/8/14) instead of always 1; data below the
///    level is reported at once as a character timeout (IIR 0x0C), so a driver still hears about
///    every byte, as it would after the four-character timeout of real hardware.
/// 2. IIR reports the single highest-priority cause (line status > received data > THR empty >
///    modem status) instead of an OR of causes.
/// 3. Divisor latch bytes are assigned, not OR'ed, and setting DLAB does not clear the divisor.
/// 4. Reading RBR with an empty FIFO returns the last byte received, as RBR holds it.
/// 5. The THR-empty interrupt is cleared by reading IIR while it is the reported cause, or by
///    writing THR, and re-armed when the transmitter empties (or THRI is enabled while empty).
/// 6. MSR delta bits latch changes and clear when MSR is read; modem-status interrupts come from
///    them, not from RTS/DTR being set (the sample's rule makes a permanent interrupt cause).
/// Kept from the sample: THR and RBR share one 16-byte FIFO, so THRE/TEMT are set only when it is
/// empty (a driver that writes 17 bytes without reading sees an overrun), and the modem lines read
/// as CTS, DSR and DCD asserted (CTS drops while the FIFO is full under auto flow control).
public struct UART16550: Sendable, Equatable {
    public static let fifoCapacity = 16

    // Register offsets.
    public static let rbrTHR = 0, ier = 1, iirFCR = 2, lcr = 3, mcr = 4, lsr = 5, msr = 6, scr = 7

    // IER bits.
    public static let ierRDI: UInt8 = 0x01, ierTHRI: UInt8 = 0x02, ierRLSI: UInt8 = 0x04, ierMSI: UInt8 = 0x08
    // IIR codes.
    public static let iirNoInterrupt: UInt8 = 0x01, iirModemStatus: UInt8 = 0x00, iirTHREmpty: UInt8 = 0x02
    public static let iirReceivedData: UInt8 = 0x04, iirLineStatus: UInt8 = 0x06, iirTimeout: UInt8 = 0x0C
    public static let iirFIFOsEnabled: UInt8 = 0xC0
    // FCR bits.
    public static let fcrEnable: UInt8 = 0x01, fcrClearReceive: UInt8 = 0x02, fcrClearTransmit: UInt8 = 0x04
    // LCR, MCR, LSR, MSR bits.
    public static let lcrDLAB: UInt8 = 0x80
    public static let mcrDTR: UInt8 = 0x01, mcrRTS: UInt8 = 0x02, mcrOut1: UInt8 = 0x04, mcrOut2: UInt8 = 0x08
    public static let mcrLoop: UInt8 = 0x10, mcrAutoFlow: UInt8 = 0x20
    public static let lsrDataReady: UInt8 = 0x01, lsrOverrun: UInt8 = 0x02, lsrTHREmpty: UInt8 = 0x20, lsrTransmitterEmpty: UInt8 = 0x40
    public static let msrDCTS: UInt8 = 0x01, msrDDSR: UInt8 = 0x02, msrTERI: UInt8 = 0x04, msrDDCD: UInt8 = 0x08
    public static let msrCTS: UInt8 = 0x10, msrDSR: UInt8 = 0x20, msrRI: UInt8 = 0x40, msrDCD: UInt8 = 0x80

    public internal(set) var fifo: [UInt8] = []
    public internal(set) var ier: UInt8 = 0
    public internal(set) var fcr: UInt8 = 0
    public internal(set) var lcr: UInt8 = 0
    public internal(set) var mcr: UInt8 = 0
    public internal(set) var scr: UInt8 = 0
    public internal(set) var divisor: UInt16 = 0
    public internal(set) var overrun = false
    /// The THR-empty interrupt latch (rule 5).
    public internal(set) var thrEmptyPending = false
    /// The MSR delta bits (rule 6).
    public internal(set) var msrDeltas: UInt8 = 0
    /// The modem status lines last reported, to compute deltas.
    public internal(set) var msrLines: UInt8 = 0
    public internal(set) var lastReceived: UInt8 = 0
    /// Bytes looped back and bytes lost to overrun since reset (for tests and counters).
    public internal(set) var bytesLooped = 0
    public internal(set) var bytesOverrun = 0

    public init() {
        msrLines = modemLines
    }

    // MARK: Derived state

    public var dlab: Bool { lcr & Self.lcrDLAB != 0 }
    public var fifoEnabled: Bool { fcr & Self.fcrEnable != 0 }
    /// 16 with FIFOs enabled, 1 in 16450 mode.
    public var depth: Int { fifoEnabled ? Self.fifoCapacity : 1 }

    public var triggerLevel: Int {
        guard fifoEnabled else { return 1 }
        return [1, 4, 8, 14][Int(fcr >> 6)]
    }

    /// The modem status lines (MSR bits 7:4): in loop mode the MCR outputs, otherwise the card's.
    var modemLines: UInt8 {
        if mcr & Self.mcrLoop != 0 {
            var lines: UInt8 = 0
            if mcr & Self.mcrRTS != 0 { lines |= Self.msrCTS }
            if mcr & Self.mcrDTR != 0 { lines |= Self.msrDSR }
            if mcr & Self.mcrOut1 != 0 { lines |= Self.msrRI }
            if mcr & Self.mcrOut2 != 0 { lines |= Self.msrDCD }
            return lines
        }
        var lines = Self.msrDSR | Self.msrDCD
        if !(mcr & Self.mcrAutoFlow != 0 && fifo.count >= depth) { lines |= Self.msrCTS }
        return lines
    }

    /// The highest-priority pending cause, as IIR's low nibble (rule 2).
    public var interruptIdentification: UInt8 {
        if ier & Self.ierRLSI != 0 && overrun { return Self.iirLineStatus }
        if ier & Self.ierRDI != 0 && !fifo.isEmpty {
            return fifo.count >= triggerLevel ? Self.iirReceivedData : Self.iirTimeout
        }
        if ier & Self.ierTHRI != 0 && thrEmptyPending { return Self.iirTHREmpty }
        if ier & Self.ierMSI != 0 && msrDeltas != 0 { return Self.iirModemStatus }
        return Self.iirNoInterrupt
    }

    /// Whether the UART asserts its interrupt output.
    public var interruptPending: Bool { interruptIdentification != Self.iirNoInterrupt }

    // MARK: Register access

    public mutating func read(_ register: Int) -> UInt8 {
        switch register {
        case Self.rbrTHR:
            if dlab { return UInt8(divisor & 0xFF) }
            if !fifo.isEmpty {
                lastReceived = fifo.removeFirst()
                if fifo.isEmpty { thrEmptyPending = true } // the shared FIFO drained: THR empty again
                updateModemLines()
            }
            return lastReceived
        case Self.ier:
            if dlab { return UInt8(divisor >> 8) }
            return ier & 0x0F
        case Self.iirFCR:
            let identification = interruptIdentification
            if identification == Self.iirTHREmpty { thrEmptyPending = false }
            return identification | (fifoEnabled ? Self.iirFIFOsEnabled : 0)
        case Self.lcr:
            return lcr
        case Self.mcr:
            return mcr
        case Self.lsr:
            var status: UInt8 = 0
            if !fifo.isEmpty { status |= Self.lsrDataReady }
            if overrun { status |= Self.lsrOverrun }
            if fifo.isEmpty { status |= Self.lsrTHREmpty | Self.lsrTransmitterEmpty }
            overrun = false // reading LSR clears the error bits and the line-status interrupt
            return status
        case Self.msr:
            updateModemLines()
            let value = msrLines | msrDeltas
            msrDeltas = 0
            return value
        case Self.scr:
            return scr
        default:
            return 0xFF
        }
    }

    public mutating func write(_ register: Int, _ value: UInt8) {
        switch register {
        case Self.rbrTHR:
            if dlab {
                divisor = divisor & 0xFF00 | UInt16(value)
                return
            }
            thrEmptyPending = false
            if fifo.count < depth {
                fifo.append(value)
                bytesLooped += 1
            } else {
                overrun = true
                bytesOverrun += 1
            }
            updateModemLines()
        case Self.ier:
            if dlab {
                divisor = divisor & 0x00FF | UInt16(value) << 8
                return
            }
            let enablingTHRI = value & Self.ierTHRI != 0 && ier & Self.ierTHRI == 0
            ier = value & 0x0F
            if enablingTHRI && fifo.isEmpty { thrEmptyPending = true }
        case Self.iirFCR:
            let toggled = (fcr ^ value) & Self.fcrEnable != 0
            if toggled || value & (Self.fcrClearReceive | Self.fcrClearTransmit) != 0 {
                fifo.removeAll()
                if ier & Self.ierTHRI != 0 { thrEmptyPending = true }
            }
            fcr = value & 0xC9 // enable, DMA mode, trigger level; the clear bits self-clear
            updateModemLines()
        case Self.lcr:
            lcr = value
        case Self.mcr:
            mcr = value & 0x3F
            updateModemLines()
        case Self.lsr, Self.msr:
            break // read-only
        case Self.scr:
            scr = value
        default:
            break
        }
    }

    private mutating func updateModemLines() {
        let lines = modemLines
        let changed = lines ^ msrLines
        if changed & Self.msrCTS != 0 { msrDeltas |= Self.msrDCTS }
        if changed & Self.msrDSR != 0 { msrDeltas |= Self.msrDDSR }
        if changed & Self.msrDCD != 0 { msrDeltas |= Self.msrDDCD }
        if msrLines & Self.msrRI != 0 && lines & Self.msrRI == 0 { msrDeltas |= Self.msrTERI }
        msrLines = lines
    }
}
