# The CPU backend's sources, one unit per file (docs/ARCHITECTURE.md), for every build that
# compiles the library: the top-level CMakeLists.txt and the CUDA emulator's
# (tests/gpu/emulator). Paths are relative to this directory.
set(TTFS_CPU_SOURCES)
foreach(unit cpu_backend plan exact_kernels certified_kernels certified_kernels_avx512
             stepped_engine analytic_engine pool_relay certified_layer outputs)
  list(APPEND TTFS_CPU_SOURCES ${CMAKE_CURRENT_LIST_DIR}/${unit}.cpp)
endforeach()
