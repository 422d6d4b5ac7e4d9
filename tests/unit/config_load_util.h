// Test helper shared by the config unit tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <variant>

#include "config/loader.h"

namespace wsgate::config {

// The loaded config; fails the test (listing the errors) if it does not load.
inline ProxyConfig Load(const std::string& yaml) {
  LoadResult result = LoadConfigString(yaml, "t.yaml");
  if (const auto* errors = std::get_if<ConfigErrors>(&result)) {
    std::string all;
    for (const ConfigError& e : *errors) all += e.Format() + "\n";
    ADD_FAILURE() << "config failed to load:\n" << all;
    return {};
  }
  return std::get<ProxyConfig>(std::move(result));
}

}  // namespace wsgate::config
