// cli_npy.cpp — see cli_npy.hpp.

#include "cli_npy.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "cli_common.hpp"

namespace ttfs_cli {

namespace {

// The element type of a .npy dtype's type code (the descr without its byte-order character:
// "u1", "f4", ...); false for a type no reader here accepts.
bool npy_element(const std::string& type, Element& out) {
    static const std::pair<const char*, Element> kTypes[] = {
        {"u1", Element::U8},  {"i1", Element::I8},  {"i2", Element::I16}, {"u2", Element::U16},
        {"i4", Element::I32}, {"u4", Element::U32}, {"i8", Element::I64}, {"u8", Element::U64},
        {"f4", Element::F32}, {"f8", Element::F64}};
    for (const auto& [code, element] : kTypes)
        if (type == code) {
            out = element;
            return true;
        }
    return false;
}

// The text of one value of the header's Python dict literal.
std::string npy_field(const std::string& header, const std::string& key, const std::string& file) {
    const std::string quoted_key = "'" + key + "'";
    size_t at = header.find(quoted_key);
    if (at == std::string::npos) fail(file + ": the .npy header has no " + quoted_key);
    at = header.find(':', at);
    if (at == std::string::npos) fail(file + ": malformed .npy header");
    ++at;
    while (at < header.size() && header[at] == ' ') ++at;
    size_t end = at;
    if (at < header.size() && header[at] == '\'') {
        end = header.find('\'', at + 1);
        if (end == std::string::npos) fail(file + ": malformed .npy header");
        return header.substr(at + 1, end - at - 1);
    }
    if (at < header.size() && header[at] == '(') {
        end = header.find(')', at);
        if (end == std::string::npos) fail(file + ": malformed .npy header");
        return header.substr(at, end - at + 1);
    }
    while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
    return header.substr(at, end - at);
}

}  // namespace

std::string NpyHeader::shape_text() const {
    std::string text = "(";
    for (size_t d = 0; d < dims.size(); ++d) text += (d ? ", " : "") + std::to_string(dims[d]);
    return text + (dims.size() == 1 ? ",)" : ")");
}

NpyHeader read_npy_header(Stream& stream, const std::string& file) {
    NpyHeader npy;
    uint8_t version[2];
    stream.read_exact(version, 2, "the .npy header");
    uint32_t header_length = 0;
    if (version[0] == 1) {
        uint8_t b[2];
        stream.read_exact(b, 2, "the .npy header");
        header_length = uint32_t(b[0]) | (uint32_t(b[1]) << 8);
        npy.data_offset = 10;
    } else if (version[0] == 2 || version[0] == 3) {
        uint8_t b[4];
        stream.read_exact(b, 4, "the .npy header");
        header_length = little_endian_u32(b);
        npy.data_offset = 12;
    } else {
        fail(file + format(" is .npy format version %u; expected 1, 2 or 3", version[0]));
    }
    if (header_length > (1u << 20)) fail(file + " has an oversized .npy header");
    std::string header(header_length, '\0');
    stream.read_exact(&header[0], header_length, "the .npy header");
    npy.data_offset += header_length;
    npy.descr = npy_field(header, "descr", file);
    npy.fortran_order = npy_field(header, "fortran_order", file) != "False";
    const std::string shape = npy_field(header, "shape", file);
    const std::string& descr = npy.descr;
    npy.known_type = descr.size() >= 3 && descr[0] != '\0' && std::strchr("<>|=", descr[0]) != nullptr &&
                     npy_element(descr.substr(1), npy.element);
    npy.big_endian = !descr.empty() && descr[0] == '>';
    // shape: "(a, b, c)", with a trailing comma for one dimension.
    for (size_t i = 0; i < shape.size();) {
        if (std::isdigit(static_cast<unsigned char>(shape[i]))) {
            char* end = nullptr;
            errno = 0;
            const unsigned long long value = std::strtoull(shape.c_str() + i, &end, 10);
            if (errno == ERANGE) fail(file + ": a .npy dimension is too large");
            npy.dims.push_back(value);
            i = size_t(end - shape.c_str());
        } else {
            ++i;
        }
    }
    return npy;
}

}  // namespace ttfs_cli
