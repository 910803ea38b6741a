// cuda/runtime.h for a build without CUDA (MAGELLAN_CUDA=OFF): available() is false and
// every other entry point fails with one line saying how to get a CUDA build. No tensor can
// reach the GPU in such a build (allocation is the first thing that fails), so the kernel
// entry points of cuda/*.h are never called; only the runtime needs defining here.
#include "autograd/error.h"
#include "cuda/gemm.h"
#include "cuda/optimizer_kernels.h"
#include "cuda/runtime.h"
#include "cuda/selective_scan.h"
#include "cuda/conv1d.h"
#include "cuda/dropout.h"
#include "cuda/elementwise.h"
#include "cuda/embedding.h"
#include "cuda/loss.h"
#include "cuda/norm.h"
#include "cuda/reduce.h"
#include "cuda/shape.h"
#include "cuda/tensor_kernels.h"

namespace mg::cuda {

namespace {
[[noreturn]] void fail(const char* where) {
  throw Error(fmt::format("[{}] {}", where, unavailable_reason()));
}
}  // namespace

bool available() { return false; }
std::string unavailable_reason() {
  return "magellan was built without CUDA (MAGELLAN_CUDA=OFF or no nvcc found); rebuild on a "
         "machine with the CUDA toolkit: cmake -DMAGELLAN_CUDA=ON (docs/gpu.md)";
}
std::string device_description() { fail("cuda device"); }
void require(const char* where) { fail(where); }
void* stream() { fail("cuda stream"); }
void* device_alloc(size_t) { fail("cuda alloc"); }
void device_free(void*) noexcept {}
MemoryStats memory_stats() { return {}; }
void reset_peak_memory() {}
void empty_cache() {}
void copy_host_to_device(void*, const void*, size_t) { fail("cuda copy"); }
void copy_device_to_host(void*, const void*, size_t) { fail("cuda copy"); }
void copy_device_to_device(void*, const void*, size_t) { fail("cuda copy"); }
void memset_zero(void*, size_t) { fail("cuda memset"); }
void synchronize() {}
void fill(DType, void*, size_t, double) { fail("cuda fill"); }
void convert(DType, const void*, DType, void*, size_t) { fail("cuda convert"); }

// The op kernels (cuda/elementwise.h ... cuda/dropout.h), for float and double.
template <class T> void binary(BinaryOp, const T*, const T*, T*, int64_t, int64_t) { fail("cuda binary"); }
template <class T> void binary_backward_a(BinaryOp, const T*, const T*, T*, int64_t, int64_t) { fail("cuda binary"); }
template <class T> void binary_backward_b(BinaryOp, const T*, const T*, T*, int64_t, int64_t) { fail("cuda binary"); }
template <class T> void affine(const T*, T*, int64_t, T, T) { fail("cuda affine"); }
template <class T> void accumulate_scaled(const T*, T*, int64_t, T) { fail("cuda accumulate"); }
template <class T> void activation_forward(Activation, const T*, T*, int64_t) { fail("cuda activation"); }
template <class T> void activation_backward(Activation, const T*, const T*, T*, int64_t) { fail("cuda activation"); }
template <class T> void sum_all(const T*, int64_t, double, T*) { fail("cuda sum"); }
template <class T> void sum_all_backward(const T*, double, T*, int64_t) { fail("cuda sum"); }
template <class T> void sum_rows(const T*, int64_t, int64_t, T*) { fail("cuda sum_rows"); }
template <class T> void sum_rows_backward(const T*, int64_t, int64_t, T*) { fail("cuda sum_rows"); }
template <class T> void softmax_forward(const T*, T*, int64_t, int64_t) { fail("cuda softmax"); }
template <class T> void softmax_backward(const T*, const T*, T*, int64_t, int64_t) { fail("cuda softmax"); }
template <class T> void logsumexp_forward(const T*, T*, int64_t, int64_t) { fail("cuda logsumexp"); }
template <class T> void logsumexp_backward(const T*, const T*, const T*, T*, int64_t, int64_t) { fail("cuda logsumexp"); }
template <class T> void rmsnorm_forward(const T*, const T*, T*, T*, int64_t, int64_t, double) { fail("cuda rmsnorm"); }
template <class T>
void rmsnorm_backward_x(const T*, const T*, const T*, const T*, T*, int64_t, int64_t) { fail("cuda rmsnorm"); }
template <class T> void rmsnorm_backward_weight(const T*, const T*, const T*, T*, int64_t, int64_t) { fail("cuda rmsnorm"); }
template <class T> void gather_rows(const int32_t*, int64_t, const T*, T*, int64_t) { fail("cuda gather_rows"); }
template <class T>
void gather_rows_accumulate(const int32_t*, int64_t, const T*, const T*, T*, int64_t) { fail("cuda gather_rows"); }
template <class T>
void scatter_add_rows(const int32_t*, int64_t, const T*, const T*, T*, int64_t) { fail("cuda scatter_add_rows"); }
template <class T>
void gathered_row_dot(const int32_t*, int64_t, const T*, const T*, T*, int64_t) { fail("cuda scatter_add_rows"); }
template <class T>
void cross_entropy_forward(const T*, const int32_t*, int64_t, int64_t, int64_t, T*, T*) { fail("cuda cross_entropy"); }
template <class T>
void cross_entropy_backward(const T*, const int32_t*, const T*, const T*, int64_t, T*, int64_t, int64_t) {
  fail("cuda cross_entropy");
}
template <class T>
void copy_columns(const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t, int64_t, bool) { fail("cuda copy_columns"); }
template <class T> void transpose_last2(const T*, T*, int64_t, int64_t, int64_t, bool) { fail("cuda transpose"); }
template <class T>
void causal_conv1d_forward(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t) { fail("cuda conv1d"); }
template <class T>
void causal_conv1d_backward(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t) {
  fail("cuda conv1d");
}
template <class T> void dropout_forward(const T*, T*, uint8_t*, int64_t, double, uint64_t) { fail("cuda dropout"); }
template <class T> void dropout_backward(const T*, const uint8_t*, T*, int64_t, double) { fail("cuda dropout"); }

#define MG_INSTANTIATE(T)                                                                                     \
  template void binary<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t);                                \
  template void binary_backward_a<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t);                     \
  template void binary_backward_b<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t);                     \
  template void affine<T>(const T*, T*, int64_t, T, T);                                                       \
  template void accumulate_scaled<T>(const T*, T*, int64_t, T);                                               \
  template void activation_forward<T>(Activation, const T*, T*, int64_t);                                     \
  template void activation_backward<T>(Activation, const T*, const T*, T*, int64_t);                          \
  template void sum_all<T>(const T*, int64_t, double, T*);                                                    \
  template void sum_all_backward<T>(const T*, double, T*, int64_t);                                           \
  template void sum_rows<T>(const T*, int64_t, int64_t, T*);                                                  \
  template void sum_rows_backward<T>(const T*, int64_t, int64_t, T*);                                         \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                                           \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);                                \
  template void logsumexp_forward<T>(const T*, T*, int64_t, int64_t);                                         \
  template void logsumexp_backward<T>(const T*, const T*, const T*, T*, int64_t, int64_t);                    \
  template void rmsnorm_forward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);                     \
  template void rmsnorm_backward_x<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t);          \
  template void rmsnorm_backward_weight<T>(const T*, const T*, const T*, T*, int64_t, int64_t);               \
  template void gather_rows<T>(const int32_t*, int64_t, const T*, T*, int64_t);                               \
  template void gather_rows_accumulate<T>(const int32_t*, int64_t, const T*, const T*, T*, int64_t);          \
  template void scatter_add_rows<T>(const int32_t*, int64_t, const T*, const T*, T*, int64_t);                \
  template void gathered_row_dot<T>(const int32_t*, int64_t, const T*, const T*, T*, int64_t);                \
  template void cross_entropy_forward<T>(const T*, const int32_t*, int64_t, int64_t, int64_t, T*, T*);        \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, const T*, int64_t, T*, int64_t, \
                                          int64_t);                                                           \
  template void copy_columns<T>(const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t, int64_t, bool);    \
  template void transpose_last2<T>(const T*, T*, int64_t, int64_t, int64_t, bool);                            \
  template void causal_conv1d_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t,         \
                                         int64_t);                                                            \
  template void causal_conv1d_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,         \
                                          int64_t, int64_t);                                                  \
  template void dropout_forward<T>(const T*, T*, uint8_t*, int64_t, double, uint64_t);                        \
  template void dropout_backward<T>(const T*, const uint8_t*, T*, int64_t, double);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE
