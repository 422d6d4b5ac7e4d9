#include "proxy/direct_socket.h"

#include <event2/buffer.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

// Large enough that a 256 KiB read budget needs few round trips through it; the kernel may
// refuse (pipe-user-pages-soft), and then the default 64 KiB serves.
constexpr int kSplicePipeSize = 256 * 1024;

std::atomic<uint64_t> next_pipe_pool_id{1};

// This thread's splice pipes. Sessions left at shutdown are freed on another thread; their
// pipes are then closed, not pooled (the owner id tells).
class SplicePipePool {
 public:
  ~SplicePipePool() {
    for (SplicePipe* pipe : free_) Destroy(pipe);
  }
  SplicePipe* Take() {
    if (!free_.empty()) {
      SplicePipe* pipe = free_.back();
      free_.pop_back();
      return pipe;
    }
    if (created_ >= kMaxSplicePipesPerThread) return nullptr;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return nullptr;
    fcntl(fds[1], F_SETPIPE_SZ, kSplicePipeSize);
    int capacity = fcntl(fds[1], F_GETPIPE_SZ);
    auto* pipe = new SplicePipe;
    pipe->read_fd = fds[0];
    pipe->write_fd = fds[1];
    pipe->capacity = capacity > 0 ? static_cast<size_t>(capacity) : 64 * 1024;
    pipe->owner = id_;
    ++created_;
    return pipe;
  }
  void Return(SplicePipe* pipe) {
    if (pipe->owner != id_) {
      Destroy(pipe);
      return;
    }
    if (pipe->held == 0 && free_.size() < kMaxSplicePipesPerThread) {
      free_.push_back(pipe);
      return;
    }
    Destroy(pipe);  // bytes of a frame nobody will receive: cheaper to close than to drain
    --created_;
  }

 private:
  static void Destroy(SplicePipe* pipe) {
    close(pipe->read_fd);
    close(pipe->write_fd);
    delete pipe;
  }
  uint64_t id_ = next_pipe_pool_id.fetch_add(1, std::memory_order_relaxed);
  size_t created_ = 0;  // in use or free
  std::vector<SplicePipe*> free_;
};

thread_local SplicePipePool splice_pipe_pool;

}  // namespace

void SplicePipeReturn::operator()(SplicePipe* pipe) const { splice_pipe_pool.Return(pipe); }

SplicePipePtr TakeSplicePipe() { return SplicePipePtr(splice_pipe_pool.Take()); }

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

bool DirectSocket::AdoptConnecting(event_base* base, evutil_socket_t fd, const Callbacks* callbacks,
                                   void* ctx) {
  Close();
  EventPtr event(event_new(base, fd, 0, &OnEventTrampoline, this));
  if (!event) {
    evutil_closesocket(fd);
    return false;
  }
  fd_ = fd;
  event_ = std::move(event);
  callbacks_ = callbacks;
  ctx_ = ctx;
  connecting_ = true;
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
  if (evbuffer_get_length(output_) > 0 && evbuffer_write(output_, fd_) > 0) connecting_ = false;
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
  if (fd_ >= 0) {
    evutil_closesocket(fd_);
    ++closes_;
  }
  fd_ = -1;
  connecting_ = false;
  ReleaseBuffer(input_);
  ReleaseBuffer(output_);
  interest_ = 0;
  reading_ = false;
  read_full_ = false;
  want_write_ = false;
  watch_write_ = false;
  write_failed_ = false;
  StopSplicing();
  spliced_ = 0;
}

void DirectSocket::OnEventTrampoline(evutil_socket_t, short what, void* self) {
  auto* socket = static_cast<DirectSocket*>(self);
  if ((what & EV_WRITE) != 0) {
    uint32_t epoch = socket->closes_;
    socket->OnWritable();
    if (socket->ClosedSince(epoch)) return;
  }
  if ((what & EV_READ) != 0 && socket->reading_) socket->OnReadable();
}

void DirectSocket::SpliceInto(int pipe_write_fd, size_t limit) {
  if (splice_fd_ != pipe_write_fd) spliced_ = 0;
  splice_fd_ = pipe_write_fd;
  splice_limit_ = static_cast<uint32_t>(std::min<size_t>(limit, UINT32_MAX));
}

