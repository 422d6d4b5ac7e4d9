#include "config/loader.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "config/suggest.h"
#include "config/units.h"

namespace wsgate::config {
namespace {

constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kNoMax = std::numeric_limits<uint64_t>::max();

// A config file larger than this is certainly a mistake (e.g. pointing at /dev/zero).
constexpr size_t kMaxFileBytes = 64 * kMiB;

// A node together with where it sits in the file, so any check can report a precise error.
struct Value {
  YAML::Node node;
  std::string path;  // e.g. "pools[0].backends[1].address"
  YAML::Mark mark;   // the node's own mark, or the closest meaningful one when it has none
};

// The entries of one YAML mapping that passed the unknown/duplicate key checks.
struct Fields {
  Value self;
  std::vector<std::pair<std::string, Value>> entries;

  const Value* Find(std::string_view key) const {
    for (const auto& [name, value] : entries) {
      if (name == key) return &value;
    }
    return nullptr;
  }
};

std::string JoinKey(const std::string& parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return parent + "." + std::string(key);
}

std::string JoinIndex(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

// Shortens a value for a message so one absurd scalar cannot flood the log.
std::string Shorten(std::string_view text) {
  constexpr size_t kMaxShown = 64;
  if (text.size() <= kMaxShown) return std::string(text);
  return std::string(text.substr(0, kMaxShown)) + "...";
}

// |text| with control bytes written as \xNN: yaml-cpp quotes the offending input raw.
std::string Printable(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

// Double-quotes a user-supplied value, escaping anything that would garble a one-line message.
std::string Quote(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : Shorten(text)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// "unknown balance "stiky" (did you mean "sticky"? expected least_conn, ...)": the closest
// spelling first, since it is most likely what was meant.
std::string UnknownValue(std::string_view what, std::string_view text,
                         std::initializer_list<std::string_view> names, std::string_view expected) {
  const std::string closest = ClosestName(text, names);
  return "unknown " + std::string(what) + " " + Quote(text) + " (" +
         (closest.empty() ? "" : "did you mean \"" + closest + "\"? ") + "expected " +
         std::string(expected) + ")";
}

std::string FormatRange(uint64_t min, uint64_t max, std::string (*format)(uint64_t)) {
  if (max == kNoMax) return ">= " + format(min);
  return format(min) + ".." + format(max);
}

std::string FormatInt(uint64_t v) { return std::to_string(v); }

bool IsAllDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// RFC 7230 tchar, which is also RFC 6265's cookie-name token.
bool IsTokenChar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), IsTokenChar);
}

// A query parameter name as it appears in the raw query string.
bool IsQueryName(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f && c != '&' && c != '=' && c != '#';
  });
}

// A request target for a health check: printable ASCII, nothing that could end the request line.
bool IsRequestPath(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
  });
}

// The YAML 1.2 core schema's decimal int and float forms (no .inf, .nan, hex or octal).
bool IsYamlDecimal(std::string_view t) {
  size_t i = 0;
  auto digits = [&] {
    const size_t start = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i - start;
  };
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
  size_t mantissa = digits();
  if (i < t.size() && t[i] == '.') {
    ++i;
    mantissa += digits();
  }
  if (mantissa == 0) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == t.size();
}

// Identity of a backend address for duplicate detection: case-folded host, canonical IPv6.
std::string AddressKey(const HostPort& hp) {
  std::string host = hp.host;
  in6_addr v6{};
  char buf[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1 &&
      inet_ntop(AF_INET6, &v6, buf, sizeof(buf)) != nullptr) {
    host = buf;
  }
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return host + "|" + std::to_string(hp.port);
}

// Walks one parsed document against the schema, collecting every error it finds.
class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  void LoadRoot(const YAML::Node& root, ProxyConfig* cfg);

  void Error(const YAML::Mark& mark, std::string path, std::string message) {
    ConfigError error;
    error.file = file_;
    if (!mark.is_null() && mark.line >= 0) {
      error.line = mark.line + 1;
      error.column = std::max(mark.column, 0) + 1;
    }
    error.key_path = std::move(path);
    error.message = std::move(message);
    errors_.push_back(std::move(error));
  }
  void Error(const Value& v, std::string message) { Error(v.mark, v.path, std::move(message)); }

  ConfigErrors TakeErrors() {
    // Traversal order is schema order, not file order; readers want file order.
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const ConfigError& a, const ConfigError& b) {
                       return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                     });
    return std::move(errors_);
  }

 private:
  std::optional<Fields> ReadMapping(const Value& v, std::initializer_list<std::string_view> allowed,
                                    bool null_is_empty);
  const Value* Require(const Fields& fields, std::string_view key);
  std::optional<std::vector<Value>> ReadSequence(const Value& v);

  bool ReadString(const Value& v, std::string* out);
  bool ReadName(const Value& v, std::string* out);
  bool ReadInt(const Value& v, uint64_t min, uint64_t max, uint64_t* out);
  bool ReadSize(const Value& v, uint64_t min, uint64_t max, uint64_t* out);
  bool ReadDuration(const Value& v, bool positive, Duration* out);
  bool ReadBool(const Value& v, bool* out);
  bool ReadNumber(const Value& v, bool (*in_range)(double), const char* expected, double* out);
  bool ReadRate(const Value& v, double* out);
  bool ReadHostPort(const Value& v, bool allow_port_zero, HostPort* out);
  bool ReadFile(const Value& v, bool allow_empty, ConfigFile* out);
  ConfigError Origin(const Value& v) const;

  void LoadListeners(const Value& v, std::vector<ListenerConfig>* out);
  void LoadListenerTls(const Value& v, ListenerTlsConfig* out);
  void LoadPoolTls(const Value& v, PoolTlsConfig* out);
  void LoadAdmin(const Value& v, AdminConfig* out);
  // Read admin.token_file into out->token; errors point at |v|.
  void ReadTokenFile(const Value& v, AdminConfig* out);
  void LoadPools(const Value& v, std::vector<PoolConfig>* out);
  void LoadDiscovery(const Value& v, DiscoveryConfig* out);
  void LoadResolver(const Value& v, ResolverConfig* out);
  void LoadBackends(const Value& v, std::vector<BackendConfig>* out);
  void LoadSticky(const Value& v, StickyConfig* out);
  void LoadHealthCheck(const Value& v, HealthCheckConfig* out);
  void LoadOutlier(const Value& v, OutlierConfig* out);
  void LoadRebalance(const Value& v, RebalanceConfig* out);
  void LoadRoutes(const Value& v, std::vector<RouteConfig>* out);
  void LoadPaths(const Value& v, PathsConfig* out);
  void LoadLimits(const Value& v, LimitsConfig* out);
  void LoadTimeouts(const Value& v, TimeoutsConfig* out);
  void LoadDrain(const Value& v, DrainConfig* out);
  void LoadLog(const Value& v, LogConfig* out);
  void LoadAuth(const Value& v, AuthConfig* out);
  void LoadDisconnectHook(const Value& v, DisconnectHookConfig* out);
  void LoadTrustedProxies(const Value& v, std::vector<Cidr>* out);
  void LoadCluster(const Value& v, ClusterConfig* out);
  void ReadRedisUrl(const Value& v, ClusterConfig* out);
  // An http:// (or https://) URL with a host; false after reporting the error.
  bool ReadUrl(const Value& v, bool allow_https, std::string* out);
  void ReadHeaderNames(const Value& v, std::vector<std::string>* out);

  std::string file_;
  ConfigErrors errors_;
  std::set<std::string> pool_names_;
  // False when some pool's name could not be read; "unknown pool" would then be noise.
  bool pool_names_complete_ = false;
};

