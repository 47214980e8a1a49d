// CPU reference of the pre- and post-processing (see reference.hpp for the rules it follows).
#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

namespace metric3d::ref {
namespace {

Error input_error(const std::string& message) { return Error(Error::Kind::Input, message); }

std::string size_text(int height, int width) { return std::to_string(height) + "x" + std::to_string(width); }

}  // namespace

Canvas fit_canvas(int height, int width) {
  Canvas c;
  c.image_h = height;
  c.image_w = width;
  c.scale = std::min(static_cast<double>(kCanvasH) / height, static_cast<double>(kCanvasW) / width);
  // truncation of the double products, as the original: 289 rows * (616 / 289) -> 615
  c.resized_h = static_cast<int>(c.scale * height);
  c.resized_w = static_cast<int>(c.scale * width);
  if (c.resized_h == 0 || c.resized_w == 0) {
    throw input_error("image of " + size_text(height, width) + " is too elongated: it would shrink to " +
                      size_text(c.resized_h, c.resized_w) + " on the 616x1064 canvas; crop it to a less " +
                      "extreme aspect ratio");
  }
  const int pad_h = kCanvasH - c.resized_h, pad_w = kCanvasW - c.resized_w;
  c.top = pad_h / 2;
  c.bottom = pad_h - c.top;
  c.left = pad_w / 2;
  c.right = pad_w - c.left;
  return c;
}

void check_image(const ImageView& image) {
  if (image.data == nullptr || image.width <= 0 || image.height <= 0) {
    throw input_error("image is empty (" + size_text(image.height, image.width) +
                      "); pass an image with at least one row and column");
  }
  if (std::max(image.width, image.height) > kMaxSide ||
      static_cast<long long>(image.width) * image.height > kMaxPixels) {
    throw input_error("image of " + size_text(image.height, image.width) + " is too large: the limit is " +
                      std::to_string(kMaxSide) + " pixels per side and 100 megapixels; downscale it first");
  }
  if (image.stride != 0 && image.stride < 3 * static_cast<std::size_t>(image.width)) {
    throw input_error("image row stride " + std::to_string(image.stride) + " is less than 3 x width = " +
                      std::to_string(3 * image.width) + " bytes; pass the stride in bytes of interleaved RGB");
  }
}

CvTaps cv_taps(int src, int dst, bool clamp_weights) {
  // cv::resize: scale = 1 / (dst / src) in double, the source position in float, weights * 2048 rounded.
  const double scale = 1.0 / (static_cast<double>(dst) / src);
  CvTaps t(static_cast<std::size_t>(dst));
  for (int d = 0; d < dst; ++d) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    if (clamp_weights && s < 0) {
      f = 0.f;
      s = 0;
    }
    if (clamp_weights && s >= src - 1) {
      f = 0.f;
      s = src - 1;
    }
    t.i0[d] = std::clamp(s, 0, src - 1);
    t.i1[d] = std::clamp(s + 1, 0, src - 1);
    t.w0[d] = static_cast<int>(std::lrint((1.f - f) * 2048.f));
    t.w1[d] = static_cast<int>(std::lrint(f * 2048.f));
  }
  return t;
}

ResizePlan resize_plan(int height, int width) {
  ResizePlan plan;
  plan.canvas = fit_canvas(height, width);
  const Canvas& c = plan.canvas;
  // cv2 takes INTER_AREA's 2x2 mean when the source is exactly twice the destination both ways.
  plan.area2x = height == 2 * c.resized_h && width == 2 * c.resized_w;
  plan.x = cv_taps(width, c.resized_w, true);
  plan.y = cv_taps(height, c.resized_h, false);  // cv2 clamps the rows, not the row weights
  return plan;
}

