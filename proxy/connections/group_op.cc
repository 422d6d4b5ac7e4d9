#include "proxy/connections/group_op.h"

#include <nlohmann/json.hpp>

#include "proxy/connections/identity.h"
#include "proxy/ws/frame.h"

namespace wsgate {

const char* GroupKindName(GroupOp::Kind kind) {
  return kind == GroupOp::Kind::kUser ? "user" : "tag";
}

std::string EncodeGroupOp(const GroupOp& op, const std::string& origin) {
  nlohmann::json head = {{"v", 1},
                         {"kind", GroupKindName(op.kind)},
                         {"action", op.action == GroupOp::Action::kPush ? "push" : "close"},
                         {"key", op.key},
                         {"origin", origin}};
  if (op.action == GroupOp::Action::kPush) {
    head["text"] = op.text;
  } else {
    head["code"] = op.code;
    head["reason"] = op.reason;
  }
  // Names and reasons are UTF-8 or checked bytes; replace anything else rather than throw.
  std::string wire = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  wire.push_back('\n');
  if (op.action == GroupOp::Action::kPush && op.payload) wire += *op.payload;
  return wire;
}

std::optional<GroupOp> DecodeGroupOp(std::string_view wire) {
  size_t newline = wire.find('\n');
  if (newline == std::string_view::npos) return std::nullopt;
  nlohmann::json head =
      nlohmann::json::parse(wire.substr(0, newline), nullptr, /*allow_exceptions=*/false);
  if (!head.is_object()) return std::nullopt;
  auto string_field = [&head](const char* name) -> const std::string* {
    auto it = head.find(name);
    return it != head.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
  };
  auto version = head.find("v");
  const std::string* kind = string_field("kind");
  const std::string* action = string_field("action");
  const std::string* key = string_field("key");
  if (version == head.end() || *version != 1 || kind == nullptr || action == nullptr ||
      key == nullptr) {
    return std::nullopt;
  }
  GroupOp op;
  if (*kind == "user") {
    op.kind = GroupOp::Kind::kUser;
    if (!CheckUserName(*key).empty()) return std::nullopt;
  } else if (*kind == "tag") {
    op.kind = GroupOp::Kind::kTag;
    if (!CheckTagName(*key).empty()) return std::nullopt;
  } else {
    return std::nullopt;
  }
  op.key = *key;
  std::string_view payload = wire.substr(newline + 1);
  if (*action == "push") {
    op.action = GroupOp::Action::kPush;
    auto text = head.find("text");
    if (text == head.end() || !text->is_boolean()) return std::nullopt;
    op.text = text->get<bool>();
    if (op.text &&
        !ws::IsValidUtf8(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())) {
      return std::nullopt;
    }
    op.payload = std::make_shared<const std::string>(payload);
  } else if (*action == "close") {
    op.action = GroupOp::Action::kClose;
    auto code = head.find("code");
    const std::string* reason = string_field("reason");
    if (code == head.end() || !code->is_number_unsigned() || reason == nullptr ||
        !payload.empty()) {
      return std::nullopt;
    }
    uint64_t value = code->get<uint64_t>();
    if (value > 4999 || !ws::IsValidWireCloseCode(static_cast<uint16_t>(value)) ||
        reason->size() > ws::kMaxControlPayload - 2 ||
        !ws::IsValidUtf8(reinterpret_cast<const uint8_t*>(reason->data()), reason->size())) {
      return std::nullopt;
    }
    op.code = static_cast<uint16_t>(value);
    op.reason = *reason;
  } else {
    return std::nullopt;
  }
  return op;
}

}  // namespace wsgate