std::optional<Fields> Loader::ReadMapping(const Value& v,
                                          std::initializer_list<std::string_view> allowed,
                                          bool null_is_empty) {
  Fields fields{v, {}};
  if (null_is_empty && v.node.IsNull()) return fields;
  if (!v.node.IsMap()) {
    Error(v, "expected a mapping");
    return std::nullopt;
  }
  for (auto it = v.node.begin(); it != v.node.end(); ++it) {
    // Copies: the iterator hands out a temporary pair, so references into it would dangle.
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    const YAML::Mark key_mark = key.Mark().is_null() ? v.mark : key.Mark();
    if (!key.IsScalar()) {
      Error(key_mark, v.path, "mapping key must be a string");
      continue;
    }
    const std::string& name = key.Scalar();
    std::string path = JoinKey(v.path, name);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      Error(key_mark, std::move(path), "unknown key" + DidYouMean(name, allowed));
      continue;
    }
    if (fields.Find(name) != nullptr) {
      Error(key_mark, std::move(path), "duplicate key");
      continue;
    }
    // yaml-cpp marks an empty value at the following token, often on the next line; the key is
    // where the reader's eye should go.
    const YAML::Mark mark = value.IsNull() || value.Mark().is_null() ? key_mark : value.Mark();
    fields.entries.emplace_back(name, Value{value, std::move(path), mark});
  }
  return fields;
}

const Value* Loader::Require(const Fields& fields, std::string_view key) {
  const Value* v = fields.Find(key);
  if (v == nullptr) Error(fields.self.mark, JoinKey(fields.self.path, key), "missing required key");
  return v;
}

std::optional<std::vector<Value>> Loader::ReadSequence(const Value& v) {
  // `backends:` with nothing after it reads as "no backends", not as a type error.
  if (v.node.IsNull()) return std::vector<Value>{};
  if (!v.node.IsSequence()) {
    Error(v, "expected a sequence");
    return std::nullopt;
  }
  std::vector<Value> items;
  for (auto it = v.node.begin(); it != v.node.end(); ++it) {
    const YAML::Node item = *it;
    const YAML::Mark mark = item.IsNull() || item.Mark().is_null() ? v.mark : item.Mark();
    items.push_back(Value{item, JoinIndex(v.path, items.size()), mark});
  }
  return items;
}

bool Loader::ReadString(const Value& v, std::string* out) {
  if (!v.node.IsScalar()) {
    Error(v, "expected a string");
    return false;
  }
  *out = v.node.Scalar();
  return true;
}

bool Loader::ReadName(const Value& v, std::string* out) {
  if (!ReadString(v, out)) return false;
  if (out->empty()) {
    Error(v, "must not be empty");
    return false;
  }
  return true;
}

bool Loader::ReadInt(const Value& v, uint64_t min, uint64_t max, uint64_t* out) {
  // A quoted "4" is a string in YAML; accepting it would hide templating mistakes.
  const bool is_string_tag = v.node.Tag() == "!" || v.node.Tag() == "tag:yaml.org,2002:str";
  if (!v.node.IsScalar() || is_string_tag) {
    Error(v, "expected an integer");
    return false;
  }
  const std::string& text = v.node.Scalar();
  std::string_view digits = text;
  bool negative = false;
  if (!digits.empty() && (digits.front() == '-' || digits.front() == '+')) {
    negative = digits.front() == '-';
    digits.remove_prefix(1);
  }
  if (!IsAllDigits(digits)) {
    Error(v, "expected an integer");
    return false;
  }
  // ParseSize on bare digits is exactly a checked decimal parse.
  const std::optional<uint64_t> value = ParseSize(digits);
  if (!value || (negative && *value != 0) || *value < min || *value > max) {
    Error(v, "value " + Shorten(text) + " out of range (expected " +
                 FormatRange(min, max, FormatInt) + ")");
    return false;
  }
  *out = *value;
  return true;
}

bool Loader::ReadSize(const Value& v, uint64_t min, uint64_t max, uint64_t* out) {
  if (!v.node.IsScalar()) {
    Error(v, "expected a size (e.g. 512, 64KiB, 16MiB)");
    return false;
  }
  const std::string& text = v.node.Scalar();
  const std::optional<uint64_t> value = ParseSize(text);
  if (!value) {
    Error(v, "invalid size " + Quote(text) + " (expected e.g. 512, 64KiB, 16MiB)");
    return false;
  }
  if (*value < min || *value > max) {
    Error(v, "size " + Shorten(text) + " out of range (expected " +
                 FormatRange(min, max, FormatSize) + ")");
    return false;
  }
  *out = *value;
  return true;
}

bool Loader::ReadDuration(const Value& v, bool positive, Duration* out) {
  if (!v.node.IsScalar()) {
    Error(v, "expected a duration (e.g. 250ms, 5s, 2m, 1h, 1d)");
    return false;
  }
  const std::string& text = v.node.Scalar();
  const std::optional<Duration> value = ParseDuration(text);
  if (!value) {
    Error(v, "invalid duration " + Quote(text) + " (expected e.g. 250ms, 5s, 2m, 1h, 1d)");
    return false;
  }
  if (positive && value->count() == 0) {
    Error(v, "must be greater than 0");
    return false;
  }
  *out = *value;
  return true;
}

bool Loader::ReadBool(const Value& v, bool* out) {
  // Only the YAML 1.2 core forms: yes/no/on/off/y/n (YAML 1.1) and quoted strings are rejected.
  const bool is_string_tag = v.node.Tag() == "!" || v.node.Tag() == "tag:yaml.org,2002:str";
  if (v.node.IsScalar() && !is_string_tag) {
    const std::string& text = v.node.Scalar();
    if (text == "true" || text == "True" || text == "TRUE") {
      *out = true;
      return true;
    }
    if (text == "false" || text == "False" || text == "FALSE") {
      *out = false;
      return true;
    }
  }
  Error(v, "expected true or false");
  return false;
}

bool Loader::ReadNumber(const Value& v, bool (*in_range)(double), const char* expected,
                        double* out) {
  const bool is_string_tag = v.node.Tag() == "!" || v.node.Tag() == "tag:yaml.org,2002:str";
  if (!v.node.IsScalar() || is_string_tag || !IsYamlDecimal(v.node.Scalar())) {
    Error(v, "expected a number");
    return false;
  }
  const std::string& text = v.node.Scalar();
  std::string_view digits = text;
  if (digits.front() == '+') digits.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || !std::isfinite(value) ||
      !in_range(value)) {
    Error(v, "value " + Shorten(text) + " out of range (expected " + expected + ")");
    return false;
  }
  *out = value;
  return true;
}

bool Loader::ReadRate(const Value& v, double* out) {
  if (!v.node.IsScalar()) {
    Error(v, "expected a rate (e.g. 50/s)");
    return false;
  }
  const std::string& text = v.node.Scalar();
  std::string_view count = text;
  if (count.size() >= 2 && count.substr(count.size() - 2) == "/s") {
    count.remove_suffix(2);
  }
  if (!IsAllDigits(count)) {
    Error(v, "invalid rate " + Quote(text) + " (expected e.g. 50/s or 50)");
    return false;
  }
  constexpr uint64_t kMaxRate = 100000;
  const std::optional<uint64_t> value = ParseSize(count);
  if (!value || *value < 1 || *value > kMaxRate) {
    Error(v, "rate " + Shorten(text) + " out of range (expected 1..100000 per second)");
    return false;
  }
  *out = static_cast<double>(*value);
  return true;
}

bool Loader::ReadHostPort(const Value& v, bool allow_port_zero, HostPort* out) {
  std::string text;
  if (!ReadString(v, &text)) return false;
  std::optional<HostPort> hp = ParseHostPort(text, allow_port_zero);
  if (!hp) {
    if (!allow_port_zero && ParseHostPort(text, true)) {
      Error(v, "invalid address " + Quote(text) + " (port must be 1..65535)");
    } else {
      Error(v, "invalid address " + Quote(text) + " (expected host:port or [v6]:port)");
    }
    return false;
  }
  *out = std::move(*hp);
  return true;
}

ConfigError Loader::Origin(const Value& v) const {
  ConfigError origin;
  origin.file = file_;
  if (!v.mark.is_null() && v.mark.line >= 0) {
    origin.line = v.mark.line + 1;
    origin.column = std::max(v.mark.column, 0) + 1;
  }
  origin.key_path = v.path;
  return origin;
}

