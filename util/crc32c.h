#pragma once
// CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of iSCSI,
// ext4 and SSE4.2's crc32 instruction. Used on the expert store's records
// (inference/expert_store.h). Check value: crc32c("123456789") = 0xE3069283.
//
// Chaining: crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b, so a record read in
// pieces is checked piece by piece without a copy.
#include <cstddef>
#include <cstdint>

namespace mg {

// The CRC32C of n bytes, continuing `crc` (the CRC of what came before; 0 to start). Uses the
// SSE4.2 crc32 instruction when the build targets it (-march=x86-64-v3 does), else slicing-by-8.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// The table-driven (slicing-by-8) version, whatever the build targets: for tests, and CPUs
// without SSE4.2.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

// True when crc32c() uses the hardware instruction.
bool crc32c_hardware();

}  // namespace mg