void adamw_step_fp32(const AdamWArgs&, float, int64_t, float*, const float*, float*, float*) { fail("cuda adamw"); }
void adamw_step_fp16(const AdamWArgs&, float, int64_t, float*, const float*, uint16_t*, uint16_t*, float*, float*) {
  fail("cuda adamw");
}
void sgd_step(const SgdArgs&, float, int64_t, float*, const float*, float*) { fail("cuda sgd"); }
double global_grad_l2_norm(const std::vector<DeviceFloats>&) { fail("cuda grad norm"); }

template <class T>
void gemm(bool, bool, int64_t, int64_t, int64_t, T, const T*, const T*, T, T*, int64_t, int64_t,
          int64_t, int64_t) { fail("cuda gemm"); }
template <class T> void add_column_sums(const T*, int64_t, int64_t, T*) { fail("cuda gemm"); }
template <class T> void broadcast_rows(const T*, int64_t, int64_t, T*) { fail("cuda gemm"); }
template <class T> void accumulate(T*, const T*, size_t) { fail("cuda accumulate"); }
template void accumulate<float>(float*, const float*, size_t);
template void accumulate<double>(double*, const double*, size_t);
void set_tf32(bool) {}
bool tf32() { return false; }
#define MG_STUB_GEMM(T)                                                                          \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, const T*, T, T*,     \
                        int64_t, int64_t, int64_t, int64_t);                                     \
  template void add_column_sums<T>(const T*, int64_t, int64_t, T*);                              \
  template void broadcast_rows<T>(const T*, int64_t, int64_t, T*);
MG_STUB_GEMM(float)
MG_STUB_GEMM(double)

template <class T>
void selective_scan_forward(const ScanShape&, const T*, const T*, const T*, const T*, const T*, const T*,
                            const T*, const T*, T*, T*, T*) { fail("cuda selective_scan"); }
template <class T>
void selective_scan_backward(const ScanShape&, const T*, const T*, const T*, const T*, const T*, const T*,
                             const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, T*, T*) {
  fail("cuda selective_scan");
}
#define MG_STUB_SCAN(T)                                                                              \
  template void selective_scan_forward<T>(const ScanShape&, const T*, const T*, const T*, const T*,  \
                                          const T*, const T*, const T*, const T*, T*, T*, T*);        \
  template void selective_scan_backward<T>(const ScanShape&, const T*, const T*, const T*, const T*, \
                                           const T*, const T*, const T*, const T*, const T*,         \
                                           const T*, T*, T*, T*, T*, T*, T*, T*, T*);
MG_STUB_SCAN(float)
MG_STUB_SCAN(double)

}  // namespace mg::cuda
