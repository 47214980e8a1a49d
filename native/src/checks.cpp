// The checks between an engine file and this library / machine (see checks.hpp).
#include "checks.hpp"

#include <filesystem>

#include "files.hpp"
#include "flavour.hpp"
#include "reference.hpp"

namespace metric3d::checks {
namespace {

const char* const kRebuild = "rebuild it here: metric3d-trt build <onnx> (or trt-metric3d build)";

bool holds_canvas(const Profile& p) {
  return p.min[1] <= ref::kCanvasH && ref::kCanvasH <= p.max[1] && p.min[2] <= ref::kCanvasW &&
         ref::kCanvasW <= p.max[2];
}

}  // namespace

std::string profile_text(const Profile& p) {
  auto s = [](const std::array<int, 3>& a) {
    return std::to_string(a[0]) + "x" + std::to_string(a[1]) + "x" + std::to_string(a[2]);
  };
  return "min " + s(p.min) + ", max " + s(p.max);
}

std::string sidecar_mismatch(const spec::Record& r, const std::string& engine_path, const std::string& expect_backbone) {
  const spec::EngineSpec& s = r.spec;
  const std::string name = std::filesystem::path(engine_path).filename().string();
  if (s.flavour != flavour::name() || s.trt_version != flavour::header_version()) {
    return "engine " + name + " was built with " + s.flavour + " " + s.trt_version + ", this is " + flavour::name() +
           " " + flavour::header_version() + "; " + kRebuild;
  }
  if (!expect_backbone.empty() && s.backbone != expect_backbone) {
    return "engine " + name + " is a " + s.backbone + " engine, not " + expect_backbone +
           "; pass the " + expect_backbone + " engine or drop --backbone";
  }
  if (!holds_canvas(s.profile)) {
    return "engine " + name + "'s profile (" + profile_text(s.profile) + ") does not hold the 616x1064 canvas; " +
           "rebuild it with --min/--max around 616x1064";
  }
  return "";
}

std::string gpu_mismatch(const spec::EngineSpec& s, const gpu::Device& d, const std::string& name) {
  if (s.compute_capability != std::to_string(d.compute_capability)) {
    return "engine " + name + " was built for compute capability " + s.compute_capability + ", this GPU (" + d.name +
           ") is " + std::to_string(d.compute_capability) + "; " + kRebuild;
  }
  if (s.gpu_name != "aot" && s.gpu_name != d.name) {
    return "engine " + name + " was built on a " + s.gpu_name + ", this GPU is a " + d.name + "; " + kRebuild;
  }
  return "";
}

Checked check_files(const std::string& engine_path) {
  Checked c;
  c.info.engine_path = engine_path;
  c.info.sidecar_path = spec::sidecar_path(engine_path);
  if (!std::filesystem::is_regular_file(engine_path)) {
    throw Error(Error::Kind::Io, "engine " + engine_path + " not found; build it with metric3d-trt build <onnx>");
  }
  c.record = spec::read_record(c.info.sidecar_path);
  const spec::EngineSpec& s = c.record.spec;
  c.info.backbone = s.backbone;
  c.info.precision = s.precision;
  c.info.flavour = s.flavour;
  c.info.trt_version = s.trt_version;
  c.info.gpu_name = s.gpu_name;
  c.info.compute_capability = s.compute_capability;
  c.info.quantization = s.quantization;
  c.info.profile = s.profile;
  c.info.plan_matches_sidecar = files::sha256_file(engine_path) == c.record.engine_sha256;
  return c;
}

std::string plan_damaged(const std::string& engine_path) {
  return "engine " + engine_path + " does not match its sidecar's sha256 (damaged or replaced); " + kRebuild;
}

}  // namespace metric3d::checks

namespace metric3d {

std::string tensorrt_flavour() { return flavour::name(); }

std::string tensorrt_version() {
  flavour::check_library_version();
  return flavour::header_version();
}

EngineInfo inspect_engine(const std::string& engine_path) {
  checks::Checked c = checks::check_files(engine_path);
  std::string why = c.info.plan_matches_sidecar ? checks::sidecar_mismatch(c.record, engine_path, "") : checks::plan_damaged(engine_path);
  if (why.empty()) {
    try {
      flavour::check_library_version();
      why = gpu::why_no_gpu();
      if (why.empty()) {
        const gpu::Device d = gpu::device(0, "");
        why = checks::gpu_mismatch(c.record.spec, d, std::filesystem::path(engine_path).filename().string());
      }
    } catch (const Error& e) {
      why = e.what();
    }
  }
  c.info.runnable_here = why;
  return c.info;
}


}  // namespace metric3d
