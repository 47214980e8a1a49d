// CUDA device checks and buffers (see gpu.hpp).
#include "gpu.hpp"

#include <utility>

namespace metric3d::gpu {

std::string why_no_gpu() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear it
    return std::string("no GPU: CUDA reports ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
  }
  return count == 0 ? "no GPU: CUDA sees no device (check CUDA_VISIBLE_DEVICES)" : "";
}

Device device(int index, const std::string& fix) {
  const std::string none = why_no_gpu();
  if (!none.empty()) throw Error(Error::Kind::NoGpu, none + "; " + fix);
  int count = 0;
  cudaGetDeviceCount(&count);
  if (index < 0 || index >= count) {
    throw Error(Error::Kind::NoGpu, "GPU " + std::to_string(index) + " does not exist: CUDA sees " +
                                        std::to_string(count) + " (0 to " + std::to_string(count - 1) + ")");
  }
  cudaDeviceProp props{};
  check(cudaGetDeviceProperties(&props, index), "reading the GPU's properties");
  return Device{index, props.name, props.major * 10 + props.minor};
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(Error::Kind::Engine, std::string("CUDA error while ") + what + ": " + cudaGetErrorName(status) +
                                         " (" + cudaGetErrorString(status) + ")");
  }
}

Buffer::~Buffer() {
  if (data_ == nullptr) return;
  if (kind_ == Kind::Device) cudaFree(data_);
  else cudaFreeHost(data_);
}

Buffer::Buffer(Buffer&& other) noexcept
    : kind_(other.kind_), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  std::swap(kind_, other.kind_);
  std::swap(data_, other.data_);
  std::swap(size_, other.size_);
  return *this;
}

void* Buffer::reserve(std::size_t bytes) {
  if (bytes <= size_) return data_;
  Buffer fresh(kind_);
  check(kind_ == Kind::Device ? cudaMalloc(&fresh.data_, bytes) : cudaMallocHost(&fresh.data_, bytes),
        kind_ == Kind::Device ? "allocating GPU memory" : "allocating pinned host memory");
  fresh.size_ = bytes;
  *this = std::move(fresh);
  return data_;
}

}  // namespace metric3d::gpu
