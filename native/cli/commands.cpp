// The metric3d-trt commands (see commands.hpp).
#include "commands.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "files.hpp"
#include "images.hpp"
#include "names.hpp"
#include "metric3d/metric3d.hpp"
#include "reference.hpp"

namespace metric3d::cli {
namespace fs = std::filesystem;
namespace {

Error input_error(const std::string& message) { return Error(Error::Kind::Input, message); }

std::string required(const Args& args, const std::string& name, const std::string& example) {
  if (!args.has(name) || args.get(name).empty()) throw input_error("missing " + name + ", e.g. " + name + " " + example);
  return args.get(name);
}

double number(const Args& args, const std::string& name, double fallback) {
  if (!args.has(name)) return fallback;
  const std::string text = args.get(name);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') throw input_error(name + " '" + text + "' is not a number");
  return value;
}

std::array<int, 3> shape(const Args& args, const std::string& name, const std::array<int, 3>& fallback) {
  if (!args.has(name)) return fallback;
  const std::string text = args.get(name);
  std::array<int, 3> out{};
  std::size_t at = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t next = i < 2 ? text.find_first_of("xX", at) : text.size();
    const std::string part = next == std::string::npos ? "" : text.substr(at, next - at);
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos || part.size() > 6) {
      throw input_error(name + " '" + text + "': expected BxHxW, e.g. 1x616x1064");
    }
    out[static_cast<std::size_t>(i)] = std::stoi(part);
    at = next + 1;
  }
  return out;
}

std::string engine_dir(const Args& args) {
  if (args.has("--engines")) return args.get("--engines");
  if (const char* env = std::getenv("METRIC3D_ENGINE_DIR"); env && *env) return env;
  const char* cache = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const fs::path base = cache && *cache ? fs::path(cache) : fs::path(home ? home : ".") / ".cache";
  return (base / "trt-metric3d" / "engines").string();
}

std::vector<std::string> find_images(const std::vector<std::string>& arguments) {
  std::vector<std::string> found;
  for (const std::string& a : arguments) {
    if (fs::is_directory(a)) {
      std::vector<std::string> inside;
      for (const auto& entry : fs::directory_iterator(a)) {
        if (entry.is_regular_file() && is_image_name(entry.path().string())) inside.push_back(entry.path().string());
      }
      std::sort(inside.begin(), inside.end());
      found.insert(found.end(), inside.begin(), inside.end());
    } else if (fs::exists(a)) {
      found.push_back(a);
    } else {
      throw input_error(a + ": no such file or folder");
    }
  }
  std::vector<std::string> unique;  // each file once, as first named
  std::vector<fs::path> seen;
  for (const std::string& f : found) {
    const fs::path real = fs::weakly_canonical(f);
    if (std::find(seen.begin(), seen.end(), real) == seen.end()) {
      seen.push_back(real);
      unique.push_back(f);
    }
  }
  return unique;
}

// The plan's first bytes: a 4-character magic ("vtrt" for TensorRT-RTX, "ftrt" for TensorRT), the
// plan's size at byte 16 and, in the plans we have looked at, major.minor.patch.build bytes at 24.
std::string plan_header(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  unsigned char h[28] = {};
  const std::size_t n = f ? std::fread(h, 1, sizeof h, f) : 0;
  if (f) std::fclose(f);
  const std::string magic(reinterpret_cast<const char*>(h), 4);
  if (n < sizeof h || (magic != "vtrt" && magic != "ftrt")) return "not a TensorRT plan (no vtrt/ftrt magic)";
  unsigned long long size = 0;
  for (int b = 7; b >= 0; --b) size = size << 8 | h[16 + b];
  return "magic " + magic + ", version bytes " + std::to_string(h[24]) + "." + std::to_string(h[25]) + "." +
         std::to_string(h[26]) + "." + std::to_string(h[27]) + ", size field " +
         (size == fs::file_size(path) ? "matches the file" : "does not match the file (truncated?)");
}

ImageView view(const Image& im) { return ImageView{im.rgb.data(), im.width, im.height, 0, PixelFormat::RGB, Memory::Host}; }

}  // namespace

int build(const Args& args) {
  if (args.positional.size() != 1) throw input_error("build takes one ONNX file, e.g. metric3d-trt build export/vit-small-<sha12>.fp16.onnx");
  BuildOptions o;
  o.onnx = args.positional[0];
  o.engine_dir = engine_dir(args);
  o.backbone = args.get("--backbone");
  o.precision = args.get("--precision");
  o.quantization = args.get("--quantization");
  o.checkpoint = args.get("--checkpoint");
  o.checkpoint_sha256 = args.get("--checkpoint-sha256");
  o.compute_capability = args.get("--compute-capability");
  o.workspace_gib = number(args, "--workspace", o.workspace_gib);
  o.profile.min = shape(args, "--min", o.profile.min);
  o.profile.opt = shape(args, "--opt", o.profile.opt);
  o.profile.max = shape(args, "--max", o.profile.max);
  o.verbose = args.has("--verbose");
  std::printf("%s\n", build_engine(o).c_str());
  return 0;
}

