import VfioUserProto

/// A device model that can move between servers: the vendor driver's part of VFIO migration v2
/// (the kernel's `migration_set_state` / save / load ops), narrowed to what a model knows.
///
/// The server core runs the state machine, the stream and its records, and PCI config space and
/// MSI-X; the model only says what its own state is. Its bytes are its own format, but each field
/// is written explicitly (no raw struct copies) and everything is checked on load.
public protocol MigratableDevice: DeviceModel {
    /// The arcs the model supports: STOP_COPY always, P2P and PRE_COPY when it says so.
    var migrationCapabilities: MigrationCapabilities { get }

    /// What a destination can check before the device stops: identity, version, shape. PRE_COPY
    /// makes it available at once (the kernel mtty's "initial bytes").
    func migrationHeader() -> [UInt8]

    /// Checks a source's header the moment it arrives: throws `.invalidStream` if this device
    /// cannot take that state (another model, version or port count).
    func checkMigrationHeader(_ header: [UInt8]) throws(MigrationError)

    /// The model's state, taken while it is stopped (`migrationQuiesce(true)` was called). Throws
    /// if the model could not reach a consistent point (its threads did not stop).
    func saveMigrationState() throws(MigrationError) -> [UInt8]

    /// Replaces the model's state with one `saveMigrationState` made (its header was checked).
    /// Validates everything before changing anything: on error the model is as it was.
    func loadMigrationState(_ state: [UInt8]) throws(MigrationError)

    /// Stop (true) or resume (false) what the model does on its own: threads, DMA. Interrupts are
    /// held by the core. Called on every move between running and stopped states. A reset
    /// (`DeviceModel.reset`) ends a pause too, and forgets a loaded state not yet resumed.
    func migrationQuiesce(_ stopped: Bool)
}

extension MigratableDevice {
    /// STOP_COPY only: the arcs every migratable device has. A model offers P2P (it can stop its
    /// DMA apart from its interrupts) and PRE_COPY (it has something to send while running) by
    /// saying so.
    public var migrationCapabilities: MigrationCapabilities { .stopCopy }
    /// A device with no threads has nothing to pause.
    public func migrationQuiesce(_ stopped: Bool) {}
}
