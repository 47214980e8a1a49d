// CUDA pre- and post-processing (see kernels.hpp). Compiled with --fmad=false: the float arithmetic
// must round as the CPU reference's does.
#include "gpu.hpp"
#include "kernels.hpp"
#include "reference.hpp"

namespace metric3d::kernels {
namespace {

constexpr int kH = ref::kCanvasH;
constexpr int kW = ref::kCanvasW;
// scalars, not the array: device code may read constexpr scalars only
constexpr float kPadR = ref::kPad[0], kPadG = ref::kPad[1], kPadB = ref::kPad[2];

__global__ void preprocess_kernel(PreImage im, float* canvas) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= kW || y >= kH) return;
  const int dx = x - im.left, dy = y - im.top;
  const std::size_t plane = static_cast<std::size_t>(kH) * kW, at = static_cast<std::size_t>(y) * kW + x;
  if (dx < 0 || dy < 0 || dx >= im.resized_w || dy >= im.resized_h) {
    canvas[at] = kPadR;
    canvas[plane + at] = kPadG;
    canvas[2 * plane + at] = kPadB;
    return;
  }
  for (int ch = 0; ch < 3; ++ch) {
    const int c = im.bgr ? 2 - ch : ch;
    auto px = [&](int sy, int sx) -> int { return im.pixels[static_cast<std::size_t>(sy) * im.stride + 3 * sx + c]; };
    int v;
    if (im.area2x) {
      v = (px(2 * dy, 2 * dx) + px(2 * dy + 1, 2 * dx) + px(2 * dy, 2 * dx + 1) + px(2 * dy + 1, 2 * dx + 1) + 2) >> 2;
    } else {
      const int w = im.resized_w, h = im.resized_h;
      const int* xt = im.taps;
      const int* yt = im.taps + 4 * w;
      const int x0 = xt[dx], x1 = xt[w + dx], a0 = xt[2 * w + dx], a1 = xt[3 * w + dx];
      const int y0 = yt[dy], y1 = yt[h + dy], b0 = yt[2 * h + dy], b1 = yt[3 * h + dy];
      const int row0 = px(y0, x0) * a0 + px(y0, x1) * a1, row1 = px(y1, x0) * a0 + px(y1, x1) * a1;
      v = ((((row0 >> 4) * b0) >> 16) + (((row1 >> 4) * b1) >> 16) + 2) >> 2;
      v = min(max(v, 0), 255);
    }
    canvas[ch * plane + at] = static_cast<float>(v);
  }
}

__global__ void postprocess_kernel(PostImage im, const float* depth, const float* confidence, const float* normal,
                                   float* out_depth, float* out_confidence, float* out_normal) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= im.image_w || y >= im.image_h) return;
  const int w = im.image_w, h = im.image_h;
  const int x0 = im.index_taps[x], x1 = im.index_taps[w + x];
  const int y0 = im.index_taps[2 * w + y], y1 = im.index_taps[2 * w + h + y];
  const float wx0 = im.weight_taps[x], wx1 = im.weight_taps[w + x];
  const float wy0 = im.weight_taps[2 * w + y], wy1 = im.weight_taps[2 * w + h + y];
  auto sample = [&](const float* p) {
    auto at = [&](int sy, int sx) { return p[static_cast<std::size_t>(sy + im.top) * kW + (sx + im.left)]; };
    const float top = at(y0, x0) * wx0 + at(y0, x1) * wx1;
    const float bottom = at(y1, x0) * wx0 + at(y1, x1) * wx1;
    return top * wy0 + bottom * wy1;
  };
  const std::size_t plane = static_cast<std::size_t>(kH) * kW, i = static_cast<std::size_t>(y) * w + x;
  out_depth[i] = sample(depth) * im.scale;
  out_confidence[i] = sample(confidence);
  const float nx = sample(normal), ny = sample(normal + plane), nz = sample(normal + 2 * plane);
  const float norm = fmaxf(sqrtf(nx * nx + ny * ny + nz * nz), 1e-12f);
  out_normal[3 * i] = nx / norm;
  out_normal[3 * i + 1] = ny / norm;
  out_normal[3 * i + 2] = nz / norm;
}

dim3 grid(int width, int height, dim3 block) {
  return dim3((static_cast<unsigned>(width) + block.x - 1) / block.x, (static_cast<unsigned>(height) + block.y - 1) / block.y);
}

}  // namespace

void preprocess(const PreImage& image, float* canvas, cudaStream_t stream) {
  const dim3 block(32, 8);
  preprocess_kernel<<<grid(kW, kH, block), block, 0, stream>>>(image, canvas);
  gpu::check(cudaGetLastError(), "launching the pre-processing kernel");
}

void postprocess(const PostImage& image, const float* depth, const float* confidence, const float* normal,
                 float* out_depth, float* out_confidence, float* out_normal, cudaStream_t stream) {
  const dim3 block(32, 8);
  postprocess_kernel<<<grid(image.image_w, image.image_h, block), block, 0, stream>>>(
      image, depth, confidence, normal, out_depth, out_confidence, out_normal);
  gpu::check(cudaGetLastError(), "launching the post-processing kernel");
}

}  // namespace metric3d::kernels
