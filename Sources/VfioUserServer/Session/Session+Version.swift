import Support
import SystemPackage
import VfioUserProto

extension Session {
    /// VERSION (spec "VFIO_USER_VERSION"): first and only once. Major must be 0; the reply's minor is
    /// the smaller of the client's and ours; the reply always carries NUL-terminated JSON (an empty
    /// one would make QEMU re-parse its own request, hw/vfio-user/proxy.c) and stays within QEMU's
    /// 214-byte receive buffer. A failed negotiation is answered, then the connection closes.
    func handleVersion(_ payload: UnsafeRawBufferPointer, fds: [OwnedFileDescriptor]) throws {
        guard !negotiated else { throw SessionError.outOfOrder("VERSION sent twice") }
        do {
            guard fds.isEmpty else { throw SessionError.negotiationFailed(.invalidArgument, "VERSION carries \(fds.count) fds") }
            var reader = ByteReader(payload)
            let version: VersionPayload
            do { version = try VersionPayload(decoding: &reader) } catch {
                throw SessionError.negotiationFailed(.invalidArgument, "\(error)")
            }
            guard version.major == 0 else {
                throw SessionError.negotiationFailed(.notSupported, "major version \(version.major), this server speaks 0")
            }
            do { clientCapabilities = try VersionCapabilities(json: version.json) } catch {
                throw SessionError.negotiationFailed(.invalidArgument, "\(error)")
            }
            let offered = serverCapabilities(for: clientCapabilities)
            VersionPayload(major: 0, minor: min(version.minor, configuration.minorVersion), json: offered.json).encode(into: &reply)
            negotiated = true
            writeMultipleEnabled = offered.writeMultiple == true
            dmaChannel.configure(layout: configuration.dmaLayout, maxTransferSize: clientCapabilities.effectiveMaxDataTransferSize)
            device.dma.setMessageChannel(dmaChannel)
        } catch {
            closeAfterReply = true
            throw error
        }
    }

    /// What this server offers a client: its limits, and `write_multiple` only to a client that
    /// proposed it (the reply's capabilities must be a subset of the proposal).
    func serverCapabilities(for client: VersionCapabilities) -> VersionCapabilities {
        VersionCapabilities(
            maxMessageFDs: configuration.maxMessageFDs,
            maxDataTransferSize: configuration.maxDataTransferSize,
            pageSizes: configuration.pageSizes,
            maxDMAMaps: configuration.maxDMAMaps,
            writeMultiple: configuration.writeMultiple && client.writeMultiple == true ? true : nil)
    }
}
