// cli_npy.hpp — the .npy header reader that ttfs-infer's image and label readers share
// (cli_inputs.cpp): version, header length, dtype, order and shape, each checked. Not part of
// libttfs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli_inputs.hpp"
#include "cli_stream.hpp"

namespace ttfs_cli {

// A .npy array's header.
struct NpyHeader {
    std::string descr;            // the dtype as written, e.g. "<f4"
    bool known_type = false;      // descr is a byte order and one of Element's types
    Element element = Element::U8;
    bool big_endian = false;
    bool fortran_order = false;   // anything but "False" counts as Fortran order
    std::vector<uint64_t> dims;
    uint64_t data_offset = 0;     // magic, version, length and header: where the values start

    // The shape as numpy prints it: "(2, 28, 28)", "(5,)".
    std::string shape_text() const;
};

// Reads a .npy header from `stream`, whose 6-byte magic has just been read. `file` names the
// file in messages ("images file 'x.npy'"). Refuses format versions other than 1-3, headers over
// 1 MiB, a missing descr/fortran_order/shape, and dimensions beyond 64 bits; the dtype, order and
// shape are the caller's to judge.
NpyHeader read_npy_header(Stream& stream, const std::string& file);

}  // namespace ttfs_cli
