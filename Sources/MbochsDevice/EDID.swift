/// The 128-byte EDID 1.4 base block the display serves at BAR2 offset 0 (VESA E-EDID 1.4): a
/// monitor whose preferred (and native) mode is one resolution at about 60 Hz. The guest's bochs
/// driver reads it and chooses that mode.
public enum EDID {
    public static let size = 128
    public static let header: [UInt8] = [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]
    /// The largest active width and height a detailed timing descriptor can state (12 bits).
    public static let maxDimension = 4095

    /// The block for a `width` × `height` display (each 1 to 4095).
    public static func block(width: Int, height: Int, name: String = "vfio-user") -> [UInt8] {
        precondition((1...maxDimension).contains(width) && (1...maxDimension).contains(height))
        var edid = header
        // Manufacturer "VFU": three 5-bit letters (A = 1), big-endian.
        let letters = "VFU".utf8.map { UInt16($0 - 0x40) }
        let manufacturer = letters[0] << 10 | letters[1] << 5 | letters[2]
        edid += [UInt8(manufacturer >> 8), UInt8(manufacturer & 0xFF)]
        edid += [0x11, 0x11] // product code 0x1111, as the PCI device ID
        edid += [0, 0, 0, 0] // no serial number
        edid += [1, 36] // week 1 of 2026 (years count from 1990)
        edid += [1, 4] // EDID 1.4
        edid += [0xA0] // digital input, 8 bits per primary
        let widthMM = width * 254 / 960, heightMM = height * 254 / 960 // 96 dots per inch
        edid += [UInt8(clamping: (widthMM + 5) / 10), UInt8(clamping: (heightMM + 5) / 10)]
        edid += [120] // gamma 2.2
        edid += [0x02] // RGB 4:4:4, the preferred timing is the native mode
        edid += chromaticity
        edid += [0, 0, 0] // no established timings
        edid += [UInt8](repeating: 0x01, count: 16) // no standard timings
        edid += detailedTiming(width: width, height: height, widthMM: widthMM, heightMM: heightMM)
        edid += textDescriptor(0xFC, name) // display product name
        edid += textDescriptor(0xFE, "mbochs") // unspecified text
        edid += [0, 0, 0, 0x10, 0] + [UInt8](repeating: 0, count: 13) // dummy descriptor
        edid += [0] // no extension blocks
        edid += [UInt8(truncatingIfNeeded: 256 - Int(edid.reduce(0) { $0 &+ $1 }))]
        return edid
    }

    /// sRGB primaries and D65 white (CIE x, y in 10 bits each: low bits packed first).
    private static let chromaticity: [UInt8] = {
        let values = [0.640, 0.330, 0.300, 0.600, 0.150, 0.060, 0.3127, 0.3290].map { Int(($0 * 1024).rounded()) }
        let low = values.map { UInt8($0 & 3) }
        return [low[0] << 6 | low[1] << 4 | low[2] << 2 | low[3], low[4] << 6 | low[5] << 4 | low[6] << 2 | low[7]]
            + values.map { UInt8($0 >> 2) }
    }()

    /// A detailed timing descriptor: fixed blanking (160 pixels, 30 lines), 60 Hz or as close as
    /// the 16-bit pixel clock field (10 kHz units) allows.
    private static func detailedTiming(width: Int, height: Int, widthMM: Int, heightMM: Int) -> [UInt8] {
        let hBlank = 160, hFront = 48, hSync = 32
        let vBlank = 30, vFront = 3, vSync = 5
        let pixelsPerFrame = (width + hBlank) * (height + vBlank)
        let clock = min((pixelsPerFrame * 60 + 9999) / 10000, 65535)
        return [UInt8(clock & 0xFF), UInt8(clock >> 8),
                UInt8(width & 0xFF), UInt8(hBlank & 0xFF), UInt8((width >> 8) << 4 | hBlank >> 8),
                UInt8(height & 0xFF), UInt8(vBlank & 0xFF), UInt8((height >> 8) << 4 | vBlank >> 8),
                UInt8(hFront & 0xFF), UInt8(hSync & 0xFF), UInt8((vFront & 0xF) << 4 | vSync & 0xF),
                UInt8((hFront >> 8) << 6 | (hSync >> 8) << 4 | (vFront >> 4) << 2 | vSync >> 4),
                UInt8(widthMM & 0xFF), UInt8(heightMM & 0xFF), UInt8((widthMM >> 8) << 4 | heightMM >> 8),
                0, 0, // no borders
                0x1E] // digital separate sync, both polarities positive
    }

    /// A display descriptor carrying up to 13 characters of text, ended by a line feed and padded
    /// with spaces.
    private static func textDescriptor(_ tag: UInt8, _ text: String) -> [UInt8] {
        var bytes = Array(text.utf8.prefix(13))
        if bytes.count < 13 { bytes += [0x0A] + [UInt8](repeating: 0x20, count: 12 - bytes.count) }
        return [0, 0, 0, tag, 0] + bytes
    }
}
