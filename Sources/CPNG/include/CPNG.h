// PNG through libpng's simplified API (Debian libpng-dev): 8-bit RGB pictures to and from memory.
#ifndef CPNG_H
#define CPNG_H

#include <stddef.h>
#include <stdint.h>

/// Encodes width × height RGB pixels (3 bytes each, rows packed) as a PNG in a buffer this
/// allocates (free it with free). Returns 0, or -1 with libpng's message in `error` (256 bytes).
int cpng_encode_rgb(const uint8_t *rgb, uint32_t width, uint32_t height, uint8_t **png, size_t *size, char *error);

/// Decodes a PNG into RGB pixels (3 bytes each, rows packed) in a buffer this allocates (free it
/// with free). Returns 0, or -1 with libpng's message in `error` (256 bytes).
int cpng_decode_rgb(const uint8_t *png, size_t size, uint8_t **rgb, uint32_t *width, uint32_t *height, char *error);

#endif
