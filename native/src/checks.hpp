// What Engine::load and inspect_engine check between an engine file, this library and this machine:
// the sidecar (flavour, TensorRT version, backbone, profile), the plan's sha256, the GPU.
#pragma once

#include <string>

#include "gpu.hpp"
#include "metric3d/metric3d.hpp"
#include "spec.hpp"

namespace metric3d::checks {

std::string profile_text(const Profile& p);

struct Checked {
  EngineInfo info;
  spec::Record record;
};
// The plan and sidecar read; Error when the plan is missing or the sidecar unusable.
Checked check_files(const std::string& engine_path);
// Why this library cannot use the engine `record` describes ("" when it can), before any GPU work.
std::string sidecar_mismatch(const spec::Record& record, const std::string& engine_path,
                             const std::string& expect_backbone);
// Why GPU `device` cannot run it ("" when it can).
std::string gpu_mismatch(const spec::EngineSpec& spec, const gpu::Device& device, const std::string& name);
std::string plan_damaged(const std::string& engine_path);

}  // namespace metric3d::checks
