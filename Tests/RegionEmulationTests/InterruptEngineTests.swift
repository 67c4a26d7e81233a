import RegionEmulation
import Support
import TestSupport
import Testing
import VfioUserProto

@Suite("Interrupt engine: INTx")
struct INTxTests {
    func engineWithTrigger() throws -> (InterruptEngine, OwnedFileDescriptor) {
        let engine = InterruptEngine(intx: true, msiVectors: 0, msiMaskable: false, msixVectors: 0)
        let eventfd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try engine.apply(SetIRQs(flags: [.dataEventfd, .actionTrigger], index: .intx, start: 0, count: 1), fds: [eventfd])
        return (engine, eventfd)
    }

    @Test func aRaisedLineIsSignalledOnceThenAutomasked() throws {
        let (engine, eventfd) = try engineWithTrigger()
        engine.setINTx(asserted: true)
        #expect(fired(eventfd) == 1)
        #expect(engine.isMasked(.intx, vector: 0))
        engine.setINTx(asserted: true) // still high, still masked: nothing new
        #expect(fired(eventfd) == 0)
    }

    @Test func unmaskWithTheLineStillHighSignalsAgain() throws {
        let (engine, eventfd) = try engineWithTrigger()
        engine.setINTx(asserted: true)
        _ = fired(eventfd)
        try engine.apply(SetIRQs(flags: [.dataNone, .actionUnmask], index: .intx, start: 0, count: 1), fds: [])
        #expect(fired(eventfd) == 1)
    }

    @Test func aLineThatDroppedWhileMaskedIsNotSignalledOnUnmask() throws {
        let (engine, eventfd) = try engineWithTrigger()
        engine.setINTx(asserted: true)
        _ = fired(eventfd)
        engine.setINTx(asserted: false)
        try engine.apply(SetIRQs(flags: [.dataBool, .actionUnmask], index: .intx, start: 0, count: 1, data: [1]), fds: [])
        #expect(fired(eventfd) == 0)
        engine.setINTx(asserted: true)
        #expect(fired(eventfd) == 1)
    }

    @Test func intxDisableInTheCommandRegisterHoldsTheInterrupt() throws {
        let (engine, eventfd) = try engineWithTrigger()
        engine.setINTxDisabled(true)
        engine.setINTx(asserted: true)
        #expect(fired(eventfd) == 0)
        engine.setINTxDisabled(false)
        #expect(fired(eventfd) == 1)
    }

    @Test func countZeroDisablesAndClosesTheEventfd() throws {
        let (engine, _) = try engineWithTrigger()
        #expect(engine.assignedEventfdCount == 1)
        try engine.apply(SetIRQs(flags: [.dataNone, .actionTrigger], index: .intx, start: 0, count: 0), fds: [])
        #expect(engine.assignedEventfdCount == 0)
    }
}
