// Fuzz target: HeadParser (request and response mode), whole versus incremental, plus the
// handshake stages that consume a parsed head.
//
// Input layout: byte 0 is a selector, the rest is the bytes a peer sent.
//   bit 0     0 = request head, 1 = response head
//   bits 1-2  cut strategy for the incremental parse (see Cuts below)
//   bits 3-4  limits profile (small profiles make the limit paths reachable with short inputs)
//   bit 5     CheckClientHandshake with an Origin allow-list
//   bit 6     client address is IPv6 (ForwardingInfo)
//   bit 7     client connection is TLS (ForwardingInfo)
//   the input's length, odd = the client is a trusted proxy (ForwardingInfo::peer_trusted)
//
// Properties checked:
//   * parsing the input whole and feeding it as growing prefixes (cut points derived from the
//     input) give the same status, error, head_length, start-line spans, version, status code
//     and field spans;
//   * every span lies within the input (within the head once complete);
//   * a complete head ends with CRLF CRLF and re-parses identically on its own;
//   * requests: CheckClientHandshake returns views into the buffer and a known status; the
//     error response parses; an accepted Host is a valid uri-host[:port] with no character
//     that could end or extend an authority; BuildUpstreamRequest parses completely, carries
//     exactly one X-Forwarded-For and Forwarded ending with this hop, exactly one of each other
//     forwarding field (and the client's none) unless the peer is trusted, none of the
//     hop-by-hop fields nor the dropped fields; a valid handshake stays valid after the rewrite;
//   * responses: CheckUpstreamResponse is consistent with the status code, and
//     BuildRelayedResponseHead parses completely with the same status and "Connection: close".
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "proxy/http/handshake.h"
#include "proxy/http/head_parser.h"

namespace {

using wsgate::fuzz::HashBytes;
using wsgate::fuzz::Rng;
using wsgate::fuzz::ViewWithin;
using namespace wsgate::http;

constexpr std::string_view kSampleKey = "dGhlIHNhbXBsZSBub25jZQ==";

HeadLimits PickLimits(unsigned profile) {
  switch (profile) {
    case 1:
      return HeadLimits{512, 128, 8};
    case 2:
      return HeadLimits{96, 40, 3};
    case 3:
      return HeadLimits{2048, 2048, 32};  // start-line limit equal to the head limit
    default:
      return HeadLimits{};  // the production defaults
  }
}

struct Snapshot {
  ParseStatus status;
  ParseError error;
  size_t head_length;
  Span first;
  Span second;
  int status_code;
  int version_major;
  int version_minor;
  std::vector<HeaderField> fields;
};

Snapshot Take(const HeadParser& p) {
  return Snapshot{p.status(),      p.error(),         p.head_length(),   p.method(), p.target(),
                  p.status_code(), p.version_major(), p.version_minor(), p.fields()};
}

bool SameSpan(Span a, Span b) { return a.offset == b.offset && a.length == b.length; }

void CheckSame(const Snapshot& whole, const Snapshot& inc) {
  FUZZ_CHECK_MSG(whole.status == inc.status, "status whole=%d incremental=%d",
                 static_cast<int>(whole.status), static_cast<int>(inc.status));
  FUZZ_CHECK_MSG(whole.error == inc.error, "error whole=%s incremental=%s",
                 ParseErrorName(whole.error), ParseErrorName(inc.error));
  FUZZ_CHECK_MSG(whole.head_length == inc.head_length, "head_length whole=%zu incremental=%zu",
                 whole.head_length, inc.head_length);
  FUZZ_CHECK(SameSpan(whole.first, inc.first));
  FUZZ_CHECK(SameSpan(whole.second, inc.second));
  FUZZ_CHECK(whole.status_code == inc.status_code);
  FUZZ_CHECK(whole.version_major == inc.version_major);
  FUZZ_CHECK(whole.version_minor == inc.version_minor);
  FUZZ_CHECK_MSG(whole.fields.size() == inc.fields.size(), "fields whole=%zu incremental=%zu",
                 whole.fields.size(), inc.fields.size());
  for (size_t i = 0; i < whole.fields.size(); ++i) {
    FUZZ_CHECK(SameSpan(whole.fields[i].name, inc.fields[i].name));
    FUZZ_CHECK(SameSpan(whole.fields[i].value, inc.fields[i].value));
  }
}

bool SpanWithin(Span s, size_t limit) {
  return uint64_t{s.offset} + uint64_t{s.length} <= uint64_t{limit};
}

// Every span the parser reports lies inside the first |limit| bytes.
void CheckSpansWithin(const HeadParser& p, size_t limit) {
  FUZZ_CHECK(SpanWithin(p.method(), limit));
  FUZZ_CHECK(SpanWithin(p.target(), limit));
  for (const auto& f : p.fields()) {
    FUZZ_CHECK(SpanWithin(f.name, limit));
    FUZZ_CHECK(SpanWithin(f.value, limit));
  }
}

// The next prefix length to feed, strictly greater than |fed| and at most |size|.
class Cuts {
 public:
  Cuts(unsigned strategy, std::string_view input, uint64_t seed)
      : strategy_(strategy), input_(input), rng_(seed) {}

