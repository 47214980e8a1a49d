// Engine loading (sidecar checks, then deserialisation) and inference: host images through pinned
// staging, CUDA pre-processing onto the canvas, the engine (a CUDA graph per canvas batch shape), CUDA
// post-processing, one copy back. One stream per engine (per execution context).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "checks.hpp"
#include "files.hpp"
#include "flavour.hpp"
#include "gpu.hpp"
#include "kernels.hpp"
#include "metric3d/metric3d.hpp"
#include "reference.hpp"
#include "spec.hpp"

namespace metric3d {
namespace {

const char* const kInput = "image";
const char* const kOutputs[] = {"depth", "confidence", "normal", "normal_iter1"};
constexpr int kOutputChannels[] = {1, 1, 4, 3};
constexpr std::size_t kPlane = static_cast<std::size_t>(ref::kCanvasH) * ref::kCanvasW;
const char* const kRebuild = "rebuild it here: metric3d-trt build <onnx> (or trt-metric3d build)";

}  // namespace

using checks::profile_text;

struct Engine::Impl {
  struct Shape {  // what one canvas batch size needs: its buffers and, with graphs, the captured run
    int batch = 0;
    gpu::Buffer input;
    gpu::Buffer outputs[4];
    cudaGraphExec_t graph = nullptr;
    ~Shape() {
      if (graph) cudaGraphExecDestroy(graph);
    }
  };

  EngineInfo info;
  int device = 0;
  bool graphs = true;
  flavour::Ptr<nvinfer1::IRuntime> runtime;
  flavour::Ptr<nvinfer1::ICudaEngine> engine;
  flavour::Ptr<nvinfer1::IExecutionContext> context;
  cudaStream_t stream = nullptr;
  std::map<int, Shape> shapes;
  gpu::Buffer host_in{gpu::Buffer::Kind::Pinned}, host_out{gpu::Buffer::Kind::Pinned};
  gpu::Buffer device_in, device_out;
  bool timed = false;
  cudaEvent_t events[6] = {};  // before upload, after upload / pre / engine / post / download
  Timings timings;

  void mark(int stage) {
    if (timed) gpu::check(cudaEventRecord(events[stage], stream), "timing");
  }

  void read_timings() {
    if (!timed) return;
    float* fields[] = {&timings.upload, &timings.preprocess, &timings.engine, &timings.postprocess, &timings.download};
    for (int k = 0; k < 5; ++k) gpu::check(cudaEventElapsedTime(fields[k], events[k], events[k + 1]), "timing");
  }

  ~Impl() {
    for (cudaEvent_t e : events) {
      if (e) cudaEventDestroy(e);
    }
    shapes.clear();
    context.reset();
    engine.reset();
    runtime.reset();
    if (stream) cudaStreamDestroy(stream);
  }

  Shape& shape(int batch) {
    auto [it, fresh] = shapes.try_emplace(batch);
    Shape& s = it->second;
    if (fresh) {
      s.batch = batch;
      s.input.reserve(static_cast<std::size_t>(batch) * 3 * kPlane * sizeof(float));
      for (int k = 0; k < 4; ++k) {
        s.outputs[k].reserve(static_cast<std::size_t>(batch) * static_cast<std::size_t>(kOutputChannels[k]) * kPlane *
                             sizeof(float));
      }
    }
    return s;
  }

  void enqueue(Shape& s) {
    if (!context->setInputShape(kInput, nvinfer1::Dims4{s.batch, 3, ref::kCanvasH, ref::kCanvasW})) {
      throw Error(Error::Kind::Input, "canvas batch " + std::to_string(s.batch) + "x3x616x1064 is outside the engine's "
                                      "profile (" + profile_text(info.profile) + "); rebuild with a larger --max");
    }
    context->setTensorAddress(kInput, s.input.data());
    for (int k = 0; k < 4; ++k) context->setTensorAddress(kOutputs[k], s.outputs[k].data());
    if (!context->enqueueV3(stream)) throw Error(Error::Kind::Engine, "TensorRT execution failed; see the log above");
  }

