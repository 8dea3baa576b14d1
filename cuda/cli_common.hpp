// cli_common.hpp — what every unit of ttfs-infer shares: its exit codes and defaults, the one
// error type (CliError: every failure becomes one "ttfs-infer: error: ..." line in main(), in
// ttfs_infer.cpp), and small string helpers. Header only; not part of libttfs.
#pragma once

#include <cctype>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "ttfs.h"

namespace ttfs_cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int32_t kDefaultBatch = 256;
constexpr int32_t kDefaultTopK = 3;

// Every failure ends up here and becomes one "ttfs-infer: error: ..." line in main().
struct CliError : std::runtime_error {
    int exit_code;
    CliError(const std::string& message, int code) : std::runtime_error(message), exit_code(code) {}
};

[[noreturn]] inline void fail(const std::string& message) { throw CliError(message, kExitFailure); }
[[noreturn]] inline void usage_error(const std::string& message) {
    throw CliError(message + " (see ttfs-infer --help)", kExitUsage);
}

// ttfs_last_error() is only valid until the next ttfs_ call, so copy it before asking for the
// status name.
[[noreturn]] inline void library_failure(const std::string& what, ttfs_status status) {
    std::string detail = ttfs_last_error();
    std::string name = ttfs_status_name(status);
    if (detail.empty()) detail = "(no message)";
    fail(what + ": " + name + ": " + detail);
}

inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

inline std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* fmt, ...) {
    va_list args, measure;
    va_start(args, fmt);
    va_copy(measure, args);
    int length = std::vsnprintf(nullptr, 0, fmt, measure);
    va_end(measure);
    std::string text(length > 0 ? size_t(length) : 0, '\0');
    if (length > 0) std::vsnprintf(&text[0], text.size() + 1, fmt, args);
    va_end(args);
    return text;
}

inline std::string shape_text(int64_t h, int64_t w, int64_t c) {
    return format("%" PRId64 "x%" PRId64 "x%" PRId64, h, w, c);
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline std::string lower(std::string s) {
    for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

// a * b, or false when it does not fit in 64 bits (file sizes come from hostile headers).
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
    out = a * b;
    return true;
}

}  // namespace ttfs_cli
