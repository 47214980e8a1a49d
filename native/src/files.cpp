// Atomic writes, the engine lock, sha256 (OpenSSL) and .npy output (see files.hpp).
#include "files.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>

#include "metric3d/metric3d.hpp"

namespace metric3d::files {
namespace fs = std::filesystem;
namespace {

Error io_error(const std::string& message) { return Error(Error::Kind::Io, message); }

class Digest {
 public:
  Digest() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void update(const void* data, std::size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
  std::string hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_.get(), out, &length);
    static const char digits[] = "0123456789abcdef";
    std::string text;
    for (unsigned int i = 0; i < length; ++i) {
      text += digits[out[i] >> 4];
      text += digits[out[i] & 15];
    }
    return text;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

}  // namespace

std::vector<std::uint8_t> read_bytes(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path)) {
    throw io_error(std::string(what) + " " + path + " cannot be read (" +
                   (fs::exists(path) ? "not a readable file" : "no such file") + ")");
  }
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void atomic_write(const std::string& path, const void* data, std::size_t size) {
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string temp = (folder / ("." + target.filename().string() + ".XXXXXX")).string();
  const int fd = mkstemp(temp.data());
  if (fd < 0) throw io_error("cannot write " + path + ": " + std::strerror(errno));
  const mode_t mask = umask(0);
  umask(mask);
  fchmod(fd, 0666 & ~mask);  // mkstemp makes it private; a result file is not
  const auto* bytes = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, bytes + done, size - done);
    if (n <= 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      std::remove(temp.c_str());
      throw io_error("cannot write " + path + ": " + reason);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 || std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temp.c_str());
    throw io_error("cannot write " + path + ": " + reason);
  }
}

std::string sha256_hex(const void* data, std::size_t size) {
  Digest digest;
  digest.update(data, size);
  return digest.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(path + " cannot be read");
  Digest digest;
  std::vector<char> block(1 << 22);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    digest.update(block.data(), static_cast<std::size_t>(in.gcount()));
  }
  return digest.hex();
}

void write_npy(const std::string& path, const float* data, const std::vector<std::size_t>& shape) {
  std::string dims;
  std::size_t count = 1;
  for (std::size_t d : shape) {
    dims += std::to_string(d) + ", ";
    count *= d;
  }
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // "(5,)" for one dimension, "(2, 3)" otherwise
  else if (!dims.empty()) dims.resize(dims.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // magic + header a multiple of 64 bytes
  header += '\n';
  std::string file("\x93NUMPY\x01\x00", 8);
  file += static_cast<char>(header.size() & 0xff);
  file += static_cast<char>(header.size() >> 8);
  file += header;
  file.append(reinterpret_cast<const char*>(data), count * sizeof(float));
  atomic_write(path, file.data(), file.size());
}

void writable_folder(const std::string& folder, const std::string& fix) {
  std::error_code error;
  fs::create_directories(folder, error);
  if (error || !fs::is_directory(folder) || access(folder.c_str(), W_OK) != 0) {
    const std::string reason = error ? error.message() : (fs::is_directory(folder) ? "not writable" : "not a folder");
    throw io_error("folder " + folder + " cannot be written (" + reason + "); " + fix);
  }
}

void remove_stale_temps(const std::string& path) {
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string name = target.filename().string();
  const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  const std::regex leftover("\\." + std::regex_replace(name, special, "\\$&") + "\\.[^.]+(\\.tmp)?");
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    if (std::regex_match(entry.path().filename().string(), leftover)) {
      std::fprintf(stderr, "metric3d: removing %s, left by an interrupted write of %s\n",
                   entry.path().c_str(), name.c_str());
      fs::remove_all(entry.path(), error);
    }
  }
}

FileLock::FileLock(const std::string& path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
  if (fd_ < 0 || flock(fd_, LOCK_EX) != 0) throw io_error("cannot lock " + path + ": " + std::strerror(errno));
}

FileLock::~FileLock() {
  if (fd_ >= 0) {
    flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

}  // namespace metric3d::files
