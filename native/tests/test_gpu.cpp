// GPU tests: the CUDA kernels against the CPU reference, and (with METRIC3D_TEST_ENGINE naming an engine
// for this GPU) engine runs: batches, CUDA graph replay, device-memory input. Without a GPU: ctest's skip
// code. The comparison with the Python TensorRT backend is tests/test_native.py.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "check.hpp"
#include "gpu.hpp"
#include "kernels.hpp"
#include "reference.hpp"

using metric3d::ImageView;
using metric3d::Intrinsics;
namespace ref = metric3d::ref;
namespace gpu = metric3d::gpu;

namespace {

constexpr std::size_t kPlane = static_cast<std::size_t>(ref::kCanvasH) * ref::kCanvasW;

std::vector<std::uint8_t> noise(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& x : v) x = static_cast<std::uint8_t>(rng() & 0xff);
  return v;
}

template <typename T>
T* upload(gpu::Buffer& buffer, const std::vector<T>& host) {
  buffer.reserve(host.size() * sizeof(T));
  gpu::check(cudaMemcpy(buffer.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return buffer.as<T>();
}

template <typename T>
std::vector<T> download(const T* device, std::size_t n) {
  std::vector<T> host(n);
  gpu::check(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
  return host;
}

void kernel_canvas_is_the_reference(int h, int w, bool bgr) {
  const auto image = noise(static_cast<std::size_t>(h) * static_cast<std::size_t>(w) * 3, static_cast<unsigned>(h * 7 + w));
  const ref::ResizePlan plan = ref::resize_plan(h, w);
  std::vector<int> taps;
  for (const auto* v : {&plan.x.i0, &plan.x.i1, &plan.x.w0, &plan.x.w1, &plan.y.i0, &plan.y.i1, &plan.y.w0, &plan.y.w1}) {
    taps.insert(taps.end(), v->begin(), v->end());
  }
  gpu::Buffer pixels, tap_buffer, canvas;
  canvas.reserve(3 * kPlane * sizeof(float));
  const ref::Canvas& c = plan.canvas;
  const metric3d::kernels::PreImage pre{upload(pixels, image), 3 * static_cast<std::size_t>(w), bgr, c.top, c.left,
                                        c.resized_h, c.resized_w, plan.area2x, upload(tap_buffer, taps)};
  metric3d::kernels::preprocess(pre, canvas.as<float>(), nullptr);
  const auto got = download(canvas.as<float>(), 3 * kPlane);
  const auto expected = ref::make_canvas(ImageView{image.data(), w, h, 0, bgr ? metric3d::PixelFormat::BGR : metric3d::PixelFormat::RGB});
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < kPlane; ++i)
    for (std::size_t ch = 0; ch < 3; ++ch) wrong += got[ch * kPlane + i] != static_cast<float>(expected[3 * i + ch]);
  if (wrong) std::fprintf(stderr, "%dx%d: %zu canvas values differ\n", h, w, wrong);
  CHECK(wrong == 0);
}

void kernel_postprocess_is_the_reference(int h, int w) {
  std::mt19937 rng(static_cast<unsigned>(h + w));
  std::uniform_real_distribution<float> uniform(-2.f, 2.f);
  std::vector<float> outputs(6 * kPlane);  // depth, confidence, normal (4)
  for (auto& x : outputs) x = uniform(rng);
  const ref::Canvas c = ref::fit_canvas(h, w);
  const metric3d::Result expected = ref::postprocess(outputs.data(), outputs.data() + kPlane, outputs.data() + 2 * kPlane, c, 0.37);
  const ref::TorchTaps tx = ref::torch_taps(c.resized_w, w), ty = ref::torch_taps(c.resized_h, h);
  std::vector<int> index;
  std::vector<float> weight;
  for (const auto* v : {&tx.i0, &tx.i1, &ty.i0, &ty.i1}) index.insert(index.end(), v->begin(), v->end());
  for (const auto* v : {&tx.w0, &tx.w1, &ty.w0, &ty.w1}) weight.insert(weight.end(), v->begin(), v->end());
  gpu::Buffer canvas, index_buffer, weight_buffer, result;
  const float* d = upload(canvas, outputs);
  const std::size_t n = static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  result.reserve(5 * n * sizeof(float));
  const metric3d::kernels::PostImage post{c.top, c.left, c.resized_h, c.resized_w, h, w, upload(index_buffer, index),
                                          upload(weight_buffer, weight), 0.37f};
  float* r = result.as<float>();
  metric3d::kernels::postprocess(post, d, d + kPlane, d + 2 * kPlane, r, r + n, r + 2 * n, nullptr);
  const auto got = download(r, 5 * n);
  CHECK(std::equal(expected.depth.begin(), expected.depth.end(), got.begin()));
  CHECK(std::equal(expected.confidence.begin(), expected.confidence.end(), got.begin() + static_cast<std::ptrdiff_t>(n)));
  CHECK(std::equal(expected.normal.begin(), expected.normal.end(), got.begin() + static_cast<std::ptrdiff_t>(2 * n)));
}

float max_relative(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-6f));
  return worst;
}

}  // namespace

