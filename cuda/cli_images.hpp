// Image decoding and pixel conversion for ttfs-infer (not part of libttfs).
//
// PNG and JPEG come through the system's libpng and libjpeg when CMake found them at build
// time; without them the decode functions fail with a message that says so. The conversions
// (channels, resizing) are exact integer arithmetic, and pyttfs/images.py does the same
// arithmetic with numpy, so both give the same pixels for the same file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ttfs_cli {

// A decoded image: h x w x c bytes in HWC order, c = 1 (gray) or 3 (RGB).
struct Image {
    int32_t h = 0, w = 0, c = 0;
    std::vector<uint8_t> pixels;
};

enum class ImageKind { None, Png, Jpeg };

// Recognises PNG and JPEG by their first bytes.
ImageKind image_kind(const uint8_t* data, size_t size);

// Whether this build can decode the kind (libpng / libjpeg found at build time).
bool can_decode(ImageKind kind);

// Decodes PNG or JPEG bytes; alpha is dropped, palettes expanded, 16-bit samples keep their
// high byte, low bit depths are scaled to 0..255. Returns false with `error` set on failure.
bool decode_image(const uint8_t* data, size_t size, ImageKind kind, Image& out, std::string& error);

// 1 <-> 3 channels: gray is repeated into R, G, B; RGB becomes gray by integer BT.601 luma,
// (19595 R + 38470 G + 7471 B + 32768) >> 16. Returns false for other channel counts.
bool convert_channels(Image& image, int32_t channels);

// Area-weighted resampling to h x w: every output pixel is the mean of the source area it
// covers, summed exactly in integers and rounded half up.
void resize_area(Image& image, int32_t h, int32_t w);

}  // namespace ttfs_cli
