// cli_inputs.hpp — what ttfs-infer runs on: IMAGES as a source of batches in the model's input
// shape (PNG/JPEG files or a directory of them, IDX plain or gzipped, .npy, raw .bin; told
// apart by their first bytes) and the optional labels (IDX1 or a 1-D integer .npy).
// cli_inputs.cpp reads and checks them; cli_images.cpp decodes PNG/JPEG. Not part of libttfs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "cli_stream.hpp"

namespace ttfs_cli {

// What the images are handed to the library as: bytes (divided by the model's input divisor
// inside the library) or floats already scaled.
enum class Pixels { U8, F32 };

// A set of images of the model's input shape, read front to back in batches. Each source
// converts what it stores to uint8 or float32 and checks the values on the way.
class ImageSource {
public:
    virtual ~ImageSource() = default;
    uint64_t count() const { return count_; }
    Pixels pixels() const { return pixels_; }
    // True for inputs that are one image by nature (a .bin, one PNG/JPEG, one .npy image):
    // they print the single-image report without --index.
    bool single() const { return single_; }
    virtual std::string description() const = 0;
    // The file an image came from, for per-image rows ("" for images inside one array file).
    virtual std::string file_of(uint64_t) const { return ""; }
    virtual bool has_files() const { return false; }
    // Moves past the next n images.
    virtual void skip(uint64_t n) = 0;
    // The next n images into u8 or f32 (by pixels()), n * h * w * c values.
    virtual void read(int32_t n, std::vector<uint8_t>& u8, std::vector<float>& f32) = 0;
    // Called after the last image of a streamed set: complains about trailing data.
    virtual void check_end() {}

protected:
    uint64_t count_ = 0;
    Pixels pixels_ = Pixels::U8;
    bool single_ = false;
};

// Element types of array files.
enum class Element { U8, I8, I16, U16, I32, U32, I64, U64, F32, F64 };

inline bool is_float(Element e) { return e == Element::F32 || e == Element::F64; }

inline const char* element_name(Element e) {
    switch (e) {
        case Element::U8: return "uint8";
        case Element::I8: return "int8";
        case Element::I16: return "int16";
        case Element::U16: return "uint16";
        case Element::I32: return "int32";
        case Element::U32: return "uint32";
        case Element::I64: return "int64";
        case Element::U64: return "uint64";
        case Element::F32: return "float32";
        default: return "float64";
    }
}

inline size_t element_size(Element e) {
    switch (e) {
        case Element::U8: case Element::I8: return 1;
        case Element::I16: case Element::U16: return 2;
        case Element::I32: case Element::U32: case Element::F32: return 4;
        default: return 8;
    }
}

// Opens IMAGES: a directory, an image, or an array file; by the first bytes, a .bin by name.
std::unique_ptr<ImageSource> open_images(const Options& options, const int32_t model_shape[3]);

// Labels read alongside the images: IDX1 uint8 (plain or gzipped) or a 1-D integer .npy.
class LabelSource {
public:
    LabelSource(const std::string& path, uint64_t image_count, const std::string& images_shown);

    void skip(uint64_t n) { stream_->skip(n * element_size(element_), "the labels"); next_ += n; }

    // The next n labels; each must name a class of the model.
    void read(int32_t n, int32_t classes, std::vector<int32_t>& out);

private:
    void open_npy();

    std::unique_ptr<Stream> stream_;
    Element element_ = Element::U8;
    bool big_endian_ = false;
    uint64_t count_ = 0, next_ = 0;
    std::vector<uint8_t> raw_;
};

}  // namespace ttfs_cli