  // A plain run, then (once per shape) the capture TensorRT allows after a shape change; replays after.
  void execute(Shape& s) {
    if (s.graph) {
      gpu::check(cudaGraphLaunch(s.graph, stream), "replaying the CUDA graph");
      return;
    }
    enqueue(s);
    if (!graphs) return;
    cudaGraph_t graph = nullptr;
    gpu::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capturing a CUDA graph");
    try {
      enqueue(s);
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (ended != cudaSuccess || graph == nullptr || cudaGraphInstantiate(&s.graph, graph, 0) != cudaSuccess) {
      cudaGetLastError();
      std::fprintf(stderr, "metric3d: CUDA graph capture failed; running without graphs\n");
      graphs = false;
      s.graph = nullptr;
    }
    if (graph) cudaGraphDestroy(graph);
  }

  std::vector<Result> run(const std::vector<ImageView>& images, const std::vector<Intrinsics>& intrinsics,
                          std::size_t first, int batch);
};

namespace {

// Where one image's inputs and outputs sit in the staging buffers.
struct Slot {
  ref::ResizePlan plan;
  double scale = 0;
  std::size_t pixels = 0, stride = 0, pre_taps = 0, post_index = 0, post_weight = 0, out = 0;
};

std::size_t align(std::size_t n) { return (n + 255) & ~std::size_t{255}; }

}  // namespace

std::vector<Result> Engine::Impl::run(const std::vector<ImageView>& images, const std::vector<Intrinsics>& intrinsics,
                                      std::size_t first, int batch) {
  std::vector<Slot> slots(static_cast<std::size_t>(batch));
  std::size_t in_bytes = 0, out_bytes = 0;
  for (int b = 0; b < batch; ++b) {  // where each image's data goes (checked by infer)
    const ImageView& im = images[first + static_cast<std::size_t>(b)];
    Slot& s = slots[static_cast<std::size_t>(b)];
    s.plan = ref::resize_plan(im.height, im.width);
    const std::string name = images.size() > 1 ? "fx[" + std::to_string(first + static_cast<std::size_t>(b)) + "]" : "fx";
    s.scale = ref::metric_scale(s.plan.canvas, intrinsics[first + static_cast<std::size_t>(b)], name.c_str());
    s.stride = im.stride ? im.stride : 3 * static_cast<std::size_t>(im.width);
    if (im.memory == Memory::Host) {
      s.pixels = in_bytes;
      in_bytes = align(in_bytes + s.stride * static_cast<std::size_t>(im.height - 1) + 3 * static_cast<std::size_t>(im.width));
    }
    s.pre_taps = in_bytes;
    in_bytes = align(in_bytes + 4 * sizeof(int) * static_cast<std::size_t>(s.plan.canvas.resized_w + s.plan.canvas.resized_h));
    s.post_index = in_bytes;
    in_bytes = align(in_bytes + 2 * sizeof(int) * static_cast<std::size_t>(im.width + im.height));
    s.post_weight = in_bytes;
    in_bytes = align(in_bytes + 2 * sizeof(float) * static_cast<std::size_t>(im.width + im.height));
    s.out = out_bytes;
    out_bytes = align(out_bytes + 5 * sizeof(float) * static_cast<std::size_t>(im.width) * static_cast<std::size_t>(im.height));
  }
  gpu::check(cudaSetDevice(device), "selecting the GPU");
  auto* staged = static_cast<std::uint8_t*>(host_in.reserve(in_bytes));
  for (int b = 0; b < batch; ++b) {  // pixels and taps into pinned memory: one upload
    const ImageView& im = images[first + static_cast<std::size_t>(b)];
    const Slot& s = slots[static_cast<std::size_t>(b)];
    if (im.memory == Memory::Host) {
      std::memcpy(staged + s.pixels, im.data, s.stride * static_cast<std::size_t>(im.height - 1) + 3 * static_cast<std::size_t>(im.width));
    }
    auto put = [](std::uint8_t* at, const auto& values) {
      std::memcpy(at, values.data(), values.size() * sizeof(values[0]));
      return at + values.size() * sizeof(values[0]);
    };
    std::uint8_t* at = staged + s.pre_taps;
    for (const auto* v : {&s.plan.x.i0, &s.plan.x.i1, &s.plan.x.w0, &s.plan.x.w1, &s.plan.y.i0, &s.plan.y.i1,
                          &s.plan.y.w0, &s.plan.y.w1}) {
      at = put(at, *v);
    }
    const ref::TorchTaps tx = ref::torch_taps(s.plan.canvas.resized_w, im.width);
    const ref::TorchTaps ty = ref::torch_taps(s.plan.canvas.resized_h, im.height);
    at = staged + s.post_index;
    for (const auto* v : {&tx.i0, &tx.i1, &ty.i0, &ty.i1}) at = put(at, *v);
    at = staged + s.post_weight;
    for (const auto* v : {&tx.w0, &tx.w1, &ty.w0, &ty.w1}) at = put(at, *v);
  }
  auto* uploaded = static_cast<std::uint8_t*>(device_in.reserve(in_bytes));
  mark(0);
  gpu::check(cudaMemcpyAsync(uploaded, staged, in_bytes, cudaMemcpyHostToDevice, stream), "uploading the images");
  mark(1);
  Shape& sh = shape(batch);
  for (int b = 0; b < batch; ++b) {
    const ImageView& im = images[first + static_cast<std::size_t>(b)];
    const Slot& s = slots[static_cast<std::size_t>(b)];
    const ref::Canvas& c = s.plan.canvas;
    const kernels::PreImage pre{im.memory == Memory::Host ? uploaded + s.pixels : im.data, s.stride,
                                im.format == PixelFormat::BGR, c.top, c.left, c.resized_h, c.resized_w,
                                s.plan.area2x, reinterpret_cast<const int*>(uploaded + s.pre_taps)};
    kernels::preprocess(pre, sh.input.as<float>() + static_cast<std::size_t>(b) * 3 * kPlane, stream);
  }
  mark(2);
  execute(sh);
  mark(3);
  auto* results = static_cast<std::uint8_t*>(device_out.reserve(out_bytes));
  for (int b = 0; b < batch; ++b) {
    const Slot& s = slots[static_cast<std::size_t>(b)];
    const ref::Canvas& c = s.plan.canvas;
    const kernels::PostImage post{c.top, c.left, c.resized_h, c.resized_w, c.image_h, c.image_w,
                                  reinterpret_cast<const int*>(uploaded + s.post_index),
                                  reinterpret_cast<const float*>(uploaded + s.post_weight), static_cast<float>(s.scale)};
    const std::size_t n = static_cast<std::size_t>(c.image_h) * static_cast<std::size_t>(c.image_w);
    auto* out = reinterpret_cast<float*>(results + s.out);
    const std::size_t bi = static_cast<std::size_t>(b);
    kernels::postprocess(post, sh.outputs[0].as<float>() + bi * kPlane, sh.outputs[1].as<float>() + bi * kPlane,
                         sh.outputs[2].as<float>() + bi * 4 * kPlane, out, out + n, out + 2 * n, stream);
  }
  mark(4);
  auto* downloaded = static_cast<std::uint8_t*>(host_out.reserve(out_bytes));
  gpu::check(cudaMemcpyAsync(downloaded, results, out_bytes, cudaMemcpyDeviceToHost, stream), "downloading the results");
  mark(5);
  gpu::check(cudaStreamSynchronize(stream), "running the engine");
  read_timings();
  std::vector<Result> out(static_cast<std::size_t>(batch));
  for (int b = 0; b < batch; ++b) {
    const Slot& s = slots[static_cast<std::size_t>(b)];
    Result& r = out[static_cast<std::size_t>(b)];
    r.width = s.plan.canvas.image_w;
    r.height = s.plan.canvas.image_h;
    const std::size_t n = static_cast<std::size_t>(r.width) * static_cast<std::size_t>(r.height);
    const float* f = reinterpret_cast<const float*>(downloaded + s.out);
    r.depth.assign(f, f + n);
    r.confidence.assign(f + n, f + 2 * n);
    r.normal.assign(f + 2 * n, f + 5 * n);
  }
  return out;
}

Engine Engine::load(const std::string& engine_path, const LoadOptions& options) {
  checks::Checked c = checks::check_files(engine_path);
  if (!c.info.plan_matches_sidecar) throw Error(Error::Kind::Engine, checks::plan_damaged(engine_path));
  flavour::check_library_version();
  const std::string mismatch = checks::sidecar_mismatch(c.record, engine_path, options.expect_backbone);
  if (!mismatch.empty()) throw Error(Error::Kind::Engine, mismatch);
  const gpu::Device d = gpu::device(options.device, "running an engine needs an NVIDIA GPU and its driver");
  const std::string wrong_gpu = checks::gpu_mismatch(c.record.spec, d, std::filesystem::path(engine_path).filename().string());
  if (!wrong_gpu.empty()) throw Error(Error::Kind::Engine, wrong_gpu);

  auto impl = std::make_unique<Impl>();
  impl->info = c.info;
  impl->device = options.device;
  impl->graphs = options.cuda_graphs;
  gpu::check(cudaSetDevice(options.device), "selecting the GPU");
  const std::vector<std::uint8_t> plan = files::read_bytes(engine_path, "engine");
  impl->runtime = flavour::create_runtime();
  if (impl->runtime) impl->engine.reset(impl->runtime->deserializeCudaEngine(plan.data(), plan.size()));
  if (!impl->engine) {
    throw Error(Error::Kind::Engine, "engine " + engine_path + " does not deserialise with " + flavour::name() + " " +
                                         flavour::header_version() + " on this " + d.name + "; " + kRebuild);
  }
  impl->context.reset(impl->engine->createExecutionContext());
  if (!impl->context) throw Error(Error::Kind::Engine, "could not create an execution context (GPU memory?)");
  gpu::check(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "creating a CUDA stream");
  impl->timed = options.timings;
  for (cudaEvent_t& e : impl->events) {
    if (impl->timed) gpu::check(cudaEventCreate(&e), "creating CUDA events");
  }
  return Engine(std::move(impl));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

const EngineInfo& Engine::info() const { return impl_->info; }
const Timings& Engine::last_timings() const { return impl_->timings; }

Result Engine::infer(const ImageView& image, const Intrinsics& intrinsics) {
  return std::move(infer(std::vector<ImageView>{image}, std::vector<Intrinsics>{intrinsics}).front());
}

std::vector<Result> Engine::infer(const std::vector<ImageView>& images, const std::vector<Intrinsics>& intrinsics) {
  if (images.empty()) throw Error(Error::Kind::Input, "no images given");
  if (intrinsics.size() != images.size()) {
    throw Error(Error::Kind::Input, "got " + std::to_string(intrinsics.size()) + " intrinsics for " +
                                        std::to_string(images.size()) + " images; pass one per image");
  }
  for (std::size_t i = 0; i < images.size(); ++i) {  // every image checked before the first batch runs
    ref::check_image(images[i]);
    const std::string name = images.size() > 1 ? "fx[" + std::to_string(i) + "]" : "fx";
    ref::metric_scale(ref::fit_canvas(images[i].height, images[i].width), intrinsics[i], name.c_str());
  }
  const int max_batch = impl_->info.profile.max[0];
  std::vector<Result> results;
  for (std::size_t first = 0; first < images.size(); first += static_cast<std::size_t>(max_batch)) {
    const int batch = static_cast<int>(std::min(images.size() - first, static_cast<std::size_t>(max_batch)));
    if (batch < impl_->info.profile.min[0]) {
      throw Error(Error::Kind::Input, "a batch of " + std::to_string(batch) + " is below the engine's profile (" +
                                          profile_text(impl_->info.profile) + "); rebuild with --min 1x616x616");
    }
    for (Result& r : impl_->run(images, intrinsics, first, batch)) results.push_back(std::move(r));
  }
  return results;
}

}  // namespace metric3d
