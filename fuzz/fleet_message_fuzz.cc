// Fuzz target: what arrives from other fleet instances and from the auth hook
// (proxy/connections/group_op.h, identity.h).
//
// The whole input is a pub/sub message for DecodeGroupOp; it is also split at the first two
// '\n' into the X-Wsgate-User, -Tags and -Expires values for ParseIdentity.
// Properties: no crash; a decoded operation has a valid name and encodes back to a message that
// decodes to the same operation; a parsed identity has valid, sorted, unique tags and re-parses
// from the header lines it produces.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "proxy/connections/group_op.h"
#include "proxy/connections/identity.h"

namespace {

// The value of the header line starting with |name| ("Name: "), or empty. Whole lines only: a
// tag may itself contain the text "X-Wsgate-Expires: ".
std::string_view FieldValue(std::string_view lines, std::string_view name) {
  while (!lines.empty()) {
    size_t end = lines.find("\r\n");
    std::string_view line = lines.substr(0, end);
    if (line.substr(0, name.size()) == name) return line.substr(name.size());
    if (end == std::string_view::npos) break;
    lines.remove_prefix(end + 2);
  }
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  if (std::optional<wsgate::GroupOp> op = wsgate::DecodeGroupOp(input)) {
    FUZZ_CHECK(op->kind == wsgate::GroupOp::Kind::kUser ? wsgate::CheckUserName(op->key).empty()
                                                        : wsgate::CheckTagName(op->key).empty());
    std::optional<wsgate::GroupOp> again = wsgate::DecodeGroupOp(wsgate::EncodeGroupOp(*op, "x"));
    FUZZ_CHECK(again);
    FUZZ_CHECK(again->kind == op->kind && again->action == op->action && again->key == op->key);
    FUZZ_CHECK(again->text == op->text && again->code == op->code && again->reason == op->reason);
    FUZZ_CHECK((again->payload ? *again->payload : "") == (op->payload ? *op->payload : ""));
  }

  std::string_view text(input);
  size_t first = text.find('\n');
  std::string user(text.substr(0, first));
  std::string tags;
  std::string expires;
  if (first != std::string_view::npos) {
    std::string_view rest = text.substr(first + 1);
    size_t second = rest.find('\n');
    tags = std::string(rest.substr(0, second));
    if (second != std::string_view::npos) expires = std::string(rest.substr(second + 1));
  }
  wsgate::ConnectionIdentity identity;
  if (wsgate::ParseIdentity(user.c_str(), tags.c_str(), expires.c_str(), &identity).empty()) {
    FUZZ_CHECK(std::is_sorted(identity.tags.begin(), identity.tags.end()));
    FUZZ_CHECK(std::adjacent_find(identity.tags.begin(), identity.tags.end()) ==
               identity.tags.end());
    for (const std::string& tag : identity.tags) FUZZ_CHECK(wsgate::CheckTagName(tag).empty());
    // What the backend is told parses back to the same identity.
    std::string lines = wsgate::IdentityHeaderLines(identity);
    std::string user_again(FieldValue(lines, "X-Wsgate-User: "));
    std::string tags_again(FieldValue(lines, "X-Wsgate-Tags: "));
    std::string expires_again(FieldValue(lines, "X-Wsgate-Expires: "));
    wsgate::ConnectionIdentity reparsed;
    FUZZ_CHECK(wsgate::ParseIdentity(user_again.c_str(), tags_again.c_str(), expires_again.c_str(),
                                     &reparsed)
                   .empty());
    FUZZ_CHECK(reparsed == identity);
  }
  return 0;
}
