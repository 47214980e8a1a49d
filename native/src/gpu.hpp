// CUDA devices and buffers: the GPU checks (one line when there is none), RAII device / pinned memory,
// and CUDA error checks that throw metric3d::Error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "metric3d/metric3d.hpp"

namespace metric3d::gpu {

struct Device {
  int index = 0;
  std::string name;
  int compute_capability = 0;  // 86 for 8.6
};
// Error(NoGpu) in one line (with `fix`) when CUDA sees no usable GPU `index`.
Device device(int index, const std::string& fix);
// "" when a GPU is usable, else why not (one line).
std::string why_no_gpu();

void check(cudaError_t status, const char* what);

// Device or page-locked host memory that grows to the largest size asked for.
class Buffer {
 public:
  enum class Kind { Device, Pinned };
  explicit Buffer(Kind kind = Kind::Device) : kind_(kind) {}
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  void* reserve(std::size_t bytes);
  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  Kind kind_;
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace metric3d::gpu
