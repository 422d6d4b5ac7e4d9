// The metrics table (families.h) and the exposition built from it: label names checked at
// compile time, series of backends that no longer exist left out, wsgate_backend_up taken from
// the scrape.
#include "metrics/metrics.h"

#include <gtest/gtest.h>

#include <string>

namespace wsgate::metrics {
namespace {

// Every enum value has its own label name (a forgotten one would be an empty string_view, not a
// null pointer, and fail here at compile time).
static_assert(kHandshakeResultLabels.size() == kHandshakeResults);
static_assert(AllLabelled(kHandshakeResultLabels) && AllLabelled(kConnectFailureLabels) &&
              AllLabelled(kTlsFailureLabels) && AllLabelled(kFrameKindLabels) &&
              AllLabelled(kDirectionLabels) && AllLabelled(kInitiatorLabels) &&
              AllLabelled(kReloadResultLabels) && AllLabelled(kAdminRefusalLabels) &&
              AllLabelled(kTlsVersionLabels) && AllLabelled(kCloseCodeLabels));
// What the check catches: a name left out, or one given twice.
static_assert(!AllLabelled(std::array<std::string_view, 3>{"a", "b"}));
static_assert(!AllLabelled(std::array<std::string_view, 2>{"a", "a"}));
static_assert(kHandshakeResultLabels[kAddressLimit] == "address_limit");
static_assert(kConnectFailureLabels[kTlsHandshake] == "tls_handshake");
static_assert(kFamilySpecs[kBackendUp].name == "wsgate_backend_up");
static_assert(kFamilySpecs[kFramesTotal].labels[2] == "opcode");

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(Exposition, EveryDeclaredFamilyInTableOrder) {
  Registry registry("1.2.3");
  Scrape scrape;
  scrape.registries = {&registry};
  scrape.process = false;
  const std::string text = Serialize(scrape);
  size_t at = 0;
  for (const FamilySpec& spec : kFamilySpecs) {
    if (spec.name.starts_with("process_")) continue;
    const std::string help = "# HELP " + std::string(spec.name) + " " + std::string(spec.help);
    const size_t found = text.find(help + "\n", at);
    ASSERT_NE(found, std::string::npos) << spec.name << " missing or out of order:\n" << text;
    at = found;
  }
  EXPECT_TRUE(Has(text, "wsgate_build_info{version=\"1.2.3\"} 1"));
  EXPECT_TRUE(Has(text, "wsgate_config_reloads_total{result=\"partial\"} 0"));
  EXPECT_EQ(text.find("process_"), std::string::npos);
}

TEST(Exposition, BackendUpComesFromTheScrape) {
  Registry registry("v");
  Scrape scrape;
  scrape.registries = {&registry};
  scrape.process = false;
  scrape.backends = {{"p", "10.0.0.2:80", false}, {"p", "10.0.0.1:80", true}};
  const std::string text = Serialize(scrape);
  EXPECT_TRUE(Has(text, "wsgate_backend_up{pool=\"p\",backend=\"10.0.0.1:80\"} 1")) << text;
  EXPECT_TRUE(Has(text, "wsgate_backend_up{pool=\"p\",backend=\"10.0.0.2:80\"} 0")) << text;
  // In (pool, backend) order, and every listed backend has its connect failures, zero or not.
  EXPECT_LT(text.find("backend=\"10.0.0.1:80\"} 1"), text.find("backend=\"10.0.0.2:80\"} 0"));
  EXPECT_TRUE(Has(text,
                  "wsgate_backend_connect_failures_total{pool=\"p\",backend=\"10.0.0.2:80\","
                  "reason=\"tls_handshake\"} 0"))
      << text;
}

TEST(Exposition, BackendListedTwiceTheConfiguredOneWins) {
  Registry registry("v");
  Scrape scrape;
  scrape.registries = {&registry};
  scrape.process = false;
  // Added again by a reload while its removed predecessor still drains.
  scrape.backends = {{"p", "10.0.0.1:80", true}, {"p", "10.0.0.1:80", false}};
  const std::string text = Serialize(scrape);
  EXPECT_TRUE(Has(text, "wsgate_backend_up{pool=\"p\",backend=\"10.0.0.1:80\"} 1")) << text;
  EXPECT_FALSE(Has(text, "wsgate_backend_up{pool=\"p\",backend=\"10.0.0.1:80\"} 0")) << text;
}

TEST(Exposition, SeriesOfABackendNoLongerListedAreLeftOut) {
  Registry main("v");
  Registry worker("v");
  main.Backend("p", "gone:1").connect_failures[kRefused].Add(3);
  worker.Backend("p", "kept:1").connect_failures[kRefused].Add(2);
  main.Backend("p", "kept:1").connect_failures[kRefused].Add(1);
  worker.Connections("public", "p", "gone:1").total.Add();
  worker.Connections("public", "p", "kept:1").total.Add(4);
  Scrape scrape;
  scrape.registries = {&main, &worker};
  scrape.process = false;
  scrape.backends = {{"p", "kept:1", true}};
  const std::string text = Serialize(scrape);
  EXPECT_EQ(text.find("gone:1"), std::string::npos) << text;
  EXPECT_TRUE(Has(text,
                  "wsgate_backend_connect_failures_total{pool=\"p\",backend=\"kept:1\","
                  "reason=\"refused\"} 3"))
      << text;
  EXPECT_TRUE(Has(text,
                  "wsgate_connections_total{listener=\"public\",pool=\"p\","
                  "backend=\"kept:1\"} 4"))
      << text;
  // The pool's own series stay: the pool still exists.
  EXPECT_TRUE(Has(text,
                  "wsgate_connections_active{listener=\"public\",pool=\"p\","
                  "backend=\"kept:1\"} 0"))
      << text;
}

TEST(Exposition, ConnectionsApiSample) {
  Scrape scrape;
  scrape.process = false;
  scrape.connections_api.requests[{"POST", 200}] = 7;
  scrape.connections_api.connections = 2;
  scrape.connections_api.auth_cache_hits = 5;
  const std::string text = Serialize(scrape);
  EXPECT_TRUE(Has(text, "wsgate_connections_api_requests_total{method=\"POST\",status=\"200\"} 7"))
      << text;
  EXPECT_TRUE(Has(text,
                  "# TYPE wsgate_connections_api_connections gauge\n"
                  "wsgate_connections_api_connections 2"))
      << text;
  EXPECT_TRUE(Has(text, "wsgate_auth_cache_hits_total 5")) << text;
}

}  // namespace
}  // namespace wsgate::metrics
