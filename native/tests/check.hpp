// A minimal test harness for the ctest executables: CHECK records a failure and goes on; run() returns
// the process exit code (0 passed, 1 failed, 77 = ctest's skip code when `skip` names a reason).
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "metric3d/metric3d.hpp"

namespace check {

inline int& failures() {
  static int count = 0;
  return count;
}

#define CHECK(condition)                                                               \
  do {                                                                                 \
    if (!(condition)) {                                                                \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      ++check::failures();                                                             \
    }                                                                                  \
  } while (0)

// The call throws metric3d::Error of `kind` whose message contains `part`.
template <typename F>
bool throws(F&& call, metric3d::Error::Kind kind, const std::string& part) {
  try {
    call();
  } catch (const metric3d::Error& e) {
    const bool ok = e.kind() == kind && std::string(e.what()).find(part) != std::string::npos &&
                    std::string(e.what()).find('\n') == std::string::npos;
    if (!ok) std::fprintf(stderr, "unexpected error: %s\n", e.what());
    return ok;
  }
  return false;
}

using Test = std::pair<const char*, std::function<void()>>;

inline int run(const std::vector<Test>& tests, const std::string& skip = "") {
  if (!skip.empty()) {
    std::printf("skipped: %s\n", skip.c_str());
    return 77;
  }
  for (const auto& [name, test] : tests) {
    const int before = failures();
    try {
      test();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: unexpected exception: %s\n", name, e.what());
      ++failures();
    }
    std::printf("%s %s\n", failures() == before ? "ok  " : "FAIL", name);
  }
  return failures() == 0 ? 0 : 1;
}

}  // namespace check