bool Loader::ReadFile(const Value& v, bool allow_empty, ConfigFile* out) {
  std::string text;
  if (!ReadString(v, &text)) return false;
  if (text.empty()) {
    if (allow_empty) return true;
    Error(v, "must not be empty");
    return false;
  }
  if (text.find('\0') != std::string::npos) {
    Error(v, "invalid file name " + Quote(text));
    return false;
  }
  // Relative to the configuration file, so a config and its certificates move together.
  const size_t slash = file_.rfind('/');
  if (text.front() != '/' && slash != std::string::npos) text = file_.substr(0, slash + 1) + text;
  out->path = std::move(text);
  out->origin = Origin(v);
  return true;
}

// A host name for SNI: LDH labels separated by dots, or an IP address.
bool IsServerName(std::string_view text) {
  if (text.empty() || text.size() > 253) return false;
  in6_addr v6{};
  if (inet_pton(AF_INET6, std::string(text).c_str(), &v6) == 1) return true;
  size_t label = 0;
  for (char c : text) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool ldh =
        (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
    if (!ldh || ++label > 63) return false;
  }
  return label > 0;
}

void Loader::LoadListenerTls(const Value& v, ListenerTlsConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v, {"certificates", "min_version", "ciphers", "alpn", "client_ca"}, false);
  if (!fields) return;
  out->enabled = true;
  if (const Value* certs = Require(*fields, "certificates")) {
    if (const std::optional<std::vector<Value>> items = ReadSequence(*certs)) {
      if (items->empty()) Error(*certs, "at least one certificate is required");
      for (const Value& item : *items) {
        const std::optional<Fields> pair = ReadMapping(item, {"cert", "key"}, false);
        if (!pair) continue;
        TlsCertificateConfig certificate;
        if (const Value* x = Require(*pair, "cert")) ReadFile(*x, false, &certificate.cert);
        if (const Value* x = Require(*pair, "key")) ReadFile(*x, false, &certificate.key);
        out->certificates.push_back(std::move(certificate));
      }
    }
  }
  std::string text;
  if (const Value* x = fields->Find("min_version"); x && ReadString(*x, &text)) {
    if (text == "TLSv1.2") {
      out->min_version = ListenerTlsConfig::Version::kTls12;
    } else if (text == "TLSv1.3") {
      out->min_version = ListenerTlsConfig::Version::kTls13;
    } else {
      // A version is never a typo of another: no suggestion.
      Error(*x, UnknownValue("min_version", text, {}, "TLSv1.2 or TLSv1.3"));
    }
  }
  if (const Value* x = fields->Find("ciphers"); x && ReadString(*x, &out->ciphers)) {
    out->ciphers_origin = Origin(*x);
  }
  if (const Value* x = fields->Find("alpn")) {
    if (const std::optional<std::vector<Value>> items = ReadSequence(*x)) {
      out->alpn.clear();
      for (const Value& item : *items) {
        if (!ReadName(item, &text)) continue;
        // RFC 7301: a protocol name is 1..255 bytes; printable ASCII keeps logs readable.
        if (text.size() > 255 || !IsRequestPath(text)) {
          Error(item, "invalid ALPN protocol " + Quote(text) +
                          " (expected 1..255 printable ASCII characters)");
        } else {
          out->alpn.push_back(text);
        }
      }
    }
  }
  if (const Value* x = fields->Find("client_ca")) ReadFile(*x, true, &out->client_ca);
}

void Loader::LoadPoolTls(const Value& v, PoolTlsConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v, {"enabled", "ca", "verify", "server_name", "cert", "key"}, true);
  if (!fields) return;
  out->enabled = true;
  if (const Value* x = fields->Find("enabled")) ReadBool(*x, &out->enabled);
  const Value* verify = fields->Find("verify");
  if (verify != nullptr) ReadBool(*verify, &out->verify);
  const Value* ca = fields->Find("ca");
  if (ca != nullptr && ReadFile(*ca, true, &out->ca) && !out->ca.empty() && !out->verify) {
    Error(*ca, "ca needs verify: true");
  }
  if (const Value* x = fields->Find("server_name"); x && ReadString(*x, &out->server_name)) {
    if (!out->server_name.empty() && !IsServerName(out->server_name)) {
      Error(*x, "invalid server name " + Quote(out->server_name) +
                    " (expected a host name or an IP address)");
    }
  }
  const Value* cert = fields->Find("cert");
  const Value* key = fields->Find("key");
  if (cert != nullptr) ReadFile(*cert, true, &out->cert);
  if (key != nullptr) ReadFile(*key, true, &out->key);
  if (out->cert.empty() != out->key.empty()) {
    const Value& blame = out->cert.empty() ? (cert ? *cert : *key) : (key ? *key : *cert);
    Error(blame, "cert and key must be set together");
  }
}

void Loader::LoadRoot(const YAML::Node& root, ProxyConfig* cfg) {
  const Value root_value{root, "", root.Mark()};
  const std::optional<Fields> fields =
      ReadMapping(root_value,
                  {"workers", "listeners", "admin", "routes", "paths", "pools", "limits",
                   "timeouts", "drain", "log", "metrics", "retries", "auth", "on_disconnect",
                   "trusted_proxies", "resolver", "cluster"},
                  false);
  if (!fields) return;

  uint64_t n = 0;
  if (const Value* v = fields->Find("workers"); v && ReadInt(*v, 0, 1024, &n)) {
    cfg->workers = static_cast<uint32_t>(n);
  }
  if (const Value* v = Require(*fields, "listeners")) LoadListeners(*v, &cfg->listeners);
  if (const Value* v = fields->Find("admin")) LoadAdmin(*v, &cfg->admin);
  // Pools before routes: routes are checked against the pool names.
  if (const Value* v = Require(*fields, "pools")) LoadPools(*v, &cfg->pools);
  if (const Value* v = Require(*fields, "routes")) LoadRoutes(*v, &cfg->routes);
  if (const Value* v = fields->Find("paths")) LoadPaths(*v, &cfg->paths);
  if (const Value* v = fields->Find("limits")) LoadLimits(*v, &cfg->limits);
  if (const Value* v = fields->Find("timeouts")) LoadTimeouts(*v, &cfg->timeouts);
  if (const Value* v = fields->Find("drain")) LoadDrain(*v, &cfg->drain);
  if (const Value* v = fields->Find("log")) LoadLog(*v, &cfg->log);
  if (const Value* v = fields->Find("metrics")) {
    if (const std::optional<Fields> m = ReadMapping(*v, {"enabled"}, true)) {
      if (const Value* x = m->Find("enabled")) ReadBool(*x, &cfg->metrics.enabled);
    }
  }
  if (const Value* v = fields->Find("retries"); v && ReadInt(*v, 0, 100, &n)) {
    cfg->retries = static_cast<uint32_t>(n);
  }
  if (const Value* v = fields->Find("auth")) LoadAuth(*v, &cfg->auth);
  if (const Value* v = fields->Find("on_disconnect")) LoadDisconnectHook(*v, &cfg->on_disconnect);
  if (const Value* v = fields->Find("trusted_proxies")) {
    LoadTrustedProxies(*v, &cfg->trusted_proxies);
  }
  if (const Value* v = fields->Find("resolver")) LoadResolver(*v, &cfg->resolver);
  if (const Value* v = fields->Find("cluster")) {
    LoadCluster(*v, &cfg->cluster);
    if (!cfg->admin.enabled) {
      Error(*v, "cluster needs the admin section (instances reach each other's admin API)");
    }
  }
}

