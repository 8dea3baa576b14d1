// cli_stream.hpp — the byte stream ttfs-infer reads every input through: a file, a gzipped
// file (recognised by its first bytes, through the system zlib when the build found it) or
// standard input, read front to back with exact-size reads whose errors name the file, the
// byte range and what was being read. Header only (images, labels and --info use it); not
// part of libttfs.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <sys/stat.h>   // fstat: a directory opens like a file but cannot be read
#include <sys/types.h>  // off_t for fseeko/ftello: images files may exceed 2 GiB

#ifdef TTFS_HAVE_ZLIB
#include <zlib.h>
#endif

#include "cli_common.hpp"

namespace ttfs_cli {

class Stream {
public:
    // "-" is standard input. role names the file in messages ("images", "labels").
    Stream(const std::string& path, const char* role) : path_(path), role_(role) {
        stdin_ = path == "-";
        if (stdin_) {
            file_ = stdin;
        } else {
            file_ = std::fopen(path.c_str(), "rb");
            if (!file_) fail(format("cannot open %s file ", role) + quoted(path) + ": " + std::strerror(errno));
            struct stat status;
            if (fstat(fileno(file_), &status) == 0) {
                if (S_ISDIR(status.st_mode))
                    fail(format("%s file ", role) + quoted(path) + " is a directory; expected a file");
                if (S_ISREG(status.st_mode)) {
                    size_known_ = true;
                    size_ = uint64_t(status.st_size);
                }
            }
        }
        // gzip is recognised by its first two bytes, whatever the name.
        raw_fill();
        if (raw_end_ - raw_begin_ >= 2 && raw_[raw_begin_] == 0x1f && raw_[raw_begin_ + 1] == 0x8b) {
#ifdef TTFS_HAVE_ZLIB
            gzipped_ = true;
            size_known_ = false;
            std::memset(&zs_, 0, sizeof zs_);
            if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) fail("cannot start the gzip decoder");
            zs_live_ = true;
#else
            fail(format("%s file ", role) + name() +
                 " is gzipped, but this ttfs-infer was built without zlib; gunzip it first");
#endif
        }
    }
    ~Stream() {
#ifdef TTFS_HAVE_ZLIB
        if (zs_live_) inflateEnd(&zs_);
#endif
        if (file_ && !stdin_) std::fclose(file_);
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    std::string name() const { return stdin_ ? std::string("standard input") : quoted(path_); }
    bool gzipped() const { return gzipped_; }
    // The size of the data when the system knows it: plain regular files only.
    bool size_known() const { return size_known_; }
    uint64_t size() const { return size_; }

    // Up to `bytes` bytes; fewer only at the end of the data.
    size_t read_some(void* out, size_t bytes) {
        auto* dest = static_cast<uint8_t*>(out);
        size_t done = 0;
        while (done < bytes && !peeked_.empty()) {
            dest[done++] = peeked_.back();
            peeked_.pop_back();
        }
        done += gzipped_ ? inflate_into(dest + done, bytes - done) : raw_into(dest + done, bytes - done);
        position_ += done;
        return done;
    }

    // Exactly `bytes` bytes, or an error that names what was being read.
    void read_exact(void* out, size_t bytes, const std::string& what) {
        const uint64_t start = position_;
        if (read_some(out, bytes) != bytes)
            fail(format("%s file ", role_) + name() +
                 format(" is truncated: it ends after %" PRIu64 " bytes, inside ", position_) + what +
                 format(" (bytes %" PRIu64 "..%" PRIu64 ")", start, start + bytes - 1));
    }

    // Moves forward without keeping the bytes (a seek where the file allows it).
    void skip(uint64_t bytes, const std::string& what) {
        if (bytes == 0) return;
        if (!gzipped_ && !stdin_ && peeked_.empty() && size_known_) {
            const uint64_t raw_position = position_ + bytes;
            if (raw_position <= size_ && fseeko(file_, off_t(raw_position), SEEK_SET) == 0) {
                raw_begin_ = raw_end_ = 0;
                position_ = raw_position;
                return;
            }
        }
        std::vector<uint8_t> sink(size_t(std::min<uint64_t>(bytes, 1 << 20)));
        uint64_t left = bytes;
        while (left > 0) {
            size_t chunk = size_t(std::min<uint64_t>(left, sink.size()));
            read_exact(sink.data(), chunk, what);
            left -= chunk;
        }
    }

    // Gives back bytes just read, so the next read returns them first.
    void unread(const uint8_t* bytes, size_t count) {
        for (size_t i = count; i > 0; --i) peeked_.push_back(bytes[i - 1]);
        position_ -= count;
    }

    // True when nothing is left (reads one byte to find out on streams of unknown size).
    bool at_end() {
        if (size_known_ && !gzipped_) return position_ >= size_;
        uint8_t byte;
        if (read_some(&byte, 1) == 0) return true;
        unread(&byte, 1);
        return false;
    }

    // The whole rest of the data, refusing more than `limit` bytes.
    std::vector<uint8_t> read_rest(uint64_t limit) {
        std::vector<uint8_t> data;
        std::vector<uint8_t> chunk(1 << 16);
        for (;;) {
            size_t got = read_some(chunk.data(), chunk.size());
            if (got == 0) break;
            data.insert(data.end(), chunk.begin(), chunk.begin() + std::ptrdiff_t(got));
            if (data.size() > limit)
                fail(format("%s file ", role_) + name() + format(" is larger than %" PRIu64 " bytes", limit));
        }
        return data;
    }

private:
    // Refills the raw buffer once it is used up; false at the end of the file.
    bool raw_fill() {
        if (raw_begin_ < raw_end_) return true;
        raw_begin_ = 0;
        raw_end_ = std::fread(raw_, 1, sizeof raw_, file_);
        if (raw_end_ == 0 && std::ferror(file_))
            fail(format("cannot read %s file ", role_) + name() + ": " + std::strerror(errno));
        return raw_end_ > 0;
    }

    size_t raw_into(uint8_t* out, size_t bytes) {
        size_t done = 0;
        // Large reads go straight to the caller's buffer once the buffered bytes are used.
        while (done < bytes) {
            if (raw_begin_ == raw_end_ && bytes - done >= sizeof raw_) {
                size_t got = std::fread(out + done, 1, bytes - done, file_);
                if (got == 0 && std::ferror(file_))
                    fail(format("cannot read %s file ", role_) + name() + ": " + std::strerror(errno));
                if (got == 0) break;
                done += got;
                continue;
            }
            if (!raw_fill()) break;
            size_t take = std::min(bytes - done, raw_end_ - raw_begin_);
            std::memcpy(out + done, raw_ + raw_begin_, take);
            raw_begin_ += take;
            done += take;
        }
        return done;
    }

    size_t inflate_into(uint8_t* out, size_t bytes) {
#ifdef TTFS_HAVE_ZLIB
        size_t done = 0;
        while (done < bytes && !gz_finished_) {
            if (zs_.avail_in == 0) {
                if (!raw_fill())
                    fail(format("%s file ", role_) + name() +
                         format(" is truncated: its gzip data ends early (after %" PRIu64
                                " uncompressed bytes)", position_ + done));
                // The buffered bytes now belong to zlib until it has used them all.
                zs_.next_in = raw_ + raw_begin_;
                zs_.avail_in = unsigned(raw_end_ - raw_begin_);
                raw_begin_ = raw_end_;
            }
            zs_.next_out = out + done;
            zs_.avail_out = unsigned(std::min<size_t>(bytes - done, 1u << 30));
            const unsigned before = zs_.avail_out;
            int code = inflate(&zs_, Z_NO_FLUSH);
            done += before - zs_.avail_out;
            if (code == Z_STREAM_END) {
                // Another gzip member may follow (concatenated .gz files are one stream).
                if (zs_.avail_in == 0 && !raw_fill()) {
                    gz_finished_ = true;
                } else {
                    inflateReset(&zs_);
                }
            } else if (code != Z_OK && code != Z_BUF_ERROR) {
                fail(format("%s file ", role_) + name() + ": broken gzip data (" +
                     (zs_.msg ? zs_.msg : "zlib error") + ")");
            }
        }
        return done;
#else
        (void)out;
        (void)bytes;
        return 0;
#endif
    }

    std::string path_;
    const char* role_;
    bool stdin_ = false;
    std::FILE* file_ = nullptr;
    uint8_t raw_[1 << 16];
    size_t raw_begin_ = 0, raw_end_ = 0;
#ifdef TTFS_HAVE_ZLIB
    z_stream zs_;
    bool zs_live_ = false;
#endif
    bool gzipped_ = false;
    bool gz_finished_ = false;
    bool size_known_ = false;
    uint64_t size_ = 0;
    uint64_t position_ = 0;
    std::vector<uint8_t> peeked_;  // bytes handed back by at_end(), last one first
};

inline uint32_t big_endian_u32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline uint32_t little_endian_u32(const uint8_t* p) {
    return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | uint32_t(p[0]);
}

}  // namespace ttfs_cli
