// The one seam between the two TensorRT flavours (chosen at configure time, METRIC3D_RTX): creating the
// builder / runtime / parser, the network flags (strongly typed), ahead-of-time compute capabilities
// (TensorRT-RTX only), names and versions. Everything else uses the API the flavours share.
#pragma once

#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <memory>
#include <string>

namespace metric3d::flavour {

const char* name();           // "tensorrt" or "tensorrt_rtx", as the Python package names it
std::string header_version();  // "M.m.p.build" of the headers compiled against
// Error(Version) in one line unless the loaded library is the headers' major.minor.patch.
void check_library_version();

class Logger : public nvinfer1::ILogger {
 public:
  explicit Logger(bool verbose = false) : verbose_(verbose) {}
  void log(Severity severity, const char* message) noexcept override;
  void set_verbose(bool verbose) { verbose_ = verbose; }

 private:
  bool verbose_;
};
Logger& logger();

template <typename T>
struct Destroy {
  void operator()(T* p) const noexcept { delete p; }
};
template <typename T>
using Ptr = std::unique_ptr<T, Destroy<T>>;

Ptr<nvinfer1::IBuilder> create_builder();
Ptr<nvinfer1::INetworkDefinition> create_network(nvinfer1::IBuilder& builder);  // strongly typed
Ptr<nvonnxparser::IParser> create_parser(nvinfer1::INetworkDefinition& network);
Ptr<nvinfer1::IRuntime> create_runtime();
// Build for compute capability `cc` (e.g. 86) ahead of time; Error(Input) listing the targets where the
// flavour has none (TensorRT 10/11 builds for the GPU it runs on) or `cc` is not one of them.
void set_compute_capability(nvinfer1::IBuilderConfig& config, int cc);
// "SM86" / "sm86" / "86" / "8.6" -> 86, checked against the flavour's targets.
int parse_compute_capability(const std::string& text);

}  // namespace metric3d::flavour
