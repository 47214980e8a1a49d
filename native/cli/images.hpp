// Image files for the CLI: JPEG through libjpeg-turbo (cv2's decoder, EXIF orientation applied as cv2
// applies it), PNG, BMP, TGA through stb_image, and uint8
// H x W x 3 .npy arrays (the exact pixels a Python caller holds); the library itself takes raw pixels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace metric3d::cli {

struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // H x W x 3
};
// Error(Input) naming the file and the supported formats when it cannot be read.
Image read_image(const std::string& path);

extern const char* const kImageSuffixes[];  // what a folder argument is searched for
bool is_image_name(const std::string& path);

}  // namespace metric3d::cli
