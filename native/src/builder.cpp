// The C++ builder: exported ONNX -> strongly typed engine + sidecar, in the Python cache's layout.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "files.hpp"
#include "flavour.hpp"
#include "gpu.hpp"
#include "metric3d/metric3d.hpp"
#include "spec.hpp"

namespace metric3d {
namespace {

constexpr int kCanvasMultiple = 28;
const char* const kInputName = "image";

Error input_error(const std::string& message) { return Error(Error::Kind::Input, message); }

std::string shape_text(const std::array<int, 3>& s) {
  return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
}

void check_profile(const Profile& p) {
  const std::pair<const char*, const std::array<int, 3>*> named[] = {{"min", &p.min}, {"opt", &p.opt}, {"max", &p.max}};
  for (const auto& [name, s] : named) {
    const auto& [b, h, w] = *s;
    if (b < 1 || h <= 0 || w <= 0 || h % kCanvasMultiple || w % kCanvasMultiple) {
      throw input_error(std::string("profile ") + name + "=" + shape_text(*s) +
                        ": batch must be >= 1 and height/width positive multiples of 28");
    }
  }
  for (int i = 0; i < 3; ++i) {
    if (!(p.min[i] <= p.opt[i] && p.opt[i] <= p.max[i])) {
      throw input_error("profile needs min <= opt <= max in every dimension, got min=" + shape_text(p.min) +
                        " opt=" + shape_text(p.opt) + " max=" + shape_text(p.max));
    }
  }
}

bool is_sha256(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

spec::EngineSpec spec_for(const BuildOptions& o, int* target_cc) {
  namespace fs = std::filesystem;
  if (!fs::is_regular_file(o.onnx)) throw Error(Error::Kind::Io, "ONNX file " + o.onnx + " not found; export it with trt-metric3d export");
  const auto name = spec::parse_onnx_name(o.onnx);
  spec::EngineSpec s;
  s.backbone = !o.backbone.empty() ? o.backbone : name ? name->backbone : "";
  s.precision = !o.precision.empty() ? o.precision : name ? name->precision : "";
  s.quantization = !o.quantization.empty() ? o.quantization : name ? name->quantization : "";
  if (s.backbone.empty() || s.precision.empty()) {
    throw input_error(o.onnx + " is not named as trt-metric3d export names its graphs (<backbone>-<sha12>" +
                      "[.int8-<key>].fp16.onnx); pass --backbone and --precision");
  }
  if (s.precision != "fp16" && s.quantization.empty()) {
    throw input_error("a " + s.precision + " engine needs the Q/DQ graph's key (--quantization)");
  }
  s.checkpoint_sha256 = !o.checkpoint_sha256.empty() ? o.checkpoint_sha256
                        : !o.checkpoint.empty()      ? files::sha256_file(o.checkpoint)
                                                     : "";
  if (!is_sha256(s.checkpoint_sha256)) {
    throw input_error("the engine records its checkpoint's sha256: pass --checkpoint FILE or --checkpoint-sha256 " +
                      std::string("<64 lowercase hex digits>") +
                      (s.checkpoint_sha256.empty() ? "" : ", got '" + s.checkpoint_sha256 + "'"));
  }
  if (name && s.checkpoint_sha256.compare(0, 12, name->checkpoint_sha12) != 0) {
    throw input_error(o.onnx + " was exported from checkpoint " + name->checkpoint_sha12 + "..., not " +
                      s.checkpoint_sha256.substr(0, 12) + "...; pass that graph's checkpoint");
  }
  check_profile(o.profile);
  if (!(o.workspace_gib > 0)) {
    throw input_error("workspace " + std::to_string(o.workspace_gib) + " GiB: the builder workspace must be > 0 GiB (--workspace)");
  }
  s.profile = o.profile;
  s.flavour = flavour::name();
  s.trt_version = flavour::header_version();
  if (!o.compute_capability.empty()) {
    *target_cc = flavour::parse_compute_capability(o.compute_capability);
    s.gpu_name = "aot";
    s.compute_capability = std::to_string(*target_cc);
  } else {
    const gpu::Device device = gpu::device(0, "TensorRT builds for the GPU it runs on. With the TensorRT-RTX flavour "
                                              "you can build ahead of time for a GPU family: pass --compute-capability "
                                              "(e.g. SM86 for RTX 30xx)");
    *target_cc = 0;
    s.gpu_name = device.name;
    s.compute_capability = std::to_string(device.compute_capability);
  }
  return s;
}

std::vector<std::uint8_t> build_plan(const BuildOptions& o, int target_cc) {
  auto builder = flavour::create_builder();
  auto network = builder ? flavour::create_network(*builder) : nullptr;
  auto parser = network ? flavour::create_parser(*network) : nullptr;
  if (!parser) throw Error(Error::Kind::Engine, std::string(flavour::name()) + " could not create a builder");
  if (!parser->parseFromFile(o.onnx.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
    std::string errors;
    for (int i = 0; i < parser->getNbErrors(); ++i) errors += std::string("; ") + parser->getError(i)->desc();
    throw Error(Error::Kind::Engine, std::string(flavour::name()) + " could not parse " + o.onnx + errors);
  }
  flavour::Ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
  config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<std::size_t>(o.workspace_gib * (1ull << 30)));
  nvinfer1::IOptimizationProfile* shapes = builder->createOptimizationProfile();
  auto dims = [](const std::array<int, 3>& s) { return nvinfer1::Dims4{s[0], 3, s[1], s[2]}; };
  shapes->setDimensions(kInputName, nvinfer1::OptProfileSelector::kMIN, dims(o.profile.min));
  shapes->setDimensions(kInputName, nvinfer1::OptProfileSelector::kOPT, dims(o.profile.opt));
  shapes->setDimensions(kInputName, nvinfer1::OptProfileSelector::kMAX, dims(o.profile.max));
  config->addOptimizationProfile(shapes);
  if (target_cc) flavour::set_compute_capability(*config, target_cc);
  flavour::Ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
  if (!plan || plan->size() == 0) {
    throw Error(Error::Kind::Engine, std::string(flavour::name()) + " failed to build an engine from " + o.onnx + "; see the log above");
  }
  const auto* bytes = static_cast<const std::uint8_t*>(plan->data());
  return std::vector<std::uint8_t>(bytes, bytes + plan->size());
}

}  // namespace

std::string build_engine(const BuildOptions& o) {
  flavour::check_library_version();
  flavour::logger().set_verbose(o.verbose);
  int target_cc = 0;
  const spec::EngineSpec s = spec_for(o, &target_cc);
  const std::string folder = o.engine_dir.empty() ? "engines" : o.engine_dir;
  files::writable_folder(folder, "choose another with --engines");
  const std::string engine = (std::filesystem::path(folder) / (spec::stem(s) + ".engine")).string();
  const std::string sidecar = spec::sidecar_path(engine);
  files::FileLock lock(engine + ".lock");  // the lock trt-metric3d's cache takes for this engine
  files::remove_stale_temps(engine);
  files::remove_stale_temps(sidecar);
  if (std::filesystem::is_regular_file(engine) && std::filesystem::is_regular_file(sidecar)) {
    try {
      const spec::Record found = spec::read_record(sidecar);
      if (spec::key(found.spec) == spec::key(s) && found.engine_sha256 == files::sha256_file(engine)) {
        std::fprintf(stderr, "metric3d: %s is already built\n", engine.c_str());
        return engine;
      }
    } catch (const Error&) {  // unreadable or foreign sidecar: build again, as the Python cache does
    }
    std::fprintf(stderr, "metric3d: %s does not match its sidecar: rebuilding\n", engine.c_str());
  }
  std::fprintf(stderr, "metric3d: building %s engine %s\n", flavour::name(), engine.c_str());
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::uint8_t> plan = build_plan(o, target_cc);
  files::atomic_write(engine, plan.data(), plan.size());
  const std::string record = spec::record_text({s, files::sha256_hex(plan.data(), plan.size())});
  files::atomic_write(sidecar, record.data(), record.size());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "metric3d: built in %.1f s (%.1f MB)\n", seconds, static_cast<double>(plan.size()) / 1e6);
  return engine;
}

}  // namespace metric3d
