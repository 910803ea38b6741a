#pragma once
// Tensor: a cheap handle (shared_ptr) to contiguous row-major storage with a shape, a dtype
// and a name. Copying a Tensor copies the handle, not the data.
//
// Autograd state lives in a separate GradSlot that a Tensor owns only when it requires a
// gradient. The tape's nodes hold GradSlots, not Tensors, so recording an op never keeps an
// activation's data alive: only the tensors an op lists as `saved` are kept (tape.h).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/device.h"
#include "autograd/dtype.h"
#include "autograd/error.h"

namespace mg {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 3, 4]"

// Raw bytes on a device. On the GPU: a block of the caching device allocator (cuda/runtime.h),
// 256-byte aligned. On the CPU: 64-byte aligned, so AVX loads never straddle a cache line at
// the start.
// Blocks of at least kMmapThresholdBytes are anonymous mmaps (page-aligned, resident only once
// touched, unmapped on destruction unless a BlockCache scope keeps them for reuse:
// block_cache.h); smaller ones aligned_alloc. A fresh mapping is zero (`zeroed`); a reused
// block, like aligned_alloc memory, holds old data: Tensor::empty's contents are unspecified.
struct Storage {
  static constexpr size_t kMmapThresholdBytes = size_t{1} << 20;  // 1 MiB
  explicit Storage(size_t bytes, Device device = Device::CPU);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* ptr = nullptr;
  size_t bytes = 0;
  size_t capacity = 0;  // mapped bytes (>= bytes) when mapped
  bool mapped = false;  // true: from BlockCache (mmap'd)
  bool zeroed = false;  // true: a fresh mapping, all zero at birth
  Device device = Device::CPU;
};

class Tensor;

// The autograd side of a tensor that requires a gradient.
struct GradSlot {
  Shape shape;
  DType dtype;
  Device device = Device::CPU;  // where the gradient is allocated: the tensor's device
  std::string name;
  bool is_param = false;                 // parameter grads persist (and accumulate) across backward calls
  std::shared_ptr<struct TensorImpl> grad;  // allocated (zeroed) on first accumulation
  // The buffer zero_grad took away, kept for the next accumulation (zeroed then) so a training
  // step does not page-fault a fresh gradient buffer per parameter; reused only while no other
  // handle holds it.
  std::shared_ptr<struct TensorImpl> spare;
};