std::vector<std::uint8_t> make_canvas(const ImageView& image, Canvas* canvas) {
  check_image(image);
  if (image.memory != Memory::Host) {
    throw input_error("the CPU reference takes host images; copy the image to the host first");
  }
  const ResizePlan plan = resize_plan(image.height, image.width);
  const Canvas& c = plan.canvas;
  const std::size_t stride = image.stride ? image.stride : 3 * static_cast<std::size_t>(image.width);
  const bool bgr = image.format == PixelFormat::BGR;
  auto pixel = [&](int y, int x, int channel) -> int {
    return image.data[static_cast<std::size_t>(y) * stride + 3 * static_cast<std::size_t>(x) +
                      static_cast<std::size_t>(bgr ? 2 - channel : channel)];
  };
  std::vector<std::uint8_t> out(static_cast<std::size_t>(kCanvasH) * kCanvasW * 3);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = kPad[i % 3];
  std::vector<int> row0(static_cast<std::size_t>(c.resized_w) * 3), row1(row0.size());
  for (int dy = 0; dy < c.resized_h; ++dy) {
    std::uint8_t* dst = &out[(static_cast<std::size_t>(dy + c.top) * kCanvasW + c.left) * 3];
    if (plan.area2x) {
      for (int dx = 0; dx < c.resized_w; ++dx) {
        for (int ch = 0; ch < 3; ++ch) {
          const int sum = pixel(2 * dy, 2 * dx, ch) + pixel(2 * dy + 1, 2 * dx, ch) +
                          pixel(2 * dy, 2 * dx + 1, ch) + pixel(2 * dy + 1, 2 * dx + 1, ch);
          dst[3 * dx + ch] = static_cast<std::uint8_t>((sum + 2) >> 2);
        }
      }
      continue;
    }
    // horizontal pass on the two source rows, then cv2's vectorised vertical pass (>> 4, * beta >> 16)
    for (int dx = 0; dx < c.resized_w; ++dx) {
      for (int ch = 0; ch < 3; ++ch) {
        const std::size_t k = 3 * static_cast<std::size_t>(dx) + static_cast<std::size_t>(ch);
        row0[k] = pixel(plan.y.i0[dy], plan.x.i0[dx], ch) * plan.x.w0[dx] +
                  pixel(plan.y.i0[dy], plan.x.i1[dx], ch) * plan.x.w1[dx];
        row1[k] = pixel(plan.y.i1[dy], plan.x.i0[dx], ch) * plan.x.w0[dx] +
                  pixel(plan.y.i1[dy], plan.x.i1[dx], ch) * plan.x.w1[dx];
      }
    }
    for (std::size_t k = 0; k < row0.size(); ++k) {
      const int v = ((((row0[k] >> 4) * plan.y.w0[dy]) >> 16) + (((row1[k] >> 4) * plan.y.w1[dy]) >> 16) + 2) >> 2;
      dst[k] = static_cast<std::uint8_t>(std::clamp(v, 0, 255));
    }
  }
  if (canvas != nullptr) *canvas = c;
  return out;
}

std::vector<float> normalize_canvas(const std::vector<std::uint8_t>& canvas_u8) {
  const std::size_t plane = static_cast<std::size_t>(kCanvasH) * kCanvasW;
  std::vector<float> out(3 * plane);
  for (std::size_t i = 0; i < plane; ++i) {
    for (std::size_t ch = 0; ch < 3; ++ch) {
      out[ch * plane + i] = (static_cast<float>(canvas_u8[3 * i + ch]) - kMean[ch]) / kStd[ch];
    }
  }
  return out;
}

namespace {

double check_focal(const char* name, double value) {
  if (!std::isfinite(value) || value <= 0) {
    std::ostringstream text;
    text << name << " must be a finite focal length in pixels > 0, got " << value
         << "; pass the camera's focal length in pixels of this image (f_mm / sensor_width_mm * image_width_px)";
    throw input_error(text.str());
  }
  return value;
}

}  // namespace

