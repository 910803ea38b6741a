#include "autograd/tensor.h"

#include <cstdlib>
#include <cstring>

#include "autograd/block_cache.h"
#include "autograd/half.h"
#include "cuda/runtime.h"
#include "cuda/tensor_kernels.h"

namespace mg {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Device parse_device(std::string_view text, std::string_view where) {
  if (text == "cpu") return Device::CPU;
  if (text == "cuda") return Device::CUDA;
  throw Error(fmt::format("[{}] unknown device '{}': use cpu or cuda", where, text));
}

Storage::Storage(size_t n, Device dev) : bytes(n), device(dev) {
  if (dev == Device::CUDA) {
    ptr = cuda::device_alloc(n);
    capacity = n;
    return;
  }
  if (n >= kMmapThresholdBytes) {
    // Anonymous private pages (or a block a BlockCache scope kept): not resident until
    // touched, and unmapped at once when freed outside a scope (glibc's free may keep a large
    // heap block). This is what lets a 13 GB float model be built and quantized layer by
    // layer in a few GB.
    const MappedBlock b = BlockCache::acquire(n);
    ptr = b.ptr;
    capacity = b.capacity;
    zeroed = b.zeroed;
    mapped = true;
    return;
  }
  size_t rounded = (n + 63) / 64 * 64;
  ptr = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  MG_CHECK(ptr, "[tensor] out of memory allocating {} bytes", n);
}
Storage::~Storage() {
  if (device == Device::CUDA)
    cuda::device_free(ptr);
  else if (mapped)
    BlockCache::release(ptr, capacity);
  else
    std::free(ptr);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, std::string name) {
  return empty(shape, dtype, Device::CPU, std::move(name));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, std::string name) {
  for (int64_t d : shape) MG_CHECK(d >= 0, "[tensor] negative dimension in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage =
      std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->name = std::move(name);
  return Tensor(std::move(impl));
}

Tensor Tensor::meta(const Shape& shape, DType dtype, std::string name) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->name = std::move(name);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, std::string name) {
  return zeros(shape, dtype, Device::CPU, std::move(name));
}

// Zeroes a tensor's bytes on its device.
static void zero_bytes(Tensor& t) {
  if (t.is_cuda())
    cuda::memset_zero(t.dev_raw(), t.bytes());
  else
    std::memset(t.raw(), 0, t.bytes());
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device, std::string name) {
  Tensor t = empty(shape, dtype, device, std::move(name));
  // Freshly mapped pages are already zero; writing them would only make them resident.
  if (!t.impl()->storage->zeroed) zero_bytes(t);
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  MG_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "[tensor] {} values for shape {}",
           v.size(), shape_str(shape));
  Tensor t = empty(shape, DType::F32);
  std::memcpy(t.raw(), v.data(), t.bytes());
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape) {
  MG_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "[tensor] {} values for shape {}",
           v.size(), shape_str(shape));
  Tensor t = empty(shape, DType::F64);
  std::memcpy(t.raw(), v.data(), t.bytes());
  return t;
}

Tensor Tensor::from_ids(const std::vector<int32_t>& v, const Shape& shape) {
  MG_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "[tensor] {} ids for shape {}",
           v.size(), shape_str(shape));
  Tensor t = empty(shape, DType::I32);
  std::memcpy(t.raw(), v.data(), t.bytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? i + n : i;
  MG_CHECK(j >= 0 && j < n, "[tensor] dim {} out of range for {}", i, describe());
  return impl_->shape[j];
}

Tensor& Tensor::set_name(std::string n) {
  impl_->name = std::move(n);
  if (impl_->slot) impl_->slot->name = impl_->name;
  return *this;
}

std::string Tensor::describe() const {
  if (!impl_) return "<undefined>";
  return fmt::format("{}{}{}{}", impl_->name.empty() ? "" : impl_->name + " ", dtype_name(dtype()),
                     shape_str(shape()), is_cuda() ? " (cuda)" : "");
}

double Tensor::item(int64_t i) const {
  MG_CHECK(i >= 0 && i < numel(), "[tensor] index {} out of range for {}", i, describe());
  if (is_cuda()) {  // one element across: for tests and the loss value, not inner loops
    Tensor one = Tensor::empty({1}, dtype());
    cuda::copy_device_to_host(one.raw(), static_cast<const char*>(dev_raw()) + i * dtype_size(dtype()),
                              dtype_size(dtype()));
    return one.item(0);
  }
  switch (dtype()) {
    case DType::F32: return data<float>()[i];
    case DType::F64: return data<double>()[i];
    case DType::F16: return half_to_float(data<uint16_t>()[i]);
    case DType::U8: return data<uint8_t>()[i];
    case DType::I32: return data<int32_t>()[i];
    case DType::I64: return static_cast<double>(data<int64_t>()[i]);
  }
  return 0;
}

std::vector<double> Tensor::to_double_vector() const {
  if (is_cuda()) return to(Device::CPU).to_double_vector();
  std::vector<double> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = item(i);
  return out;
}

Tensor& Tensor::set_requires_grad(bool on, bool is_param) {
  if (!on) {
    impl_->slot.reset();
    return *this;
  }
  MG_CHECK(dtype() == DType::F32 || dtype() == DType::F64,
           "[autograd] {} cannot require a gradient: only f32/f64 tensors can", describe());
  if (!impl_->slot) impl_->slot = std::make_shared<GradSlot>();
  impl_->slot->shape = shape();
  impl_->slot->dtype = dtype();
  impl_->slot->device = device();
  impl_->slot->name = name();
  impl_->slot->is_param = is_param;
  return *this;
}