int main() {
  const std::string no_gpu = gpu::why_no_gpu();
  const char* engine_env = std::getenv("METRIC3D_TEST_ENGINE");
  const std::string engine_path = engine_env ? engine_env : "";
  std::vector<check::Test> tests = {
      {"kernel canvases equal the CPU reference (sizes, portrait, 1xN, Nx1, 2x shortcut, BGR)",
       [] {
         for (auto [h, w] : {std::pair{400, 600}, {289, 451}, {1080, 1920}, {1920, 1080}, {1, 50}, {50, 1}, {1, 1}, {1232, 2128}, {616, 1064}}) {
           kernel_canvas_is_the_reference(h, w, false);
         }
         kernel_canvas_is_the_reference(289, 451, true);
       }},
      {"kernel post-processing equals the CPU reference",
       [] {
         for (auto [h, w] : {std::pair{400, 600}, {289, 451}, {3000, 4000}, {50, 1}, {100, 37}}) kernel_postprocess_is_the_reference(h, w);
       }},
  };
  if (!engine_path.empty() && no_gpu.empty()) {
    tests.push_back({"batches equal single images; CUDA graph replay equals a plain run; device input equals host", [&] {
      metric3d::Engine engine = metric3d::Engine::load(engine_path);
      metric3d::LoadOptions plain;
      plain.cuda_graphs = false;
      metric3d::Engine without_graphs = metric3d::Engine::load(engine_path, plain);
      const std::vector<std::pair<int, int>> sizes = {{400, 600}, {289, 451}, {720, 1280}};
      std::vector<std::vector<std::uint8_t>> pixels;
      std::vector<ImageView> views;
      for (auto [h, w] : sizes) {
        pixels.push_back(noise(static_cast<std::size_t>(h) * static_cast<std::size_t>(w) * 3, static_cast<unsigned>(h)));
        views.push_back(ImageView{pixels.back().data(), w, h});
      }
      const std::vector<Intrinsics> k(views.size(), Intrinsics{1000, 1000});
      const auto batch = engine.infer(views, k);
      const auto replay = engine.infer(views, k);  // the captured graph this time
      for (std::size_t i = 0; i < views.size(); ++i) {
        const metric3d::Result single = without_graphs.infer(views[i], k[i]);
        CHECK(batch[i].width == views[i].width && batch[i].height == views[i].height);
        CHECK(replay[i].depth == batch[i].depth);
        const float relative = max_relative(batch[i].depth, single.depth);
        std::printf("  image %zu: batch vs single depth max relative difference %.2e\n", i, static_cast<double>(relative));
        CHECK(relative < 1e-3f);
      }
      gpu::Buffer on_device;
      const ImageView host = views[1];
      ImageView device = host;
      device.data = upload(on_device, pixels[1]);
      device.memory = metric3d::Memory::Device;
      CHECK(engine.infer(device, k[1]).depth == engine.infer(host, k[1]).depth);
    }});
  } else if (no_gpu.empty()) {
    std::printf("engine tests skipped: set METRIC3D_TEST_ENGINE to an engine built for this GPU\n");
  }
  return check::run(tests, no_gpu);
}
