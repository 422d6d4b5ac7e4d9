#include "proxy/push_queue.h"

#include "proxy/ws/frame.h"

namespace wsgate {

bool PushQueue::Add(evbuffer* payload, bool text) {
  size_t length = evbuffer_get_length(payload);
  uint8_t header[10];
  size_t header_length = 2;
  header[0] = static_cast<uint8_t>(0x80 | (text ? ws::kText : ws::kBinary));
  if (length < 126) {
    header[1] = static_cast<uint8_t>(length);
  } else if (length <= 0xFFFF) {
    header[1] = 126;
    header[2] = static_cast<uint8_t>(length >> 8);
    header[3] = static_cast<uint8_t>(length);
    header_length = 4;
  } else {
    header[1] = 127;
    for (int i = 0; i < 8; ++i) {
      header[2 + i] = static_cast<uint8_t>(uint64_t{length} >> (56 - 8 * i));
    }
    header_length = 10;
  }
  if (!frames_) frames_.reset(evbuffer_new());
  if (!frames_) return false;
  evbuffer_add(frames_.get(), header, header_length);
  evbuffer_add_buffer(frames_.get(), payload);
  ++messages_;
  bytes_ += header_length + length;
  return true;
}

}  // namespace wsgate
