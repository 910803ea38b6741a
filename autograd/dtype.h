#pragma once
// Element types a Tensor's storage can hold.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mg {

enum class DType : uint8_t {
  F32,  // default for activations, parameters, gradients
  F64,  // gradient checks and float64 reference paths run the same ops in double
  F16,  // IEEE half stored as uint16_t (optimizer moments)
  U8,   // packed bytes (NF4 codes, quantized absmax)
  I32,  // token ids and targets
  I64,
};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::F16: return 2;
    case DType::U8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::F16: return "f16";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}

// The DType of a C++ element type (F16 is IEEE half held in a uint16_t).
template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::F16; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }

}  // namespace mg
