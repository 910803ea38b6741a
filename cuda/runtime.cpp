// The device, its compute stream and the stream-ordered caching allocator (cuda/runtime.h).
//
// Memory comes from a CUDA memory pool (cudaMallocAsync/cudaFreeAsync on the compute stream)
// whose release threshold is "never": freed blocks stay reserved and are handed out again by
// the driver's pool without a cudaMalloc, so a steady training step allocates nothing from
// the driver after the first one. A free is ordered after the kernels already queued on the
// stream that use the block, so it is safe to free a buffer right after launching its last
// reader.
#include <cuda_runtime.h>

#include <cstdio>

#include "autograd/error.h"
#include "cuda/check.h"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

struct Context {
  bool ok = false;
  std::string reason;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  int device = 0;
};

Context& context() {
  static Context ctx = [] {
    Context c;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      c.reason = e != cudaSuccess ? fmt::format("no usable CUDA device ({})", cudaGetErrorString(e))
                                  : "no CUDA device found";
      cudaGetLastError();  // clear the sticky error of the failed query
      return c;
    }
    MG_CUDA_CHECK(cudaGetDevice(&c.device), "select the device");
    MG_CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking), "create the stream");
    MG_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&c.pool, c.device), "get the memory pool");
    uint64_t keep_everything = UINT64_MAX;
    MG_CUDA_CHECK(cudaMemPoolSetAttribute(c.pool, cudaMemPoolAttrReleaseThreshold, &keep_everything),
                  "set the pool's release threshold");
    c.ok = true;
    return c;
  }();
  return ctx;
}

Context& ready(const char* where) {
  Context& c = context();
  MG_CHECK(c.ok, "[{}] the GPU cannot be used: {}", where, c.reason);
  return c;
}

uint64_t pool_attr(cudaMemPoolAttr attr) {
  uint64_t v = 0;
  MG_CUDA_CHECK(cudaMemPoolGetAttribute(ready("cuda memory").pool, attr, &v), "read pool statistics");
  return v;
}

}  // namespace

bool available() { return context().ok; }
std::string unavailable_reason() { return context().ok ? "" : context().reason; }

std::string device_description() {
  Context& c = ready("cuda device");
  cudaDeviceProp p{};
  MG_CUDA_CHECK(cudaGetDeviceProperties(&p, c.device), "read device properties");
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return fmt::format("{}, {} SMs, {:.1f} GiB, compute {}.{}, driver {}.{}, runtime {}.{}", p.name,
                     p.multiProcessorCount, p.totalGlobalMem / double(1ull << 30), p.major, p.minor,
                     driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
}

void require(const char* where) { ready(where); }

void* stream() { return ready("cuda stream").stream; }

void* device_alloc(size_t bytes) {
  Context& c = ready("cuda alloc");
  void* p = nullptr;
  const size_t rounded = (bytes + 255) / 256 * 256;
  cudaError_t e = cudaMallocFromPoolAsync(&p, rounded == 0 ? 256 : rounded, c.pool, c.stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(fmt::format(
        "[cuda alloc] out of GPU memory allocating {:.1f} MiB ({}): {:.1f} MiB in use by magellan, "
        "{:.1f} MiB free of {:.1f} MiB; lower training.batch_size or model size, or enable "
        "training.grad_checkpointing",
        bytes / 1048576.0, cudaGetErrorString(e), pool_attr(cudaMemPoolAttrUsedMemCurrent) / 1048576.0,
        free_b / 1048576.0, total_b / 1048576.0));
  }
  return p;
}

void device_free(void* ptr) noexcept {
  if (!ptr) return;
  const cudaError_t e = cudaFreeAsync(ptr, context().stream);
  // Called from destructors: never throws. At process exit the runtime may already be gone
  // (cudaErrorCudartUnloading): the driver frees everything then anyway.
  if (e != cudaSuccess && e != cudaErrorCudartUnloading)
    std::fprintf(stderr, "[cuda] freeing device memory failed: %s\n", cudaGetErrorString(e));
}

MemoryStats memory_stats() {
  MemoryStats s;
  s.allocated = pool_attr(cudaMemPoolAttrUsedMemCurrent);
  s.peak_allocated = pool_attr(cudaMemPoolAttrUsedMemHigh);
  s.reserved = pool_attr(cudaMemPoolAttrReservedMemCurrent);
  s.peak_reserved = pool_attr(cudaMemPoolAttrReservedMemHigh);
  return s;
}

void reset_peak_memory() {
  Context& c = ready("cuda memory");
  uint64_t zero = 0;
  MG_CUDA_CHECK(cudaMemPoolSetAttribute(c.pool, cudaMemPoolAttrUsedMemHigh, &zero), "reset peak");
  MG_CUDA_CHECK(cudaMemPoolSetAttribute(c.pool, cudaMemPoolAttrReservedMemHigh, &zero), "reset peak");
}

void empty_cache() {
  Context& c = ready("cuda memory");
  MG_CUDA_CHECK(cudaStreamSynchronize(c.stream), "synchronize before trimming the pool");
  MG_CUDA_CHECK(cudaMemPoolTrimTo(c.pool, 0), "trim the memory pool");
}

void copy_host_to_device(void* dst, const void* src, size_t bytes) {
  Context& c = ready("cuda copy");
  if (bytes == 0) return;
  MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c.stream), "copy to the GPU");
  MG_CUDA_CHECK(cudaStreamSynchronize(c.stream), "copy to the GPU");
}

void copy_device_to_host(void* dst, const void* src, size_t bytes) {
  Context& c = ready("cuda copy");
  if (bytes == 0) return;
  MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c.stream), "copy from the GPU");
  MG_CUDA_CHECK(cudaStreamSynchronize(c.stream), "copy from the GPU (or an earlier kernel failed)");
}

void copy_device_to_device(void* dst, const void* src, size_t bytes) {
  Context& c = ready("cuda copy");
  if (bytes == 0) return;
  MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c.stream), "copy on the GPU");
}

void memset_zero(void* dst, size_t bytes) {
  Context& c = ready("cuda memset");
  if (bytes == 0) return;
  MG_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, c.stream), "zero device memory");
}

void synchronize() {
  MG_CUDA_CHECK(cudaStreamSynchronize(ready("cuda synchronize").stream),
                "a kernel queued earlier failed");
}

}  // namespace mg::cuda
