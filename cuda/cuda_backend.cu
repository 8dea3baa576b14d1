// PLACEHOLDER: replaced by the real CUDA backend.
#include "backend.hpp"
namespace ttfs {
ttfs_status make_cuda_backend(std::shared_ptr<const Model>, ttfs_engine, int32_t,
                              std::unique_ptr<Backend>&, std::string& error) {
    error = "CUDA backend not implemented yet";
    return TTFS_ERR_BACKEND_UNAVAILABLE;
}
int32_t cuda_device_count() { return 0; }
bool cuda_compiled() { return true; }
const char* cuda_build_description() { return "CUDA placeholder"; }
}  // namespace ttfs
