// A stand-in for CUDA IPC in CPU tests: "handles" name host allocations of a chosen real size,
// and the test can see when mappings are opened and closed.
#pragma once

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/dataplane/buffer_registry.h"

namespace ligerd::testing {

class FakeIpcOpener : public dataplane::IpcOpener {
 public:
  // The handle's first 8 bytes carry the real allocation size the fake will "map".
  static std::string Handle(uint64_t real_size) {
    std::string handle(dataplane::kIpcHandleBytes, '\0');
    std::memcpy(handle.data(), &real_size, sizeof(real_size));
    return handle;
  }

  absl::StatusOr<std::unique_ptr<dataplane::IpcMapping>> Open(const std::string& handle, int device) override {
    uint64_t size;
    std::memcpy(&size, handle.data(), sizeof(size));
    if (size == 0) return absl::InvalidArgumentError("fake: invalid handle");
    return std::unique_ptr<dataplane::IpcMapping>(new Mapping(size, &open_));
  }
  int open_mappings() const { return open_.load(); }

 private:
  class Mapping : public dataplane::IpcMapping {
   public:
    Mapping(uint64_t size, std::atomic<int>* open) : bytes_(size), open_(open) { open_->fetch_add(1); }
    ~Mapping() override { open_->fetch_sub(1); }
    void* base() const override { return const_cast<char*>(bytes_.data()); }
    uint64_t size_bytes() const override { return bytes_.size(); }

   private:
    std::vector<char> bytes_;
    std::atomic<int>* open_;
  };
  std::atomic<int> open_{0};
};

}  // namespace ligerd::testing
