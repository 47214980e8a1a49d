// The plain C++ reference of the pre- and post-processing, on the CPU, by the rules of
// trt_metric3d/processing.py: the tests hold both the CUDA kernels and the Python package against it.
//
// Pre: keep-ratio fit onto the 616 x 1064 canvas with OpenCV's INTER_LINEAR fixed-point arithmetic on
// uint8 (bit-exact to cv2.resize, including its 2x "area" shortcut), centred padding with the rounded
// ImageNet mean. Post: un-pad, torch's bilinear (align_corners=False) resize back to the image, metric
// scale (fx + fy) / 2 * r / 1000, unit normals.
#pragma once

#include <cstdint>
#include <vector>

#include "metric3d/metric3d.hpp"

namespace metric3d::ref {

constexpr int kCanvasH = 616;
constexpr int kCanvasW = 1064;
constexpr float kMean[3] = {123.675f, 116.28f, 103.53f};
constexpr float kStd[3] = {58.395f, 57.12f, 57.375f};
constexpr std::uint8_t kPad[3] = {124, 116, 104};  // cv2.copyMakeBorder(value=MEAN) on uint8
constexpr double kCanonicalFocal = 1000.0;
constexpr double kMaxCanonicalDepth = 200.0;
constexpr int kMaxSide = 32768;
constexpr long long kMaxPixels = 100'000'000;

struct Canvas {
  int image_h = 0, image_w = 0;
  double scale = 0;  // r = min(616 / H, 1064 / W)
  int resized_h = 0, resized_w = 0;
  int top = 0, bottom = 0, left = 0, right = 0;
};

// Where an image of height x width lands on the canvas; Error(Input) when it is too elongated.
Canvas fit_canvas(int height, int width);
// Error(Input) for an empty, oversized or badly strided image.
void check_image(const ImageView& image);

// One axis of a linear resize: the two source indices and their weights per output index.
template <typename Weight>
struct Taps {
  explicit Taps(std::size_t n = 0) : i0(n), i1(n), w0(n), w1(n) {}
  std::vector<int> i0, i1;
  std::vector<Weight> w0, w1;
};
// cv2's fixed-point linear resize: integer weights that sum to 2048.
using CvTaps = Taps<int>;
CvTaps cv_taps(int src, int dst, bool clamp_weights);
// The taps of resizing an H x W image onto its canvas; `area2x` is cv2's exact 2x shortcut (2x2 mean).
struct ResizePlan {
  Canvas canvas;
  bool area2x = false;
  CvTaps x, y;
};
ResizePlan resize_plan(int height, int width);

// The uint8 616 x 1064 x 3 RGB canvas (host images only).
std::vector<std::uint8_t> make_canvas(const ImageView& image, Canvas* canvas = nullptr);
// (x - mean) / std, 1 x 3 x 616 x 1064 float32: what trt_metric3d.preprocess returns.
std::vector<float> normalize_canvas(const std::vector<std::uint8_t>& canvas_u8);

// Metres per canonical depth unit; Error(Input) for a focal length that is not finite and > 0.
double metric_scale(const Canvas& canvas, const Intrinsics& intrinsics, const char* name = "fx");

// torch's bilinear (align_corners=False) resize: float weights.
using TorchTaps = Taps<float>;
TorchTaps torch_taps(int src, int dst);

// One image's network outputs on the canvas (planes of 616 x 1064: depth, confidence, normal xyz(+kappa))
// -> its Result at the image size.
Result postprocess(const float* depth, const float* confidence, const float* normal, const Canvas& canvas,
                   double scale);

}  // namespace metric3d::ref
