#include "autograd/tensor.h"

#include <cstdlib>
#include <cstring>

#include "autograd/block_cache.h"
#include "autograd/half.h"

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

Storage::Storage(size_t n) : bytes(n) {
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
  if (mapped)
    BlockCache::release(ptr, capacity);
  else
    std::free(ptr);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, std::string name) {
  for (int64_t d : shape) MG_CHECK(d >= 0, "[tensor] negative dimension in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
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
  Tensor t = empty(shape, dtype, std::move(name));
  // Freshly mapped pages are already zero; writing them would only make them resident.
  if (!t.impl()->storage->zeroed) std::memset(t.raw(), 0, t.bytes());
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
  return fmt::format("{}{}{}", impl_->name.empty() ? "" : impl_->name + " ", dtype_name(dtype()),
                     shape_str(shape()));
}

double Tensor::item(int64_t i) const {
  MG_CHECK(i >= 0 && i < numel(), "[tensor] index {} out of range for {}", i, describe());
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
    std::memset(g.raw(), 0, g.bytes());
    return g;
  }
  slot.spare.reset();
  slot.grad = Tensor::zeros(slot.shape, slot.dtype, slot.name + ".grad").impl_ptr();
  return Tensor(slot.grad);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->slot.reset();
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), name());
  std::memcpy(t.raw(), raw(), bytes());
  return t;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return clone();
  Tensor t = empty(shape(), target, name());
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

void Tensor::copy_from(const Tensor& src) {
  MG_CHECK(src.numel() == numel(), "[tensor] copy {} into {}: sizes differ", src.describe(), describe());
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
