// TensorRT 10/11 and TensorRT-RTX differences, behind flavour.hpp.
#include "flavour.hpp"

#include <NvInferVersion.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <vector>

#include "metric3d/metric3d.hpp"

namespace metric3d::flavour {
namespace {

#ifdef METRIC3D_RTX
const std::vector<int> kTargets = {75, 80, 86, 89, 120, 121};  // nvinfer1::ComputeCapability
#else
const std::vector<int> kTargets = {};
#endif

std::string targets_text() {
  std::string text;
  for (int t : kTargets) text += (text.empty() ? "SM" : ", SM") + std::to_string(t);
  return text;
}

std::string version_text(long code) {
  return std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." + std::to_string(code % 100);
}

}  // namespace

const char* name() { return METRIC3D_FLAVOUR_NAME; }

std::string header_version() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
         std::to_string(NV_TENSORRT_PATCH) + "." + std::to_string(NV_TENSORRT_BUILD);
}

void check_library_version() {
  const long library = getInferLibVersion();
  const long headers = NV_TENSORRT_MAJOR * 10000L + NV_TENSORRT_MINOR * 100L + NV_TENSORRT_PATCH;
  if (library != headers) {
    throw Error(Error::Kind::Version,
                std::string("the loaded ") + name() + " library is " + version_text(library) +
                    " but metric3d was compiled against " + version_text(headers) +
                    " headers (they must match: mixing them crashes); rebuild metric3d against that SDK or " +
                    "install the " + version_text(headers) + " libraries");
  }
}

void Logger::log(Severity severity, const char* message) noexcept {
  if (severity <= Severity::kERROR || (severity == Severity::kWARNING && verbose_) ||
      (verbose_ && severity <= Severity::kINFO)) {
    std::fprintf(stderr, "[TensorRT] %s\n", message);
  }
}

Logger& logger() {
  static Logger instance;
  return instance;
}

Ptr<nvinfer1::IBuilder> create_builder() { return Ptr<nvinfer1::IBuilder>(nvinfer1::createInferBuilder(logger())); }

Ptr<nvinfer1::INetworkDefinition> create_network(nvinfer1::IBuilder& builder) {
#if defined(METRIC3D_RTX) || NV_TENSORRT_MAJOR >= 11
  const nvinfer1::NetworkDefinitionCreationFlags flags = 0;  // strongly typed is the only mode
#else
  const auto flags = 1U << static_cast<std::uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#endif
  return Ptr<nvinfer1::INetworkDefinition>(builder.createNetworkV2(flags));
}

Ptr<nvonnxparser::IParser> create_parser(nvinfer1::INetworkDefinition& network) {
  return Ptr<nvonnxparser::IParser>(nvonnxparser::createParser(network, logger()));
}

Ptr<nvinfer1::IRuntime> create_runtime() { return Ptr<nvinfer1::IRuntime>(nvinfer1::createInferRuntime(logger())); }

int parse_compute_capability(const std::string& text) {
  std::string digits;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c))) digits += c;
    else if (c != '.' && std::toupper(static_cast<unsigned char>(c)) != 'S' &&
             std::toupper(static_cast<unsigned char>(c)) != 'M' && c != ' ') {
      digits = "x";
      break;
    }
  }
  const int cc = !digits.empty() && digits.size() <= 3 && digits != "x" ? std::stoi(digits) : -1;
  if (kTargets.empty()) {
    throw Error(Error::Kind::Input, std::string("--compute-capability: ") + name() + " " + header_version() +
                                        " only builds for the GPU it runs on; ahead-of-time targets need the " +
                                        "TensorRT-RTX flavour (-DMETRIC3D_FLAVOUR=tensorrt_rtx)");
  }
  if (std::find(kTargets.begin(), kTargets.end(), cc) == kTargets.end()) {
    throw Error(Error::Kind::Input, "--compute-capability '" + text + "' is not a target of " + name() + " " +
                                        header_version() + "; choose one of " + targets_text());
  }
  return cc;
}

void set_compute_capability([[maybe_unused]] nvinfer1::IBuilderConfig& config, int cc) {
  parse_compute_capability(std::to_string(cc));
#ifdef METRIC3D_RTX
  config.setNbComputeCapabilities(1);
  config.setComputeCapability(static_cast<nvinfer1::ComputeCapability>(cc), 0);
#endif
}

}  // namespace metric3d::flavour
