import RegionEmulation

extension MbochsDevice {
    /// The sample's memory pool, `max_mbytes` = 256 MiB by default, counted in MiB: every instance
    /// takes its framebuffer's size from it (`--pool mbochs-memory=N` changes it).
    public static let memoryPool = ResourcePool(name: "mbochs-memory", capacity: 256)

    /// One of the sample's types: framebuffer MiB, the largest mode its EDID may name (0: only
    /// what the memory holds), and the default resolution.
    struct TypeInfo {
        let id: String
        let megabytes: Int
        let maxWidth: Int, maxHeight: Int
        let width: Int, height: Int
    }

    static let typeInfos = [
        TypeInfo(id: "mbochs-small", megabytes: 4, maxWidth: 800, maxHeight: 600, width: 800, height: 600),
        TypeInfo(id: "mbochs-medium", megabytes: 16, maxWidth: 1920, maxHeight: 1440, width: 1024, height: 768),
        TypeInfo(id: "mbochs-large", megabytes: 64, maxWidth: 0, maxHeight: 0, width: 1920, height: 1080),
    ]

    static let parameters = [
        "mmap": "on (default): the client maps the framebuffer; off: every access to it is a message",
        "resolution": "WIDTHxHEIGHT, the preferred mode of the EDID (64x64 up to the type's largest)",
    ]

    /// The sample's three types, sharing `pool`.
    public static func mediatedTypes(pool: ResourcePool = memoryPool) -> [MediatedDeviceType] {
        typeInfos.map { info in
            let largest = info.maxWidth == 0 ? "any mode its memory holds" : "up to \(info.maxWidth)x\(info.maxHeight)"
            return MediatedDeviceType(
                id: info.id, name: info.id,
                description: "PCI display 1234:1111 for the guest's bochs driver, \(info.megabytes) MiB framebuffer, \(largest) (the kernel's mbochs sample)",
                pool: pool, cost: info.megabytes, parameters: parameters
            ) { request throws(DeviceCreationError) in try make(info, request) }
        }
    }

    static func make(_ info: TypeInfo, _ request: MediatedDeviceRequest) throws(DeviceCreationError) -> MbochsDevice {
        let mmap = request.parameters["mmap"] ?? "on"
        guard mmap == "on" || mmap == "off" else { throw DeviceCreationError("mmap must be on or off, not '\(mmap)'") }
        var (width, height) = (info.width, info.height)
        if let text = request.parameters["resolution"] {
            let parts = text.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
            guard parts.count == 2, let w = parts[0], let h = parts[1] else {
                throw DeviceCreationError("resolution is WIDTHxHEIGHT, e.g. 1024x768, not '\(text)'")
            }
            (width, height) = (w, h)
        }
        let memory = info.megabytes << 20
        // The bochs driver takes a mode only if it fits twice (double buffering); an EDID states
        // at most 4095 pixels either way; the sample checks 64 at least.
        guard (64...EDID.maxDimension).contains(width), (64...EDID.maxDimension).contains(height),
              info.maxWidth == 0 || (width <= info.maxWidth && height <= info.maxHeight), 2 * width * height * 4 <= memory else {
            let largest = info.maxWidth == 0 ? "" : ", at most \(info.maxWidth)x\(info.maxHeight)"
            throw DeviceCreationError("\(info.id) cannot show \(width)x\(height): 64x64 or more\(largest), twice in \(info.megabytes) MiB")
        }
        return try MbochsDevice(memorySize: memory, width: width, height: height, mappable: mmap == "on", name: "mbochs-\(request.uuid)")
    }
}
