// The engine spec and its sidecar, as trt_metric3d/engine/cache.py writes them: the same fields, the
// same key (sha256 of Python's json.dumps(spec, sort_keys=True)), the same file name, so the Python cache
// and this library find each other's engines.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "metric3d/metric3d.hpp"

namespace metric3d::spec {

struct EngineSpec {
  std::string backbone;
  std::string checkpoint_sha256;
  std::string precision;
  Profile profile;
  std::string flavour;  // "tensorrt" or "tensorrt_rtx"
  std::string trt_version;
  std::string gpu_name;
  std::string compute_capability;  // "86"
  std::string quantization;        // the Q/DQ graph's key for int8 / fp8, "" for fp16
};

nlohmann::ordered_json to_json(const EngineSpec& spec);
// Error(Engine) naming the field when `json` is not an engine spec.
EngineSpec from_json(const nlohmann::json& json, const std::string& where);
// Python's json.dumps(value, sort_keys=True): ", " and ": " separators, ASCII escapes.
std::string python_dumps_sorted(const nlohmann::json& value);
std::string key(const EngineSpec& spec);   // 16 hex digits
std::string stem(const EngineSpec& spec);  // <backbone>-<precision>-<flavour><version>-<gpu>-sm<cc>-<key>

struct Record {
  EngineSpec spec;
  std::string engine_sha256;
};
// The sidecar's record; Error(Engine) with the fix when it is missing, unreadable or of another shape.
Record read_record(const std::string& sidecar_path);
std::string record_text(const Record& record);  // json.dumps(record, indent=1)
std::string sidecar_path(const std::string& engine_path);  // x.engine -> x.json

// What the exported ONNX's file name says: vit-small-<sha12>[.int8-<key>].fp16.onnx
struct OnnxName {
  std::string backbone, checkpoint_sha12, precision, quantization;
};
std::optional<OnnxName> parse_onnx_name(const std::string& path);

}  // namespace metric3d::spec
