import Support
import Synchronization
import SystemPackage
import VfioUserProto

/// SET_IRQS as the kernel's vfio-pci applies it (VFIO_DEVICE_SET_IRQS), and the resets.
extension InterruptEngine {
    // MARK: SET_IRQS

    /// Applies a SET_IRQS request (spec "VFIO_USER_DEVICE_SET_IRQS", kernel `vfio_pci_set_irqs_ioctl`
    /// semantics, libvfio-user's validation). `fds` are the eventfds that came with the message.
    /// Returns whether the MSI/MSI-X index changed from disabled to enabled or back, so that
    /// `PCIFunction` can keep the config-space enable bit in step.
    package func apply(_ request: SetIRQs, fds: [OwnedFileDescriptor]) throws(InterruptError) {
        let flags = request.flags
        guard flags.rawValue & ~0x3F == 0 else { throw .invalid("unknown SET_IRQS flags \(flags)") }
        let dataType = flags.intersection(SetIRQsFlags.dataTypes)
        let action = flags.intersection(SetIRQsFlags.actions)
        guard dataType.rawValue.nonzeroBitCount == 1 else { throw .invalid("SET_IRQS needs exactly one DATA flag, got \(flags)") }
        guard action.rawValue.nonzeroBitCount == 1 else { throw .invalid("SET_IRQS needs exactly one ACTION flag, got \(flags)") }
        guard request.index.rawValue < IRQIndex.count else { throw .invalid("IRQ index \(request.index.rawValue) does not exist") }
        guard Int(request.argsz) >= SetIRQs.fixedSize else { throw .invalid("SET_IRQS argsz \(request.argsz) is below 20") }
        guard fds.isEmpty || dataType == .dataEventfd else { throw .invalid("SET_IRQS carries \(fds.count) fds without DATA_EVENTFD") }
        guard dataType == .dataBool || request.data.isEmpty else {
            throw .invalid("SET_IRQS with \(flags) carries \(request.data.count) data bytes")
        }

        let index = request.index
        let i = Int(index.rawValue)
        let size = state.withLock { $0.indexes[i].info.count }
        let start = Int(request.start)
        let count = Int(request.count)

        if count == 0 {
            // The only count-0 form: DATA_NONE|TRIGGER with start 0 disables the whole index.
            guard dataType == .dataNone, action == .actionTrigger, start == 0 else {
                throw .invalid("count 0 is only allowed with DATA_NONE|ACTION_TRIGGER and start 0")
            }
            disable(index)
            return
        }
        guard size > 0 else { throw .invalid("IRQ index \(index) has no vectors on this device") }
        guard start < size, count <= size - start else {
            throw .invalid("vectors \(start)..<\(start + count) outside \(index)'s \(size)")
        }
        if index == .err || index == .req {
            guard action == .actionTrigger else { throw .invalid("\(index) only accepts ACTION_TRIGGER") }
        }
        var selected = [Bool](repeating: true, count: count)
        switch dataType {
        case .dataBool:
            // Exactly `count` booleans, as libvfio-user insists (too few and too many are both EINVAL).
            guard request.data.count == count, Int(request.argsz) == SetIRQs.fixedSize + count else {
                throw .invalid("DATA_BOOL needs exactly \(count) bytes (argsz \(SetIRQs.fixedSize + count)), got \(request.data.count)")
            }
            selected = request.data.map { $0 != 0 }
        case .dataEventfd:
            guard fds.isEmpty || fds.count == count else {
                throw .invalid("DATA_EVENTFD with \(fds.count) fds for \(count) vectors")
            }
        default:
            break
        }

        switch (action, dataType) {
        case (.actionTrigger, .dataEventfd):
            assign(index, start: start, fds: fds.isEmpty ? Array(repeating: nil, count: count) : fds.map { $0 })
        case (.actionTrigger, _):
            // DATA_NONE / DATA_BOOL: fire the selected vectors now (a loopback test of the path).
            for (k, fire) in selected.enumerated() where fire { trigger(index, vector: start + k) }
        case (.actionUnmask, .dataEventfd):
            guard index == .intx else { throw .notImplemented("UNMASK with an eventfd on \(index)") }
            try setINTxUnmaskEventfd(fds.first)
        case (.actionMask, .dataEventfd):
            throw .notImplemented("MASK with an eventfd")
        case (.actionMask, _), (.actionUnmask, _):
            let masked = action == .actionMask
            applyAndFlush { s in
                for (k, hit) in selected.enumerated() where hit { s.indexes[i].vectors[start + k].masked = masked }
            }
        default:
            throw .invalid("unsupported SET_IRQS form \(flags)")
        }
    }

