// Files shared with the Python side: atomic writes (temp file + rename, as trt_metric3d.io), the
// engine lock (flock on `<engine>.lock`, the lock Python's filelock takes), sha256, .npy output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace metric3d::files {

std::vector<std::uint8_t> read_bytes(const std::string& path, const char* what);
// Writes `data` to `path` through `.<name>.XXXXXX` in the same folder and a rename: all or nothing.
void atomic_write(const std::string& path, const void* data, std::size_t size);
std::string sha256_hex(const void* data, std::size_t size);
std::string sha256_file(const std::string& path);
// A float32 .npy (C order) of `shape`, written atomically.
void write_npy(const std::string& path, const float* data, const std::vector<std::size_t>& shape);
// Error(Io) naming the folder and the fix unless `folder` exists (created if missing) and is writable.
void writable_folder(const std::string& folder, const std::string& fix);
// Removes `.<name>.XXXXXX` leftovers of interrupted writes of `path` (call under the engine lock).
void remove_stale_temps(const std::string& path);

// An exclusive lock held for the object's life: flock on `path` (created if missing).
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace metric3d::files
