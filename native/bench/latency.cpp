// Per-frame latency of the C++ path on a GPU, by stage (CUDA events): upload, pre-processing, engine,
// post-processing, download, and the wall time of Engine::infer. One markdown table row per run.
//   metric3d_latency ENGINE [--frames 100] [--size 616x1064] [--batch 1]
// benchmarks/native_latency.py runs it next to the Python TensorRT backend on the same engine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "metric3d/metric3d.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: metric3d_latency ENGINE [--frames N] [--size HxW] [--batch B]\n");
    return 2;
  }
  int frames = 100, height = 616, width = 1064, batch = 1;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--frames")) frames = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--size")) std::sscanf(argv[i + 1], "%dx%d", &height, &width);
  }
  try {
    metric3d::LoadOptions options;
    options.timings = true;
    metric3d::Engine engine = metric3d::Engine::load(argv[1], options);
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(height) * static_cast<std::size_t>(width) * 3);
    std::mt19937 rng(0);
    for (auto& p : pixels) p = static_cast<std::uint8_t>(rng() & 0xff);
    const std::vector<metric3d::ImageView> images(static_cast<std::size_t>(batch), metric3d::ImageView(pixels.data(), width, height));
    const std::vector<metric3d::Intrinsics> k(images.size(), metric3d::Intrinsics(1000.0));
    for (int i = 0; i < 10; ++i) engine.infer(images, k);  // warm-up, CUDA graph capture
    std::vector<double> wall;
    std::vector<metric3d::Timings> stages;
    for (int i = 0; i < frames; ++i) {
      const auto start = std::chrono::steady_clock::now();
      engine.infer(images, k);
      wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      stages.push_back(engine.last_timings());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    auto stage = [&](float metric3d::Timings::*field) {
      std::vector<double> v;
      for (const auto& t : stages) v.push_back(static_cast<double>(t.*field));
      return median(v);
    };
    const double engine_ms = stage(&metric3d::Timings::engine), wall_ms = median(wall);
    const metric3d::EngineInfo& info = engine.info();
    std::printf("| C++ %s %s | %dx%d x%d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", info.backbone.c_str(),
                info.precision.c_str(), height, width, batch, wall_ms, stage(&metric3d::Timings::upload),
                stage(&metric3d::Timings::preprocess), engine_ms, stage(&metric3d::Timings::postprocess),
                stage(&metric3d::Timings::download), wall_ms - engine_ms);
    return 0;
  } catch (const metric3d::Error& e) {
    std::fprintf(stderr, "metric3d_latency: error: %s\n", e.what());
    return 1;
  }
}