double metric_scale(const Canvas& canvas, const Intrinsics& k, const char* name) {
  const double fx = check_focal(name, k.fx);
  const std::string fy_name = std::string(name) == "fx" ? "fy" : std::string(name) + " (fy)";
  const double fy = k.fy == 0 ? fx : check_focal(fy_name.c_str(), k.fy);
  const double scale = (fx + fy) / 2 * canvas.scale / kCanonicalFocal;
  if (kMaxCanonicalDepth * scale > static_cast<double>(std::numeric_limits<float>::max())) {
    throw input_error("focal length " + std::to_string(std::max(fx, fy)) +
                      " is absurdly large for a focal length in pixels: the metric depth would overflow " +
                      "float32; pass the camera's focal length in pixels of this image");
  }
  return scale;
}

TorchTaps torch_taps(int src, int dst) {
  // aten's upsample_bilinear2d (align_corners=False, no scale given): float arithmetic throughout.
  const float scale = static_cast<float>(src) / static_cast<float>(dst);
  TorchTaps t(static_cast<std::size_t>(dst));
  for (int d = 0; d < dst; ++d) {
    const float real = std::max(scale * (static_cast<float>(d) + 0.5f) - 0.5f, 0.f);
    const int i = std::min(static_cast<int>(std::floor(real)), src - 1);
    const float lambda = std::min(std::max(real - static_cast<float>(i), 0.f), 1.f);
    t.i0[d] = i;
    t.i1[d] = i + (i < src - 1 ? 1 : 0);
    t.w0[d] = 1.f - lambda;
    t.w1[d] = lambda;
  }
  return t;
}

Result postprocess(const float* depth, const float* confidence, const float* normal, const Canvas& c,
                   double scale) {
  const TorchTaps tx = torch_taps(c.resized_w, c.image_w), ty = torch_taps(c.resized_h, c.image_h);
  const std::size_t plane = static_cast<std::size_t>(kCanvasH) * kCanvasW;
  auto sample = [&](const float* p, int y, int x) {
    auto at = [&](int sy, int sx) {
      return p[static_cast<std::size_t>(sy + c.top) * kCanvasW + static_cast<std::size_t>(sx + c.left)];
    };
    const float top = at(ty.i0[y], tx.i0[x]) * tx.w0[x] + at(ty.i0[y], tx.i1[x]) * tx.w1[x];
    const float bottom = at(ty.i1[y], tx.i0[x]) * tx.w0[x] + at(ty.i1[y], tx.i1[x]) * tx.w1[x];
    return top * ty.w0[y] + bottom * ty.w1[y];
  };
  Result r;
  r.width = c.image_w;
  r.height = c.image_h;
  const std::size_t n = static_cast<std::size_t>(c.image_w) * c.image_h;
  r.depth.resize(n);
  r.confidence.resize(n);
  r.normal.resize(3 * n);
  const float metres = static_cast<float>(scale);
  for (int y = 0; y < c.image_h; ++y) {
    for (int x = 0; x < c.image_w; ++x) {
      const std::size_t i = static_cast<std::size_t>(y) * c.image_w + static_cast<std::size_t>(x);
      r.depth[i] = sample(depth, y, x) * metres;
      r.confidence[i] = sample(confidence, y, x);
      const float nx = sample(normal, y, x), ny = sample(normal + plane, y, x), nz = sample(normal + 2 * plane, y, x);
      const float norm = std::max(std::sqrt(nx * nx + ny * ny + nz * nz), 1e-12f);
      r.normal[3 * i] = nx / norm;
      r.normal[3 * i + 1] = ny / norm;
      r.normal[3 * i + 2] = nz / norm;
    }
  }
  return r;
}

}  // namespace metric3d::ref

namespace metric3d {

std::array<float, 3> unproject(const Intrinsics& k, int width, int height, float u, float v, float z) {
  const double fy = k.fy == 0 ? k.fx : k.fy;
  const double cx = k.cx.value_or(width / 2.0), cy = k.cy.value_or(height / 2.0);
  return {static_cast<float>((u - cx) / k.fx * z), static_cast<float>((v - cy) / fy * z), z};
}

}  // namespace metric3d
