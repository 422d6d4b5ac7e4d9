#include "proxy/direct_socket.h"

#include <event2/buffer.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace wsgate {
namespace {

// A chain's allocation is rounded up to a power of two including its ~64-byte header, so ask
// for a little less than the power of two wanted.
constexpr size_t kChainOverhead = 128;
// The first read of an event is sized for small messages; only a read that fills it is
// followed by large ones, so an idle-then-chatty connection does not pin 64 KiB.
constexpr size_t kFirstRead = 16 * 1024 - kChainOverhead;
constexpr size_t kLargeRead = 64 * 1024 - kChainOverhead;
// Bound one event's reading so a fast sender cannot starve the loop's other connections.
constexpr size_t kReadBudget = 256 * 1024;

bool WouldBlock(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

// Empty evbuffers this thread's sockets gave back. A socket keeps a buffer only while bytes wait
// in it (HAProxy does the same with its buffers), so idle connections cost none, and a message
// reuses a cached one instead of allocating.
class BufferCache {
 public:
  ~BufferCache() {
    for (evbuffer* buffer : free_) evbuffer_free(buffer);
  }
  evbuffer* Get() {
    if (free_.empty()) return evbuffer_new();
    evbuffer* buffer = free_.back();
    free_.pop_back();
    return buffer;
  }
  void Put(evbuffer* buffer) {
    if (free_.size() < kMaxCached && evbuffer_get_length(buffer) == 0) {
      free_.push_back(buffer);
    } else {
      evbuffer_free(buffer);
    }
  }

 private:
  static constexpr size_t kMaxCached = 256;
  std::vector<evbuffer*> free_;
};

thread_local BufferCache buffer_cache;

}  // namespace

evbuffer* DirectSocket::AcquireBuffer() { return buffer_cache.Get(); }

void DirectSocket::ReleaseBuffer(evbuffer*& buffer) {
  if (buffer == nullptr) return;
  buffer_cache.Put(buffer);
  buffer = nullptr;
}

bool DirectSocket::TakeOver(BufferEventPtr& bev, const Callbacks* callbacks, void* ctx) {
  evutil_socket_t fd = bufferevent_getfd(bev.get());
  if (fd < 0) return false;
  evbuffer* old_input = bufferevent_get_input(bev.get());
  evbuffer* old_output = bufferevent_get_output(bev.get());
  // Buffers only for bytes already waiting; the rest are made when data comes.
  EvBufferPtr input(evbuffer_get_length(old_input) > 0 ? AcquireBuffer() : nullptr);
  EvBufferPtr output(evbuffer_get_length(old_output) > 0 ? AcquireBuffer() : nullptr);
  EventPtr event(event_new(bufferevent_get_base(bev.get()), fd, 0, &OnEventTrampoline, this));
  if ((!input && evbuffer_get_length(old_input) > 0) ||
      (!output && evbuffer_get_length(old_output) > 0) || !event) {
    return false;
  }
  bufferevent_disable(bev.get(), EV_READ | EV_WRITE);
  // A socket bufferevent freezes the front of its output (only it may drain it); it is about to
  // be freed, so take its queued bytes.
  evbuffer_unfreeze(old_output, 1);
  if ((input && evbuffer_add_buffer(input.get(), old_input) != 0) ||
      (output && evbuffer_add_buffer(output.get(), old_output) != 0)) {
    evbuffer_freeze(old_output, 1);
    return false;
  }
  // The fd now belongs to this object: detach it so freeing the bufferevent does not close it.
  bufferevent_setfd(bev.get(), -1);
  bev.reset();
  fd_ = fd;
  input_ = input.release();
  output_ = output.release();
  event_ = std::move(event);
  callbacks_ = callbacks;
  ctx_ = ctx;
  interest_ = 0;
  reading_ = false;
  read_full_ = false;
  want_write_ = false;
  return true;
}

void DirectSocket::SetReadLimit(size_t limit) {
  read_limit_ = limit;
  if (!open()) return;
  read_full_ = over_read_limit();
  UpdateInterest();
}


void DirectSocket::SetReading(bool on) {
  if (!open() || reading_ == on) return;
  reading_ = on;
  UpdateInterest();
}

void DirectSocket::Flush() {
  if (!open() || want_write_ || output_ == nullptr) return;
  // A hard error leaves the bytes queued: the socket then polls writable, and the write in
  // OnWritable() meets the error again and reports it from the event callback.
  if (evbuffer_get_length(output_) > 0) evbuffer_write(output_, fd_);
  if (evbuffer_get_length(output_) > 0) {
    want_write_ = true;
    UpdateInterest();
  } else {
    ReleaseBuffer(output_);
  }
}

void DirectSocket::Close() {
  if (event_) {
    event_del(event_.get());
    event_.reset();
  }
  if (fd_ >= 0) evutil_closesocket(fd_);
  fd_ = -1;
  ReleaseBuffer(input_);
  ReleaseBuffer(output_);
  interest_ = 0;
  reading_ = false;
  read_full_ = false;
  want_write_ = false;
  watch_write_ = false;
}

void DirectSocket::OnEventTrampoline(evutil_socket_t, short what, void* self) {
  auto* socket = static_cast<DirectSocket*>(self);
  if ((what & EV_WRITE) != 0) {
    socket->OnWritable();
    if (!socket->open()) return;
  }
  if ((what & EV_READ) != 0 && socket->reading_) socket->OnReadable();
}

void DirectSocket::OnReadable() {
  size_t total = 0;
  size_t want = kFirstRead;
  bool eof = false;
  bool failed = false;
  evbuffer* input = this->input();
  if (input == nullptr) {
    callbacks_->on_event(ctx_, BEV_EVENT_READING | BEV_EVENT_ERROR);  // out of memory
    return;
  }
  while (total < kReadBudget) {
    size_t buffered = evbuffer_get_length(input);
    if (read_limit_ != 0) {
      if (buffered >= read_limit_) {
        // Level-triggered polling would spin on a full input: stop until it drains.
        read_full_ = true;
        UpdateInterest();
        break;
      }
      want = std::min(want, read_limit_ - buffered);
    }
    evbuffer_iovec space[2];
    int chunks = evbuffer_reserve_space(input, static_cast<ev_ssize_t>(want), space, 2);
    if (chunks <= 0) {
      failed = true;  // out of memory: treat like a broken connection
      break;
    }
    iovec iov[2];
    for (int i = 0; i < chunks; ++i) {
      iov[i].iov_base = space[i].iov_base;
      // Reservations may offer more than asked; read only |want| so the budget holds.
      iov[i].iov_len = std::min(space[i].iov_len, i == 0 ? want : want - iov[0].iov_len);
    }
    ssize_t got = readv(fd_, iov, chunks);
    if (got > 0) {
      size_t left = static_cast<size_t>(got);
      int used = 0;
      for (int i = 0; i < chunks && left > 0; ++i, ++used) {
        space[i].iov_len = std::min(left, iov[i].iov_len);
        left -= space[i].iov_len;
      }
      evbuffer_commit_space(input, space, used);
      total += static_cast<size_t>(got);
      if (static_cast<size_t>(got) < want) break;  // the socket is (almost surely) drained
      want = kLargeRead;
      continue;
    }
    evbuffer_commit_space(input, space, 0);
    if (got == 0) {
      eof = true;
    } else if (!WouldBlock(errno)) {
      failed = true;
    } else if (errno == EINTR) {
      continue;
    }
    break;
  }
  if (total > 0) {
    callbacks_->on_read(ctx_);
    if (!open()) return;
  }
  // While the session holds reading paused (backpressure) the end of the stream waits: it is
  // read again, and reported, once reading resumes and the bytes before it have moved on.
  if ((eof || failed) && reading_) {
    reading_ = false;
    UpdateInterest();
    callbacks_->on_event(ctx_, static_cast<short>(BEV_EVENT_READING |
                                                  (eof ? BEV_EVENT_EOF : BEV_EVENT_ERROR)));
  }
}

void DirectSocket::OnWritable() {
  int written = output_ != nullptr ? evbuffer_write(output_, fd_) : 0;
  if (written < 0 && !WouldBlock(errno)) {
    want_write_ = false;
    reading_ = false;
    UpdateInterest();
    callbacks_->on_event(ctx_, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
    return;
  }
  size_t left = output_length();
  if (left == 0) {
    want_write_ = false;
    UpdateInterest();
    ReleaseBuffer(output_);
  }
  if (watch_write_ && left <= write_low_) callbacks_->on_write(ctx_);
}

void DirectSocket::UpdateInterest() {
  short wanted =
      static_cast<short>((reading_ && !read_full_ ? EV_READ : 0) | (want_write_ ? EV_WRITE : 0));
  if (wanted == interest_ || !event_) return;
  event_base* base = event_get_base(event_.get());
  event_del(event_.get());
  interest_ = wanted;
  if (wanted == 0) return;
  event_assign(event_.get(), base, fd_, static_cast<short>(wanted | EV_PERSIST),
               &OnEventTrampoline, this);
  event_add(event_.get(), nullptr);
}

}  // namespace wsgate
