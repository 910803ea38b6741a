#pragma once
// Where a tensor's storage lives. CPU memory is host memory (autograd/tensor.h's Storage);
// CUDA memory is the GPU's, reached only through cuda/ (cuda/runtime.h). Host code reads a
// tensor's elements only on the CPU: Tensor::data() on a CUDA tensor throws and says to copy
// it with .to(Device::CPU).
#include <cstdint>
#include <string_view>

namespace mg {

enum class Device : uint8_t { CPU, CUDA };

constexpr std::string_view device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

// "cpu" or "cuda" -> Device; anything else throws naming `where` (a config key or a flag).
Device parse_device(std::string_view text, std::string_view where);

}  // namespace mg
