// Result file names, as trt_metric3d.results.result_names gives them (see names.hpp).
#include "names.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>

namespace metric3d::cli {
namespace fs = std::filesystem;
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string name_at(const std::string& path, std::size_t level) {
  const fs::path p(path);
  const std::string stem = p.stem().string();
  if (level == 0) return stem;
  const std::string ext = p.extension().string();
  std::string name = ext.empty() ? stem : stem + "_" + ext.substr(1);
  std::vector<std::string> folders;
  for (const auto& part : fs::weakly_canonical(p).parent_path().relative_path()) folders.push_back(part.string());
  const std::size_t used = std::min(level - 1, folders.size());
  for (std::size_t i = 0; i < used; ++i) name = folders[folders.size() - 1 - i] + "_" + name;
  return name;
}

}  // namespace

std::vector<std::string> result_names(const std::vector<std::string>& paths) {
  std::vector<std::size_t> levels(paths.size(), 0);
  std::vector<std::string> names;
  for (const auto& p : paths) names.push_back(name_at(p, 0));
  while (true) {
    std::map<std::string, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < names.size(); ++i) groups[lower(names[i])].push_back(i);
    bool clash = false;
    for (const auto& [key, group] : groups) {
      if (group.size() < 2) continue;
      clash = true;
      for (std::size_t i : group) {
        ++levels[i];
        std::size_t every_folder = 0;  // the level that names all folders: len(path.resolve().parts)
        for (const auto& part : fs::weakly_canonical(paths[i])) {
          (void)part;
          ++every_folder;
        }
        const std::string name = name_at(paths[i], std::min(levels[i], every_folder));
        names[i] = levels[i] <= every_folder ? name : name + "_" + std::to_string(i + 1);
      }
    }
    if (!clash) return names;
  }
}

}  // namespace metric3d::cli
