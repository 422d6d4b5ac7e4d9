// One outgoing HTTP/1.1 request to a hook (auth, on_disconnect) with libevent's evhttp client.
//
// The owner frees a HookCall — never inside its completion callback (hand it to
// EventLoop::DeferDelete). Freeing it earlier cancels the request without a callback, which is
// how a session that ends during its auth request stays safe.
#pragma once

#include <event2/http.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "proxy/core/event_loop.h"

namespace wsgate {

class HookCall final : public Deferrable {
 public:
  // |response| is null when no answer arrived (refused, reset, timed out).
  using Done = std::function<void(evhttp_request* response)>;

  // Start |method| to |url| with |headers| and |body|. Returns null with |error| set if the
  // request cannot be made at all (bad URL, no memory).
  static std::unique_ptr<HookCall> Start(
      event_base* base, const std::string& url, evhttp_cmd_type method,
      const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body,
      config::Duration timeout, Done done, std::string* error);
  ~HookCall() override;
  HookCall(const HookCall&) = delete;
  HookCall& operator=(const HookCall&) = delete;

  bool finished() const { return finished_; }

 private:
  HookCall() = default;
  static void OnResponse(evhttp_request* response, void* ctx);

  evhttp_connection* connection_ = nullptr;
  Done done_;
  bool finished_ = false;
};

}  // namespace wsgate