void Loader::ReadRedisUrl(const Value& v, ClusterConfig* out) {
  if (!ReadString(v, &out->redis)) return;
  std::string_view text = out->redis;
  if (text.rfind("rediss://", 0) == 0) {
    out->tls.enabled = true;  // verify stays on unless tls.verify says otherwise
    text.remove_prefix(9);
  } else if (text.rfind("redis://", 0) == 0) {
    text.remove_prefix(8);
  } else {
    Error(v, "expected redis:// or rediss://[:password@]host[:port][/db]");
    return;
  }
  if (size_t at = text.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = text.substr(0, at);
    text.remove_prefix(at + 1);
    // redis://:password@ (no ACL user) or redis://default:password@.
    size_t colon = userinfo.find(':');
    std::string_view user = colon == std::string_view::npos ? userinfo : userinfo.substr(0, colon);
    if (colon == std::string_view::npos || (!user.empty() && user != "default")) {
      Error(v, "only redis://:password@host (or default:password) is supported; no ACL users");
      return;
    }
    out->password.assign(userinfo.substr(colon + 1));
  }
  std::string_view authority = text.substr(0, text.find('/'));
  std::string_view db = authority.size() < text.size() ? text.substr(authority.size() + 1) : "";
  std::string port_text = "6379";
  std::string_view host = authority;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      Error(v, "unterminated IPv6 address in " + Quote(out->redis));
      return;
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        Error(v, "expected redis:// or rediss://[:password@]host[:port][/db]");
        return;
      }
      port_text.assign(authority.substr(close + 2));
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port_text.assign(authority.substr(colon + 1));
  }
  auto all_digits = [](std::string_view digits) {
    return !digits.empty() && digits.size() <= 5 &&
           std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (host.empty() || !all_digits(port_text) || std::stoul(port_text) == 0 ||
      std::stoul(port_text) > 65535) {
    Error(v, "expected redis:// or rediss://[:password@]host[:port][/db] with a port 1-65535");
    return;
  }
  if (!db.empty() && (!all_digits(db) || std::stoul(std::string(db)) > 1000000)) {
    Error(v, "the database after the / must be a number");
    return;
  }
  out->redis_host.assign(host);
  out->redis_port = static_cast<uint16_t>(std::stoul(port_text));
  out->redis_db = db.empty() ? 0 : static_cast<uint32_t>(std::stoul(std::string(db)));
}

void Loader::LoadCluster(const Value& v, ClusterConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v,
                  {"redis", "password_file", "password_env", "instance", "advertise", "key_prefix",
                   "heartbeat_interval", "heartbeat_ttl", "connect_timeout", "command_timeout",
                   "reconnect_max", "ready_requires_redis", "tls"},
                  false);
  if (!fields) return;
  out->enabled = true;
  if (const Value* x = Require(*fields, "redis")) ReadRedisUrl(*x, out);
  const Value* file = fields->Find("password_file");
  const Value* env = fields->Find("password_env");
  if (file != nullptr || env != nullptr) {
    const Value& blame = file != nullptr ? *file : *env;
    if (!out->password.empty() || (file != nullptr && env != nullptr)) {
      Error(blame, "give the Redis password once: in the URL, password_file or password_env");
    } else if (file != nullptr) {
      AdminConfig holder;  // ReadTokenFile's checks: a regular file, one line of visible ASCII
      if (ReadFile(*file, false, &holder.token_file)) {
        ReadTokenFile(*file, &holder);
        out->password = holder.token;
        out->password_file = holder.token_file;
      }
    } else {
      std::string name;
      if (ReadString(*env, &name)) {
        const char* value = std::getenv(name.c_str());
        if (value == nullptr || *value == '\0') {
          Error(*env, "environment variable " + Quote(name) + " is not set");
        } else {
          out->password = value;
          out->password_env = name;
        }
      }
    }
  }
  if (const Value* x = fields->Find("instance")) {
    ReadName(*x, &out->instance);
  } else {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) == 0) out->instance = host;
    if (out->instance.empty()) out->instance = "wsgate";
  }
  // Instance-to-instance calls are plain HTTP (evhttp's client has no TLS here).
  if (const Value* x = fields->Find("advertise"); x && ReadUrl(*x, false, &out->advertise)) {
    while (!out->advertise.empty() && out->advertise.back() == '/') out->advertise.pop_back();
  }
  if (const Value* x = fields->Find("key_prefix"); x && ReadString(*x, &out->key_prefix)) {
    bool printable = std::all_of(out->key_prefix.begin(), out->key_prefix.end(), [](char c) {
      return static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
    });
    if (!printable || out->key_prefix.size() > 64) {
      Error(*x, "key_prefix must be at most 64 visible ASCII characters");
    }
  }
  if (const Value* x = fields->Find("heartbeat_interval")) {
    ReadDuration(*x, true, &out->heartbeat_interval);
  }
  const Value* ttl = fields->Find("heartbeat_ttl");
  if (ttl != nullptr && ReadDuration(*ttl, true, &out->heartbeat_ttl) &&
      out->heartbeat_ttl < 2 * out->heartbeat_interval) {
    Error(*ttl, "heartbeat_ttl must be at least twice heartbeat_interval");
  }
  if (const Value* x = fields->Find("connect_timeout")) {
    ReadDuration(*x, true, &out->connect_timeout);
  }
  if (const Value* x = fields->Find("command_timeout")) {
    ReadDuration(*x, true, &out->command_timeout);
  }
  if (const Value* x = fields->Find("reconnect_max")) ReadDuration(*x, true, &out->reconnect_max);
  if (const Value* x = fields->Find("ready_requires_redis")) {
    ReadBool(*x, &out->ready_requires_redis);
  }
  if (const Value* x = fields->Find("tls")) {
    const bool rediss = out->tls.enabled;
    LoadPoolTls(*x, &out->tls);
    if (!rediss) {
      Error(*x, "cluster.tls needs a rediss:// URL");
    } else if (!out->tls.enabled) {
      Error(*x, "a rediss:// URL is TLS: tls.enabled cannot be false");
    }
  }
}

void Loader::LoadResolver(const Value& v, ResolverConfig* out) {
  const std::optional<Fields> fields = ReadMapping(v, {"nameservers"}, true);
  if (!fields) return;
  const Value* list = fields->Find("nameservers");
  if (list == nullptr) return;
  const std::optional<std::vector<Value>> items = ReadSequence(*list);
  if (!items) return;
  for (const Value& item : *items) {
    HostPort nameserver;
    if (!ReadHostPort(item, /*allow_port_zero=*/false, &nameserver)) continue;
    if (!IsIpLiteral(nameserver.host)) {
      Error(item, "nameserver " + Quote(nameserver.text) +
                      " must be an IP address with a port (e.g. 127.0.0.1:53)");
      continue;
    }
    out->nameservers.push_back(std::move(nameserver));
  }
}

bool Loader::ReadUrl(const Value& v, bool allow_https, std::string* out) {
  if (!ReadString(v, out)) return false;
  std::string& text = *out;
  size_t scheme = text.rfind("http://", 0) == 0                   ? 7
                  : allow_https && text.rfind("https://", 0) == 0 ? 8
                                                                  : 0;
  bool printable = true;
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '#') printable = false;
  }
  // It goes into request lines and headers verbatim: no spaces, controls or fragment.
  if (scheme == 0 || text.size() == scheme || text[scheme] == '/' || !printable) {
    Error(v, allow_https ? "expected an http:// or https:// URL without spaces or fragment"
                         : "expected an http:// URL without spaces or fragment");
    return false;
  }
  return true;
}

void Loader::ReadHeaderNames(const Value& v, std::vector<std::string>* out) {
  const std::optional<std::vector<Value>> items = ReadSequence(v);
  if (!items) return;
  out->clear();
  for (const Value& item : *items) {
    std::string name;
    if (!ReadString(item, &name)) continue;
    if (!IsToken(name)) {
      Error(item, "invalid header name " + Quote(name));
      continue;
    }
    out->push_back(std::move(name));
  }
}

void Loader::LoadTrustedProxies(const Value& v, std::vector<Cidr>* out) {
  const std::optional<std::vector<Value>> items = ReadSequence(v);
  if (!items) return;
  for (const Value& item : *items) {
    std::string text;
    if (!ReadString(item, &text)) continue;
    std::optional<Cidr> cidr = ParseCidr(text);
    if (!cidr) {
      Error(item, "not a CIDR " + Quote(text) +
                      " (expected e.g. 10.0.0.0/8, 2001:db8::/32 or one address; no bits set "
                      "past the prefix)");
      continue;
    }
    out->push_back(std::move(*cidr));
  }
}

