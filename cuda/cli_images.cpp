// PNG/JPEG decoding and pixel conversions for ttfs-infer; see cli_images.hpp.
//
// libpng and libjpeg report errors by longjmp. Each decoder keeps everything that must be
// freed in plain C storage declared before setjmp, so a jump never skips a C++ destructor.
#include "cli_images.hpp"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#ifdef TTFS_HAVE_PNG
#include <png.h>
#endif
#ifdef TTFS_HAVE_JPEG
#include <jpeglib.h>
#endif

namespace ttfs_cli {

namespace {

// Images larger than this many pixels are refused before any allocation: a hostile header
// must not make the CLI allocate gigabytes.
constexpr uint64_t kMaxPixels = uint64_t(1) << 28;

bool size_ok(uint64_t h, uint64_t w, std::string& error) {
    if (h == 0 || w == 0 || h * w > kMaxPixels) {
        error = "image size " + std::to_string(h) + "x" + std::to_string(w) +
                " is empty or larger than " + std::to_string(kMaxPixels) + " pixels";
        return false;
    }
    return true;
}

#ifdef TTFS_HAVE_PNG
struct PngInput {
    const uint8_t* data;
    size_t size;
    size_t offset;
    char message[256];
    jmp_buf jump;
};

void png_read_memory(png_structp png, png_bytep out, png_size_t length) {
    auto* input = static_cast<PngInput*>(png_get_io_ptr(png));
    if (length > input->size - input->offset) png_error(png, "the file ends inside the image");
    std::memcpy(out, input->data + input->offset, length);
    input->offset += length;
}

void png_on_error(png_structp png, png_const_charp message) {
    auto* input = static_cast<PngInput*>(png_get_error_ptr(png));
    std::snprintf(input->message, sizeof input->message, "%s", message);
    std::longjmp(input->jump, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

bool decode_png(const uint8_t* data, size_t size, Image& out, std::string& error) {
    PngInput input;
    input.data = data;
    input.size = size;
    input.offset = 0;
    input.message[0] = '\0';
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &input, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    uint8_t* pixels = nullptr;
    png_bytep* rows = nullptr;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, nullptr);
        error = "out of memory starting the PNG decoder";
        return false;
    }
    if (setjmp(input.jump)) {
        std::free(pixels);
        std::free(rows);
        png_destroy_read_struct(&png, &info, nullptr);
        error = std::string("broken PNG: ") + input.message;
        return false;
    }
    png_set_read_fn(png, &input, png_read_memory);
    png_read_info(png, info);
    const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    if (!size_ok(height, width, error)) {
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    const int color = png_get_color_type(png, info);
    // Palette -> RGB, 1/2/4-bit gray -> 8 bits (scaled), 16 bits -> the high byte, alpha
    // dropped; a tRNS chunk is ignored (no png_set_tRNS_to_alpha), as alpha is.
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int channels = png_get_channels(png, info);
    if (channels != 1 && channels != 3) png_error(png, "unexpected channel count after conversion");
    const size_t row_bytes = size_t(width) * size_t(channels);
    if (png_get_rowbytes(png, info) != row_bytes) png_error(png, "unexpected row size after conversion");
    pixels = static_cast<uint8_t*>(std::malloc(row_bytes * height));
    rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * height));
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = pixels + size_t(y) * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);
    out.h = int32_t(height);
    out.w = int32_t(width);
    out.c = channels;
    out.pixels.assign(pixels, pixels + row_bytes * height);
    std::free(pixels);
    std::free(rows);
    return true;
}
#endif

#ifdef TTFS_HAVE_JPEG
struct JpegError {
    jpeg_error_mgr manager;
    char message[JMSG_LENGTH_MAX];
    jmp_buf jump;
};

void jpeg_on_error(j_common_ptr cinfo) {
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, error->message);
    std::longjmp(error->jump, 1);
}

void jpeg_on_message(j_common_ptr, int) {}  // warnings (e.g. premature end) are not fatal

