#include "CPNG.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

static void copy_message(char *error, const png_image *image) {
    strncpy(error, image->message, 255);
    error[255] = 0;
}

int cpng_encode_rgb(const uint8_t *rgb, uint32_t width, uint32_t height, uint8_t **png, size_t *size, char *error) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = width;
    image.height = height;
    image.format = PNG_FORMAT_RGB;
    png_alloc_size_t bytes = 0;
    // First the size, then the image into a buffer of that size.
    if (!png_image_write_to_memory(&image, NULL, &bytes, 0, rgb, 0, NULL)) {
        copy_message(error, &image);
        return -1;
    }
    *png = malloc(bytes);
    if (*png == NULL) {
        strcpy(error, "out of memory");
        return -1;
    }
    if (!png_image_write_to_memory(&image, *png, &bytes, 0, rgb, 0, NULL)) {
        copy_message(error, &image);
        free(*png);
        *png = NULL;
        return -1;
    }
    *size = bytes;
    return 0;
}

int cpng_decode_rgb(const uint8_t *png, size_t size, uint8_t **rgb, uint32_t *width, uint32_t *height, char *error) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, png, size)) {
        copy_message(error, &image);
        return -1;
    }
    image.format = PNG_FORMAT_RGB;
    *rgb = malloc(PNG_IMAGE_SIZE(image));
    if (*rgb == NULL) {
        png_image_free(&image);
        strcpy(error, "out of memory");
        return -1;
    }
    if (!png_image_finish_read(&image, NULL, *rgb, 0, NULL)) {
        copy_message(error, &image);
        free(*rgb);
        *rgb = NULL;
        return -1;
    }
    *width = image.width;
    *height = image.height;
    return 0;
}
