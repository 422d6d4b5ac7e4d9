#include "proxy/tls/ticket_keys.h"

#include <openssl/rand.h>

#include <cstring>

namespace wsgate::tls {

bool TicketKeyRing::Current(Clock::time_point now, TicketKey* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  RotateIfDue(now);
  if (!valid_) return false;
  *out = current_;
  return true;
}

bool TicketKeyRing::Find(const unsigned char* name, Clock::time_point now, TicketKey* out,
                         bool* renew) {
  std::lock_guard<std::mutex> lock(mutex_);
  RotateIfDue(now);
  if (valid_ && std::memcmp(name, current_.name, sizeof(current_.name)) == 0) {
    *out = current_;
    *renew = false;
    return true;
  }
  if (has_previous_ && std::memcmp(name, previous_.name, sizeof(previous_.name)) == 0) {
    *out = previous_;
    *renew = true;
    return true;
  }
  return false;
}

void TicketKeyRing::RotateIfDue(Clock::time_point now) {
  const auto age = now - current_.created;
  if (valid_ && age < kRotation) return;
  // The outgoing key keeps decrypting only while it is younger than two rotations.
  has_previous_ = valid_ && age < 2 * kRotation;
  if (has_previous_) previous_ = current_;
  current_.created = now;
  valid_ = RAND_bytes(current_.name, sizeof(current_.name)) == 1 &&
           RAND_bytes(current_.aes, sizeof(current_.aes)) == 1 &&
           RAND_bytes(current_.hmac, sizeof(current_.hmac)) == 1;
}

TicketKeyRing& TicketKeyRing::Process() {
  static TicketKeyRing ring;
  return ring;
}

}  // namespace wsgate::tls