void Loader::LoadAuth(const Value& v, AuthConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v,
                  {"url", "forward_headers", "copy_headers", "timeout", "cache_ttl", "cache_size",
                   "revalidate_interval"},
                  false);
  if (!fields) return;
  out->enabled = true;
  if (const Value* x = Require(*fields, "url")) ReadUrl(*x, false, &out->url);
  if (const Value* x = fields->Find("forward_headers")) ReadHeaderNames(*x, &out->forward_headers);
  if (const Value* x = fields->Find("copy_headers")) ReadHeaderNames(*x, &out->copy_headers);
  if (const Value* x = fields->Find("timeout")) ReadDuration(*x, true, &out->timeout);
  if (const Value* x = fields->Find("cache_ttl")) ReadDuration(*x, false, &out->cache_ttl);
  if (const Value* x = fields->Find("cache_size")) ReadInt(*x, 1, 10000000, &out->cache_size);
  const Value* revalidate = fields->Find("revalidate_interval");
  if (revalidate != nullptr && ReadDuration(*revalidate, false, &out->revalidate_interval) &&
      out->revalidate_interval.count() > 0 && out->revalidate_interval < std::chrono::seconds(1)) {
    Error(*revalidate, "revalidate_interval must be 0 (off) or at least 1s");
  }
}

void Loader::LoadDisconnectHook(const Value& v, DisconnectHookConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v, {"url", "timeout", "retries", "queue_size"}, false);
  if (!fields) return;
  out->enabled = true;
  if (const Value* x = Require(*fields, "url")) ReadUrl(*x, false, &out->url);
  if (const Value* x = fields->Find("timeout")) ReadDuration(*x, true, &out->timeout);
  uint64_t n = 0;
  if (const Value* x = fields->Find("retries"); x && ReadInt(*x, 0, 100, &n)) {
    out->retries = static_cast<uint32_t>(n);
  }
  if (const Value* x = fields->Find("queue_size")) ReadInt(*x, 1, 10000000, &out->queue_size);
}

void Loader::LoadListeners(const Value& v, std::vector<ListenerConfig>* out) {
  const std::optional<std::vector<Value>> items = ReadSequence(v);
  if (!items) return;
  if (items->empty()) {
    Error(v, "at least one listener is required");
    return;
  }
  std::set<std::string> names;
  for (const Value& item : *items) {
    const std::optional<Fields> fields = ReadMapping(item, {"name", "address", "tls"}, false);
    if (!fields) continue;
    ListenerConfig listener;
    if (const Value* tls = fields->Find("tls")) LoadListenerTls(*tls, &listener.tls);
    if (const Value* name = Require(*fields, "name"); name && ReadName(*name, &listener.name)) {
      if (!names.insert(listener.name).second) {
        Error(*name, "duplicate listener name " + Quote(listener.name));
      } else if (listener.name == "_admin") {
        // The admin listener's name in a binary upgrade's handover and in the ready file.
        Error(*name, "listener name \"_admin\" is reserved for the admin listener");
      }
    }
    if (const Value* address = Require(*fields, "address")) {
      ReadHostPort(*address, /*allow_port_zero=*/true, &listener.address);
    }
    out->push_back(std::move(listener));
  }
}

void Loader::ReadTokenFile(const Value& v, AdminConfig* out) {
  const std::string& path = out->token_file.path;
  // Only a regular file: opening a FIFO or a terminal could block the reload forever.
  struct stat info {};
  if (stat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode)) {
    Error(v, "token file " + Quote(path) + " is not a regular file");
    return;
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    Error(v, "cannot read " + Quote(path) + ": " + std::generic_category().message(errno));
    return;
  }
  // A token is a line of text; anything much longer is the wrong file.
  constexpr size_t kMaxTokenFileBytes = 4096;
  char buf[kMaxTokenFileBytes + 1];
  const size_t got = std::fread(buf, 1, sizeof(buf), f);
  const int read_errno = errno;
  const bool read_failed = std::ferror(f) != 0;
  std::fclose(f);
  if (read_failed) {
    Error(v, "cannot read " + Quote(path) + ": " + std::generic_category().message(read_errno));
    return;
  }
  if (got > kMaxTokenFileBytes) {
    Error(v, "token file " + Quote(path) + " is larger than 4KiB");
    return;
  }
  std::string text(buf, got);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (text.empty()) {
    Error(v, "token file " + Quote(path) + " is empty");
    return;
  }
  // It goes into an Authorization header: one word of visible ASCII.
  for (unsigned char c : text) {
    if (c <= ' ' || c >= 0x7f) {
      Error(v, "token file " + Quote(path) + " must hold one line of visible ASCII");
      return;
    }
  }
  out->token = std::move(text);
}

