#include "proxy/upstream_attempt.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/loader.h"
#include "proxy/core/libevent_ptr.h"

namespace wsgate {
namespace {

// A generation with pool "main" (|backends| loopback addresses, |balance|, |extra| pool keys)
// behind a catch-all route, plus pool "other" behind /other.
RuntimePtr MakeRuntime(int backends, const std::string& balance, const std::string& extra = "",
                       int retries = 2) {
  std::string yaml =
      "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n"
      "retries: " +
      std::to_string(retries) +
      "\n"
      "routes:\n  - match: {path_prefix: /other}\n    pool: other\n  - pool: main\n"
      "pools:\n  - name: main\n    balance: " +
      balance + "\n" + extra + "    backends:\n";
  for (int i = 0; i < backends; ++i) {
    yaml += "      - address: 127.0.0.1:" + std::to_string(9001 + i) + "\n";
  }
  yaml += "  - name: other\n    backends:\n      - address: 127.0.0.1:9100\n";
  config::LoadResult loaded = config::LoadConfigString(yaml, "t.yaml");
  if (!loaded) {
    ADD_FAILURE() << "config did not load:\n" << yaml;
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
struct Request {
  explicit Request(std::string text)
      : bytes(std::move(text)), parser(http::HeadKind::kRequest, http::HeadLimits{8192, 8192, 64}) {
    EXPECT_EQ(parser.Parse(bytes), http::ParseStatus::kComplete);
  }
  http::HeadView view() const { return http::HeadView(parser, bytes); }
  std::string bytes;
  http::HeadParser parser;
};

const Request& PlainGet() {
  static const Request request("GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\n");
  return request;
}

uint64_t Failures(metrics::Registry& metrics, const Backend& backend,
                  metrics::ConnectFailure failure) {
  return metrics.Backend(backend.pool, backend.address).connect_failures[failure].Get();
}

struct AttemptFixture {
  explicit AttemptFixture(RuntimePtr generation)
      : runtime(std::move(generation)), attempt("test", *runtime, metrics) {}
  bool Place(const Request& request = PlainGet(), std::string_view path = "/chat") {
    return attempt.Place(request.view(), "example.com", path, "10.0.0.1", &refusal);
  }
  RuntimePtr runtime;
  metrics::Registry metrics{"test"};
  UpstreamAttempt attempt;
  UpstreamRefusal refusal;
};

TEST(UpstreamAttemptTest, RetriesGoToEachBackendOnceInBalancerOrderThen502) {
  AttemptFixture f(MakeRuntime(3, "round_robin"));
  ASSERT_TRUE(f.Place());
  EXPECT_EQ(f.attempt.pool().name, "main");
  std::vector<std::string> tried;
  for (int i = 0; i < 3; ++i) {
    BackendLease backend = f.attempt.Next(&f.refusal);
    ASSERT_TRUE(backend);
    EXPECT_EQ(backend->active, 1);
    tried.push_back(backend->address);
    f.attempt.Failed(*backend, AttemptFailure::kConnectFailed, "c");
    EXPECT_EQ(Failures(f.metrics, *backend, metrics::kRefused), 1u);
    backend.Release();
  }
  EXPECT_EQ(tried,
            (std::vector<std::string>{"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"}));
  EXPECT_FALSE(f.attempt.Next(&f.refusal));
  EXPECT_EQ(f.refusal.status, 502);
  EXPECT_STREQ(f.refusal.reason, "every backend attempt failed");
  EXPECT_STREQ(f.refusal.extra_header, "");
  for (const BackendPtr& backend : f.attempt.pool().backends) EXPECT_EQ(backend->active, 0);
}

TEST(UpstreamAttemptTest, RetriesAreBoundedByTheConfiguredCount) {
  AttemptFixture f(MakeRuntime(3, "least_conn", "", /*retries=*/1));
  ASSERT_TRUE(f.Place());
  for (int i = 0; i < 2; ++i) {
    BackendLease backend = f.attempt.Next(&f.refusal);
    ASSERT_TRUE(backend);
    f.attempt.Failed(*backend, AttemptFailure::kClosedBeforeResponse, "c");
    EXPECT_EQ(Failures(f.metrics, *backend, metrics::kReset), 1u);
  }
  EXPECT_FALSE(f.attempt.Next(&f.refusal));  // a third backend is left, but no retry
  EXPECT_EQ(f.attempt.tries(), 2u);
  EXPECT_EQ(f.refusal.status, 502);
}

TEST(UpstreamAttemptTest, ARefusedConnectThenSuccessResetsTheOutlierCount) {
  AttemptFixture f(MakeRuntime(2, "round_robin",
                               "    outlier: {consecutive_failures: 2, ejection_time: 30s}\n"));
  ASSERT_TRUE(f.Place());
  BackendLease first = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(first);
  f.attempt.Failed(*first, AttemptFailure::kConnectFailed, "c");
  EXPECT_EQ(first->consecutive_failures, 1u);
  Backend* refused = first.get();
  first.Release();
  BackendLease second = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(second);
  EXPECT_NE(second.get(), refused);
  f.attempt.ReportOutcome(*second, true);
  EXPECT_EQ(second->consecutive_failures, 0u);
  EXPECT_FALSE(refused->ejected);
  EXPECT_EQ(Failures(f.metrics, *second, metrics::kRefused), 0u);
}

TEST(UpstreamAttemptTest, AnInvalidAnswerCountsAsBadResponseAndEjects) {
  AttemptFixture f(
      MakeRuntime(2, "least_conn", "    outlier: {consecutive_failures: 1, ejection_time: 30s}\n"));
  ASSERT_TRUE(f.Place());
  BackendLease backend = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(backend);
  f.attempt.BadResponse(*backend);  // e.g. a 101 with a wrong Sec-WebSocket-Accept
  EXPECT_EQ(Failures(f.metrics, *backend, metrics::kBadResponse), 1u);
  EXPECT_EQ(Failures(f.metrics, *backend, metrics::kRefused), 0u);
  EXPECT_TRUE(backend->ejected);
}

TEST(UpstreamAttemptTest, TimeoutsEverywhereGive504) {
  AttemptFixture f(MakeRuntime(2, "least_conn"));
  ASSERT_TRUE(f.Place());
  while (BackendLease backend = f.attempt.Next(&f.refusal)) {
    f.attempt.Failed(*backend, AttemptFailure::kConnectTimedOut, "c");
    EXPECT_EQ(Failures(f.metrics, *backend, metrics::kConnectTimeout), 1u);
  }
  EXPECT_EQ(f.refusal.status, 504);
  EXPECT_STREQ(f.refusal.reason, "every backend attempt timed out");
}

TEST(UpstreamAttemptTest, AnUpgradeTimeoutIsATimeoutAndATlsFailureIsNot) {
  AttemptFixture f(MakeRuntime(2, "round_robin"));
  ASSERT_TRUE(f.Place());
  BackendLease first = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(first);
  f.attempt.Failed(*first, AttemptFailure::kConnectTimedOut, "c");
  first.Release();
  BackendLease second = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(second);
  f.attempt.Failed(*second, AttemptFailure::kUpgradeTimedOut, "c");
  EXPECT_EQ(Failures(f.metrics, *second, metrics::kConnectTimeout), 1u);
  second.Release();
  EXPECT_FALSE(f.attempt.Next(&f.refusal));
  EXPECT_EQ(f.refusal.status, 504);

  AttemptFixture tls(MakeRuntime(1, "least_conn"));
  ASSERT_TRUE(tls.Place());
  BackendLease backend = tls.attempt.Next(&tls.refusal);
  ASSERT_TRUE(backend);
  tls.attempt.Failed(*backend, AttemptFailure::kTlsHandshake, "c", "certificate verify failed");
  EXPECT_EQ(Failures(tls.metrics, *backend, metrics::kTlsHandshake), 1u);
  backend.Release();
  EXPECT_FALSE(tls.attempt.Next(&tls.refusal));
  EXPECT_EQ(tls.refusal.status, 502);
}

TEST(UpstreamAttemptTest, NoAvailableBackendIs503WithRetryAfter) {
  AttemptFixture f(MakeRuntime(2, "least_conn"));
  for (const BackendPtr& backend : f.runtime->pools[0].backends) backend->draining = true;
  ASSERT_TRUE(f.Place());
  EXPECT_FALSE(f.attempt.Next(&f.refusal));
  EXPECT_EQ(f.refusal.status, 503);
  EXPECT_STREQ(f.refusal.reason, "no backend available");
  EXPECT_STREQ(f.refusal.extra_header, "Retry-After: 1\r\n");
}

TEST(UpstreamAttemptTest, PlacementRoutesByPathAndRefusesAMissingStickyKey) {
  AttemptFixture f(
      MakeRuntime(2, "sticky", "    sticky: {key: header:x-user, fallback: reject}\n"));
  EXPECT_FALSE(f.Place());
  EXPECT_EQ(f.refusal.status, 400);
  EXPECT_STREQ(f.refusal.reason, "the sticky routing key is missing");

  Request keyed("GET /chat HTTP/1.1\r\nHost: example.com\r\nX-User: alice\r\n\r\n");
  ASSERT_TRUE(f.Place(keyed));
  EXPECT_TRUE(f.attempt.pick().has_key);
  BackendLease first = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(first);
  std::string chosen = first->address;
  first.Release();
  ASSERT_TRUE(f.Place(keyed));  // the same key, placed anew, goes to the same backend
  BackendLease again = f.attempt.Next(&f.refusal);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->address, chosen);

  ASSERT_TRUE(f.Place(keyed, "/other/x"));
  EXPECT_EQ(f.attempt.pool().name, "other");
  EXPECT_EQ(f.attempt.route_index(), 0);
  f.attempt.Clear();
  EXPECT_FALSE(f.attempt.placed());
}

// --- BodyRelay: a response body relayed as its framing says.

struct Buffers {
  Buffers() : in(evbuffer_new()), out(evbuffer_new()) {}
  void Add(std::string_view bytes) { evbuffer_add(in.get(), bytes.data(), bytes.size()); }
  static std::string Text(evbuffer* buffer) {
    std::string text(evbuffer_get_length(buffer), '\0');
    evbuffer_copyout(buffer, text.data(), text.size());
    return text;
  }
  // Run the relay until it needs more, ends, or fails.
  BodyRelay::Step Drain(BodyRelay& relay, uint64_t* moved) {
    BodyRelay::Step step;
    do {
      step = relay.Move(in.get(), out.get(), moved);
    } while (step == BodyRelay::Step::kProgress);
    return step;
  }
  EvBufferPtr in;
  EvBufferPtr out;
};

TEST(BodyRelayTest, ChunkedBodyEndsAtTheLastChunkAndLeavesWhatFollows) {
  Buffers b;
  BodyRelay relay;
  relay.Start(http::Framing{http::BodyKind::kChunked, 0, nullptr}, http::ChunkLimits{}, false);
  const std::string body = "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
  b.Add(body.substr(0, 7));
  uint64_t moved = 0;
  EXPECT_EQ(b.Drain(relay, &moved), BodyRelay::Step::kNeedMore);
  EXPECT_FALSE(relay.done());
  b.Add(body.substr(7) + "HTTP/1.1 200 OK\r\n");
  EXPECT_EQ(b.Drain(relay, &moved), BodyRelay::Step::kDone);
  EXPECT_TRUE(relay.done());
  EXPECT_EQ(Buffers::Text(b.out.get()), body);
  EXPECT_EQ(moved, body.size());
  EXPECT_EQ(Buffers::Text(b.in.get()), "HTTP/1.1 200 OK\r\n");
}

TEST(BodyRelayTest, LengthBodyStopsAtItsLength) {
  Buffers b;
  BodyRelay relay;
  relay.Start(http::Framing{http::BodyKind::kLength, 4, nullptr}, http::ChunkLimits{}, false);
  b.Add("abcdef");
  uint64_t moved = 0;
  EXPECT_EQ(b.Drain(relay, &moved), BodyRelay::Step::kDone);
  EXPECT_EQ(Buffers::Text(b.out.get()), "abcd");
  EXPECT_EQ(moved, 4u);
}

TEST(BodyRelayTest, CloseDelimitedBodyEndsOnlyAtEndOfInput) {
  Buffers b;
  BodyRelay relay;
  relay.Start(http::Framing{http::BodyKind::kUntilClose, 0, nullptr}, http::ChunkLimits{}, false);
  b.Add("all of it");
  uint64_t moved = 0;
  EXPECT_EQ(b.Drain(relay, &moved), BodyRelay::Step::kNeedMore);
  EXPECT_FALSE(relay.done());
  EXPECT_TRUE(relay.EndOfInput());
  EXPECT_EQ(Buffers::Text(b.out.get()), "all of it");

  BodyRelay cut;
  cut.Start(http::Framing{http::BodyKind::kLength, 10, nullptr}, http::ChunkLimits{}, false);
  EXPECT_FALSE(cut.EndOfInput());  // a length body cut short is no complete body
}

TEST(BodyRelayTest, BrokenChunkFramingIsAnError) {
  Buffers b;
  BodyRelay relay;
  relay.Start(http::Framing{http::BodyKind::kChunked, 0, nullptr}, http::ChunkLimits{}, false);
  b.Add("zz\r\n");
  uint64_t moved = 0;
  EXPECT_EQ(b.Drain(relay, &moved), BodyRelay::Step::kError);
  EXPECT_NE(relay.error(), nullptr);
}

TEST(BodyRelayTest, DechunkingRelaysThePayloadOnly) {
  Buffers b;
  BodyRelay relay;
  relay.Start(http::Framing{http::BodyKind::kChunked, 0, nullptr}, http::ChunkLimits{}, true);
  b.Add("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  uint64_t moved = 0;
  EXPECT_EQ(b.Drain(relay, &moved), BodyRelay::Step::kDone);
  EXPECT_EQ(Buffers::Text(b.out.get()), "abcde");
}

TEST(ParseResponseHeadTest, ReportsTheHeadOrWhyItIsInvalid) {
  Buffers b;
  http::HeadParser parser(http::HeadKind::kResponse, http::HeadLimits{8192, 8192, 64});
  std::string_view buffered;
  std::string error;
  EXPECT_EQ(ParseResponseHead(b.in.get(), 0, parser, &buffered, &error),
            http::ParseStatus::kNeedMore);
  b.Add("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n");
  EXPECT_EQ(ParseResponseHead(b.in.get(), 0, parser, &buffered, &error),
            http::ParseStatus::kNeedMore);
  b.Add("\r\nno");
  ASSERT_EQ(ParseResponseHead(b.in.get(), 0, parser, &buffered, &error),
            http::ParseStatus::kComplete);
  EXPECT_EQ(parser.status_code(), 403);
  EXPECT_EQ(buffered.substr(parser.head_length()), "no");  // the body stays buffered

  Buffers garbage;
  garbage.Add("SMTP ready\r\n\r\n");
  http::HeadParser fresh(http::HeadKind::kResponse, http::HeadLimits{8192, 8192, 64});
  EXPECT_EQ(ParseResponseHead(garbage.in.get(), 0, fresh, &buffered, &error),
            http::ParseStatus::kError);
  EXPECT_EQ(error.rfind("invalid response head from backend: ", 0), 0u) << error;
}

}  // namespace
}  // namespace wsgate
