// What the connections API asks of the fleet (docs/fleet.md) when a connection is not local
// or an operation addresses every instance. Implemented by cluster/Fleet; null without a
// `cluster` section. Every call and every callback runs on the main thread.
#pragma once

#include <event2/buffer.h>
#include <event2/http.h>

#include <functional>
#include <memory>
#include <string>

#include "proxy/connections/group_op.h"

namespace wsgate {

class FleetLink {
 public:
  enum class Owner { kUnknown, kClosed, kDead, kAlive, kUnavailable };
  struct OwnerAnswer {
    Owner owner = Owner::kUnavailable;
    std::string instance;
    std::string url;  // kAlive: the owner's advertised admin URL
  };
  struct Reply {
    int status = 0;  // 0: no answer (refused, reset, timed out)
    std::string body;
  };

  virtual const std::string& instance() const = 0;
  virtual void FindOwner(const std::string& id, std::function<void(OwnerAnswer)> done) = 0;
  // Send the admin request |method| |target| (path and query) with |body| to the instance at
  // |url|, marked as forwarded so it is never forwarded again.
  virtual void Forward(const std::string& url, evhttp_cmd_type method, const std::string& target,
                       const std::string& content_type, std::shared_ptr<evbuffer> body,
                       std::function<void(Reply)> done) = 0;
  // Publish |op| to every instance, this one included; |done| gets how many received it, or
  // -1 when Redis cannot be reached.
  virtual void Publish(const GroupOp& op, std::function<void(long instances)> done) = 0;
  // |user|'s connections on every live instance, or -1 when Redis cannot be reached.
  virtual void CountUser(const std::string& user, std::function<void(long count)> done) = 0;

 protected:
  ~FleetLink() = default;
};

// The header a forwarded admin request carries (the forwarding instance's name).
inline constexpr const char* kForwardedHeader = "X-Wsgate-Forwarded-By";

}  // namespace wsgate
