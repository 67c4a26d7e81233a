#!/usr/bin/env python3
"""Checks a screenshot the server took, with nothing but Python's standard library (zlib): its size,
and either the guest's test pattern pixel for pixel or that something was drawn (a console).

    png-check.py pattern FILE WIDTH HEIGHT   every pixel (x, y) is red x%256, green y%256, blue (7x+13y)%256
    png-check.py drawn FILE WIDTH HEIGHT     some pixels are lit, most are the background
"""
import struct
import sys
import zlib


def decode(path):
    """An 8-bit RGB PNG (PNG spec, chunks IHDR/IDAT/IEND, filters 0-4) as (width, height, rows)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    at, idat, header = 8, b"", None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0]:
            raise ValueError(f"bad CRC in {kind}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if (depth, colour, interlace) != (8, 2, 0):
        raise ValueError(f"depth {depth}, colour type {colour}, interlace {interlace}: not 8-bit RGB")
    raw, stride, rows, previous = zlib.decompress(idat), width * 3, [], bytearray(width * 3)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - 3] if i >= 3 else 0
            up, corner = previous[i], previous[i - 3] if i >= 3 else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(line)
        previous = line
    return width, height, rows


def main():
    mode, path, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    w, h, rows = decode(path)
    if (w, h) != (width, height):
        print(f"{path}: {w}x{h}, not {width}x{height}")
        return 1
    if mode == "pattern":
        wrong = [(x, y) for y in range(h) for x in range(w)
                 if tuple(rows[y][3 * x:3 * x + 3]) != (x & 0xFF, y & 0xFF, (7 * x + 13 * y) & 0xFF)]
        if wrong:
            x, y = wrong[0]
            print(f"{path}: {len(wrong)} of {w * h} pixels differ from the pattern, the first at ({x}, {y}): {tuple(rows[y][3 * x:3 * x + 3])}")
            return 1
        print(f"{path}: all {w * h} pixels are the pattern")
        return 0
    lit = sum(1 for y in range(h) for x in range(w) if any(rows[y][3 * x:3 * x + 3]))
    if not 0 < lit < w * h // 2:
        print(f"{path}: {lit} of {w * h} pixels lit: not a console's text")
        return 1
    print(f"{path}: {lit} of {w * h} pixels lit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