struct TensorImpl {
  Shape shape;
  DType dtype = DType::F32;
  std::shared_ptr<Storage> storage;
  int64_t offset_bytes = 0;  // views (reshape, row ranges) share storage
  std::string name;
  std::shared_ptr<GradSlot> slot;  // non-null iff requires_grad
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- construction (on the CPU unless a device is given) ------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, std::string name = "");
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, std::string name = "");
  static Tensor empty(const Shape& shape, DType dtype, Device device, std::string name = "");
  static Tensor zeros(const Shape& shape, DType dtype, Device device, std::string name = "");
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);
  static Tensor from_ids(const std::vector<int32_t>& v, const Shape& shape);  // I32
  // Shape and dtype without storage: lets `magellan info` build a model's exact parameter
  // list (the code path that allocates it) without allocating. Data access throws.
  static Tensor meta(const Shape& shape, DType dtype = DType::F32, std::string name = "");
  bool is_meta() const { return impl_ && !impl_->storage; }

  // --- inspection -----------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int ndim() const { return static_cast<int>(impl_->shape.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  // Where the data lives (a meta tensor reports CPU).
  Device device() const { return impl_->storage ? impl_->storage->device : Device::CPU; }
  bool is_cuda() const { return device() == Device::CUDA; }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::string& name() const { return impl_->name; }
  Tensor& set_name(std::string n);
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  std::string describe() const;  // "name f32[2, 3]", "name f32[2, 3] (cuda)"

  // Typed host access; throws if T does not match dtype() or the data is not on the CPU.
  template <class T> T* data();
  template <class T> const T* data() const;
  void* raw() {
    MG_CHECK(impl_->storage, "[tensor] {} has no storage (a meta tensor)", describe());
    MG_CHECK(impl_->storage->device == Device::CPU,
             "[tensor] {} is on the GPU: host code cannot read it; copy it with .to(Device::CPU), "
             "or this op has no GPU implementation yet", describe());
    return static_cast<char*>(impl_->storage->ptr) + impl_->offset_bytes;
  }
  const void* raw() const { return const_cast<Tensor*>(this)->raw(); }
  // The data pointer on whichever device holds it: for backend code that hands it to kernels
  // of that device (cuda/*.h takes device pointers). Checks T like data().
  template <class T> T* dev_data();
  template <class T> const T* dev_data() const;
  void* dev_raw() {
    MG_CHECK(impl_->storage, "[tensor] {} has no storage (a meta tensor)", describe());
    return static_cast<char*>(impl_->storage->ptr) + impl_->offset_bytes;
  }
  const void* dev_raw() const { return const_cast<Tensor*>(this)->dev_raw(); }

  // Element read as double (tests, logging). Index is flat.
  double item(int64_t flat_index = 0) const;
  std::vector<double> to_double_vector() const;

  // --- autograd -------------------------------------------------------------------------
  bool requires_grad() const { return impl_ && impl_->slot != nullptr; }
  // Marks a leaf as requiring a gradient; is_param grads persist across backward calls.
  Tensor& set_requires_grad(bool on, bool is_param = false);
  const std::shared_ptr<GradSlot>& slot() const { return impl_->slot; }
  Tensor grad() const;  // undefined if none has been accumulated yet
  // The gradient becomes undefined (next accumulation starts from zero; an optimizer skips a
  // parameter without one). Its buffer is kept as the slot's spare and reused.
  void zero_grad();

  // --- copies and views -----------------------------------------------------------------
  Tensor detach() const;                     // same storage, no grad
  Tensor clone() const;                      // deep copy, no grad
  Tensor to(DType dtype) const;              // converting copy between F32/F64/F16/I32 (same device)
  // A copy on `device` (the same handle when already there). Keeps the name; not the grad.
  Tensor to(Device device) const;
  Tensor view(const Shape& shape) const;     // same storage, new shape (numel must match), no grad
  void copy_from(const Tensor& src);         // same size; converts dtype; across devices too
  void fill(double value);

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// The gradient buffer of a slot, allocated zeroed on first use. Op backwards accumulate into it.
Tensor slot_grad(GradSlot& slot);


template <class T>
T* Tensor::data() {
  MG_CHECK(impl_, "[tensor] data() on an undefined tensor");
  MG_CHECK(impl_->dtype == dtype_of<T>(), "[tensor] {} holds {}, asked for {}", describe(),
           dtype_name(impl_->dtype), dtype_name(dtype_of<T>()));
  return static_cast<T*>(raw());
}
template <class T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}
template <class T>
T* Tensor::dev_data() {
  MG_CHECK(impl_, "[tensor] dev_data() on an undefined tensor");
  MG_CHECK(impl_->dtype == dtype_of<T>(), "[tensor] {} holds {}, asked for {}", describe(),
           dtype_name(impl_->dtype), dtype_name(dtype_of<T>()));
  return static_cast<T*>(dev_raw());
}
template <class T>
const T* Tensor::dev_data() const {
  return const_cast<Tensor*>(this)->dev_data<T>();
}

// Runs `body.template operator()<T>()` with T = float or double per the dtype.
#define MG_DISPATCH_FLOAT(dtype, where, ...)                                              \
  [&] {                                                                                   \
    switch (dtype) {                                                                      \
      case ::mg::DType::F32: { using scalar_t = float; return __VA_ARGS__(); }            \
      case ::mg::DType::F64: { using scalar_t = double; return __VA_ARGS__(); }           \
      default:                                                                            \
        throw ::mg::Error(::fmt::format("[{}] needs f32 or f64, got {}", where,            \
                                        ::mg::dtype_name(dtype)));                        \
    }                                                                                     \
  }()

}  // namespace mg
