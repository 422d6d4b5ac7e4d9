// Messages from the connections API: whole frames waiting for a message boundary towards the
// client. Filled during the upgrade too (sent right after the 101), then owned by the Tunnel.
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>

#include "proxy/access_log.h"
#include "proxy/core/libevent_ptr.h"

namespace wsgate {

class PushQueue {
 public:
  // Frame |payload| (moved out) as one unfragmented text or binary message. False when out of
  // memory.
  bool Add(evbuffer* payload, bool text);
  size_t queued_bytes() const { return frames_ ? evbuffer_get_length(frames_.get()) : 0; }
  // Append every queued frame to |out|.
  void MoveTo(evbuffer* out) {
    if (frames_) evbuffer_add_buffer(out, frames_.get());
  }
  bool empty() const { return queued_bytes() == 0; }
  uint64_t messages() const { return messages_; }  // ever queued
  uint64_t bytes() const { return bytes_; }
  // Into an access record (for pushes that never reached a tunnel).
  void Describe(AccessRecord& record) const {
    record.bytes_out = bytes_;
    record.messages_out = record.messages_pushed = messages_;
  }

 private:
  EvBufferPtr frames_;
  uint64_t messages_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace wsgate
