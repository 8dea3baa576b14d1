// What every CPU kernel file shares: the instruction-set variants (TTFS_VECTOR_CLONES,
// TTFS_PORTABLE_CLONES, TTFS_AVX512), the lane width of the vectorised loops, the always-inline
// marker for helpers that must land in every variant, and a few bit-level helpers.
//
// Variants across translation units: a function marked TTFS_VECTOR_CLONES or
// TTFS_PORTABLE_CLONES is compiled once per instruction set in its own .cpp file and resolved
// when the library is loaded (an ifunc); callers in other files call it by its plain name.
// Helpers that a variant calls in its innermost loops are TTFS_INLINE and live in headers, so
// that each variant gets its own inlined copy (without link-time optimisation nothing is
// inlined across files). TTFS_NO_VECTOR_CLONES (CMake option, for ThreadSanitizer, whose
// runtime is not ready when ifunc resolvers run) compiles the portable code only.

#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#  include <immintrin.h>
#endif

// The hot loops run across the output channels of one position: independent neurons, so SIMD
// lanes change no neuron's order of operations and every instruction set gives the same bits.
// GCC and Clang compile the functions marked TTFS_VECTOR_CLONES once per instruction set and
// pick one when the library is loaded (ifunc), so a portable build uses AVX-512 or AVX2 where
// the CPU has it and still runs on any x86-64. The scatter kernel has a hand-picked AVX-512
// variant (TTFS_AVX512, chosen at run time) because its portable loop schedules worse there.
// -ffp-contract=off holds in every variant: no fused multiply-add anywhere.
#if defined(__clang__)
#  if __clang_major__ >= 14
#    define TTFS_CLONES_SUPPORTED 1
#  endif
#elif defined(__GNUC__)
#  define TTFS_CLONES_SUPPORTED 1
#endif
#if defined(TTFS_CLONES_SUPPORTED) && defined(__x86_64__) && defined(__ELF__) && \
    !defined(TTFS_NO_VECTOR_CLONES)
#  define TTFS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#  define TTFS_PORTABLE_CLONES __attribute__((target_clones("avx2", "default")))
#  define TTFS_AVX512 __attribute__((target("avx512f")))
#  define TTFS_HAVE_AVX512_VARIANT 1
#else
#  define TTFS_VECTOR_CLONES
#  define TTFS_PORTABLE_CLONES
#  define TTFS_HAVE_AVX512_VARIANT 0
#endif

#if defined(__GNUC__)
#  define TTFS_INLINE inline __attribute__((always_inline))  // so that it lands in every clone
#else
#  define TTFS_INLINE inline
#endif

namespace ttfs {
namespace cpu {

constexpr int32_t kNever = -1;  // first_spike_time of a neuron that has not fired

// Synaptic sums and (padded copies of) weights hold a position's output channels in chunks of
// kLanes floats, the tail padded with zeros, so the innermost loop has a fixed length the
// compiler turns into whole vector registers (one AVX-512, two AVX2 or four SSE registers).
constexpr int32_t kLanes = 16;

// The most neighbouring output positions window_sums() computes together; the activation grid
// has that many positions' worth of zeros after its end, for the last block's reads.
constexpr int32_t kMostBlock = 8;

inline int32_t padded_channels(int32_t channels) { return (channels + kLanes - 1) / kLanes * kLanes; }

// kLanes floats as one value (GCC/Clang vector extension): lane-wise IEEE operations. One
// AVX-512 register; two AVX2 or four SSE registers in the other clones.
typedef float Chunk __attribute__((vector_size(kLanes * sizeof(float))));

inline uint32_t float_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

inline float bits_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// Whether the hand-written AVX-512 variants run (certified_kernels.cpp).
bool use_avx512();

}  // namespace cpu
}  // namespace ttfs
