import RegionEmulation
import Testing
import VfioUserProto

@Suite("Migration state machine")
struct MigrationStateMachineTests {
    static let full = MigrationStateMachine(capabilities: [.stopCopy, .p2p, .preCopy])
    static let basic = MigrationStateMachine(capabilities: [.stopCopy])

    /// The combination transitions the kernel's `vfio_mig_get_next_state` takes with P2P and
    /// PRE_COPY, written out (the path after the starting state).
    static let fullPaths: [(MigrationState, MigrationState, [MigrationState])] = [
        (.preCopy, .stopCopy, [.preCopyP2P, .stopCopy]),
        (.preCopy, .runningP2P, [.running, .runningP2P]),
        (.preCopy, .stop, [.running, .runningP2P, .stop]),
        (.preCopy, .resuming, [.running, .runningP2P, .stop, .resuming]),
        (.preCopyP2P, .running, [.runningP2P, .running]),
        (.preCopyP2P, .stop, [.runningP2P, .stop]),
        (.preCopyP2P, .resuming, [.runningP2P, .stop, .resuming]),
        (.resuming, .runningP2P, [.stop, .runningP2P]),
        (.resuming, .preCopyP2P, [.stop, .runningP2P, .preCopyP2P]),
        (.resuming, .running, [.stop, .runningP2P, .running]),
        (.resuming, .preCopy, [.stop, .runningP2P, .running, .preCopy]),
        (.resuming, .stopCopy, [.stop, .stopCopy]),
        (.running, .preCopyP2P, [.runningP2P, .preCopyP2P]),
        (.running, .stop, [.runningP2P, .stop]),
        (.running, .resuming, [.runningP2P, .stop, .resuming]),
        (.running, .stopCopy, [.runningP2P, .stop, .stopCopy]),
        (.runningP2P, .preCopy, [.running, .preCopy]),
        (.runningP2P, .resuming, [.stop, .resuming]),
        (.runningP2P, .stopCopy, [.stop, .stopCopy]),
        (.stop, .preCopyP2P, [.runningP2P, .preCopyP2P]),
        (.stop, .running, [.runningP2P, .running]),
        (.stop, .preCopy, [.runningP2P, .running, .preCopy]),
        (.stopCopy, .resuming, [.stop, .resuming]),
        (.stopCopy, .runningP2P, [.stop, .runningP2P]),
        (.stopCopy, .running, [.stop, .runningP2P, .running]),
    ]

    @Test(arguments: fullPaths)
    func combinationTransitionsTakeTheKernelsPath(from: MigrationState, to: MigrationState, expected: [MigrationState]) {
        #expect(Self.full.path(from: from, to: to) == expected)
    }

    @Test func everyOtherPairIsADirectArcOrRefused() {
        let listed = Set(Self.fullPaths.map { "\($0.0)>\($0.1)" })
        let refused: Set<String> = ["STOP_COPY>PRE_COPY", "STOP_COPY>PRE_COPY_P2P"]
        for from in Self.full.states {
            for to in Self.full.states where from != to && !listed.contains("\(from)>\(to)") {
                if refused.contains("\(from)>\(to)") {
                    #expect(Self.full.path(from: from, to: to) == nil, "\(from) → \(to)")
                } else {
                    #expect(Self.full.path(from: from, to: to) == [to], "\(from) → \(to) is a direct arc")
                    #expect(Self.full.directArcs(from: from).contains(to))
                }
            }
        }
    }

    @Test func errorIsNeverATargetAndOnlyResetLeavesIt() {
        for state in MigrationState.allCases {
            #expect(Self.full.path(from: state, to: .error) == nil)
            #expect(Self.full.path(from: .error, to: state) == nil)
        }
    }

    @Test func withoutP2PAndPreCopyTheirStatesDoNotExist() {
        #expect(Self.basic.states == [.stop, .running, .stopCopy, .resuming])
        #expect(Self.basic.path(from: .running, to: .stop) == [.stop])
        #expect(Self.basic.path(from: .running, to: .stopCopy) == [.stop, .stopCopy])
        #expect(Self.basic.path(from: .stopCopy, to: .running) == [.stop, .running])
        #expect(Self.basic.path(from: .running, to: .runningP2P) == nil)
        #expect(Self.basic.path(from: .running, to: .preCopy) == nil)
        let preCopyOnly = MigrationStateMachine(capabilities: [.stopCopy, .preCopy])
        #expect(preCopyOnly.path(from: .preCopy, to: .stopCopy) == [.stopCopy])
        #expect(preCopyOnly.path(from: .preCopy, to: .stop) == [.running, .stop])
        #expect(preCopyOnly.path(from: .stop, to: .preCopy) == [.running, .preCopy])
    }
}
