// Sec-WebSocket-Extensions: the backend's permessage-deflate answer (RFC 7692 §7) and removing
// deflate offers from a client's request (limits.compression: strip).
//
// Pure: no libevent, no zlib; unit-tested and fuzzed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace wsgate::http {

// What a backend's 101 agreed for permessage-deflate. Window bits are what each sender may use
// (15 when the answer does not say).
struct DeflateParams {
  bool server_no_context_takeover = false;
  bool client_no_context_takeover = false;
  uint8_t server_max_window_bits = 15;
  uint8_t client_max_window_bits = 15;
};

// Parse the parameters of one "permessage-deflate; a; b=c" element as a server answered it
// (|element| is the whole list item, name included). Return an empty string if valid, else why
// not: an unknown, duplicate or out-of-range parameter fails the upgrade (RFC 7692 §7.1).
std::string ParseDeflateResponse(std::string_view element, DeflateParams* out);

// The pre-RFC 7692 per-frame deflate drafts (x-webkit-deflate-frame, deflate-frame,
// perframe-deflate): they compress with RSV1 as well, but wsgate never inflates them.
bool IsPerFrameDeflate(std::string_view name);

// |value| (one Sec-WebSocket-Extensions field value) without its permessage-deflate and
// per-frame deflate elements (only the per-frame ones if |per_frame_only|), the others kept in
// order; empty if none remain.
std::string StripDeflateOffers(std::string_view value, bool per_frame_only = false);

// A backend's 101 head (status line to the final CRLF) whose only extension is
// permessage-deflate, with client_no_context_takeover added to that answer (RFC 7692 §7.1.1.1
// lets a server require it). Each client message is then compressed on its own, so any backend
// can inflate it: what lets a session move to another backend (pools[].migrate). The backend's
// inflater keeps its window, which decodes such messages all the same. |head| unchanged if it
// has no Sec-WebSocket-Extensions field.
std::string RequireClientNoContextTakeover(std::string_view head);

}  // namespace wsgate::http
