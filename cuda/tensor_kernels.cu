// fill and convert (cuda/tensor_kernels.h): grid-stride elementwise loops.
#include <cuda_fp16.h>

#include "cuda/check.h"
#include "cuda/launch.cuh"
#include "cuda/runtime.h"
#include "cuda/tensor_kernels.h"

namespace mg::cuda {

namespace {

// Every element type through one arithmetic type (double holds all of them exactly,
// except int64 above 2^53, which no tensor here holds).
template <class T> __device__ double load_as_double(const T* p, size_t i) { return static_cast<double>(p[i]); }
template <> __device__ double load_as_double<__half>(const __half* p, size_t i) { return __half2float(p[i]); }
template <class T> __device__ void store_from_double(T* p, size_t i, double v) { p[i] = static_cast<T>(v); }
template <> __device__ void store_from_double<__half>(__half* p, size_t i, double v) {
  p[i] = __float2half_rn(static_cast<float>(v));  // float first, then half: as float_to_half(float(v))
}

template <class T>
__global__ void fill_kernel(T* dst, size_t n, double value) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    store_from_double(dst, i, value);
}

template <class S, class D>
__global__ void convert_kernel(const S* src, D* dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    store_from_double(dst, i, load_as_double(src, i));
}

template <class T>
__global__ void accumulate_kernel(T* dst, const T* src, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

// Calls f(T{}) with T the CUDA element type of `t`.
template <class F>
void with_type(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::F16: return f(__half{});
    case DType::U8: return f(uint8_t{});
    case DType::I32: return f(int32_t{});
    case DType::I64: return f(int64_t{});
  }
}

}  // namespace

void fill(DType dtype, void* dst, size_t n, double value) {
  if (n == 0) return;
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<grid_for(n), kBlock, 0, compute_stream()>>>(static_cast<T*>(dst), n, value);
  });
  MG_CUDA_CHECK_LAUNCH("fill");
}

void convert(DType src_type, const void* src, DType dst_type, void* dst, size_t n) {
  if (n == 0) return;
  with_type(src_type, [&](auto s) {
    with_type(dst_type, [&](auto d) {
      using S = decltype(s);
      using D = decltype(d);
      convert_kernel<S, D><<<grid_for(n), kBlock, 0, compute_stream()>>>(static_cast<const S*>(src),
                                                                         static_cast<D*>(dst), n);
    });
  });
  MG_CUDA_CHECK_LAUNCH("convert");
}

template <class T>
void accumulate(T* dst, const T* src, size_t n) {
  if (n == 0) return;
  accumulate_kernel<T><<<grid_for(n), kBlock, 0, compute_stream()>>>(dst, src, n);
  MG_CUDA_CHECK_LAUNCH("accumulate");
}
template void accumulate<float>(float*, const float*, size_t);
template void accumulate<double>(double*, const double*, size_t);

}  // namespace mg::cuda
