import VfioUserProto

/// The migration v2 state machine of linux/vfio.h, which vfio-user adopts (spec "Migration").
///
/// The direct arcs depend on what the device supports: with P2P, RUNNING and STOP are linked
/// through RUNNING_P2P (and PRE_COPY and STOP_COPY through PRE_COPY_P2P) instead of directly.
/// Any other requested change follows the shortest path of direct arcs (spec "Migration", the
/// kernel's `vfio_mig_get_next_state`) whose intermediate states neither open nor close a data
/// transfer on the way: no RESUMING, and no saving state (PRE_COPY, PRE_COPY_P2P, STOP_COPY)
/// unless both ends are saving states, so that PRE_COPY → STOP_COPY with P2P continues its session
/// through PRE_COPY_P2P while PRE_COPY → STOP goes through RUNNING, not STOP_COPY. STOP_COPY →
/// PRE_COPY is refused (a finished save cannot be resumed). ERROR is never a target; it is left
/// only by a reset.
public struct MigrationStateMachine: Sendable {
    /// The arcs the device offers.
    public let capabilities: MigrationCapabilities

    /// A machine in RUNNING.
    public init(capabilities: MigrationCapabilities) {
        self.capabilities = capabilities
    }

    /// The states this device has: the three of every device, and those its capabilities add.
    public var states: [MigrationState] {
        var states: [MigrationState] = [.stop, .running, .stopCopy, .resuming]
        if capabilities.contains(.p2p) { states.append(.runningP2P) }
        if capabilities.contains(.preCopy) { states.append(.preCopy) }
        if capabilities.isSuperset(of: [.p2p, .preCopy]) { states.append(.preCopyP2P) }
        return states
    }

    /// The single-step arcs out of `state`.
    public func directArcs(from state: MigrationState) -> [MigrationState] {
        let p2p = capabilities.contains(.p2p)
        let preCopy = capabilities.contains(.preCopy)
        switch state {
        case .running:
            return [p2p ? .runningP2P : .stop] + (preCopy ? [.preCopy] : [])
        case .runningP2P:
            return [.running, .stop] + (preCopy ? [.preCopyP2P] : [])
        case .stop:
            return [p2p ? .runningP2P : .running, .stopCopy, .resuming]
        case .stopCopy, .resuming:
            return [.stop]
        case .preCopy:
            return [.running, p2p ? .preCopyP2P : .stopCopy]
        case .preCopyP2P:
            return [.preCopy, .runningP2P, .stopCopy]
        case .error:
            return []
        }
    }

    /// The steps from `state` to `target` (excluding `state`); empty if they are equal, nil if the
    /// target is ERROR, a state this device does not have, or unreachable (from ERROR).
    public func path(from state: MigrationState, to target: MigrationState) -> [MigrationState]? {
        guard target != .error, states.contains(target), state != .error else { return nil }
        if state == target { return [] }
        if state == .stopCopy && (target == .preCopy || target == .preCopyP2P) { return nil }
        let savingIntermediates = state.isSaving && target.isSaving
        // Breadth-first over direct arcs, in the order `directArcs` lists them.
        var previous: [MigrationState: MigrationState] = [state: state]
        var frontier = [state]
        while !frontier.isEmpty {
            var next: [MigrationState] = []
            for current in frontier {
                for successor in directArcs(from: current) where previous[successor] == nil {
                    previous[successor] = current
                    if successor == target {
                        var steps = [target]
                        var at = current
                        while at != state, let before = previous[at] {
                            steps.insert(at, at: 0)
                            at = before
                        }
                        return steps
                    }
                    if successor != .resuming && (savingIntermediates || !successor.isSaving) { next.append(successor) }
                }
            }
            frontier = next
        }
        return nil
    }
}
