#include "proxy/http/extensions.h"

#include <cctype>

#include "proxy/http/head_parser.h"

namespace wsgate::http {
namespace {

// RFC 7692 §7.1.2: a window size is 8..15 in decimal, without leading zeros; RFC 6455 §9.1
// allows it quoted.
bool ParseWindowBits(std::string_view value, uint8_t* out) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    value = value.substr(1, value.size() - 2);
  }
  if (value.size() == 1 && value[0] >= '8' && value[0] <= '9') {
    *out = static_cast<uint8_t>(value[0] - '0');
    return true;
  }
  if (value.size() == 2 && value[0] == '1' && value[1] >= '0' && value[1] <= '5') {
    *out = static_cast<uint8_t>(10 + value[1] - '0');
    return true;
  }
  return false;
}

}  // namespace

std::string ParseDeflateResponse(std::string_view element, DeflateParams* out) {
  DeflateParams params;
  bool seen[4] = {false, false, false, false};
  size_t pos = element.find(';');
  while (pos != std::string_view::npos) {
    size_t next = element.find(';', pos + 1);
    std::string_view param = TrimOws(element.substr(
        pos + 1, next == std::string_view::npos ? std::string_view::npos : next - pos - 1));
    pos = next;
    size_t equals = param.find('=');
    std::string_view name = TrimOws(param.substr(0, equals));
    bool has_value = equals != std::string_view::npos;
    std::string_view value = has_value ? TrimOws(param.substr(equals + 1)) : std::string_view();
    int index = -1;
    if (EqualsIgnoreCase(name, "server_no_context_takeover")) {
      index = 0;
      if (has_value) return "permessage-deflate server_no_context_takeover with a value";
      params.server_no_context_takeover = true;
    } else if (EqualsIgnoreCase(name, "client_no_context_takeover")) {
      index = 1;
      if (has_value) return "permessage-deflate client_no_context_takeover with a value";
      params.client_no_context_takeover = true;
    } else if (EqualsIgnoreCase(name, "server_max_window_bits")) {
      index = 2;
      if (!has_value || !ParseWindowBits(value, &params.server_max_window_bits)) {
        return "permessage-deflate server_max_window_bits must be 8..15";
      }
    } else if (EqualsIgnoreCase(name, "client_max_window_bits")) {
      index = 3;
      // A server should state the value; without one the client's default (15) stands.
      if (has_value && !ParseWindowBits(value, &params.client_max_window_bits)) {
        return "permessage-deflate client_max_window_bits must be 8..15";
      }
    } else {
      return "unknown permessage-deflate parameter \"" + std::string(name) + "\"";
    }
    if (seen[index]) return "duplicate permessage-deflate parameter " + std::string(name);
    seen[index] = true;
  }
  *out = params;
  return {};
}

bool IsPerFrameDeflate(std::string_view name) {
  return EqualsIgnoreCase(name, "x-webkit-deflate-frame") ||
         EqualsIgnoreCase(name, "deflate-frame") || EqualsIgnoreCase(name, "perframe-deflate");
}

std::string StripDeflateOffers(std::string_view value, bool per_frame_only) {
  std::string kept;
  ForEachListItem(value, [&kept, per_frame_only](std::string_view item) {
    std::string_view name = ListItemName(item);
    if (name.empty() || IsPerFrameDeflate(name) ||
        (!per_frame_only && EqualsIgnoreCase(name, "permessage-deflate"))) {
      return false;
    }
    if (!kept.empty()) kept.append(", ");
    kept.append(item);
    return false;
  });
  return kept;
}

std::string RequireClientNoContextTakeover(std::string_view head) {
  static constexpr std::string_view kField = "sec-websocket-extensions";
  size_t line = head.find("\r\n");
  while (line != std::string_view::npos && line + 2 < head.size()) {
    size_t start = line + 2;
    size_t end = head.find("\r\n", start);
    if (end == std::string_view::npos) break;
    std::string_view text = head.substr(start, end - start);
    bool match = text.size() > kField.size() && text[kField.size()] == ':' &&
                 EqualsIgnoreCase(text.substr(0, kField.size()), kField);
    if (match) {
      size_t value_end = end;
      while (value_end > start && (head[value_end - 1] == ' ' || head[value_end - 1] == '\t')) {
        --value_end;
      }
      std::string out(head.substr(0, value_end));
      out += "; client_no_context_takeover";
      out.append(head.substr(end));
      return out;
    }
    line = end;
  }
  return std::string(head);
}

}  // namespace wsgate::http
