// PLACEHOLDER: replaced by the real reader.
#include "model.hpp"
namespace ttfs {
ttfs_status read_model(const uint8_t*, size_t, Model&, std::string& error) {
    error = "format reader not implemented yet";
    return TTFS_ERR_INTERNAL;
}
}  // namespace ttfs
