// A push or a close addressed to every connection of a user or with a tag (docs/fleet.md),
// and its wire form between fleet instances (a Redis pub/sub message). Decode is fuzzed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace wsgate {

struct GroupOp {
  enum class Kind { kUser, kTag };
  enum class Action { kPush, kClose };
  Kind kind = Kind::kUser;
  Action action = Action::kPush;
  std::string key;  // the user or the tag
  // Push: the message, shared (zero-copy) by every connection it goes to.
  bool text = false;
  std::shared_ptr<const std::string> payload;
  // Close.
  uint16_t code = 1000;
  std::string reason;
};

const char* GroupKindName(GroupOp::Kind kind);  // "user" | "tag"

// One line of JSON (kind, action, key, text, code, reason, origin), a newline, then the raw
// payload: binary-safe without escaping the payload.
std::string EncodeGroupOp(const GroupOp& op, const std::string& origin);
// Null for anything that is not a well-formed encoding; the names are checked again.
std::optional<GroupOp> DecodeGroupOp(std::string_view wire);

}  // namespace wsgate
