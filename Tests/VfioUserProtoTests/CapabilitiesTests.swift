import TestSupport
import Testing
import VfioUserProto

@Suite("Capabilities JSON")
struct CapabilitiesTests {
    /// What QEMU 10.1+ sends (hw/vfio-user/proxy.c), byte for byte.
    static let qemuJSON = #"{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}, "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": true}}"#

    @Test func parsesQEMUsProposal() throws {
        #expect(Self.qemuJSON.utf8.count == 193)
        let caps = try VersionCapabilities(json: Self.qemuJSON)
        #expect(caps == VersionCapabilities(maxMessageFDs: 16, maxDataTransferSize: 1 << 20, pageSizes: 4096, maxDMAMaps: 65535,
                                            migration: .init(pageSize: 4096, maxBitmapSize: 256 << 20), writeMultiple: true))
    }

    @Test func absentKeysTakeTheSpecDefaults() throws {
        for json in [nil, "{}", #"{"capabilities":{}}"#] {
            let caps = try VersionCapabilities(json: json)
            #expect(caps.effectiveMaxMessageFDs == 1)
            #expect(caps.effectiveMaxDataTransferSize == 1_048_576)
            #expect(caps.effectivePageSizes == 4096)
            #expect(caps.effectiveMaxDMAMaps == 65535)
        }
    }

    @Test func unknownKeysAreIgnored() throws {
        let caps = try VersionCapabilities(json: #"{"capabilities":{"future":[1,{"x":null}],"max_msg_fds":3},"other":1}"#)
        #expect(caps.maxMessageFDs == 3)
    }

    @Test(arguments: [
        #"{"capabilities":{"max_msg_fds":"8"}}"#,
        #"{"capabilities":{"max_msg_fds":8.5}}"#,
        #"{"capabilities":{"max_msg_fds":-1}}"#,
        #"{"capabilities":{"max_data_xfer_size":0}}"#,
        #"{"capabilities":{"pgsizes":512}}"#,
        #"{"capabilities":{"pgsizes":"4096"}}"#,
        #"{"capabilities":{"write_multiple":1}}"#,
        #"{"capabilities":{"migration":4096}}"#,
        #"{"capabilities":{"twin_socket":{"supported":"yes"}}}"#,
        #"{"capabilities":[]}"#,
        #"[1,2]"#,
        #"{"capabilities":{"max_msg_fds":8}"#,
        #"{"capabilities":{}} trailing"#,
        "",
    ])
    func wrongTypesAndBadJSONAreRefused(json: String) {
        #expect(throws: ProtocolError.self) { try VersionCapabilities(json: json) }
    }

    @Test func serverReplyFitsQEMUsBuffer() throws {
        // QEMU receives the VERSION reply into its 214-byte request buffer (hw/vfio-user/proxy.c).
        let caps = VersionCapabilities(maxMessageFDs: 16, maxDataTransferSize: 1 << 20, pageSizes: 4096, maxDMAMaps: 65535,
                                       migration: .init(pageSize: 4096), writeMultiple: true)
        let reply = VersionPayload(major: 0, minor: 0, json: caps.json)
        #expect(MessageHeader.size + reply.encodedSize <= 214)
        #expect(caps.json == #"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"migration":{"pgsize":4096},"write_multiple":true}}"#)
        #expect(try VersionCapabilities(json: caps.json) == caps)
    }

    @Test func jsonValueRoundTripsThroughJSONC() throws {
        let value: JSONValue = ["a": [1, "two", true], "b": .null, "path": "/tmp/x.sock", "big": .uint(UInt64.max)]
        #expect(try JSONValue(parsing: value.text) == value)
        #expect(value.text.contains("/tmp/x.sock"))
    }
}