  size_t Next(size_t fed) {
    const size_t size = input_.size();
    size_t next = fed + 1;
    switch (strategy_) {
      case 0:  // short random steps
        next = fed + rng_.Range(1, 16);
        break;
      case 1:  // every prefix, one byte at a time
        break;
      case 2: {
        // Right after each CR and right before each LF: the split-CRLF boundaries.
        size_t i = fed + 1;
        while (i < size && input_[i - 1] != '\r' && input_[i] != '\n') ++i;
        next = i;
        break;
      }
      default:  // steps of very different sizes
        next = fed + (size_t{1} << rng_.Range(0, 12)) + rng_.Range(0, 3) - 1;
        if (next <= fed) next = fed + 1;
        break;
    }
    return next < size ? next : size;
  }

 private:
  unsigned strategy_;
  std::string_view input_;
  Rng rng_;
};

void CheckCompleteHead(const HeadParser& p, std::string_view input, const HeadLimits& limits) {
  const size_t n = p.head_length();
  FUZZ_CHECK(n >= 4 && n <= input.size());
  FUZZ_CHECK(n <= limits.max_head_bytes);
  FUZZ_CHECK(p.fields().size() <= limits.max_fields);
  FUZZ_CHECK(input.substr(n - 4, 4) == "\r\n\r\n");
  CheckSpansWithin(p, n);
  for (const auto& f : p.fields()) {
    std::string_view name = f.name.In(input);
    std::string_view value = f.value.In(input);
    FUZZ_CHECK(!name.empty());
    FUZZ_CHECK(name.find_first_of(" \t:\r\n") == std::string_view::npos);
    FUZZ_CHECK(value.find_first_of("\r\n") == std::string_view::npos);
    if (!value.empty()) {
      FUZZ_CHECK(value.front() != ' ' && value.front() != '\t');
      FUZZ_CHECK(value.back() != ' ' && value.back() != '\t');
    }
  }
  FUZZ_CHECK(p.version_major() >= 0 && p.version_major() <= 9);
  FUZZ_CHECK(p.version_minor() >= 0 && p.version_minor() <= 9);
}

// Limits generous enough for what the proxy itself generates from a head within |limits|.
HeadLimits GenerousLimits(size_t size) {
  HeadLimits big;
  big.max_head_bytes = size + 1 > 64 * 1024 ? size + 1 : 64 * 1024;
  big.max_start_line_bytes = big.max_head_bytes;
  big.max_fields = 4096;
  return big;
}

// Parse text the proxy generated; it must be one complete head, nothing more, nothing less.
void ParseGenerated(HeadParser* parser, std::string_view text) {
  ParseStatus status = parser->Parse(text);
  FUZZ_CHECK_MSG(status == ParseStatus::kComplete, "generated head does not parse (%s): %.*s",
                 ParseErrorName(parser->error()), static_cast<int>(text.size()), text.data());
  FUZZ_CHECK(parser->head_length() == text.size());
}

void CheckErrorResponse(int status, const std::string& reason, const std::string& extra) {
  std::string response = BuildErrorResponse(status, reason, extra);
  HeadParser p(HeadKind::kResponse, GenerousLimits(response.size()));
  ParseStatus s = p.Parse(response);
  FUZZ_CHECK_MSG(s == ParseStatus::kComplete, "error response does not parse: %s",
                 response.c_str());
  FUZZ_CHECK(p.status_code() == status);
  HeadView view(p, response);
  FUZZ_CHECK(view.FieldCount("content-length") == 1);
  FUZZ_CHECK(view.Field("content-length") == std::to_string(response.size() - p.head_length()));
}

void CheckRequest(const HeadParser& p, std::string_view input, uint8_t selector) {
  HeadView view(p, input);
  const std::vector<std::string> origins = {"https://example.com", "null"};
  ClientHandshakePolicy policy{(selector & 0x20) ? &origins : nullptr};
  ClientHandshake hs = CheckClientHandshake(view, policy);

  FUZZ_CHECK(ViewWithin(hs.host, input));
  FUZZ_CHECK(ViewWithin(hs.host_field, input));
  FUZZ_CHECK(ViewWithin(hs.path, input));
  FUZZ_CHECK(ViewWithin(hs.key, input));
  FUZZ_CHECK(hs.status == 0 || hs.status == 400 || hs.status == 403 || hs.status == 426 ||
             hs.status == 505);
  if (hs.status == 0) {
    FUZZ_CHECK(hs.is_upgrade);
    FUZZ_CHECK(IsValidWebSocketKey(hs.key));
    FUZZ_CHECK(!hs.path.empty() && hs.path.front() == '/');
    FUZZ_CHECK(!hs.host.empty());
    FUZZ_CHECK(IsValidHostValue(hs.host_field));
    FUZZ_CHECK(hs.host_field.find_first_of(" @/?#\\\"\t") == std::string_view::npos);
    FUZZ_CHECK(view.FieldCount("authorization") <= 1 && view.FieldCount("host") == 1);
    FUZZ_CHECK(ComputeAccept(hs.key).size() == 28);
  } else {
    FUZZ_CHECK(!hs.reason.empty());
    FUZZ_CHECK(hs.extra_header.empty() ||
               (hs.extra_header.size() >= 2 &&
                hs.extra_header.compare(hs.extra_header.size() - 2, 2, "\r\n") == 0));
    CheckErrorResponse(hs.status, hs.reason, hs.extra_header);
  }

  ForwardingInfo info;
  info.client_ip = (selector & 0x40) ? "2001:db8::1" : "192.0.2.7";
  info.client_tls = (selector & 0x80) != 0;
  info.peer_trusted = input.size() % 2 == 1;
  const std::vector<std::string> drop = {"X-User-Id"};
  const std::string upstream = BuildUpstreamRequest(view, info, {}, &drop);
  HeadParser up(HeadKind::kRequest, GenerousLimits(upstream.size()));
  ParseGenerated(&up, upstream);
  HeadView uv(up, upstream);
  FUZZ_CHECK(uv.Get(up.method()) == view.Get(p.method()));
  FUZZ_CHECK(uv.Get(up.target()) == view.Get(p.target()));
  FUZZ_CHECK(up.version_major() == 1 && up.version_minor() == 1);
  // The proxy states these once; a client cannot add or spoof copies.
  FUZZ_CHECK(uv.FieldCount("x-forwarded-for") == 1);
  FUZZ_CHECK(uv.FieldCount("forwarded") == 1);
  FUZZ_CHECK(uv.FieldCount("x-user-id") == 0);
  std::string_view xff = uv.Field("x-forwarded-for");
  FUZZ_CHECK(xff.size() >= info.client_ip.size() &&
             xff.substr(xff.size() - info.client_ip.size()) == info.client_ip);
  for (std::string_view stated : {"x-real-ip", "x-forwarded-proto", "x-forwarded-host"}) {
    FUZZ_CHECK(uv.FieldCount(stated) >= 1);
  }
  if (!info.peer_trusted) {
    // Nothing the client said about forwarding survives: only wsgate's own values.
    FUZZ_CHECK(xff == info.client_ip);
    FUZZ_CHECK(uv.FieldCount("x-real-ip") == 1 && uv.Field("x-real-ip") == info.client_ip);
    FUZZ_CHECK(uv.FieldCount("x-forwarded-proto") == 1);
    FUZZ_CHECK(uv.FieldCount("x-forwarded-host") == 1);
    FUZZ_CHECK(uv.FieldCount("x-forwarded-port") == 0);
    FUZZ_CHECK(uv.Field("x-forwarded-proto") == (info.client_tls ? "https" : "http"));
    FUZZ_CHECK(uv.Field("forwarded").substr(0, 4) == "for=");
  }
  // Hop-by-hop fields are gone; only the proxy's own Upgrade/Connection pair remains.
  FUZZ_CHECK(uv.FieldCount("connection") == 1 && uv.Field("connection") == "Upgrade");
  FUZZ_CHECK(uv.FieldCount("upgrade") == 1 && uv.Field("upgrade") == "websocket");
  for (std::string_view hop : {"keep-alive", "proxy-connection", "te", "trailer",
                               "transfer-encoding", "proxy-authorization", "proxy-authenticate"}) {
    FUZZ_CHECK(uv.FieldCount(hop) == 0);
  }

  // A valid upgrade stays valid after the rewrite, unless the client itself listed a field the
  // handshake needs in Connection (which makes the proxy drop it as hop-by-hop).
  if (hs.status == 0 && !view.FieldHasToken("connection", "host") &&
      !view.FieldHasToken("connection", "sec-websocket-key") &&
      !view.FieldHasToken("connection", "sec-websocket-version")) {
    ClientHandshake again = CheckClientHandshake(uv, ClientHandshakePolicy{});
    FUZZ_CHECK_MSG(again.status == 0, "rewritten request rejected: %d %s", again.status,
                   again.reason.c_str());
    FUZZ_CHECK(again.key == hs.key);
    FUZZ_CHECK(again.host_field == hs.host_field);
    FUZZ_CHECK(again.path == hs.path);
    if (!info.peer_trusted) FUZZ_CHECK(uv.Field("x-forwarded-host") == hs.host_field);
  }
}

void CheckResponse(const HeadParser& p, std::string_view input) {
  HeadView view(p, input);
  const std::string accept = ComputeAccept(kSampleKey);
  UpstreamVerdict verdict = CheckUpstreamResponse(view, accept);
  const int status = p.status_code();
  FUZZ_CHECK(status >= 100 && status <= 999);
  switch (verdict.kind) {
    case UpstreamVerdict::kUpgraded:
      FUZZ_CHECK(status == 101);
      FUZZ_CHECK(view.FieldCount("sec-websocket-accept") == 1);
      FUZZ_CHECK(view.Field("sec-websocket-accept") == accept);
      FUZZ_CHECK(view.FieldHasToken("upgrade", "websocket"));
      break;
    case UpstreamVerdict::kNotUpgraded:
      FUZZ_CHECK(status >= 200);
      FUZZ_CHECK(!verdict.reason.empty());
      break;
    case UpstreamVerdict::kInvalidUpgrade:
      FUZZ_CHECK(status < 200);
      FUZZ_CHECK(!verdict.reason.empty());
      break;
  }
  if (verdict.kind != UpstreamVerdict::kUpgraded) {
    FUZZ_CHECK(!verdict.permessage_deflate && !verdict.other_extension);
  }

  const std::string relayed = BuildRelayedResponseHead(view);
  HeadParser rp(HeadKind::kResponse, GenerousLimits(relayed.size()));
  ParseGenerated(&rp, relayed);
  HeadView rv(rp, relayed);
  FUZZ_CHECK(rp.status_code() == status);
  FUZZ_CHECK(rv.Get(rp.reason()) == view.Get(p.reason()));
  FUZZ_CHECK(rv.FieldCount("connection") == 1 && rv.Field("connection") == "close");
  FUZZ_CHECK(rv.FieldCount("upgrade") == 0);
  FUZZ_CHECK(rv.FieldCount("keep-alive") == 0);
  // Transfer-Encoding is kept: the body is relayed with its framing.
  FUZZ_CHECK(rv.FieldCount("transfer-encoding") == view.FieldCount("transfer-encoding"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  const HeadKind kind = (selector & 1) ? HeadKind::kResponse : HeadKind::kRequest;
  const unsigned strategy = (selector >> 1) & 3;
  const HeadLimits limits = PickLimits((selector >> 3) & 3);
  // Own copy, so ASan flags any read past the end of what the peer sent.
  const std::string buffer(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string_view input(buffer);

  HeadParser whole(kind, limits);
  const ParseStatus status = whole.Parse(input);
  FUZZ_CHECK(status == whole.status());
  FUZZ_CHECK((status == ParseStatus::kError) == (whole.error() != ParseError::kNone));
  CheckSpansWithin(whole, input.size());
  FUZZ_CHECK(whole.head_length() <= input.size());
  const Snapshot whole_snapshot = Take(whole);
  // A repeated call with the same bytes changes nothing.
  FUZZ_CHECK(whole.Parse(input) == status);
  CheckSame(whole_snapshot, Take(whole));

  // The same bytes as they might arrive from a socket.
  HeadParser incremental(kind, limits);
  Cuts cuts(strategy, input, HashBytes(data, size));
  size_t fed = 0;
  do {
    fed = cuts.Next(fed);
    const std::string_view prefix = input.substr(0, fed);
    const ParseStatus s = incremental.Parse(prefix);
    FUZZ_CHECK(s == incremental.status());
    CheckSpansWithin(incremental, fed);
    FUZZ_CHECK(incremental.head_length() <= fed);
    // A head that is complete or broken in a prefix is so in the whole input.
    if (s != ParseStatus::kNeedMore) {
      FUZZ_CHECK_MSG(s == status, "prefix of %zu bytes gives %d (%s), whole input gives %d (%s)",
                     fed, static_cast<int>(s), ParseErrorName(incremental.error()),
                     static_cast<int>(status), ParseErrorName(whole.error()));
    }
  } while (fed < input.size());
  CheckSame(whole_snapshot, Take(incremental));

  if (status != ParseStatus::kComplete) return 0;
  CheckCompleteHead(whole, input, limits);

  // The head alone parses the same as the head followed by whatever came after it.
  HeadParser exact(kind, limits);
  FUZZ_CHECK(exact.Parse(input.substr(0, whole.head_length())) == ParseStatus::kComplete);
  CheckSame(whole_snapshot, Take(exact));

  if (kind == HeadKind::kRequest) {
    CheckRequest(whole, input, selector);
  } else {
    CheckResponse(whole, input);
  }
  return 0;
}
