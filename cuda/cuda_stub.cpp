// Built instead of cuda_backend.cu when CUDA is not compiled in.
#include "backend.hpp"

namespace ttfs {

ttfs_status make_cuda_backend(std::shared_ptr<const Model>, ttfs_engine, int32_t,
                              const std::vector<int32_t>&, std::unique_ptr<Backend>&,
                              std::string& error) {
    error = "the CUDA backend is not compiled into this libttfs (rebuild with nvcc present, or "
            "configure with -DTTFS_CUDA=ON); use backend 'cpu' or 'auto'";
    return TTFS_ERR_BACKEND_UNAVAILABLE;
}

ttfs_status cuda_backend_requirements(const Model&, ttfs_engine, int32_t, const std::vector<int32_t>&,
                                      Requirements&, std::string& error) {
    error = "the CUDA backend is not compiled into this libttfs; use backend 'cpu' or 'auto'";
    return TTFS_ERR_BACKEND_UNAVAILABLE;
}

int32_t cuda_device_count() { return 0; }
bool cuda_compiled() { return false; }
const char* cuda_build_description() { return "CUDA not compiled in"; }

}  // namespace ttfs
