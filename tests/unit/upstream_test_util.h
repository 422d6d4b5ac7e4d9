// Test helpers shared by the upstream-stage unit tests (UpstreamAttempt, PlanUpgrade,
// UpgradeAttempt): a generation built from YAML and a parsed request head.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "config/loader.h"
#include "proxy/http/head_parser.h"
#include "proxy/runtime.h"

namespace wsgate {

// The generation |yaml| describes; fails the test (with the YAML) if it does not load or build.
inline RuntimePtr BuildTestRuntime(const std::string& yaml) {
  config::LoadResult loaded = config::LoadConfigString(yaml, "t.yaml");
  if (!loaded) {
    std::string errors;
    for (const config::ConfigError& e : loaded.error()) errors += e.Format() + "\n";
    ADD_FAILURE() << "config did not load:\n" << errors << yaml;
    return nullptr;
  }
  Result<RuntimePtr> runtime = BuildRuntime(std::move(loaded).value(), nullptr);
  if (!runtime) {
    ADD_FAILURE() << runtime.error();
    return nullptr;
  }
  return std::move(runtime).value();
}

// One parsed request head, kept alive with its bytes.
struct ParsedRequest {
  explicit ParsedRequest(std::string text)
      : bytes(std::move(text)), parser(http::HeadKind::kRequest, http::HeadLimits{8192, 8192, 64}) {
    EXPECT_EQ(parser.Parse(bytes), http::ParseStatus::kComplete) << bytes;
  }
  http::HeadView view() const { return http::HeadView(parser, bytes); }
  std::string bytes;
  http::HeadParser parser;
};

}  // namespace wsgate
