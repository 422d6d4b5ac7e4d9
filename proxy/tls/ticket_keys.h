// Session-ticket keys that rotate. OpenSSL makes one ticket key per SSL_CTX and never changes it,
// so wsgate keeps its own: a process-wide ring shared by every TLS listener and kept across
// reloads (a reload does not invalidate tickets). A key encrypts new tickets for kRotation, then
// only decrypts them (asking for a renewed ticket) for another kRotation, then is forgotten.
// Tickets are valid for kRotation, so none outlives its key. Keys never leave memory.
#pragma once

#include <chrono>
#include <mutex>

namespace wsgate::tls {

struct TicketKey {
  unsigned char name[16];
  unsigned char aes[32];   // AES-256-CBC key for the ticket
  unsigned char hmac[32];  // HMAC-SHA256 key for the ticket
  std::chrono::steady_clock::time_point created;
};

class TicketKeyRing {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kRotation{3600};

  // The key for new tickets at |now|, rotating first if it is due. False if no random key could
  // be made (then no ticket is issued).
  bool Current(Clock::time_point now, TicketKey* out);
  // The key named |name| at |now|; |renew| when it only decrypts (the client gets a new ticket).
  bool Find(const unsigned char* name, Clock::time_point now, TicketKey* out, bool* renew);

  // The ring every TLS listener uses.
  static TicketKeyRing& Process();

 private:
  void RotateIfDue(Clock::time_point now);

  std::mutex mutex_;  // handshakes on several worker threads
  bool valid_ = false;
  bool has_previous_ = false;
  TicketKey current_{};
  TicketKey previous_{};
};

}  // namespace wsgate::tls
