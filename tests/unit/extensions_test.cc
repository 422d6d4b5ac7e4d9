#include "proxy/http/extensions.h"

#include <gtest/gtest.h>

namespace wsgate::http {
namespace {

DeflateParams Parse(std::string_view element, std::string* error = nullptr) {
  DeflateParams params;
  std::string why = ParseDeflateResponse(element, &params);
  if (error != nullptr) *error = why;
  EXPECT_TRUE(error != nullptr || why.empty()) << why;
  return params;
}

TEST(ExtensionsTest, DeflateDefaults) {
  DeflateParams p = Parse("permessage-deflate");
  EXPECT_FALSE(p.server_no_context_takeover);
  EXPECT_FALSE(p.client_no_context_takeover);
  EXPECT_EQ(p.server_max_window_bits, 15);
  EXPECT_EQ(p.client_max_window_bits, 15);
}

TEST(ExtensionsTest, DeflateEveryParameter) {
  DeflateParams p = Parse(
      "permessage-deflate; server_no_context_takeover ;CLIENT_NO_CONTEXT_TAKEOVER;"
      " server_max_window_bits = 8; client_max_window_bits=\"10\"");
  EXPECT_TRUE(p.server_no_context_takeover);
  EXPECT_TRUE(p.client_no_context_takeover);
  EXPECT_EQ(p.server_max_window_bits, 8);
  EXPECT_EQ(p.client_max_window_bits, 10);
  // Without a value the client's window stays at its default.
  EXPECT_EQ(Parse("permessage-deflate; client_max_window_bits").client_max_window_bits, 15);
  for (int bits = 8; bits <= 15; ++bits) {
    std::string element = "permessage-deflate; server_max_window_bits=" + std::to_string(bits);
    EXPECT_EQ(Parse(element).server_max_window_bits, bits);
  }
}

TEST(ExtensionsTest, DeflateInvalid) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"permessage-deflate; server_max_window_bits=7",
       "permessage-deflate server_max_window_bits must be 8..15"},
      {"permessage-deflate; server_max_window_bits=016",
       "permessage-deflate server_max_window_bits must be 8..15"},
      {"permessage-deflate; server_max_window_bits=09",
       "permessage-deflate server_max_window_bits must be 8..15"},
      {"permessage-deflate; server_max_window_bits=",
       "permessage-deflate server_max_window_bits must be 8..15"},
      {"permessage-deflate; client_max_window_bits=abc",
       "permessage-deflate client_max_window_bits must be 8..15"},
      {"permessage-deflate; server_no_context_takeover=1",
       "permessage-deflate server_no_context_takeover with a value"},
      {"permessage-deflate; client_no_context_takeover=",
       "permessage-deflate client_no_context_takeover with a value"},
      {"permessage-deflate; client_max_window_bits=9; client_max_window_bits=9",
       "duplicate permessage-deflate parameter client_max_window_bits"},
      {"permessage-deflate; ", "unknown permessage-deflate parameter \"\""},
      {"permessage-deflate; mode=fast", "unknown permessage-deflate parameter \"mode\""},
  };
  for (const auto& [element, reason] : cases) {
    SCOPED_TRACE(element);
    std::string error;
    Parse(element, &error);
    EXPECT_EQ(error, reason);
  }
}

TEST(ExtensionsTest, StripDeflateOffers) {
  EXPECT_EQ(StripDeflateOffers("permessage-deflate; client_max_window_bits"), "");
  EXPECT_EQ(StripDeflateOffers("permessage-deflate; server_max_window_bits=10, "
                               "permessage-deflate, x-webkit-deflate-frame"),
            "");
  EXPECT_EQ(StripDeflateOffers("x-foo; a=1, PerMessage-Deflate ;x=1, x-bar"), "x-foo; a=1, x-bar");
  EXPECT_EQ(StripDeflateOffers("x-foo"), "x-foo");
  EXPECT_EQ(StripDeflateOffers(" , ,"), "");
  EXPECT_EQ(StripDeflateOffers("permessage-deflatex"), "permessage-deflatex");
  // The per-frame drafts compress with RSV1 too (Netty still accepts deflate-frame).
  EXPECT_EQ(StripDeflateOffers("Deflate-Frame; no_context_takeover, x-foo, perframe-deflate"),
            "x-foo");
}

TEST(ExtensionsTest, RequireClientNoContextTakeover) {
  EXPECT_EQ(RequireClientNoContextTakeover("HTTP/1.1 101 Switching Protocols\r\n"
                                           "Upgrade: websocket\r\n"
                                           "sec-WebSocket-Extensions: permessage-deflate; "
                                           "server_max_window_bits=12 \r\nX: y\r\n\r\n"),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; "
            "client_no_context_takeover\r\nX: y\r\n\r\n");
  const std::string plain = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
  EXPECT_EQ(RequireClientNoContextTakeover(plain), plain);
  // A field named like it is not it.
  const std::string other = "HTTP/1.1 101 OK\r\nSec-WebSocket-Extensions2: x\r\n\r\n";
  EXPECT_EQ(RequireClientNoContextTakeover(other).find("client_no_context"), std::string::npos);
}

TEST(ExtensionsTest, StripPerFrameDeflateOffersOnly) {
  EXPECT_EQ(StripDeflateOffers("x-webkit-deflate-frame, permessage-deflate; "
                               "client_max_window_bits, deflate-frame, x-foo",
                               true),
            "permessage-deflate; client_max_window_bits, x-foo");
  EXPECT_EQ(StripDeflateOffers("permessage-deflate", true), "permessage-deflate");
  EXPECT_TRUE(IsPerFrameDeflate("X-WebKit-Deflate-Frame"));
  EXPECT_FALSE(IsPerFrameDeflate("permessage-deflate"));
}

}  // namespace
}  // namespace wsgate::http
