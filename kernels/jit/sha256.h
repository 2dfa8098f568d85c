// SHA-256 (FIPS 180-4), incremental. Used for JIT cache keys (collision resistance matters: two
// different kernel sources must never share a cubin) and for entry payload checksums.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ligerd::kernels {

using Digest256 = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  Digest256 Finish();  // the object must not be used afterwards

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

Digest256 Sha256Of(std::string_view data);
std::string HexOf(const uint8_t* bytes, size_t n);

}  // namespace ligerd::kernels