int infer(const Args& args) {
  if (args.positional.empty()) throw input_error("no images given: metric3d-trt infer IMAGES... --engine E --fx F --out DIR");
  const std::string engine_path = required(args, "--engine", "engines/vit-small-fp16-....engine");
  Intrinsics k;
  k.fx = number(args, "--fx", std::nan(""));
  if (!args.has("--fx")) required(args, "--fx", "1000 (the focal length in pixels)");
  k.fy = number(args, "--fy", 0.0);
  if (args.has("--fy") && k.fy == 0) k.fy = std::nan("");  // an explicit 0 is refused, not "same as fx"
  const std::string out = required(args, "--out", "results/");
  const std::vector<std::string> paths = find_images(args.positional);
  if (paths.empty()) throw input_error("no image files found in " + args.positional[0]);
  files::writable_folder(out, "choose another with --out");
  std::vector<Image> images;
  for (const std::string& p : paths) {  // all read and checked before the engine runs
    images.push_back(read_image(p));
    const ImageView v = view(images.back());
    ref::check_image(v);
    ref::metric_scale(ref::fit_canvas(v.height, v.width), k);
  }
  LoadOptions load;
  load.expect_backbone = args.get("--backbone");
  load.cuda_graphs = !args.has("--no-cuda-graphs");
  Engine engine = Engine::load(engine_path, load);
  std::vector<ImageView> views;
  for (const Image& im : images) views.push_back(view(im));
  const std::vector<Result> results = engine.infer(views, std::vector<Intrinsics>(views.size(), k));
  const std::vector<std::string> names = result_names(paths);
  for (std::size_t i = 0; i < results.size(); ++i) {
    const std::string file = (fs::path(out) / (names[i] + "_depth.npy")).string();
    const Result& r = results[i];
    files::write_npy(file, r.depth.data(), {static_cast<std::size_t>(r.height), static_cast<std::size_t>(r.width)});
    std::printf("%s\n", file.c_str());
  }
  return 0;
}

int canvas(const Args& args) {
  if (args.positional.size() != 1) throw input_error("canvas takes one image: metric3d-trt canvas IMAGE -o canvas.npy");
  const std::string out = required(args, "-o", "canvas.npy");
  if (fs::exists(out) && fs::equivalent(out, args.positional[0])) {
    throw input_error("-o " + out + " is the input image; choose another output file");
  }
  const Image im = read_image(args.positional[0]);
  const std::vector<float> x = ref::normalize_canvas(ref::make_canvas(view(im)));
  files::write_npy(out, x.data(), {1, 3, ref::kCanvasH, ref::kCanvasW});
  return 0;
}

int info(const Args& args) {
  if (args.positional.size() != 1) throw input_error("info takes one engine file: metric3d-trt info ENGINE");
  const EngineInfo i = inspect_engine(args.positional[0]);
  auto shape_text = [](const std::array<int, 3>& s) {
    return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
  };
  std::printf("engine:             %s (%.1f MB)\n", i.engine_path.c_str(),
              static_cast<double>(fs::file_size(i.engine_path)) / 1e6);
  std::printf("sidecar:            %s\n", i.sidecar_path.c_str());
  std::printf("backbone:           %s\n", i.backbone.c_str());
  std::printf("precision:          %s%s\n", i.precision.c_str(), i.quantization.empty() ? "" : (" (" + i.quantization + ")").c_str());
  std::printf("built with:         %s %s\n", i.flavour.c_str(), i.trt_version.c_str());
  std::printf("for:                %s, compute capability %s\n", i.gpu_name == "aot" ? "ahead of time" : i.gpu_name.c_str(),
              i.compute_capability.c_str());
  std::printf("profile:            min %s, opt %s, max %s\n", shape_text(i.profile.min).c_str(),
              shape_text(i.profile.opt).c_str(), shape_text(i.profile.max).c_str());
  std::printf("plan header:        %s\n", plan_header(i.engine_path).c_str());
  std::printf("plan matches sidecar: %s\n", i.plan_matches_sidecar ? "yes" : "no");
  std::printf("this library:       %s %s\n", tensorrt_flavour().c_str(), tensorrt_version().c_str());
  std::printf("runs here:          %s\n", i.runnable_here.empty() ? "yes" : ("no: " + i.runnable_here).c_str());
  return 0;
}

}  // namespace metric3d::cli
