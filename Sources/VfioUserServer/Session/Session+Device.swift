import RegionEmulation
import Support
import SystemPackage
import VfioUserProto

extension Session {
    /// DEVICE_GET_INFO: PCI with reset, 9 regions, 5 IRQ indexes.
    func handleGetInfo(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: DeviceInfo.size, .deviceGetInfo)
        var reader = ByteReader(payload)
        let request = try DeviceInfo(decoding: &reader)
        try requireArgsz(request.argsz, atLeast: DeviceInfo.size, .deviceGetInfo)
        device.info.encode(into: &reply)
    }

    /// GET_REGION_INFO with the argsz rule: the reply's argsz is always the full size; the capability
    /// chain and the mmap fd come only when the client's argsz has room for the whole answer (as
    /// libvfio-user does), so the reply never exceeds what the client said it can take.
    func handleGetRegionInfo(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: RegionInfo.size, .deviceGetRegionInfo)
        var reader = ByteReader(payload)
        let request = try RegionInfo(decoding: &reader)
        try requireArgsz(request.argsz, atLeast: RegionInfo.size, .deviceGetRegionInfo)
        let region = try device.region(request.index)
        var info = region.info
        let full = info.fullSize
        info.argsz = UInt32(full)
        let canSendFD = clientCapabilities.effectiveMaxMessageFDs >= 1
        if Int(request.argsz) < full || !canSendFD {
            info.capabilities = []
            info.encode(into: &reply)
            return
        }
        info.encode(into: &reply)
        if let mmap = region.mmap { replyFDs.append(mmap.fd.descriptor) }
    }

    /// GET_REGION_IO_FDS: this server registers no ioeventfds (QEMU 10.1 never asks), so every
    /// region answers with zero sub-regions.
    func handleGetRegionIOFDs(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: RegionIOFDsRequest.size, .deviceGetRegionIOFDs)
        var reader = ByteReader(payload)
        let request = try RegionIOFDsRequest(decoding: &reader)
        try requireArgsz(request.argsz, atLeast: RegionIOFDsRequest.size, .deviceGetRegionIOFDs)
        guard request.flags == 0, request.count == 0 else {
            throw SessionError.malformed("GET_REGION_IO_FDS flags and count must be 0")
        }
        _ = try device.region(request.index)
        RegionIOFDsRequest(argsz: UInt32(RegionIOFDsRequest.size), index: request.index, count: 0).encode(into: &reply)
    }

    func handleGetIRQInfo(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: IRQInfo.size, .deviceGetIRQInfo)
        var reader = ByteReader(payload)
        let request = try IRQInfo(decoding: &reader)
        try requireArgsz(request.argsz, atLeast: IRQInfo.size, .deviceGetIRQInfo)
        try device.irqInfo(request.index).encode(into: &reply)
    }

    func handleSetIRQs(_ payload: UnsafeRawBufferPointer, fds: inout [OwnedFileDescriptor]) throws {
        try requirePayload(payload, atLeast: SetIRQs.fixedSize, .deviceSetIRQs)
        var reader = ByteReader(payload)
        let request = try SetIRQs(decoding: &reader)
        try device.setIRQs(request, fds: fds)
    }

    /// DEVICE_RESET: no payload either way (QEMU's receive buffer for the reply is 16 bytes).
    func handleReset(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.isEmpty else { throw SessionError.malformed("DEVICE_RESET has a \(payload.count)-byte payload") }
        device.reset(.deviceReset)
    }
}
