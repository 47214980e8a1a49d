// The CPU reference's rules (the comparison with the Python package itself is tests/test_native.py).
#include <cmath>
#include <numeric>
#include <random>

#include "check.hpp"
#include "reference.hpp"

using metric3d::Error;
using metric3d::ImageView;
using metric3d::Intrinsics;
namespace ref = metric3d::ref;

namespace {

std::vector<std::uint8_t> noise(int h, int w, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(static_cast<std::size_t>(h) * static_cast<std::size_t>(w) * 3);
  for (auto& x : v) x = static_cast<std::uint8_t>(rng() & 0xff);
  return v;
}

ImageView view(const std::vector<std::uint8_t>& v, int h, int w) { return ImageView{v.data(), w, h}; }

std::uint8_t at(const std::vector<std::uint8_t>& canvas, int y, int x, int ch) {
  return canvas[(static_cast<std::size_t>(y) * ref::kCanvasW + static_cast<std::size_t>(x)) * 3 + static_cast<std::size_t>(ch)];
}

}  // namespace

int main() {
  return check::run({
      {"the 289x451 image truncates to 615 rows with asymmetric pads",
       [] {
         const ref::Canvas c = ref::fit_canvas(289, 451);
         CHECK(c.resized_h == 615 && c.resized_w == 961);
         CHECK(c.top == 0 && c.bottom == 1 && c.left == 51 && c.right == 52);
       }},
      {"every tap's weights sum to 2048",
       [] {
         for (auto [src, dst] : {std::pair{400, 616}, {451, 961}, {4000, 821}, {1, 21}, {7, 1064}}) {
           const ref::CvTaps t = ref::cv_taps(src, dst, true);
           for (int d = 0; d < dst; ++d) CHECK(t.w0[static_cast<std::size_t>(d)] + t.w1[static_cast<std::size_t>(d)] == 2048);
         }
       }},
      {"an image of the canvas's height is copied, padded with the mean",
       [] {
         const auto image = noise(616, 300, 1);
         ref::Canvas c;
         const auto canvas = ref::make_canvas(view(image, 616, 300), &c);
         CHECK(c.resized_h == 616 && c.resized_w == 300 && c.left == 382);
         bool same = true;
         for (int y = 0; y < 616; ++y)
           for (int x = 0; x < 300; ++x)
             for (int ch = 0; ch < 3; ++ch) same &= at(canvas, y, x + c.left, ch) == image[(static_cast<std::size_t>(y) * 300 + static_cast<std::size_t>(x)) * 3 + static_cast<std::size_t>(ch)];
         CHECK(same);
         CHECK(at(canvas, 0, 0, 0) == 124 && at(canvas, 0, 0, 1) == 116 && at(canvas, 0, 0, 2) == 104);
       }},
      {"twice the canvas is the 2x2 mean (cv2's area shortcut)",
       [] {
         const auto image = noise(1232, 2128, 2);
         const auto canvas = ref::make_canvas(view(image, 1232, 2128));
         auto px = [&](int y, int x, int ch) { return image[(static_cast<std::size_t>(y) * 2128 + static_cast<std::size_t>(x)) * 3 + static_cast<std::size_t>(ch)]; };
         const int sum = px(20, 30, 1) + px(21, 30, 1) + px(20, 31, 1) + px(21, 31, 1);
         CHECK(at(canvas, 10, 15, 1) == (sum + 2) >> 2);
       }},
      {"BGR input and padded rows give the RGB canvas",
       [] {
         const int h = 37, w = 53;
         const auto rgb = noise(h, w, 3);
         std::vector<std::uint8_t> bgr(rgb.size()), strided(static_cast<std::size_t>(h) * 200, 0);
         for (std::size_t i = 0; i < rgb.size(); i += 3) {
           bgr[i] = rgb[i + 2];
           bgr[i + 1] = rgb[i + 1];
           bgr[i + 2] = rgb[i];
         }
         for (int y = 0; y < h; ++y) std::copy_n(&rgb[static_cast<std::size_t>(y) * w * 3], w * 3, &strided[static_cast<std::size_t>(y) * 200]);
         const auto expected = ref::make_canvas(view(rgb, h, w));
         CHECK(ref::make_canvas(ImageView{bgr.data(), w, h, 0, metric3d::PixelFormat::BGR}) == expected);
         CHECK(ref::make_canvas(ImageView{strided.data(), w, h, 200}) == expected);
       }},
      {"normalisation is (x - mean) / std per channel plane",
       [] {
         const auto canvas = ref::make_canvas(view(noise(50, 60, 4), 50, 60));
         const auto x = ref::normalize_canvas(canvas);
         const std::size_t plane = static_cast<std::size_t>(ref::kCanvasH) * ref::kCanvasW;
         CHECK(x.size() == 3 * plane);
         CHECK(x[2 * plane] == (104.f - 103.53f) / 57.375f);
       }},
      {"bad images are refused in one line",
       [] {
         const auto image = noise(4, 4, 5);
         CHECK(check::throws([] { ref::check_image(ImageView{}); }, Error::Kind::Input, "image is empty"));
         CHECK(check::throws([&] { ref::check_image(ImageView{image.data(), 4, 4, 5}); }, Error::Kind::Input, "stride"));
         CHECK(check::throws([&] { ref::check_image(ImageView{image.data(), 40000, 1}); }, Error::Kind::Input, "too large"));
         CHECK(check::throws([] { ref::fit_canvas(1, 30000); }, Error::Kind::Input, "too elongated"));
       }},
      {"focal lengths must be finite and positive; fy defaults to fx",
       [] {
         const ref::Canvas c = ref::fit_canvas(400, 600);
         CHECK(check::throws([&] { ref::metric_scale(c, Intrinsics{0, 0}); }, Error::Kind::Input, "fx must be a finite"));
         CHECK(check::throws([&] { ref::metric_scale(c, Intrinsics{NAN, 0}); }, Error::Kind::Input, "fx must be"));
         CHECK(check::throws([&] { ref::metric_scale(c, Intrinsics{500, -1}); }, Error::Kind::Input, "fy must be"));
         CHECK(check::throws([&] { ref::metric_scale(c, Intrinsics{1e300, 0}); }, Error::Kind::Input, "absurdly large"));
         CHECK(ref::metric_scale(c, Intrinsics{1000, 0}) == ref::metric_scale(c, Intrinsics{1000, 1000}));
         CHECK(std::abs(ref::metric_scale(c, Intrinsics{1000, 2000}) - 1500 * c.scale / 1000) < 1e-15);
       }},
      {"post-processing: constant canvases stay constant, depth is scaled, normals are unit",
       [] {
         const std::size_t plane = static_cast<std::size_t>(ref::kCanvasH) * ref::kCanvasW;
         std::vector<float> depth(plane, 2.f), confidence(plane, 0.5f), normal(4 * plane, 0.f);
         for (std::size_t i = 0; i < plane; ++i) normal[i] = 3.f, normal[2 * plane + i] = 4.f;
         const ref::Canvas c = ref::fit_canvas(300, 500);
         const metric3d::Result r = ref::postprocess(depth.data(), confidence.data(), normal.data(), c, 0.25);
         CHECK(r.width == 500 && r.height == 300 && r.depth.size() == 150000 && r.normal.size() == 450000);
         CHECK(r.depth[12345] == 0.5f && r.confidence[999] == 0.5f);
         CHECK(std::abs(r.normal[3 * 777] - 0.6f) < 1e-7f && r.normal[3 * 777 + 1] == 0.f && std::abs(r.normal[3 * 777 + 2] - 0.8f) < 1e-7f);
       }},
      {"post-processing reads only the valid region",
       [] {
         const std::size_t plane = static_cast<std::size_t>(ref::kCanvasH) * ref::kCanvasW;
         const ref::Canvas c = ref::fit_canvas(289, 451);
         std::vector<float> depth(plane, 1e9f), normal(4 * plane, 1.f);
         for (int y = c.top; y < c.top + c.resized_h; ++y)
           for (int x = c.left; x < c.left + c.resized_w; ++x) depth[static_cast<std::size_t>(y) * ref::kCanvasW + static_cast<std::size_t>(x)] = 7.f;
         const metric3d::Result r = ref::postprocess(depth.data(), depth.data(), normal.data(), c, 1.0);
         CHECK(*std::max_element(r.depth.begin(), r.depth.end()) == 7.f);
       }},
      {"unproject uses the image centre by default",
       [] {
         const auto p = metric3d::unproject(Intrinsics{100, 0}, 640, 480, 420, 240, 2.f);
         CHECK(p[0] == 2.f && p[1] == 0.f && p[2] == 2.f);
       }},
  });
}