bool decode_jpeg(const uint8_t* data, size_t size, Image& out, std::string& error) {
    jpeg_decompress_struct cinfo;
    JpegError jerr;
    uint8_t* pixels = nullptr;
    cinfo.err = jpeg_std_error(&jerr.manager);
    jerr.manager.error_exit = jpeg_on_error;
    jerr.manager.emit_message = jpeg_on_message;
    jerr.message[0] = '\0';
    if (setjmp(jerr.jump)) {
        std::free(pixels);
        jpeg_destroy_decompress(&cinfo);
        error = std::string("broken JPEG: ") + jerr.message;
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
        cinfo.out_color_space = JCS_GRAYSCALE;
    } else if (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB) {
        cinfo.out_color_space = JCS_RGB;
    } else {
        std::snprintf(jerr.message, sizeof jerr.message,
                      "colour space %d (CMYK or YCCK) is not supported; expected gray or colour",
                      int(cinfo.jpeg_color_space));
        std::longjmp(jerr.jump, 1);
    }
    jpeg_start_decompress(&cinfo);
    if (!size_ok(cinfo.output_height, cinfo.output_width, error)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    const int channels = cinfo.output_components;
    const size_t row_bytes = size_t(cinfo.output_width) * size_t(channels);
    pixels = static_cast<uint8_t*>(std::malloc(row_bytes * cinfo.output_height));
    if (!pixels) {
        std::snprintf(jerr.message, sizeof jerr.message, "out of memory");
        std::longjmp(jerr.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + size_t(cinfo.output_scanline) * row_bytes;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    out.h = int32_t(cinfo.output_height);
    out.w = int32_t(cinfo.output_width);
    out.c = channels;
    out.pixels.assign(pixels, pixels + row_bytes * cinfo.output_height);
    std::free(pixels);
    jpeg_destroy_decompress(&cinfo);
    return true;
}
#endif

// How much of source pixel i the output pixel o covers, in units of 1/target of a source
// pixel: the overlap of [i*target, (i+1)*target) and [o*source, (o+1)*source).
int64_t area_weight(int64_t i, int64_t o, int64_t source, int64_t target) {
    const int64_t low = std::max(i * target, o * source);
    const int64_t high = std::min((i + 1) * target, (o + 1) * source);
    return std::max<int64_t>(0, high - low);
}

}  // namespace

ImageKind image_kind(const uint8_t* data, size_t size) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size >= 8 && std::memcmp(data, png, 8) == 0) return ImageKind::Png;
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageKind::Jpeg;
    return ImageKind::None;
}

bool can_decode(ImageKind kind) {
#ifdef TTFS_HAVE_PNG
    if (kind == ImageKind::Png) return true;
#endif
#ifdef TTFS_HAVE_JPEG
    if (kind == ImageKind::Jpeg) return true;
#endif
    (void)kind;
    return false;
}

bool decode_image(const uint8_t* data, size_t size, ImageKind kind, Image& out, std::string& error) {
#ifdef TTFS_HAVE_PNG
    if (kind == ImageKind::Png) return decode_png(data, size, out, error);
#endif
#ifdef TTFS_HAVE_JPEG
    if (kind == ImageKind::Jpeg) return decode_jpeg(data, size, out, error);
#endif
    (void)data;
    (void)size;
    (void)out;
    error = std::string("this ttfs-infer was built without ") + (kind == ImageKind::Png ? "PNG" : "JPEG") +
            " support (" + (kind == ImageKind::Png ? "libpng" : "libjpeg") +
            " was not found when it was built); install it and rebuild, or convert the images to "
            ".npy or IDX";
    return false;
}

bool convert_channels(Image& image, int32_t channels) {
    if (image.c == channels) return true;
    const size_t count = size_t(image.h) * size_t(image.w);
    std::vector<uint8_t> converted(count * size_t(channels));
    if (image.c == 3 && channels == 1) {
        for (size_t i = 0; i < count; ++i) {
            const uint32_t r = image.pixels[3 * i], g = image.pixels[3 * i + 1], b = image.pixels[3 * i + 2];
            converted[i] = uint8_t((19595u * r + 38470u * g + 7471u * b + 32768u) >> 16);
        }
    } else if (image.c == 1 && channels == 3) {
        for (size_t i = 0; i < count; ++i)
            converted[3 * i] = converted[3 * i + 1] = converted[3 * i + 2] = image.pixels[i];
    } else {
        return false;
    }
    image.pixels.swap(converted);
    image.c = channels;
    return true;
}

void resize_area(Image& image, int32_t h, int32_t w) {
    if (image.h == h && image.w == w) return;
    const int64_t H = image.h, W = image.w, C = image.c;
    // Rows first: partial[o][x][c] = sum_i weight(i, o) * source[i][x][c] (exact in int64).
    std::vector<int64_t> partial(size_t(h) * size_t(W) * size_t(C), 0);
    for (int64_t o = 0; o < h; ++o) {
        const int64_t first = o * H / h, last = std::min(H - 1, ((o + 1) * H - 1) / h);
        for (int64_t i = first; i <= last; ++i) {
            const int64_t weight = area_weight(i, o, H, h);
            if (weight == 0) continue;
            const uint8_t* row = image.pixels.data() + size_t(i * W * C);
            int64_t* out = partial.data() + size_t(o * W * C);
            for (int64_t k = 0; k < W * C; ++k) out[k] += weight * row[k];
        }
    }
    std::vector<uint8_t> resized(size_t(h) * size_t(w) * size_t(C));
    const int64_t area = H * W;
    for (int64_t o = 0; o < h; ++o) {
        for (int64_t p = 0; p < w; ++p) {
            const int64_t first = p * W / w, last = std::min(W - 1, ((p + 1) * W - 1) / w);
            for (int64_t c = 0; c < C; ++c) {
                int64_t total = 0;
                for (int64_t j = first; j <= last; ++j)
                    total += area_weight(j, p, W, w) * partial[size_t((o * W + j) * C + c)];
                resized[size_t((o * w + p) * C + c)] = uint8_t((2 * total + area) / (2 * area));
            }
        }
    }
    image.pixels.swap(resized);
    image.h = h;
    image.w = w;
}

}  // namespace ttfs_cli