size_t DirectSocket::SpliceFrom(int pipe_read_fd, size_t n) {
  if (!open() || want_write_) return 0;
  size_t moved = 0;
  while (moved < n) {
    ssize_t got =
        splice(pipe_read_fd, nullptr, fd_, nullptr, n - moved, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (got > 0) {
      moved += static_cast<size_t>(got);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    // Full, or failed: either way wait for EV_WRITE, where a failure is reported like a
    // failed write.
    if (got < 0 && !WouldBlock(errno)) write_failed_ = true;
    want_write_ = true;
    UpdateInterest();
    break;
  }
  return moved;
}

void DirectSocket::OnSpliceReadable(size_t total) {
  bool eof = false;
  bool failed = false;
  const uint32_t epoch = closes_;
  while (total < kReadBudget && splice_fd_ >= 0 && splice_limit_ > 0) {
    size_t want = std::min<size_t>(splice_limit_, kReadBudget - total);
    ssize_t got =
        splice(fd_, nullptr, splice_fd_, nullptr, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (got > 0) {
      total += static_cast<size_t>(got);
      splice_limit_ -= static_cast<uint32_t>(got);
      spliced_ += static_cast<uint32_t>(got);
      // The session moves the bytes on and sets the next limit (or pauses reading).
      callbacks_->on_read(ctx_);
      if (ClosedSince(epoch)) return;
      if (!reading_) break;
      continue;
    }
    if (got == 0) {
      eof = true;
    } else if (errno == EINTR) {
      continue;
    } else if (!WouldBlock(errno)) {
      failed = true;
    }
    // EAGAIN: the socket is drained (the pipe cannot be full: the limit is its free space).
    break;
  }
  ReportEndOfInput(eof, failed);
}

void DirectSocket::ReportEndOfInput(bool eof, bool failed) {
  // While the session holds reading paused (backpressure) the end of the stream waits: it is
  // read again, and reported, once reading resumes and the bytes before it have moved on.
  if ((eof || failed) && reading_) {
    reading_ = false;
    UpdateInterest();
    callbacks_->on_event(
        ctx_, static_cast<short>(BEV_EVENT_READING | (eof ? BEV_EVENT_EOF : BEV_EVENT_ERROR)));
  }
}

void DirectSocket::OnReadable() {
  if (splice_fd_ >= 0) {  // never read past the pipe's bytes into input()
    OnSpliceReadable(0);
    return;
  }
  size_t total = 0;
  size_t reported = 0;  // of |total|, bytes on_read has seen
  size_t want = kFirstRead;
  bool eof = false;
  bool failed = false;
  const uint32_t epoch = closes_;
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
      if (want == kFirstRead) {
        // A full first read may be the head of a large frame: let the session look before
        // reading on, so the rest of its payload can go by splice instead.
        callbacks_->on_read(ctx_);
        if (ClosedSince(epoch)) return;
        reported = total;
        if (splice_fd_ >= 0) {
          OnSpliceReadable(total);
          return;
        }
        if (!reading_) break;
        input = this->input();  // the session may have handed an emptied one back
        if (input == nullptr) {
          failed = true;
          break;
        }
      }
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
  if (total > reported) {
    callbacks_->on_read(ctx_);
    if (ClosedSince(epoch)) return;
  }
  // A read that found nothing leaves its reserved chain in the buffer: free both rather than
  // keep (or cache) an idle buffer holding up to 64 KiB.
  if (input_ != nullptr && evbuffer_get_length(input_) == 0) {
    evbuffer_free(input_);
    input_ = nullptr;
  }
  ReportEndOfInput(eof, failed);
}

void DirectSocket::OnWritable() {
  int written = output_ != nullptr ? evbuffer_write(output_, fd_) : 0;
  if (write_failed_ || (written < 0 && !WouldBlock(errno))) {
    write_failed_ = false;
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
  if (connecting_ && written > 0) {
    connecting_ = false;
    uint32_t epoch = closes_;
    callbacks_->on_event(ctx_, BEV_EVENT_CONNECTED);
    if (ClosedSince(epoch)) return;
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
  event_assign(event_.get(), base, fd_, static_cast<short>(wanted | EV_PERSIST), &OnEventTrampoline,
               this);
  event_add(event_.get(), nullptr);
}

}  // namespace wsgate
