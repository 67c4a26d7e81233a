/// The 16-byte header that starts every message and every reply (spec "Header"), host endian.
///
/// | off | size | field |
/// |  0  |  2   | message id |
/// |  2  |  2   | command |
/// |  4  |  4   | message size, header included |
/// |  8  |  4   | flags: type in bits 0-3, NO_REPLY 0x10, ERROR 0x20 |
/// | 12  |  4   | errno (replies only) |
public struct MessageHeader: Equatable, Sendable {
    public static let size = 16

    public var id: UInt16
    public var command: Command
    public var messageSize: UInt32
    public var flags: MessageFlags
    public var error: UInt32

    public init(id: UInt16, command: Command, messageSize: UInt32, flags: MessageFlags = .command, error: UInt32 = 0) {
        self.id = id
        self.command = command
        self.messageSize = messageSize
        self.flags = flags
        self.error = error
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        let raw = try reader.bytes(count: Self.size)
        id = raw.littleEndian(at: 0)
        command = Command(rawValue: raw.littleEndian(at: 2))
        messageSize = raw.littleEndian(at: 4)
        flags = MessageFlags(rawValue: raw.littleEndian(at: 8))
        error = raw.littleEndian(at: 12)
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(id)
        writer.write(command.rawValue)
        writer.write(messageSize)
        writer.write(flags.rawValue)
        writer.write(error)
    }

    /// Bytes after the header; 0 when the size field is too small (a framing error the caller checks).
    public var payloadSize: Int { max(Int(messageSize) - MessageHeader.size, 0) }

    /// The header of the reply to this message: same id and command, type reply.
    public func reply(payloadSize: Int) -> MessageHeader {
        MessageHeader(id: id, command: command, messageSize: UInt32(MessageHeader.size + payloadSize), flags: .reply)
    }

    /// A header-only error reply (spec: "an error reply should contain only the header").
    public func errorReply(errno: UInt32) -> MessageHeader {
        MessageHeader(id: id, command: command, messageSize: UInt32(MessageHeader.size), flags: [.reply, .error], error: errno)
    }
}

/// The header's flags word.
public struct MessageFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Type 0: a request.
    @inlinable public static var command: MessageFlags { MessageFlags(rawValue: 0) }
    /// Type 1: a reply.
    @inlinable public static var reply: MessageFlags { MessageFlags(rawValue: 1) }
    /// The request must not be answered, not even with an error.
    @inlinable public static var noReply: MessageFlags { MessageFlags(rawValue: 0x10) }
    /// The reply carries an errno.
    @inlinable public static var error: MessageFlags { MessageFlags(rawValue: 0x20) }

    @inlinable public static var typeMask: UInt32 { 0xF }
    @inlinable public static var known: UInt32 { typeMask | 0x10 | 0x20 }

    /// The type nibble: 0 command, 1 reply, anything else invalid.
    @inlinable public var type: UInt32 { rawValue & MessageFlags.typeMask }
    @inlinable public var isCommand: Bool { type == 0 }
    @inlinable public var isReply: Bool { type == 1 }
}
