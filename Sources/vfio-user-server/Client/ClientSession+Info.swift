import RegionEmulation
import Support
import VfioUserProto

extension ClientSession {
    /// `info`: DEVICE_GET_INFO, every region and IRQ index, and config space decoded.
    func info() throws {
        let device = try client.deviceInfo()
        var regions: [(RegionInfo, Bool)] = []
        for index in 0..<device.numRegions {
            let (region, fd) = try client.regionInfo(RegionIndex(rawValue: index))
            regions.append((region, fd != nil))
        }
        let irqs = try (0..<device.numIRQs).map { try client.irqInfo(IRQIndex(rawValue: $0)) }
        let configSize = regions.first { $0.0.index == .config }?.0.size ?? 256
        let config = try client.read(.config, offset: 0, count: Int(min(configSize, 4096)))
        let report = ConfigSpaceReport(config)
        var barSizes: [Int: UInt64] = [:]
        for (region, _) in regions { if let bar = region.index.barNumber, region.size > 0 { barSizes[bar] = region.size } }

        if json {
            emit(["command": "info", "socket": .string(socket),
                  "device": ["flags": .int(Int64(device.flags.rawValue)), "regions": .int(Int64(device.numRegions)), "irqs": .int(Int64(device.numIRQs))],
                  "regions": .array(regions.map { region, fd in
                      ["index": .string("\(region.index)"), "size": .uint(region.size), "flags": .string(MessageTrace.regionFlags(region.flags)),
                       "offset": .uint(region.offset), "fd": .bool(fd), "mmap": .array(sparseAreas(region).map { ["offset": .uint($0.offset), "size": .uint($0.size)] })]
                  }),
                  "irqs": .array(irqs.map { ["index": .string("\($0.index)"), "count": .int(Int64($0.count)), "flags": .string(MessageTrace.irqFlags($0.flags))] }),
                  "config": ["vendor": .int(Int64(report.vendorID)), "device": .int(Int64(report.deviceID)), "class": .int(Int64(report.classCode)),
                             "revision": .int(Int64(report.revision)),
                             "capabilities": .array(report.capabilities.map {
                                 ["offset": .int(Int64($0.offset)), "id": .int(Int64($0.id)), "extended": .bool($0.extended), "name": .string($0.name)]
                             })]])
            return
        }
        var flags: [String] = []
        if device.flags.contains(.pci) { flags.append("PCI") }
        if device.flags.contains(.reset) { flags.append("reset") }
        print("vfio-user device on \(socket): \(flags.joined(separator: ", ")); \(device.numRegions) regions, \(device.numIRQs) IRQ indexes")
        print("Regions:")
        for (region, fd) in regions where region.size > 0 || region.flags.rawValue != 0 {
            var line = "\t\(region.index)\tsize \(region.size) (\(hexText(region.size)))\t\(MessageTrace.regionFlags(region.flags))"
            let areas = sparseAreas(region)
            if !areas.isEmpty {
                line += "\tmmap " + areas.map { "\(hexText($0.offset))+\(hexText($0.size))" }.joined(separator: " ") + (fd ? " (fd)" : " (no fd)")
            }
            print(line)
        }
        print("IRQs:")
        for irq in irqs { print("\t\(irq.index)\tcount \(irq.count)\t\(MessageTrace.irqFlags(irq.flags))") }
        print("Config space:")
        for line in report.lines(barSizes: barSizes) { print("\t" + line) }
    }

    private func sparseAreas(_ region: RegionInfo) -> [SparseMmapArea] {
        for capability in region.capabilities { if case let .sparseMmap(areas) = capability { return areas } }
        return []
    }
}
