import MttyDevice
import RegionEmulation
import Testing
import VfioUserProto

@Suite("mtty device model")
struct MttyDeviceTests {
    @Test func twoPortTypeHasTwoEightByteIOBars() {
        let device = MttyDevice(ports: 2)
        #expect(device.function.bars[0] == .io(size: 8, maxAccessSize: 1))
        #expect(device.function.bars[1] == .io(size: 8, maxAccessSize: 1))
        #expect(device.function.bars[2...].allSatisfy { $0 == nil })
        #expect(MttyDevice(ports: 1).function.bars[1] == nil)
    }

    @Test func portsAreIndependent() {
        let device = MttyDevice(ports: 2)
        device.writeBAR(0, offset: 7, size: 1, value: 0x11)
        device.writeBAR(1, offset: 7, size: 1, value: 0x22)
        #expect(device.readBAR(0, offset: 7, size: 1) == 0x11)
        #expect(device.readBAR(1, offset: 7, size: 1) == 0x22)
    }

    @Test func eitherPortDrivesTheSharedINTxLine() {
        let device = MttyDevice(ports: 2)
        device.writeBAR(1, offset: 1, size: 1, value: UInt64(UART16550.ierRDI))
        #expect(!device.function.interrupts.intxLevel)
        device.writeBAR(1, offset: 0, size: 1, value: 0x61)
        #expect(device.function.interrupts.intxLevel)
        _ = device.readBAR(1, offset: 0, size: 1)
        #expect(!device.function.interrupts.intxLevel)
    }

    @Test func resetClearsTheUARTsUnlikeTheKernelSample() {
        let device = MttyDevice(ports: 1)
        device.writeBAR(0, offset: 7, size: 1, value: 0x5A)
        device.writeBAR(0, offset: 0, size: 1, value: 1)
        device.reset(.deviceReset)
        #expect(device.portStates == [UART16550()])
    }
}
