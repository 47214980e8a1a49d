// The CPU reference on files, for tests/test_native.py to hold against the Python package:
//   metric3d_reference_tool post DEPTH.npy CONFIDENCE.npy NORMAL.npy HEIGHT WIDTH FX FY OUT_PREFIX
//       canvas outputs (616x1064 float32 planes; normal 4 planes) -> OUT_PREFIX{depth,confidence,normal}.npy
//   metric3d_reference_tool names PATH...
//       the result name of each path, one per line
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>

#include "files.hpp"
#include "names.hpp"
#include "reference.hpp"

namespace {

std::vector<float> read_floats(const std::string& path, std::size_t expected) {
  const std::vector<std::uint8_t> bytes = metric3d::files::read_bytes(path, "array");
  const std::size_t start = 10 + (bytes[8] | (static_cast<std::size_t>(bytes[9]) << 8));
  const std::string header(bytes.begin() + 10, bytes.begin() + static_cast<std::ptrdiff_t>(start));
  if (header.find("'<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos ||
      bytes.size() - start != expected * sizeof(float)) {
    throw std::runtime_error(path + ": expected a C-order float32 array of " + std::to_string(expected) + " values");
  }
  std::vector<float> values(expected);
  std::memcpy(values.data(), bytes.data() + start, expected * sizeof(float));
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string command = argc > 1 ? argv[1] : "";
    if (command == "names") {
      for (const std::string& name : metric3d::cli::result_names(std::vector<std::string>(argv + 2, argv + argc))) {
        std::printf("%s\n", name.c_str());
      }
      return 0;
    }
    if (command == "post" && argc == 10) {
      const std::size_t plane = static_cast<std::size_t>(metric3d::ref::kCanvasH) * metric3d::ref::kCanvasW;
      const auto depth = read_floats(argv[2], plane), confidence = read_floats(argv[3], plane);
      const auto normal = read_floats(argv[4], 4 * plane);
      const metric3d::ref::Canvas canvas = metric3d::ref::fit_canvas(std::atoi(argv[5]), std::atoi(argv[6]));
      const double scale = metric3d::ref::metric_scale(canvas, metric3d::Intrinsics{std::atof(argv[7]), std::atof(argv[8])});
      const metric3d::Result r = metric3d::ref::postprocess(depth.data(), confidence.data(), normal.data(), canvas, scale);
      const std::size_t h = static_cast<std::size_t>(r.height), w = static_cast<std::size_t>(r.width);
      const std::string prefix = argv[9];
      metric3d::files::write_npy(prefix + "depth.npy", r.depth.data(), {h, w});
      metric3d::files::write_npy(prefix + "confidence.npy", r.confidence.data(), {h, w});
      metric3d::files::write_npy(prefix + "normal.npy", r.normal.data(), {h, w, 3});
      return 0;
    }
    std::fprintf(stderr, "usage: metric3d_reference_tool post ... | names PATH...\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "metric3d_reference_tool: error: %s\n", e.what());
    return 1;
  }
}
