// Metric3D v2 under TensorRT from C++: load (or build) the engines `trt-metric3d build` makes and turn
// uint8 RGB/BGR images plus focal lengths into metric depth, confidence and surface normals.
//
//   auto engine = metric3d::Engine::load("engines/vit-small-fp16-....engine");
//   metric3d::Result r = engine.infer({pixels, width, height, stride}, {fx, fy});
//   float metres = r.depth[y * r.width + x];
//
// Every failure is a metric3d::Error whose what() is one line naming the problem and the fix.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace metric3d {

class Error : public std::runtime_error {
 public:
  enum class Kind { Input, Engine, NoGpu, Version, Io };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

enum class PixelFormat { RGB, BGR };
enum class Memory { Host, Device };  // where ImageView::data lives (device: this engine's CUDA device)

// Interleaved 8-bit pixels, row `y` starting at data + y * stride (bytes, >= 3 * width).
struct ImageView {
  ImageView(const std::uint8_t* pixels = nullptr, int w = 0, int h = 0, std::size_t row_stride = 0,
            PixelFormat pixel_format = PixelFormat::RGB, Memory where = Memory::Host)
      : data(pixels), width(w), height(h), stride(row_stride), format(pixel_format), memory(where) {}
  const std::uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  std::size_t stride = 0;  // 0: tightly packed (3 * width)
  PixelFormat format = PixelFormat::RGB;
  Memory memory = Memory::Host;
};

// Pinhole intrinsics in pixels of this image. fy = 0 means fy = fx; cx, cy (default: the image centre)
// only matter to back-projection (unproject), not to the depth.
struct Intrinsics {
  Intrinsics(double focal_x = 0, double focal_y = 0, std::optional<double> centre_x = {},
             std::optional<double> centre_y = {})
      : fx(focal_x), fy(focal_y), cx(centre_x), cy(centre_y) {}
  double fx = 0;
  double fy = 0;
  std::optional<double> cx;
  std::optional<double> cy;
};

// One image's results at its own size, row-major float32.
struct Result {
  int width = 0;
  int height = 0;
  std::vector<float> depth;       // H x W, metres
  std::vector<float> confidence;  // H x W, the network's confidence
  std::vector<float> normal;      // H x W x 3, unit surface normals (camera frame: x right, y down, z forward)
};

// (x, y, z) in metres of pixel (u, v) at depth z: the camera-frame point.
std::array<float, 3> unproject(const Intrinsics& k, int width, int height, float u, float v, float z);

// Min / opt / max (batch, height, width) of the canvas input: one optimisation profile.
struct Profile {
  std::array<int, 3> min{1, 616, 616};
  std::array<int, 3> opt{1, 616, 1064};
  std::array<int, 3> max{4, 1064, 1064};  // covers 616 x 1064 landscape and portrait
};

struct BuildOptions {
  std::string onnx;        // the exported graph, e.g. export/vit-small-<sha12>.fp16.onnx
  std::string engine_dir;  // where the engine and its sidecar go (the Python cache folder)
  // What the engine's name and sidecar record. Empty backbone / precision / quantization: read from the
  // ONNX file name as `trt-metric3d export` writes it. checkpoint_sha256 (64 hex digits) must be given, or
  // computed from `checkpoint`.
  std::string backbone;
  std::string precision;
  std::string quantization;
  std::string checkpoint_sha256;
  std::string checkpoint;
  Profile profile;
  double workspace_gib = 4.0;
  std::string compute_capability;  // TensorRT-RTX: build ahead of time, e.g. "SM86"; empty: this GPU
  bool verbose = false;
};

// Build (or find already built) the engine for `options`; returns the engine's path. The file name and
// sidecar are those the Python cache uses, so either side finds the other's engine.
std::string build_engine(const BuildOptions& options);

// What an engine's sidecar says, and whether this library and machine can run it.
struct EngineInfo {
  std::string engine_path;
  std::string sidecar_path;
  std::string backbone, precision, flavour, trt_version, gpu_name, compute_capability, quantization;
  Profile profile;
  bool plan_matches_sidecar = false;  // the plan's sha256 is the one recorded
  std::string runnable_here;          // "" when it runs here, else why not (one line)
};
EngineInfo inspect_engine(const std::string& engine_path);

struct LoadOptions {
  int device = 0;
  std::string expect_backbone;  // non-empty: refuse an engine of another backbone
  bool cuda_graphs = true;      // capture and replay the engine's execution per canvas shape
  bool timings = false;         // time each stage of infer() with CUDA events (Engine::last_timings)
};

// GPU time of each stage of the last infer() batch, in milliseconds (LoadOptions::timings).
struct Timings {
  float upload = 0, preprocess = 0, engine = 0, postprocess = 0, download = 0;
  float total() const { return upload + preprocess + engine + postprocess + download; }
};

class Engine {
 public:
  // Checks the sidecar (flavour, version, GPU, compute capability, plan checksum), then deserialises.
  static Engine load(const std::string& engine_path, const LoadOptions& options = {});
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  Result infer(const ImageView& image, const Intrinsics& intrinsics);
  // Images of any sizes; one Intrinsics per image. Run through the engine in batches of the profile's max.
  std::vector<Result> infer(const std::vector<ImageView>& images, const std::vector<Intrinsics>& intrinsics);

  const EngineInfo& info() const;
  const Timings& last_timings() const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The linked TensorRT: flavour ("tensorrt" / "tensorrt_rtx") and version ("1.6.1.120"), after checking
// that the library is the one the headers describe (the libraries do not check it themselves).
std::string tensorrt_flavour();
std::string tensorrt_version();

}  // namespace metric3d