    /// Assigns (or, with nil, unassigns) trigger eventfds. Assigning an MSI/MSI-X eventfd enables
    /// the index and unmasks the vector, as the host kernel does when vfio-pci requests the IRQ;
    /// a pending interrupt is delivered at once.
    func assign(_ index: IRQIndex, start: Int, fds: [OwnedFileDescriptor?]) {
        applyAndFlush { s in
            let i = Int(index.rawValue)
            for (k, fd) in fds.enumerated() {
                s.indexes[i].vectors[start + k].trigger = fd
                if fd != nil && (index == .msi || index == .msix) { s.indexes[i].vectors[start + k].masked = false }
            }
            if index == .msi || index == .msix { s.indexes[i].enabled = true }
            if index == .intx && fds.first! == nil { s.indexes[i].vectors[0].masked = false }
        }
    }

    /// Disables an index: every eventfd closed, masks and pending bits cleared, MSI/MSI-X off.
    package func disable(_ index: IRQIndex) {
        var unmaskFD: OwnedFileDescriptor?
        state.withLock { s in
            let i = Int(index.rawValue)
            for n in s.indexes[i].vectors.indices { s.indexes[i].vectors[n] = Vector() }
            s.indexes[i].pendingCount = 0
            if index == .msi || index == .msix {
                s.indexes[i].enabled = false
                s.indexes[i].functionMasked = false
            }
            if index == .intx {
                unmaskFD = s.intxUnmaskEventfd
                s.intxUnmaskEventfd = nil
            }
        }
        if let unmaskFD { try? EventfdWatcher.shared().unwatch(unmaskFD) }
    }

    /// Assigns (nil: unassigns) INTx's unmask eventfd. Throws, leaving the old one in place, when
    /// the watcher cannot take it (out of fds, threads or epoll watches).
    func setINTxUnmaskEventfd(_ fd: OwnedFileDescriptor?) throws(InterruptError) {
        if let fd {
            do throws(Errno) {
                try EventfdWatcher.shared().watch(fd) { [weak self] in self?.setMasked(.intx, vector: 0, false) }
            } catch {
                throw .outOfResources(error, "cannot watch the INTx unmask eventfd")
            }
        }
        let old = state.withLock { s in
            let old = s.intxUnmaskEventfd
            s.intxUnmaskEventfd = fd
            return old
        }
        if let old, old !== fd { try? EventfdWatcher.shared().unwatch(old) }
    }

    /// Back to power-on: `closeEventfds` on a lost connection (the client is gone), otherwise
    /// (DEVICE_RESET) the client's eventfds stay assigned and only the device-side state resets.
    package func reset(closeEventfds: Bool) {
        if closeEventfds {
            for index in IRQIndex.all { disable(index) }
        }
        state.withLock { s in
            s.intxLevel = false
            intxLine.store(false, ordering: .releasing)
            s.intxDisabled = false
            s.suspended = false
            for i in s.indexes.indices {
                s.indexes[i].functionMasked = false
                if i == 1 || i == 2 { s.indexes[i].enabled = false }
                for n in s.indexes[i].vectors.indices {
                    s.indexes[i].vectors[n].pending = false
                    s.indexes[i].vectors[n].masked = false
                }
                s.indexes[i].pendingCount = 0
            }
        }
    }
}
