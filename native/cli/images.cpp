// Image decoding for the CLI (see images.hpp): JPEG through libjpeg-turbo, the rest through stb_image.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#include "images.hpp"

#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cctype>
#include <filesystem>
#include <regex>

#include "files.hpp"
#include "metric3d/metric3d.hpp"

namespace metric3d::cli {

const char* const kImageSuffixes[] = {".jpg", ".jpeg", ".png", ".bmp", ".tga", ".npy", nullptr};

bool is_image_name(const std::string& path) {
  std::string suffix = std::filesystem::path(path).extension().string();
  std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* const* s = kImageSuffixes; *s; ++s) {
    if (suffix == *s) return true;
  }
  return false;
}

namespace {

Error unreadable(const std::string& path, const std::string& why) {
  return Error(Error::Kind::Input, path + ": not a readable image (" + why +
                                       "); supported: PNG, JPEG, BMP, TGA, and uint8 H x W x 3 .npy");
}

Image read_npy(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  if (bytes.size() < 10 || std::string(bytes.begin(), bytes.begin() + 6) != "\x93NUMPY") throw unreadable(path, "no .npy header");
  const std::size_t length = bytes[6] == 1 ? bytes[8] | (static_cast<std::size_t>(bytes[9]) << 8) : 0;
  const std::size_t start = 10 + length;
  if (length == 0 || start > bytes.size()) throw unreadable(path, "a .npy version this reader does not know");
  const std::string header(bytes.begin() + 10, bytes.begin() + static_cast<std::ptrdiff_t>(start));
  std::smatch m;
  static const std::regex descr(R"('descr':\s*'\|u1')"), order(R"('fortran_order':\s*False)"),
      shape(R"('shape':\s*\((\d+),\s*(\d+),\s*3\))");
  if (!std::regex_search(header, descr) || !std::regex_search(header, order) || !std::regex_search(header, m, shape)) {
    throw unreadable(path, "the .npy is not a C-order uint8 H x W x 3 array");
  }
  Image im;
  im.height = std::stoi(m[1]);
  im.width = std::stoi(m[2]);
  const std::size_t n = static_cast<std::size_t>(im.width) * static_cast<std::size_t>(im.height) * 3;
  if (bytes.size() - start != n) throw unreadable(path, "the .npy is truncated");
  im.rgb.assign(bytes.begin() + static_cast<std::ptrdiff_t>(start), bytes.end());
  return im;
}

// libjpeg-turbo with its default (ISLOW) decoding: the pixels cv2.imread gives (stb's decoder differs
// by up to 3 grey levels).
struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr info) {
  auto* error = reinterpret_cast<JpegError*>(info->err);
  info->err->format_message(info, error->message);
  std::longjmp(error->jump, 1);
}

// The EXIF Orientation (tag 0x0112 of IFD0 in the APP1 segment) of a JPEG, 1 (upright) when it has none.
int exif_orientation(const std::vector<std::uint8_t>& b) {
  std::size_t at = 2;
  while (at + 4 <= b.size() && b[at] == 0xff && b[at + 1] != 0xda) {  // segments up to the scan
    const std::size_t length = static_cast<std::size_t>(b[at + 2]) << 8 | b[at + 3];
    const std::size_t tiff = at + 10;
    const auto data = b.begin() + static_cast<std::ptrdiff_t>(at + 4);
    if (b[at + 1] == 0xe1 && at + 4 + length <= b.size() && length > 16 && std::equal(data, data + 6, "Exif\0\0")) {
      const bool little = b[tiff] == 'I';
      auto read = [&](std::size_t offset, int bytes) -> std::size_t {
        std::size_t v = 0;
        for (int i = 0; i < bytes; ++i) {
          const std::size_t k = static_cast<std::size_t>(little ? bytes - 1 - i : i);
          v = v << 8 | b[tiff + offset + k];
        }
        return v;
      };
      const std::size_t end = at + 4 + length - tiff;  // the TIFF block's size
      const std::size_t ifd = read(4, 4);
      if (ifd + 2 > end) return 1;
      const std::size_t entries = read(ifd, 2);
      for (std::size_t e = 0; e < entries && ifd + 2 + 12 * (e + 1) <= end; ++e) {
        const std::size_t entry = ifd + 2 + 12 * e;
        if (read(entry, 2) == 0x0112) {
          const int value = static_cast<int>(read(entry + 8, 2));
          return value >= 1 && value <= 8 ? value : 1;
        }
      }
      return 1;
    }
    at += 2 + length;
  }
  return 1;
}

// What cv2.imread does with an EXIF orientation: a transpose for 5..8, then flips.
void apply_orientation(Image& im, int orientation) {
  if (orientation <= 1) return;
  if (orientation >= 5) {
    std::vector<std::uint8_t> t(im.rgb.size());
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x)
        std::copy_n(&im.rgb[(static_cast<std::size_t>(y * im.width) + static_cast<std::size_t>(x)) * 3], 3,
                    &t[(static_cast<std::size_t>(x * im.height) + static_cast<std::size_t>(y)) * 3]);
    im.rgb.swap(t);
    std::swap(im.width, im.height);
  }
  const bool mirror = orientation == 2 || orientation == 6 || orientation == 3 || orientation == 7;
  const bool upside_down = orientation == 4 || orientation == 8 || orientation == 3 || orientation == 7;
  const std::size_t w = static_cast<std::size_t>(im.width), h = static_cast<std::size_t>(im.height);
  std::vector<std::uint8_t> out(im.rgb.size());
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x)
      std::copy_n(&im.rgb[(y * w + x) * 3], 3, &out[((upside_down ? h - 1 - y : y) * w + (mirror ? w - 1 - x : x)) * 3]);
  im.rgb.swap(out);
}

bool is_jpeg(const std::vector<std::uint8_t>& bytes) {
  return bytes.size() > 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff;
}

Image read_jpeg(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  jpeg_decompress_struct info{};
  JpegError error{};
  info.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_fail;
  Image im;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&info);
    throw unreadable(path, error.message);
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  im.width = static_cast<int>(info.output_width);
  im.height = static_cast<int>(info.output_height);
  im.rgb.resize(static_cast<std::size_t>(im.width) * static_cast<std::size_t>(im.height) * 3);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = &im.rgb[static_cast<std::size_t>(info.output_scanline) * static_cast<std::size_t>(im.width) * 3];
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  apply_orientation(im, exif_orientation(bytes));  // as cv2.imread does
  return im;
}

}  // namespace

Image read_image(const std::string& path) {
  std::vector<std::uint8_t> bytes;
  try {
    bytes = files::read_bytes(path, "image");
  } catch (const Error& e) {
    throw Error(Error::Kind::Input, e.what());
  }
  if (std::filesystem::path(path).extension() == ".npy") return read_npy(path, bytes);
  if (is_jpeg(bytes)) return read_jpeg(path, bytes);
  int width = 0, height = 0, channels = 0;
  stbi_uc* pixels = bytes.empty() ? nullptr
                                  : stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height,
                                                          &channels, 3);
  if (pixels == nullptr) throw unreadable(path, bytes.empty() ? "empty file" : stbi_failure_reason());
  Image im;
  im.width = width;
  im.height = height;
  im.rgb.assign(pixels, pixels + static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  stbi_image_free(pixels);
  return im;
}

}  // namespace metric3d::cli