void Loader::LoadAdmin(const Value& v, AdminConfig* out) {
  // `admin:` with no body still enables the admin listener on its default address.
  const std::optional<Fields> fields = ReadMapping(
      v, {"address", "token", "token_file", "public_url", "allowed_origins", "allowed_hosts"},
      true);
  if (!fields) return;
  out->enabled = true;
  const Value* address = fields->Find("address");
  bool address_ok = true;
  if (address != nullptr) {
    address_ok = ReadHostPort(*address, /*allow_port_zero=*/true, &out->address);
  }
  const Value* token = fields->Find("token");
  if (token != nullptr) ReadString(*token, &out->token);
  if (const Value* file = fields->Find("token_file")) {
    if (token != nullptr) {
      Error(*file, "cannot be set together with admin.token");
    } else if (ReadFile(*file, false, &out->token_file)) {
      ReadTokenFile(*file, out);
    }
  }
  if (const Value* x = fields->Find("allowed_origins")) {
    if (const std::optional<std::vector<Value>> items = ReadSequence(*x)) {
      for (const Value& item : *items) {
        std::string origin;
        if (ReadName(item, &origin)) out->allowed_origins.push_back(std::move(origin));
      }
    }
  }
  if (const Value* x = fields->Find("allowed_hosts")) {
    if (const std::optional<std::vector<Value>> items = ReadSequence(*x)) {
      for (const Value& item : *items) {
        std::string host;
        if (!ReadString(item, &host)) continue;
        if (!IsServerName(host)) {
          Error(item, "invalid host " + Quote(host) + " (expected a name or IP address, no port)");
          continue;
        }
        std::transform(host.begin(), host.end(), host.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        out->allowed_hosts.push_back(std::move(host));
      }
    }
  }
  // An empty public_url means the default, so --print-config output loads back unchanged.
  const Value* url = fields->Find("public_url");
  if (url != nullptr && url->node.IsScalar() && url->node.Scalar().empty()) url = nullptr;
  if (url != nullptr && ReadUrl(*url, true, &out->public_url)) {
    if (out->public_url.find('?') != std::string::npos) Error(*url, "must not have a query");
    while (out->public_url.back() == '/') out->public_url.pop_back();
  }
  // The admin API can drain backends: off loopback it must not be open to anyone who can reach it.
  const std::string& host = out->address.host;
  bool loopback = host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
  // A token_file that failed has its own error already.
  if (address_ok && !loopback && out->token.empty() && fields->Find("token_file") == nullptr) {
    if (address != nullptr) {
      Error(*address, "admin.token is required when the admin listener is not on loopback");
    } else {
      Error(v, "admin.token is required when the admin listener is not on loopback");
    }
  }
}

void Loader::LoadPools(const Value& v, std::vector<PoolConfig>* out) {
  const std::optional<std::vector<Value>> items = ReadSequence(v);
  if (!items) return;
  if (items->empty()) {
    Error(v, "at least one pool is required");
    return;
  }
  pool_names_complete_ = true;
  for (const Value& item : *items) {
    const std::optional<Fields> fields = ReadMapping(
        item,
        {"name", "balance", "backends", "sticky", "health_check", "outlier", "rebalance",
         "close_on_unhealthy", "tls", "http", "discovery", "optional", "migrate"},
        false);
    if (!fields) {
      pool_names_complete_ = false;
      continue;
    }
    PoolConfig pool;
    if (const Value* name = Require(*fields, "name"); name && ReadName(*name, &pool.name)) {
      if (!pool_names_.insert(pool.name).second) {
        Error(*name, "duplicate pool name " + Quote(pool.name));
      }
    } else {
      pool_names_complete_ = false;
    }
    // False when the balance could not be read; a sticky section is then not judged against it.
    bool balance_known = true;
    if (const Value* balance = fields->Find("balance")) {
      std::string text;
      balance_known = false;
      if (ReadString(*balance, &text)) {
        static constexpr std::pair<std::string_view, Balance> kBalances[] = {
            {"least_conn", Balance::kLeastConn},
            {"round_robin", Balance::kRoundRobin},
            {"random_two", Balance::kRandomTwo},
            {"sticky", Balance::kSticky},
        };
        for (const auto& [spelling, value] : kBalances) {
          if (text == spelling) {
            pool.balance = value;
            balance_known = true;
          }
        }
        if (!balance_known) {
          Error(*balance,
                UnknownValue("balance", text, {"least_conn", "round_robin", "random_two", "sticky"},
                             "least_conn, round_robin, random_two or sticky"));
        }
      }
    }
    if (const Value* sticky = fields->Find("sticky"); sticky && balance_known) {
      if (pool.balance == Balance::kSticky) {
        LoadSticky(*sticky, &pool.sticky);
      } else {
        Error(*sticky, "sticky settings need balance: sticky");
      }
    }
    if (const Value* x = fields->Find("health_check")) LoadHealthCheck(*x, &pool.health_check);
    if (const Value* x = fields->Find("outlier")) LoadOutlier(*x, &pool.outlier);
    if (const Value* x = fields->Find("rebalance")) LoadRebalance(*x, &pool.rebalance);
    if (const Value* x = fields->Find("http")) {
      if (const std::optional<Fields> http = ReadMapping(*x, {"max_idle_connections"}, true)) {
        if (const Value* idle = http->Find("max_idle_connections")) {
          uint64_t n = 0;
          if (ReadInt(*idle, 0, 100000, &n)) {
            pool.http.max_idle_connections = static_cast<uint32_t>(n);
          }
        }
      }
    }
    if (const Value* x = fields->Find("close_on_unhealthy")) {
      ReadBool(*x, &pool.close_on_unhealthy);
    }
    if (const Value* x = fields->Find("optional")) ReadBool(*x, &pool.optional);
    if (const Value* x = fields->Find("migrate")) ReadBool(*x, &pool.migrate);
    if (const Value* x = fields->Find("tls")) LoadPoolTls(*x, &pool.tls);
    if (const Value* x = fields->Find("discovery")) LoadDiscovery(*x, &pool.discovery);
    if (const Value* backends = Require(*fields, "backends")) {
      LoadBackends(*backends, &pool.backends);
    }
    out->push_back(std::move(pool));
  }
}

void Loader::LoadBackends(const Value& v, std::vector<BackendConfig>* out) {
  const std::optional<std::vector<Value>> items = ReadSequence(v);
  if (!items) return;
  if (items->empty()) {
    Error(v, "pool has no backends");
    return;
  }
  std::set<std::string> addresses;
  std::set<std::string> ids;  // effective ids: the explicit id, else the address text
  for (const Value& item : *items) {
    const std::optional<Fields> fields = ReadMapping(item, {"address", "weight", "id"}, false);
    if (!fields) continue;
    BackendConfig backend;
    const Value* address = Require(*fields, "address");
    bool address_ok = false;
    bool duplicate_address = false;
    if (address != nullptr) {
      address_ok = ReadHostPort(*address, /*allow_port_zero=*/false, &backend.address);
      backend.origin = Origin(*address);
      if (address_ok && !addresses.insert(AddressKey(backend.address)).second) {
        Error(*address, "duplicate backend address " + Quote(backend.address.text));
        duplicate_address = true;
      }
    }
    uint64_t weight = 0;
    if (const Value* w = fields->Find("weight"); w && ReadInt(*w, 1, 1000, &weight)) {
      backend.weight = static_cast<uint32_t>(weight);
    }
    const Value* id = fields->Find("id");
    const bool id_ok = id == nullptr || ReadName(*id, &backend.id);
    // Without an explicit id a duplicate address already said everything there is to say.
    if (id_ok && !(id == nullptr && (duplicate_address || !address_ok))) {
      const std::string& effective = id != nullptr ? backend.id : backend.address.text;
      if (!ids.insert(effective).second) {
        Error(id != nullptr ? *id : *address, "duplicate backend id " + Quote(effective));
      }
    }
    out->push_back(std::move(backend));
  }
}

void Loader::LoadSticky(const Value& v, StickyConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v, {"key", "fallback", "load_factor", "insert_cookie"}, true);
  if (!fields) return;
  std::string text;
  if (const Value* key = Require(*fields, "key"); key && ReadString(*key, &text)) {
    using Source = StickyConfig::KeySource;
    const std::pair<std::string_view, Source> kPrefixed[] = {
        {"cookie:", Source::kCookie}, {"header:", Source::kHeader}, {"query:", Source::kQuery}};
    bool matched = false;
    if (text == "client_ip") {
      out->source = Source::kClientIp;
      matched = true;
    } else if (text == "path") {
      out->source = Source::kPath;
      matched = true;
    }
    for (const auto& [prefix, source] : kPrefixed) {
      if (matched || text.size() <= prefix.size() || text.rfind(prefix, 0) != 0) continue;
      matched = true;
      const std::string name = text.substr(prefix.size());
      if (source == Source::kCookie && !IsToken(name)) {
        Error(*key, "invalid cookie name " + Quote(name) + " (expected RFC 6265 token characters)");
      } else if (source == Source::kHeader && !IsToken(name)) {
        Error(*key, "invalid header name " + Quote(name) + " (expected RFC 7230 token characters)");
      } else if (source == Source::kQuery && !IsQueryName(name)) {
        Error(*key, "invalid query parameter name " + Quote(name) +
                        " (expected no \"&\", \"=\", \"#\", spaces or control characters)");
      } else {
        out->source = source;
        out->key_name = name;
      }
    }
    if (!matched) {
      Error(*key, "invalid sticky key " + Quote(text) +
                      " (expected cookie:NAME, header:NAME, query:NAME, client_ip or path)");
    }
  }
  if (const Value* fallback = fields->Find("fallback"); fallback && ReadString(*fallback, &text)) {
    using Fallback = StickyConfig::Fallback;
    if (text == "least_conn") {
      out->fallback = Fallback::kLeastConn;
    } else if (text == "round_robin") {
      out->fallback = Fallback::kRoundRobin;
    } else if (text == "reject") {
      out->fallback = Fallback::kReject;
    } else {
      Error(*fallback, UnknownValue("fallback", text, {"least_conn", "round_robin", "reject"},
                                    "least_conn, round_robin or reject"));
    }
  }
  if (const Value* x = fields->Find("load_factor")) {
    ReadNumber(
        *x, [](double f) { return f == 0 || (f >= 1.0 && f <= 100); }, "0, or 1..100",
        &out->load_factor);
  }
  if (const Value* x = fields->Find("insert_cookie"); x && ReadString(*x, &text)) {
    if (!text.empty() && !IsToken(text)) {
      Error(*x, "invalid cookie name " + Quote(text) + " (expected RFC 6265 token characters)");
    } else {
      out->insert_cookie = text;
    }
  }
}

