// The metric3d-trt commands, on parsed arguments: build, infer, canvas, info.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace metric3d::cli {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // "--fx" -> "1000"; flags -> ""
  bool has(const std::string& name) const { return options.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
};

int build(const Args& args);
int infer(const Args& args);
int canvas(const Args& args);
int info(const Args& args);

}  // namespace metric3d::cli
