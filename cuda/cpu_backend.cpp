// PLACEHOLDER: replaced by the real CPU backend.
#include "backend.hpp"
namespace ttfs {
ttfs_status make_cpu_backend(std::shared_ptr<const Model>, ttfs_engine, int32_t,
                             std::unique_ptr<Backend>&, std::string& error) {
    error = "CPU backend not implemented yet";
    return TTFS_ERR_INTERNAL;
}
}  // namespace ttfs
