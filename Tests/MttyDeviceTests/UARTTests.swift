import MttyDevice
import Testing

@Suite("16550A model")
struct UARTTests {
    typealias U = UART16550

    @Test func transmittedBytesLoopBackIntoTheReceiver() {
        var uart = U()
        uart.write(U.iirFCR, U.fcrEnable)
        for byte in Array("hi".utf8) { uart.write(U.rbrTHR, byte) }
        #expect(uart.read(U.lsr) & U.lsrDataReady != 0)
        #expect(uart.read(U.rbrTHR) == UInt8(ascii: "h"))
        #expect(uart.read(U.rbrTHR) == UInt8(ascii: "i"))
        #expect(uart.read(U.lsr) == U.lsrTHREmpty | U.lsrTransmitterEmpty)
    }

    @Test func theSeventeenthByteWithoutAReadIsAnOverrun() {
        var uart = U()
        uart.write(U.iirFCR, U.fcrEnable)
        for i in 0..<17 { uart.write(U.rbrTHR, UInt8(i)) }
        #expect(uart.fifo.count == 16)
        #expect(uart.read(U.lsr) & U.lsrOverrun != 0)
        #expect(uart.read(U.lsr) & U.lsrOverrun == 0) // reading LSR cleared it
        #expect((0..<16).map { _ in uart.read(U.rbrTHR) } == (0..<16).map { UInt8($0) })
    }

    @Test func withoutFIFOsTheDepthIsOne() {
        var uart = U()
        uart.write(U.rbrTHR, 1)
        uart.write(U.rbrTHR, 2)
        #expect(uart.read(U.lsr) & U.lsrOverrun != 0)
        #expect(uart.read(U.rbrTHR) == 1)
    }

    @Test func dlabSelectsTheDivisorLatchWhichIsAssignedNotOred() {
        var uart = U()
        uart.write(U.lcr, 0x83)
        uart.write(U.rbrTHR, 0x0C)
        uart.write(U.ier, 0x01)
        uart.write(U.rbrTHR, 0x03)
        #expect(uart.divisor == 0x0103)
        #expect(uart.read(U.rbrTHR) == 0x03 && uart.read(U.ier) == 0x01)
        uart.write(U.lcr, 0x03)
        #expect(uart.divisor == 0x0103) // clearing DLAB keeps the divisor
        #expect(uart.fifo.isEmpty) // divisor writes never reached the FIFO
    }

    @Test func ierReadsBackOnlyTheLowNibble() {
        var uart = U()
        uart.write(U.ier, 0xFF)
        #expect(uart.read(U.ier) == 0x0F) // no XScale UUE bit: Linux keeps detecting a 16550A
    }

    @Test func iirReportsFIFOsAndTheHighestPriorityCause() {
        var uart = U()
        #expect(uart.read(U.iirFCR) == U.iirNoInterrupt)
        uart.write(U.iirFCR, U.fcrEnable)
        #expect(uart.read(U.iirFCR) == 0xC1)
        uart.write(U.ier, U.ierRDI | U.ierTHRI | U.ierRLSI)
        #expect(uart.read(U.iirFCR) == 0xC0 | U.iirTHREmpty)
        #expect(uart.read(U.iirFCR) == 0xC1) // reading IIR cleared the THR-empty cause
        for i in 0..<17 { uart.write(U.rbrTHR, UInt8(i)) }
        #expect(uart.read(U.iirFCR) == 0xC0 | U.iirLineStatus) // overrun outranks data
        _ = uart.read(U.lsr)
        #expect(uart.read(U.iirFCR) == 0xC0 | U.iirReceivedData) // 16 bytes, at or above trigger level 1
    }

    @Test func triggerLevelsFollowFCR() {
        var uart = U()
        uart.write(U.iirFCR, U.fcrEnable | 0x80) // trigger level 8
        uart.write(U.ier, U.ierRDI)
        #expect(uart.triggerLevel == 8)
        for i in 0..<3 { uart.write(U.rbrTHR, UInt8(i)) }
        #expect(uart.read(U.iirFCR) & 0x0F == U.iirTimeout) // below the level: character timeout
        for i in 0..<5 { uart.write(U.rbrTHR, UInt8(i)) }
        #expect(uart.read(U.iirFCR) & 0x0F == U.iirReceivedData)
    }

    @Test func thrEmptyIsReArmedWhenTheFIFODrainsAndWhenTHRIIsEnabled() {
        var uart = U()
        uart.write(U.ier, U.ierTHRI)
        #expect(uart.interruptPending)
        _ = uart.read(U.iirFCR)
        #expect(!uart.interruptPending)
        uart.write(U.ier, 0)
        uart.write(U.ier, U.ierTHRI) // Linux's THRE test: re-enabling must re-assert
        #expect(uart.read(U.iirFCR) & 0x0F == U.iirTHREmpty)
        uart.write(U.rbrTHR, 0x55)
        #expect(!uart.interruptPending)
        _ = uart.read(U.rbrTHR)
        #expect(uart.read(U.iirFCR) & 0x0F == U.iirTHREmpty)
    }

    @Test func fcrClearsTheFIFO() {
        var uart = U()
        uart.write(U.iirFCR, U.fcrEnable)
        uart.write(U.rbrTHR, 1)
        uart.write(U.iirFCR, U.fcrEnable | U.fcrClearReceive)
        #expect(uart.fifo.isEmpty)
    }

    @Test func modemStatusLatchesChangesAndClearsThemOnRead() {
        var uart = U()
        #expect(uart.read(U.msr) == U.msrCTS | U.msrDSR | U.msrDCD)
        uart.write(U.mcr, U.mcrLoop | U.mcrRTS)
        uart.write(U.ier, U.ierMSI)
        #expect(uart.interruptPending)
        let status = uart.read(U.msr)
        #expect(status & 0xF0 == U.msrCTS) // loop mode: RTS shows as CTS
        #expect(status & U.msrDDSR != 0 && status & U.msrDDCD != 0)
        #expect(!uart.interruptPending)
        #expect(uart.read(U.msr) & 0x0F == 0)
    }

    @Test func readingAnEmptyReceiverReturnsTheLastByte() {
        var uart = U()
        uart.write(U.rbrTHR, 0x42)
        _ = uart.read(U.rbrTHR)
        #expect(uart.read(U.rbrTHR) == 0x42)
    }

    @Test func scratchRegister() {
        var uart = U()
        uart.write(U.scr, 0xA5)
        #expect(uart.read(U.scr) == 0xA5)
    }
}
