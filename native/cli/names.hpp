// One distinct result name per input path, the plain stem wherever it is unique: where stems clash
// (`a/photo.png`, `a/photo.jpg`, `b/photo.jpg`) the extension is added, then folder names in front, as
// trt_metric3d.results.result_names does (names compared without case).
#pragma once

#include <string>
#include <vector>

namespace metric3d::cli {

std::vector<std::string> result_names(const std::vector<std::string>& paths);

}  // namespace metric3d::cli