void Loader::LoadHealthCheck(const Value& v, HealthCheckConfig* out) {
  // `health_check:` with no body still enables checks with the default settings.
  const std::optional<Fields> fields = ReadMapping(
      v, {"interval", "timeout", "type", "path", "healthy_threshold", "unhealthy_threshold"}, true);
  if (!fields) return;
  out->enabled = true;
  const Value* interval = fields->Find("interval");
  const bool interval_ok = !interval || ReadDuration(*interval, true, &out->interval);
  const Value* timeout = fields->Find("timeout");
  const bool timeout_ok = !timeout || ReadDuration(*timeout, true, &out->timeout);
  // A check that may run longer than the interval would overlap the next one.
  if (interval_ok && timeout_ok && out->timeout >= out->interval) {
    Error(timeout ? *timeout : *interval, "timeout (" + FormatDuration(out->timeout) +
                                              ") must be less than interval (" +
                                              FormatDuration(out->interval) + ")");
  }
  bool type_known = true;
  std::string text;
  if (const Value* type = fields->Find("type")) {
    type_known = false;
    if (ReadString(*type, &text)) {
      using Type = HealthCheckConfig::Type;
      static constexpr std::pair<std::string_view, Type> kTypes[] = {
          {"tcp", Type::kTcp}, {"http", Type::kHttp}, {"websocket", Type::kWebSocket}};
      for (const auto& [spelling, value] : kTypes) {
        if (text == spelling) {
          out->type = value;
          type_known = true;
        }
      }
      if (!type_known) {
        Error(*type, UnknownValue("health check type", text, {"tcp", "http", "websocket"},
                                  "tcp, http or websocket"));
      }
    }
  }
  if (const Value* path = fields->Find("path"); path && ReadString(*path, &text)) {
    if (text.empty() || text.front() != '/') {
      Error(*path, "must start with \"/\"");
    } else if (!IsRequestPath(text)) {
      Error(*path, "invalid path " + Quote(text) + " (expected printable ASCII without spaces)");
    } else if (type_known && out->type == HealthCheckConfig::Type::kTcp) {
      Error(*path, "path needs type: http or websocket");
    } else {
      out->path = text;
    }
  }
  uint64_t n = 0;
  if (const Value* x = fields->Find("healthy_threshold"); x && ReadInt(*x, 1, 100, &n)) {
    out->healthy_threshold = static_cast<uint32_t>(n);
  }
  if (const Value* x = fields->Find("unhealthy_threshold"); x && ReadInt(*x, 1, 100, &n)) {
    out->unhealthy_threshold = static_cast<uint32_t>(n);
  }
}

void Loader::LoadDiscovery(const Value& v, DiscoveryConfig* out) {
  out->enabled = true;
  const std::optional<Fields> fields = ReadMapping(v, {"interval", "require_at_start"}, true);
  if (!fields) return;
  if (const Value* x = fields->Find("interval")) {
    Duration interval{};
    if (ReadDuration(*x, true, &interval)) {
      if (interval < std::chrono::seconds(1)) {
        Error(*x, "interval " + FormatDuration(interval) + " is below the minimum of 1s");
      } else {
        out->interval = interval;
      }
    }
  }
  if (const Value* x = fields->Find("require_at_start")) ReadBool(*x, &out->require_at_start);
}

void Loader::LoadOutlier(const Value& v, OutlierConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v, {"consecutive_failures", "ejection_time"}, true);
  if (!fields) return;
  uint64_t n = 0;
  if (const Value* x = fields->Find("consecutive_failures"); x && ReadInt(*x, 0, 1000, &n)) {
    out->consecutive_failures = static_cast<uint32_t>(n);
  }
  if (const Value* x = fields->Find("ejection_time")) ReadDuration(*x, true, &out->ejection_time);
}

void Loader::LoadRebalance(const Value& v, RebalanceConfig* out) {
  const std::optional<Fields> fields = ReadMapping(v, {"enabled", "tolerance", "rate"}, true);
  if (!fields) return;
  if (const Value* x = fields->Find("enabled")) ReadBool(*x, &out->enabled);
  if (const Value* x = fields->Find("tolerance")) {
    ReadNumber(
        *x, [](double f) { return f > 1.0 && f <= 10; }, "> 1 and <= 10", &out->tolerance);
  }
  if (const Value* x = fields->Find("rate")) ReadRate(*x, &out->rate);
}

void Loader::LoadRoutes(const Value& v, std::vector<RouteConfig>* out) {
  const std::optional<std::vector<Value>> items = ReadSequence(v);
  if (!items) return;
  if (items->empty()) {
    Error(v, "at least one route is required");
    return;
  }
  for (const Value& item : *items) {
    const std::optional<Fields> fields = ReadMapping(item, {"match", "pool", "auth"}, false);
    if (!fields) continue;
    RouteConfig route;
    if (const Value* auth = fields->Find("auth")) ReadBool(*auth, &route.auth);
    if (const Value* match = fields->Find("match")) {
      if (const std::optional<Fields> m = ReadMapping(*match, {"host", "path_prefix"}, true)) {
        if (const Value* host = m->Find("host")) ReadString(*host, &route.match.host);
        if (const Value* prefix = m->Find("path_prefix");
            prefix && ReadString(*prefix, &route.match.path_prefix) &&
            (route.match.path_prefix.empty() || route.match.path_prefix.front() != '/')) {
          Error(*prefix, "must start with \"/\"");
        }
      }
    }
    if (const Value* pool = Require(*fields, "pool"); pool && ReadName(*pool, &route.pool)) {
      if (pool_names_complete_ && pool_names_.count(route.pool) == 0) {
        std::vector<std::string_view> names(pool_names_.begin(), pool_names_.end());
        const std::string closest = ClosestName(route.pool, names);
        Error(*pool, "unknown pool " + Quote(route.pool) +
                         (closest.empty() ? "" : " (did you mean " + Quote(closest) + "?)"));
      }
    }
    out->push_back(std::move(route));
  }
}

void Loader::LoadPaths(const Value& v, PathsConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v, {"normalize", "merge_slashes", "escaped_slashes"}, true);
  if (!fields) return;
  if (const Value* x = fields->Find("normalize")) ReadBool(*x, &out->normalize);
  if (const Value* x = fields->Find("merge_slashes")) ReadBool(*x, &out->merge_slashes);
  std::string text;
  if (const Value* x = fields->Find("escaped_slashes"); x && ReadString(*x, &text)) {
    if (text == "reject") {
      out->escaped_slashes = PathsConfig::EscapedSlashes::kReject;
    } else if (text == "keep") {
      out->escaped_slashes = PathsConfig::EscapedSlashes::kKeep;
    } else {
      Error(*x, "unknown escaped_slashes " + Quote(text) + " (expected reject or keep)");
    }
  }
}

void Loader::LoadLimits(const Value& v, LimitsConfig* out) {
  const std::optional<Fields> fields = ReadMapping(
      v,
      {"max_connections", "max_header_bytes", "max_request_line_bytes", "max_message_bytes",
       "write_buffer_high_watermark", "allowed_origins", "max_messages_per_second", "rate_action",
       "max_connections_per_ip", "max_connections_per_user", "handshake_rate_per_ip",
       "max_pending_handshakes", "max_body_bytes", "compression"},
      true);
  if (!fields) return;
  if (const Value* x = fields->Find("max_connections")) {
    ReadInt(*x, 1, kNoMax, &out->max_connections);
  }
  const Value* header = fields->Find("max_header_bytes");
  const bool header_ok = !header || ReadSize(*header, kKiB, kMiB, &out->max_header_bytes);
  const Value* line = fields->Find("max_request_line_bytes");
  const bool line_ok = !line || ReadSize(*line, 256, kMiB, &out->max_request_line_bytes);
  // The request line is part of the head, so a larger limit for it could never take effect.
  if (header_ok && line_ok && out->max_request_line_bytes > out->max_header_bytes) {
    const Value& blame = line ? *line : *header;
    Error(blame, "max_request_line_bytes (" + FormatSize(out->max_request_line_bytes) +
                     ") must not exceed max_header_bytes (" + FormatSize(out->max_header_bytes) +
                     ")");
  }
  if (const Value* x = fields->Find("max_message_bytes")) {
    ReadSize(*x, 1, kNoMax, &out->max_message_bytes);
  }
  if (const Value* x = fields->Find("max_body_bytes")) {
    ReadSize(*x, 0, kNoMax, &out->max_body_bytes);
  }
  if (const Value* x = fields->Find("write_buffer_high_watermark")) {
    ReadSize(*x, 4 * kKiB, 64 * kMiB, &out->write_buffer_high_watermark);
  }
  if (const Value* x = fields->Find("max_messages_per_second")) {
    ReadInt(*x, 0, 10000000, &out->max_messages_per_second);
  }
  if (const Value* x = fields->Find("max_connections_per_ip")) {
    ReadInt(*x, 0, kNoMax, &out->max_connections_per_ip);
  }
  if (const Value* x = fields->Find("max_connections_per_user")) {
    ReadInt(*x, 0, kNoMax, &out->max_connections_per_user);
  }
  if (const Value* x = fields->Find("handshake_rate_per_ip")) {
    ReadInt(*x, 0, 10000000, &out->handshake_rate_per_ip);
  }
  if (const Value* x = fields->Find("max_pending_handshakes")) {
    ReadInt(*x, 1, kNoMax, &out->max_pending_handshakes);
  }
  std::string action;
  if (const Value* x = fields->Find("rate_action"); x && ReadString(*x, &action)) {
    if (action == "close") {
      out->rate_action = LimitsConfig::RateAction::kClose;
    } else if (action == "throttle") {
      out->rate_action = LimitsConfig::RateAction::kThrottle;
    } else {
      Error(*x, UnknownValue("rate_action", action, {"close", "throttle"}, "close or throttle"));
    }
  }
  std::string compression;
  if (const Value* x = fields->Find("compression"); x && ReadString(*x, &compression)) {
    if (compression == "inspect") {
      out->compression = LimitsConfig::Compression::kInspect;
    } else if (compression == "strip") {
      out->compression = LimitsConfig::Compression::kStrip;
    } else if (compression == "passthrough") {
      out->compression = LimitsConfig::Compression::kPassthrough;
    } else {
      Error(*x, "unknown compression " + Quote(compression) +
                    " (expected inspect, strip or passthrough)");
    }
  }
  if (const Value* x = fields->Find("allowed_origins")) {
    if (const std::optional<std::vector<Value>> items = ReadSequence(*x)) {
      for (const Value& item : *items) {
        std::string origin;
        if (ReadString(item, &origin)) out->allowed_origins.push_back(std::move(origin));
      }
    }
  }
}

