#pragma once
// The CUDA runtime as the rest of magellan sees it: plain C++, no CUDA header. Everything
// under cuda/ is compiled only with MAGELLAN_CUDA; without it, cuda/unavailable.cpp defines
// these functions and available() is false, so a CPU-only build links and every attempt to
// use the GPU fails with one clear line instead of a link error.
//
// One device (the current one, device 0 unless CUDA_VISIBLE_DEVICES says otherwise) and one
// compute stream: every kernel launch and cuBLAS call of magellan goes to stream(), in order,
// so results are ready for the next launch without synchronizing. Host<->device copies
// synchronize (they are for loading, saving and tests, not for the step's inner loop).
#include <cstddef>
#include <cstdint>
#include <string>

namespace mg::cuda {

// True when magellan was built with CUDA and a usable GPU is present (checked once).
bool available();
// Why available() is false ("built without CUDA (MAGELLAN_CUDA=OFF)", "no CUDA device: ...").
std::string unavailable_reason();
// "NVIDIA H100 80GB HBM3, 132 SMs, 79.1 GiB, driver 13.0, runtime 13.0".
std::string device_description();

// Throws mg::Error naming `where` with unavailable_reason() when the GPU cannot be used.
void require(const char* where);

// --- memory: a stream-ordered caching pool (no cudaMalloc/cudaFree per step; runtime.cpp) ---
void* device_alloc(size_t bytes);       // 256-byte aligned; never null (throws when out of memory)
void device_free(void* ptr) noexcept;   // back to the cache (stream-ordered: safe after queued kernels)
struct MemoryStats {
  size_t allocated = 0;       // bytes in live blocks
  size_t peak_allocated = 0;  // high-water mark of `allocated` since the last reset_peak()
  size_t reserved = 0;        // bytes held from the driver (live + cached)
  size_t peak_reserved = 0;
};
MemoryStats memory_stats();
void reset_peak_memory();
void empty_cache();  // returns cached, unused blocks to the driver

// --- copies and fills (on stream(); the host-side ones synchronize) ---------------------
void copy_host_to_device(void* dst, const void* src, size_t bytes);
void copy_device_to_host(void* dst, const void* src, size_t bytes);
void copy_device_to_device(void* dst, const void* src, size_t bytes);  // asynchronous
void memset_zero(void* dst, size_t bytes);                              // asynchronous
void synchronize();  // waits for stream(); rethrows an asynchronous kernel error with context

// The compute stream as an opaque handle (a cudaStream_t inside cuda/).
void* stream();

}  // namespace mg::cuda
