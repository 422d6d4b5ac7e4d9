// Test helper shared by the config unit tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "config/loader.h"

namespace wsgate::config {

// The loaded config; fails the test (listing the errors) if it does not load.
inline ProxyConfig Load(const std::string& yaml) {
  LoadResult result = LoadConfigString(yaml, "t.yaml");
  if (!result) {
    std::string all;
    for (const ConfigError& e : result.error()) all += e.Format() + "\n";
    ADD_FAILURE() << "config failed to load:\n" << all;
    return {};
  }
  return std::move(result).value();
}

}  // namespace wsgate::config
