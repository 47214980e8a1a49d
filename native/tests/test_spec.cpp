// Sidecars and names in the Python cache's format (the cross-check with Python is tests/test_native.py).
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "check.hpp"
#include "files.hpp"
#include "spec.hpp"

using metric3d::Error;
namespace spec = metric3d::spec;
namespace fs = std::filesystem;

namespace {

spec::EngineSpec example() {
  spec::EngineSpec s;
  s.backbone = "vit-small";
  s.checkpoint_sha256 = std::string(64, 'a');
  s.precision = "fp16";
  s.flavour = "tensorrt_rtx";
  s.trt_version = "1.6.1.120";
  s.gpu_name = "NVIDIA GeForce RTX 3090 (Ti)";
  s.compute_capability = "86";
  return s;
}

std::string temp_dir() {
  const fs::path p = fs::temp_directory_path() / ("metric3d-test-spec-" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p.string();
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

int main() {
  const std::string dir = temp_dir();
  const int status = check::run({
      {"json.dumps(sort_keys=True) text: sorted keys, Python separators, ASCII escapes",
       [] {
         const nlohmann::json j = {{"b", {1, 2}}, {"a", "caf\xc3\xa9 \"x\""}};
         CHECK(spec::python_dumps_sorted(j) == R"({"a": "caf\u00e9 \"x\"", "b": [1, 2]})");
       }},
      {"the stem names backbone, precision, flavour, version, GPU, compute capability and key",
       [] {
         const std::string stem = spec::stem(example());
         CHECK(stem.rfind("vit-small-fp16-tensorrt_rtx1_6_1_120-nvidia-geforce-rtx-3090-ti-sm86-", 0) == 0);
         CHECK(stem.size() == std::string("vit-small-fp16-tensorrt_rtx1_6_1_120-nvidia-geforce-rtx-3090-ti-sm86-").size() + 16);
       }},
      {"every field changes the key",
       [] {
         const std::string base = spec::key(example());
         auto changed = example();
         changed.profile.max[0] = 8;
         CHECK(spec::key(changed) != base);
         changed = example();
         changed.quantization = "0123456789ab";
         CHECK(spec::key(changed) != base);
       }},
      {"a record reads back as written",
       [&] {
         const std::string path = dir + "/record.json";
         const std::string text = spec::record_text({example(), std::string(64, 'b')});
         write(path, text);
         const spec::Record r = spec::read_record(path);
         CHECK(spec::key(r.spec) == spec::key(example()) && r.engine_sha256 == std::string(64, 'b'));
       }},
      {"missing, corrupt and foreign sidecars are refused in one line",
       [&] {
         CHECK(check::throws([&] { spec::read_record(dir + "/none.json"); }, Error::Kind::Engine, "missing or unreadable"));
         write(dir + "/bad.json", "{not json");
         CHECK(check::throws([&] { spec::read_record(dir + "/bad.json"); }, Error::Kind::Engine, "not valid JSON"));
         write(dir + "/other.json", R"({"files": {}})");
         CHECK(check::throws([&] { spec::read_record(dir + "/other.json"); }, Error::Kind::Engine, "not an engine sidecar"));
         write(dir + "/half.json", R"({"spec": {"backbone": "vit-small"}, "engine_sha256": "x"})");
         CHECK(check::throws([&] { spec::read_record(dir + "/half.json"); }, Error::Kind::Engine, "checkpoint_sha256"));
       }},
      {"the export's file names say backbone, checkpoint, precision and quantization",
       [] {
         const auto fp16 = spec::parse_onnx_name("/x/vit-small-0123456789ab.fp16.onnx");
         CHECK(fp16 && fp16->backbone == "vit-small" && fp16->checkpoint_sha12 == "0123456789ab" && fp16->precision == "fp16" &&
               fp16->quantization.empty());
         const auto int8 = spec::parse_onnx_name("vit-large-0123456789ab.int8-ba9876543210.fp16.onnx");
         CHECK(int8 && int8->precision == "int8" && int8->quantization == "ba9876543210");
         CHECK(!spec::parse_onnx_name("model.onnx") && !spec::parse_onnx_name("vit-small-0123456789ab.onnx"));
       }},
      {"atomic writes replace whole files and leave no temp behind",
       [&] {
         const std::string path = dir + "/out.bin";
         metric3d::files::atomic_write(path, "first", 5);
         metric3d::files::atomic_write(path, "second", 6);
         CHECK(fs::file_size(path) == 6);
         int entries = 0;
         for (const auto& e : fs::directory_iterator(dir)) entries += e.path().filename().string().rfind(".out.bin", 0) == 0;
         CHECK(entries == 0);
         CHECK(check::throws([&] { metric3d::files::atomic_write(dir + "/no/such/folder/x", "x", 1); }, Error::Kind::Io, "cannot write"));
       }},
  });
  fs::remove_all(dir);
  return status;
}
