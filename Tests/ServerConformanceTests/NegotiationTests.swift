import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer

@Suite("VERSION negotiation")
struct NegotiationTests {
    @Test func qemuProposalGetsMajorZeroAndTheServersLimits() throws {
        let server = try TestServer()
        let client = try server.connect()
        let reply = try client.negotiate()
        #expect(reply.major == 0 && reply.minor == 0)
        let caps = client.serverCapabilities
        #expect(caps.maxMessageFDs == 16)
        #expect(caps.maxDataTransferSize == 1 << 20)
        #expect(caps.pageSizes == 4096)
        #expect(caps.maxDMAMaps == 65535)
        #expect(caps.writeMultiple == true)
    }

    @Test func theWholeReplyFitsQEMUsReceiveBuffer() throws {
        let server = try TestServer()
        let client = try server.connect()
        var writer = ByteWriter()
        VersionPayload(major: 0, minor: 0, json: VfioUserClient.qemuCapabilities.json).encode(into: &writer)
        let reply = try #require(try client.request(.version, payload: writer.bytes))
        #expect(reply.header.messageSize <= 214)
        #expect(reply.payload.last == 0) // NUL-terminated JSON, always
    }

    @Test func replyMinorIsAtMostTheClientsAndAtMostOurs() throws {
        let server = try TestServer()
        #expect(try server.connect().negotiate(minor: 1).minor == 1)
        server.waitDetached()
        #expect(try server.connect().negotiate(minor: 9).minor == 2)
    }

    @Test func writeMultipleIsOfferedOnlyToAClientThatProposedIt() throws {
        let server = try TestServer()
        let client = try server.connect()
        try client.negotiate(capabilities: VersionCapabilities(maxMessageFDs: 8))
        #expect(client.serverCapabilities.writeMultiple == nil)
        expectErrno(.invalidArgument) { try client.writeMulti([.init(offset: 7, region: .bar0, count: 1, data: 1)], posted: false) }
    }

    @Test func noJSONAtAllIsFineAndTheReplyStillCarriesJSON() throws {
        let server = try TestServer()
        let client = try server.connect()
        let reply = try client.negotiate(payload: VersionPayload(major: 0, minor: 0, json: nil))
        #expect(reply.json?.hasPrefix("{\"capabilities\":") == true)
    }

    @Test func aBadMajorIsRefusedAndTheConnectionClosed() throws {
        let server = try TestServer()
        let client = try server.connect()
        expectErrno(.notSupported) { try client.negotiate(major: 1) }
        #expect(connectionClosed(client))
    }

    static let badCapabilities: [(String, [UInt8])] = [
        ("bad JSON", Array(#"{"capabilities":"#.utf8) + [0]),
        ("wrong key type", Array(#"{"capabilities":{"max_msg_fds":"16"}}"#.utf8) + [0]),
        ("missing NUL", Array(#"{"capabilities":{}}"#.utf8)),
        ("not an object", Array("[]".utf8) + [0]),
    ]

    @Test(arguments: badCapabilities)
    func badCapabilitiesAreRefusedWithEINVALAndTheConnectionClosed(what: String, json: [UInt8]) throws {
        let server = try TestServer()
        let client = try server.connect()
        expectErrno(.invalidArgument) { try client.request(.version, payload: le(UInt16(0)) + le(UInt16(0)) + json) }
        #expect(connectionClosed(client), "\(what)")
    }

    @Test func aCommandBeforeVERSIONIsRefusedAndTheSessionWaitsForVERSION() throws {
        let server = try TestServer()
        let client = try server.connect()
        expectErrno(.invalidArgument) { try client.deviceInfo() }
        try client.negotiate()
        #expect(try client.deviceInfo().numRegions == 9)
    }

    @Test func versionTwiceIsRefusedAndTheSessionGoesOn() throws {
        let server = try TestServer()
        let client = try server.attach()
        expectErrno(.invalidArgument) { try client.negotiate() }
        #expect(try client.deviceInfo().numIRQs == 5)
    }

    @Test func versionWithAnFDIsRefused() throws {
        let server = try TestServer()
        let client = try server.connect()
        let eventfd = try OwnedFileDescriptor.eventfd()
        var writer = ByteWriter()
        VersionPayload(major: 0, minor: 0, json: "{}").encode(into: &writer)
        expectErrno(.invalidArgument) { try client.request(.version, payload: writer.bytes, fds: [eventfd.descriptor]) }
    }
}
