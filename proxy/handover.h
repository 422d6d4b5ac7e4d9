// Zero-downtime binary upgrade: hand the listening sockets from a running wsgate to a new one.
//
// The running process (started with --handover-socket PATH) listens on a Unix socket. A new
// process started with --takeover PATH connects before binding anything, receives the listening
// sockets by name over SCM_RIGHTS, starts accepting on them, and then says READY. Both share
// the same kernel sockets and accept queues, so no connection attempt is refused at any point.
// On READY the old process stops accepting and drains its connections; the new process takes
// over PATH for the next upgrade.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/core/libevent_ptr.h"

namespace wsgate {

// New-process side. Blocking; runs before the event loop starts.
class TakeoverClient {
 public:
  // Connect to |path| and receive the listening sockets. Returns null with |error| set on failure.
  static std::unique_ptr<TakeoverClient> Connect(const std::string& path, std::string* error);
  ~TakeoverClient();

  // Listener name → listening socket received from the old process (ownership moves to caller
  // on Take(); unclaimed sockets are closed in the destructor).
  int Take(const std::string& name);
  // Tell the old process to stop accepting and drain; wait for its acknowledgement.
  bool SendReady(std::string* error);

 private:
  TakeoverClient() = default;
  int fd_ = -1;
  std::map<std::string, int> sockets_;
};

// Old-process side: serves takeover requests on the event loop.
class HandoverServer {
 public:
  struct Callbacks {
    // Name and fd of every listening socket to hand over.
    virtual std::vector<std::pair<std::string, int>> ListenerSockets() = 0;
    // The new process is accepting: stop accepting and drain.
    virtual void OnHandedOver() = 0;
    virtual ~Callbacks() = default;
  };

  static std::unique_ptr<HandoverServer> Create(event_base* base, const std::string& path,
                                                Callbacks& callbacks, std::string* error);
  ~HandoverServer();

 private:
  HandoverServer(Callbacks& callbacks) : callbacks_(callbacks) {}
  static void OnAccept(evutil_socket_t fd, short, void* ctx);
  static void OnPeerReadable(evutil_socket_t fd, short, void* ctx);
  void ClosePeer();

  Callbacks& callbacks_;
  std::string path_;
  int listen_fd_ = -1;
  int peer_fd_ = -1;
  EventPtr accept_event_;
  EventPtr peer_event_;
};

}  // namespace wsgate
