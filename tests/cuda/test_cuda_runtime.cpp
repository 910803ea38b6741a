// The GPU runtime under Tensor: copies between devices for every dtype, fill and convert
// against the CPU's, the caching pool (a steady loop reserves nothing new), device errors.
#include <gtest/gtest.h>

#include <cstring>

#include "autograd/rng.h"
#include "autograd/tensor.h"
#include "cuda/gemm.h"
#include "cuda/runtime.h"

namespace mg {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason()

Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed) {
  Rng rng(seed);
  Tensor t = Tensor::empty(shape, DType::F64);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = rng.uniform(0, 200);  // in range of every dtype, u8 included
  return t.to(dtype);
}

TEST(CudaRuntime, DescribesTheDevice) {
  SKIP_WITHOUT_GPU();
  const std::string d = cuda::device_description();
  EXPECT_NE(d.find("SMs"), std::string::npos) << d;
  std::printf("device: %s\n", d.c_str());
}

TEST(CudaRuntime, RoundTripKeepsEveryByteForEveryDtype) {
  SKIP_WITHOUT_GPU();
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::U8, DType::I32, DType::I64}) {
    const Tensor host = random_tensor({3, 1001}, t, 1);
    const Tensor dev = host.to(Device::CUDA);
    EXPECT_TRUE(dev.is_cuda());
    EXPECT_EQ(dev.describe().find("(cuda)") != std::string::npos, true);
    const Tensor back = dev.clone().to(Device::CPU);  // clone on the device, then across
    ASSERT_EQ(back.bytes(), host.bytes());
    EXPECT_EQ(std::memcmp(back.raw(), host.raw(), host.bytes()), 0) << dtype_name(t);
  }
}

TEST(CudaRuntime, ConvertAndFillMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  const DType types[] = {DType::F32, DType::F64, DType::F16, DType::I32, DType::I64, DType::U8};
  for (DType from : types)
    for (DType to : types) {
      const Tensor src = random_tensor({517}, from, 2);
      const Tensor cpu = src.to(to);
      const Tensor gpu = src.to(Device::CUDA).to(to).to(Device::CPU);
      EXPECT_EQ(std::memcmp(cpu.raw(), gpu.raw(), cpu.bytes()), 0)
          << dtype_name(from) << " -> " << dtype_name(to);
    }
  for (DType t : types) {
    Tensor gpu = Tensor::empty({333}, t, Device::CUDA);
    gpu.fill(3.25);
    const Tensor cpu = Tensor::full({333}, 3.25, t);
    EXPECT_EQ(std::memcmp(cpu.raw(), gpu.to(Device::CPU).raw(), cpu.bytes()), 0) << dtype_name(t);
    EXPECT_EQ(gpu.item(332), cpu.item(332));
  }
  const Tensor z = Tensor::zeros({4097}, DType::F32, Device::CUDA).to(Device::CPU);
  for (int64_t i = 0; i < z.numel(); ++i) ASSERT_EQ(z.data<float>()[i], 0.0f);
}

TEST(CudaRuntime, HostAccessToAGpuTensorIsAClearError) {
  SKIP_WITHOUT_GPU();
  Tensor t = Tensor::zeros({4}, DType::F32, Device::CUDA);
  try {
    (void)t.data<float>();
    FAIL() << "data() on a GPU tensor must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(".to(Device::CPU)"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, ASteadyLoopReservesNoNewMemory) {
  SKIP_WITHOUT_GPU();
  auto one_step = [] {
    std::vector<Tensor> live;
    for (int i = 0; i < 20; ++i) live.push_back(Tensor::empty({(i + 1) * 100000}, DType::F32, Device::CUDA));
  };
  one_step();  // twice: the pool's block placement settles after the first reuse
  one_step();
  cuda::synchronize();
  const size_t reserved = cuda::memory_stats().reserved, allocated = cuda::memory_stats().allocated;
  cuda::reset_peak_memory();
  for (int s = 0; s < 10; ++s) one_step();
  cuda::synchronize();
  const cuda::MemoryStats st = cuda::memory_stats();
  // The pool serves repeated steps from what it holds (2 MiB of slack: CUDA does not promise
  // block placement).
  EXPECT_LE(st.reserved, reserved + (size_t{2} << 20)) << "the pool should serve repeated steps from what it holds";
  EXPECT_GE(st.peak_allocated, size_t{210} * 100000 * 4);
  EXPECT_EQ(st.allocated, allocated);
}

TEST(CudaRuntime, GemmMatchesANaiveLoopForEveryTranspose) {
  SKIP_WITHOUT_GPU();
  const int64_t M = 37, N = 29, K = 53;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Tensor A = random_tensor({M * K}, DType::F64, 3), B = random_tensor({K * N}, DType::F64, 4);
      const Tensor C0 = random_tensor({M * N}, DType::F64, 5);
      Tensor C = C0.to(Device::CUDA);
      cuda::gemm<double>(ta, tb, M, N, K, 0.5, A.to(Device::CUDA).dev_data<double>(),
                         B.to(Device::CUDA).dev_data<double>(), 2.0, C.dev_data<double>());
      const Tensor got = C.to(Device::CPU);
      const double* a = A.data<double>();
      const double* b = B.data<double>();
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k)
            s += (ta ? a[k * M + i] : a[i * K + k]) * (tb ? b[j * K + k] : b[k * N + j]);
          const double want = 0.5 * s + 2.0 * C0.data<double>()[i * N + j];
          ASSERT_NEAR(got.data<double>()[i * N + j], want, 1e-9 * (1 + std::abs(want))) << ta << tb << i << j;
        }
    }
}

}  // namespace
}  // namespace mg
