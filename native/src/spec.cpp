// Engine specs and sidecars in the Python cache's format (see spec.hpp).
#include "spec.hpp"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "files.hpp"

namespace metric3d::spec {
namespace {

const char* const kRebuild =
    "rebuild it: metric3d-trt build <onnx> --engines <folder>, or trt-metric3d build";

Error engine_error(const std::string& message) { return Error(Error::Kind::Engine, message); }

void dump(const nlohmann::json& v, std::string& out) {
  if (v.is_object()) {  // nlohmann::json keeps keys sorted (std::map), as sort_keys=True
    out += '{';
    bool first = true;
    for (const auto& [k, item] : v.items()) {
      if (!first) out += ", ";
      first = false;
      dump(k, out);
      out += ": ";
      dump(item, out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) out += ", ";
      dump(v[i], out);
    }
    out += ']';
  } else if (v.is_string()) {
    // ensure_ascii: non-ASCII as \uXXXX (UTF-16), control characters escaped
    const std::string s = v.get<std::string>();
    const std::u32string wide = [&] {
      std::u32string w;
      for (std::size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        const int n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        char32_t code = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
        for (int j = 1; j < n && i + static_cast<std::size_t>(j) < s.size(); ++j) {
          code = (code << 6) | (static_cast<unsigned char>(s[i + static_cast<std::size_t>(j)]) & 0x3f);
        }
        w += code;
        i += static_cast<std::size_t>(n);
      }
      return w;
    }();
    out += '"';
    char buffer[16];
    for (char32_t c : wide) {
      if (c == '"') out += "\\\"";
      else if (c == '\\') out += "\\\\";
      else if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += "\\t";
      else if (c == '\b') out += "\\b";
      else if (c == '\f') out += "\\f";
      else if (c < 0x20 || (c >= 0x7f && c < 0x10000)) {
        std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(c));
        out += buffer;
      } else if (c >= 0x10000) {
        const char32_t u = c - 0x10000;
        std::snprintf(buffer, sizeof buffer, "\\u%04x\\u%04x", static_cast<unsigned>(0xd800 + (u >> 10)),
                      static_cast<unsigned>(0xdc00 + (u & 0x3ff)));
        out += buffer;
      } else {
        out += static_cast<char>(c);
      }
    }
    out += '"';
  } else {
    out += v.dump();  // integers, booleans, null: the same text in both
  }
}

Profile profile_from(const nlohmann::json& j) {
  Profile p;
  p.min = j.at("min").get<std::array<int, 3>>();
  p.opt = j.at("opt").get<std::array<int, 3>>();
  p.max = j.at("max").get<std::array<int, 3>>();
  return p;
}

}  // namespace

nlohmann::ordered_json to_json(const EngineSpec& s) {
  nlohmann::ordered_json j;  // the dataclass's field order, as asdict() gives it
  j["backbone"] = s.backbone;
  j["checkpoint_sha256"] = s.checkpoint_sha256;
  j["precision"] = s.precision;
  nlohmann::ordered_json profile;
  profile["min"] = s.profile.min;
  profile["opt"] = s.profile.opt;
  profile["max"] = s.profile.max;
  j["profile"] = profile;
  j["flavour"] = s.flavour;
  j["trt_version"] = s.trt_version;
  j["gpu_name"] = s.gpu_name;
  j["compute_capability"] = s.compute_capability;
  j["quantization"] = s.quantization;
  return j;
}

EngineSpec from_json(const nlohmann::json& j, const std::string& where) {
  const char* fields[] = {"backbone", "checkpoint_sha256", "precision", "flavour", "trt_version",
                          "gpu_name", "compute_capability", "quantization"};
  for (const char* field : fields) {
    if (!j.contains(field) || !j[field].is_string()) {
      throw engine_error(where + " is not an engine sidecar (no text field '" + field + "'); " + kRebuild);
    }
  }
  EngineSpec s;
  s.backbone = j["backbone"];
  s.checkpoint_sha256 = j["checkpoint_sha256"];
  s.precision = j["precision"];
  s.flavour = j["flavour"];
  s.trt_version = j["trt_version"];
  s.gpu_name = j["gpu_name"];
  s.compute_capability = j["compute_capability"];
  s.quantization = j["quantization"];
  try {
    s.profile = profile_from(j.at("profile"));
  } catch (const nlohmann::json::exception&) {
    throw engine_error(where + " has no valid profile (min/opt/max of batch, height, width); " + kRebuild);
  }
  return s;
}

std::string python_dumps_sorted(const nlohmann::json& value) {
  std::string out;
  dump(value, out);
  return out;
}

std::string key(const EngineSpec& s) {
  const std::string text = python_dumps_sorted(nlohmann::json(to_json(s)));
  return files::sha256_hex(text.data(), text.size()).substr(0, 16);
}

std::string stem(const EngineSpec& s) {
  std::string gpu;
  for (char c : s.gpu_name) {  // re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool keep = (lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9');
    if (keep) gpu += lower;
    else if (gpu.empty() || gpu.back() != '-') gpu += '-';
  }
  while (!gpu.empty() && gpu.front() == '-') gpu.erase(gpu.begin());
  while (!gpu.empty() && gpu.back() == '-') gpu.pop_back();
  std::string version = s.trt_version;
  for (char& c : version) {
    if (c == '.') c = '_';
  }
  return s.backbone + "-" + s.precision + "-" + s.flavour + version + "-" + gpu + "-sm" + s.compute_capability +
         "-" + key(s);
}

Record read_record(const std::string& sidecar) {
  std::ifstream in(sidecar);
  if (!in || std::filesystem::is_directory(sidecar)) {
    throw engine_error("engine sidecar " + sidecar + " is missing or unreadable: the engine and its .json are " +
                       "written together; " + kRebuild);
  }
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception&) {
    throw engine_error("engine sidecar " + sidecar + " is not valid JSON; " + kRebuild);
  }
  if (!j.is_object() || !j.contains("spec") || !j["spec"].is_object() || !j.contains("engine_sha256") ||
      !j["engine_sha256"].is_string()) {
    throw engine_error(sidecar + " is not an engine sidecar (no spec and engine_sha256); " + kRebuild);
  }
  return Record{from_json(j["spec"], sidecar), j["engine_sha256"].get<std::string>()};
}

std::string record_text(const Record& r) {
  nlohmann::ordered_json j;
  j["spec"] = to_json(r.spec);
  j["engine_sha256"] = r.engine_sha256;
  return j.dump(1);
}

std::string sidecar_path(const std::string& engine_path) {
  return std::filesystem::path(engine_path).replace_extension(".json").string();
}

std::optional<OnnxName> parse_onnx_name(const std::string& path) {
  static const std::regex name(R"(^(vit-small|vit-large|vit-giant2)-([0-9a-f]{12})(\.(int8|fp8)-([0-9a-f]{12}))?\.fp16\.onnx$)");
  std::smatch m;
  const std::string file = std::filesystem::path(path).filename().string();
  if (!std::regex_match(file, m, name)) return std::nullopt;
  return OnnxName{m[1], m[2], m[4].matched ? m[4].str() : "fp16", m[5].matched ? m[5].str() : ""};
}

}  // namespace metric3d::spec