void Loader::LoadTimeouts(const Value& v, TimeoutsConfig* out) {
  const std::optional<Fields> fields =
      ReadMapping(v,
                  {"handshake", "connect", "backend_handshake", "idle", "drain", "close",
                   "ping_interval", "ping_timeout", "request", "backend_response", "backend_idle"},
                  true);
  if (!fields) return;
  // Zero disables only the idle timeout and drain; the others would fail every connection.
  const std::pair<const char*, std::pair<Duration*, bool>> targets[] = {
      {"handshake", {&out->handshake, true}},
      {"connect", {&out->connect, true}},
      {"backend_handshake", {&out->backend_handshake, true}},
      {"idle", {&out->idle, false}},
      {"drain", {&out->drain, false}},
      {"close", {&out->close, true}},
      {"ping_interval", {&out->ping_interval, false}},
      {"ping_timeout", {&out->ping_timeout, true}},
      {"request", {&out->request, true}},
      {"backend_response", {&out->backend_response, true}},
      {"backend_idle", {&out->backend_idle, true}},
  };
  for (const auto& [key, target] : targets) {
    if (const Value* x = fields->Find(key)) ReadDuration(*x, target.second, target.first);
  }
}

void Loader::LoadDrain(const Value& v, DrainConfig* out) {
  const std::optional<Fields> fields = ReadMapping(v, {"grace", "close_code", "spread"}, true);
  if (!fields) return;
  if (const Value* x = fields->Find("grace")) ReadDuration(*x, false, &out->grace);
  if (const Value* x = fields->Find("spread")) ReadDuration(*x, false, &out->spread);
  uint64_t code = 0;
  if (const Value* x = fields->Find("close_code"); x && ReadInt(*x, 1000, 4999, &code)) {
    if (code != 1001 && code != 1012) {
      Error(*x, "close_code must be 1001 (going away) or 1012 (service restart)");
    } else {
      out->close_code = static_cast<uint16_t>(code);
    }
  }
}

void Loader::LoadLog(const Value& v, LogConfig* out) {
  const std::optional<Fields> fields = ReadMapping(v, {"format", "access", "flush_interval"}, true);
  if (!fields) return;
  std::string text;
  if (const Value* x = fields->Find("format"); x && ReadString(*x, &text)) {
    if (text == "text") {
      out->format = LogConfig::Format::kText;
    } else if (text == "json") {
      out->format = LogConfig::Format::kJson;
    } else {
      Error(*x, UnknownValue("log format", text, {"text", "json"}, "text or json"));
    }
  }
  if (const Value* x = fields->Find("access"); x && ReadString(*x, &text)) {
    if (text.empty()) {
      Error(*x, "must not be empty (use off to disable the access log)");
    } else {
      out->access = text;
    }
  }
  if (const Value* x = fields->Find("flush_interval")) {
    ReadDuration(*x, false, &out->flush_interval);
  }
}

// Remembers where the first node of a document starts.
class FirstMarkHandler : public YAML::EventHandler {
 public:
  YAML::Mark mark() const { return mark_; }

  void OnDocumentStart(const YAML::Mark& /*mark*/) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t /*anchor*/) override { Record(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t /*anchor*/) override { Record(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                const std::string& /*value*/) override {
    Record(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& /*tag*/,
                       YAML::anchor_t /*anchor*/, YAML::EmitterStyle::value /*style*/) override {
    Record(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                  YAML::EmitterStyle::value /*style*/) override {
    Record(mark);
  }
  void OnMapEnd() override {}

 private:
  void Record(const YAML::Mark& mark) {
    if (!seen_) mark_ = mark;
    seen_ = true;
  }

  bool seen_ = false;
  YAML::Mark mark_ = YAML::Mark::null_mark();
};

// Where a second document starts, if there is one. yaml-cpp 0.7's YAML::LoadAll() loops forever
// (allocating) on input such as "- a\n,", and YAML::Load() silently ignores whatever follows the
// first document, so this parses exactly two documents and no more.
std::optional<YAML::Mark> FindSecondDocument(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  FirstMarkHandler first;
  if (!parser.HandleNextDocument(first)) return std::nullopt;
  FirstMarkHandler second;
  if (!parser.HandleNextDocument(second)) return std::nullopt;
  return second.mark();
}

}  // namespace

LoadResult LoadConfigString(const std::string& yaml_text, const std::string& file_name) {
  Loader loader(file_name);
  ProxyConfig cfg;
  cfg.source_path = file_name;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    const std::optional<YAML::Mark> second = FindSecondDocument(yaml_text);
    if (second) loader.Error(*second, "", "expected a single YAML document");
    if (!root.IsNull()) {
      loader.LoadRoot(root, &cfg);
    } else if (!second) {
      loader.Error(YAML::Mark::null_mark(), "", "configuration is empty");
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp 0.7 reports its nesting limit (YAML::DeepRecursion, whose type is not exported)
    // with the message "bad file"; parsing a string can fail that way for no other reason.
    const bool too_deep = e.msg == YAML::ErrorMsg::BAD_FILE;
    loader.Error(
        e.mark, "",
        too_deep ? "syntax error: nesting is too deep" : "syntax error: " + Printable(e.msg));
  } catch (const std::exception& e) {
    // Not expected; kept so that no input can take the process down.
    loader.Error(YAML::Mark::null_mark(), "", std::string("internal error: ") + e.what());
  }
  ConfigErrors errors = loader.TakeErrors();
  if (!errors.empty()) return Fail(std::move(errors));
  return cfg;
}

LoadResult LoadConfigFile(const std::string& path) {
  auto fail = [&path](std::string message) -> LoadResult {
    ConfigError error;
    error.file = path;
    error.message = std::move(message);
    return Fail(ConfigErrors{std::move(error)});
  };
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return fail("cannot read file: " + std::generic_category().message(errno));
  }
  std::string text;
  char buf[64 * 1024];
  bool too_large = false;
  size_t got = 0;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    if (text.size() + got > kMaxFileBytes) {
      too_large = true;
      break;
    }
    text.append(buf, got);
  }
  const int read_errno = errno;
  const bool read_failed = std::ferror(f) != 0;
  std::fclose(f);
  if (too_large) return fail("cannot read file: larger than " + FormatSize(kMaxFileBytes));
  if (read_failed) return fail("cannot read file: " + std::generic_category().message(read_errno));
  return LoadConfigString(text, path);
}

}  // namespace wsgate::config
