// metric3d-trt: build, run and inspect Metric3D TensorRT engines without Python. Every failure is one
// line on stderr and a non-zero exit (2: bad input, 1: anything else).
#include <cstdio>
#include <cstring>
#include <set>
#include <string>

#include "commands.hpp"
#include "metric3d/metric3d.hpp"

namespace {

const char* const kUsage = R"(usage: metric3d-trt COMMAND ...   (--version: the linked TensorRT)

  build ONNX [--engines DIR] (--checkpoint FILE | --checkpoint-sha256 HEX) [--compute-capability SM86]
        [--min BxHxW] [--opt BxHxW] [--max BxHxW] [--workspace GIB] [--backbone B] [--precision P]
        [--quantization KEY] [--verbose]
      ONNX -> engine + sidecar in the trt-metric3d cache layout; prints the engine's path.
  infer IMAGES... --engine E --fx F [--fy F] --out DIR [--backbone B] [--no-cuda-graphs]
      <name>_depth.npy (float32 metres) per image, named as trt-metric3d infer names them.
  canvas IMAGE -o canvas.npy
      The normalised 1x3x616x1064 float32 canvas (what trt_metric3d.preprocess returns).
  info ENGINE
      What the sidecar says, and whether this machine can run the engine.
)";

const std::set<std::string> kFlags = {"--verbose", "--no-cuda-graphs", "--help"};

metric3d::cli::Args parse(int argc, char** argv) {
  metric3d::cli::Args args;
  for (int i = 2; i < argc; ++i) {
    std::string word = argv[i];
    if (word.rfind("--", 0) == 0 || word == "-o") {
      const std::size_t eq = word.find('=');
      if (eq != std::string::npos) {
        args.options[word.substr(0, eq)] = word.substr(eq + 1);
      } else if (kFlags.count(word)) {
        args.options[word] = "";
      } else if (i + 1 < argc) {
        args.options[word] = argv[++i];
      } else {
        throw metric3d::Error(metric3d::Error::Kind::Input, "option " + word + " needs a value");
      }
    } else {
      args.positional.push_back(word);
    }
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "--version") {  // the linked TensorRT, after checking it against the headers
      std::printf("%s %s\n", metric3d::tensorrt_flavour().c_str(), metric3d::tensorrt_version().c_str());
      return 0;
    }
    const metric3d::cli::Args args = parse(argc, argv);
    if (args.has("--help")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (command == "build") return metric3d::cli::build(args);
    if (command == "infer") return metric3d::cli::infer(args);
    if (command == "canvas") return metric3d::cli::canvas(args);
    if (command == "info") return metric3d::cli::info(args);
    std::fprintf(stderr, "metric3d-trt: error: unknown command '%s'; choose build, infer, canvas or info\n", command.c_str());
    return 2;
  } catch (const metric3d::Error& e) {
    std::fprintf(stderr, "metric3d-trt %s: error: %s\n", command.c_str(), e.what());
    return e.kind() == metric3d::Error::Kind::Input ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "metric3d-trt %s: error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
