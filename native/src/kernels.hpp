// CUDA pre- and post-processing, by the rules of reference.hpp (the taps come from there, computed on the
// host, so both sides use the very same source indices and weights).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace metric3d::kernels {

struct PreImage {
  const std::uint8_t* pixels;  // device, interleaved RGB or BGR
  std::size_t stride;
  int bgr;
  int top, left, resized_h, resized_w;
  int area2x;
  const int* taps;  // device: x i0, i1, w0, w1 (resized_w each), then y i0, i1, w0, w1 (resized_h each)
};
// One image -> its 3 x 616 x 1064 float canvas (0..255, the engine's input).
void preprocess(const PreImage& image, float* canvas, cudaStream_t stream);

struct PostImage {
  int top, left, resized_h, resized_w, image_h, image_w;
  const int* index_taps;     // device: x i0, i1 (image_w each), then y i0, i1 (image_h each)
  const float* weight_taps;  // device: x w0, w1, then y w0, w1
  float scale;               // metres per canonical depth unit
};
// One image's canvas outputs (planes of 616 x 1064; normal: 4 planes) -> depth, confidence (H x W) and
// unit normals (H x W x 3) at the image size.
void postprocess(const PostImage& image, const float* depth, const float* confidence, const float* normal,
                 float* out_depth, float* out_confidence, float* out_normal, cudaStream_t stream);

}  // namespace metric3d::kernels