Tensor Tensor::grad() const {
  if (!impl_ || !impl_->slot || !impl_->slot->grad) return Tensor();
  return Tensor(impl_->slot->grad);
}

void Tensor::zero_grad() {
  if (!impl_ || !impl_->slot || !impl_->slot->grad) return;
  impl_->slot->spare = std::move(impl_->slot->grad);
}

Tensor slot_grad(GradSlot& slot) {
  if (slot.grad) return Tensor(slot.grad);
  if (slot.spare && slot.spare.use_count() == 1) {  // nobody else sees it: zero and reuse
    slot.grad = std::move(slot.spare);
    Tensor g(slot.grad);
    zero_bytes(g);
    return g;
  }
  slot.spare.reset();
  slot.grad = Tensor::zeros(slot.shape, slot.dtype, slot.device, slot.name + ".grad").impl_ptr();
  return Tensor(slot.grad);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->slot.reset();
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), device(), name());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return clone();
  Tensor t = empty(shape(), target, device(), name());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor t = empty(shape(), dtype(), target, name());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::view(const Shape& new_shape) const {
  MG_CHECK(shape_numel(new_shape) == numel(), "[tensor] cannot view {} as {}", describe(),
           shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape = new_shape;
  impl->slot.reset();
  return Tensor(std::move(impl));
}

namespace {
template <class Dst>
void convert_into(Dst* dst, const Tensor& src, int64_t n) {
  switch (src.dtype()) {
    case DType::F32: { auto* s = src.data<float>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(s[i]); break; }
    case DType::F64: { auto* s = src.data<double>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(s[i]); break; }
    case DType::I32: { auto* s = src.data<int32_t>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(s[i]); break; }
    case DType::I64: { auto* s = src.data<int64_t>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(s[i]); break; }
    case DType::U8: { auto* s = src.data<uint8_t>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(s[i]); break; }
    case DType::F16: { auto* s = src.data<uint16_t>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(half_to_float(s[i])); break; }
  }
}
}  // namespace

// A copy that involves the GPU: bytes move between devices as they are, then (when the dtypes
// differ) a conversion runs on the GPU side.
static void copy_with_gpu(Tensor& dst, const Tensor& src) {
  const size_t n = static_cast<size_t>(src.numel());
  if (src.dtype() != dst.dtype()) {
    Tensor staged = src.to(Device::CUDA);  // same dtype, on the GPU
    Tensor converted = dst.is_cuda() ? dst : Tensor::empty(dst.shape(), dst.dtype(), Device::CUDA);
    cuda::convert(staged.dtype(), staged.dev_raw(), converted.dtype(), converted.dev_raw(), n);
    if (!dst.is_cuda()) dst.copy_from(converted);
    return;
  }
  if (src.is_cuda() && dst.is_cuda())
    cuda::copy_device_to_device(dst.dev_raw(), src.dev_raw(), dst.bytes());
  else if (src.is_cuda())
    cuda::copy_device_to_host(dst.raw(), src.dev_raw(), dst.bytes());
  else
    cuda::copy_host_to_device(dst.dev_raw(), src.raw(), dst.bytes());
}

void Tensor::copy_from(const Tensor& src) {
  MG_CHECK(src.numel() == numel(), "[tensor] copy {} into {}: sizes differ", src.describe(), describe());
  if (is_cuda() || src.is_cuda()) return copy_with_gpu(*this, src);
  int64_t n = numel();
  if (src.dtype() == dtype()) {
    std::memcpy(raw(), src.raw(), bytes());
    return;
  }
  switch (dtype()) {
    case DType::F32: convert_into(data<float>(), src, n); break;
    case DType::F64: convert_into(data<double>(), src, n); break;
    case DType::I32: convert_into(data<int32_t>(), src, n); break;
    case DType::I64: convert_into(data<int64_t>(), src, n); break;
    case DType::U8: convert_into(data<uint8_t>(), src, n); break;
    case DType::F16: {
      std::vector<float> tmp(static_cast<size_t>(n));
      convert_into(tmp.data(), src, n);
      auto* d = data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) d[i] = float_to_half(tmp[i]);
      break;
    }
  }
}

void Tensor::fill(double value) {
  int64_t n = numel();
  if (is_cuda()) return cuda::fill(dtype(), dev_raw(), static_cast<size_t>(n), value);
  switch (dtype()) {
    case DType::F32: { auto* d = data<float>(); for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(value); break; }
    case DType::F64: { auto* d = data<double>(); for (int64_t i = 0; i < n; ++i) d[i] = value; break; }
    case DType::I32: { auto* d = data<int32_t>(); for (int64_t i = 0; i < n; ++i) d[i] = static_cast<int32_t>(value); break; }
    case DType::I64: { auto* d = data<int64_t>(); for (int64_t i = 0; i < n; ++i) d[i] = static_cast<int64_t>(value); break; }
    case DType::U8: std::memset(raw(), static_cast<int>(value), bytes()); break;
    case DType::F16: { auto* d = data<uint16_t>(); uint16_t h = float_to_half(static_cast<float>(value)); for (int64_t i = 0; i < n; ++i) d[i] = h; break; }
  }
}

}  // namespace mg
