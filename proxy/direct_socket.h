// A spliced plain-TCP socket driven by one event, without a bufferevent.
//
// libevent 2.1's socket bufferevent reads at most 4 KiB per event (after a FIONREAD ioctl) and
// only writes on the loop pass after data was queued, arming and disarming EV_WRITE each time.
// Once a session is spliced, the frame splicer needs nothing else from a bufferevent, so a plain
// socket is handed over here: reads go straight into the input evbuffer's chains (up to 64 KiB a
// syscall), queued output is written at once, and EV_WRITE is armed only after a short write.
// Payload bytes stay in evbuffer chains; nothing is copied in user space. TLS stays on
// bufferevent_openssl.
//
// A backend connection can also start here (AdoptConnecting): then the handshake runs on it too,
// and the upgrade request is written speculatively right after connect(), as a nearby backend has
// usually completed the TCP handshake by then. That spares the bufferevent's EPOLLOUT round trip,
// its SO_ERROR query and its FIONREAD ioctl.
//
// The callbacks mirror bufferevent's (read, write below the low watermark, and EOF/error events
// with BEV_EVENT_* flags, plus BEV_EVENT_CONNECTED), so the session's trampolines serve both.
// They may Close() this socket, and even adopt a new connection in it; DirectSocket never touches
// itself after a callback that did.
#pragma once

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "proxy/core/libevent_ptr.h"

namespace wsgate {

// A kernel pipe that large frame payloads pass through between two sockets with splice(2), so
// they are never copied to user space. Pipes come from a small per-thread pool.
struct SplicePipe {
  int read_fd = -1;
  int write_fd = -1;
  size_t capacity = 0;
  size_t held = 0;     // bytes spliced in and not yet out
  uint64_t owner = 0;  // the pool (thread) it came from
};
// At most this many pipes (2 descriptors each) per thread; beyond that frames use the evbuffers.
constexpr size_t kMaxSplicePipesPerThread = 16;
struct SplicePipeReturn {
  void operator()(SplicePipe* pipe) const;  // back to the pool if empty, else closed
};
using SplicePipePtr = std::unique_ptr<SplicePipe, SplicePipeReturn>;
// An empty pipe from this thread's pool, or null when all are in use (or pipe2 fails).
SplicePipePtr TakeSplicePipe();

class DirectSocket {
 public:
  struct Callbacks {
    void (*on_read)(void* ctx);
    void (*on_write)(void* ctx);
    void (*on_event)(void* ctx, short what);  // BEV_EVENT_EOF / BEV_EVENT_ERROR | READING/WRITING
  };

  DirectSocket() = default;
  ~DirectSocket() { Close(); }
  DirectSocket(const DirectSocket&) = delete;
  DirectSocket& operator=(const DirectSocket&) = delete;

  // Take |bev|'s socket and buffered bytes (moved, not copied), then free |bev|. On allocation
  // failure returns false and leaves |bev| as it was. Reading starts disabled.
  bool TakeOver(BufferEventPtr& bev, const Callbacks* callbacks, void* ctx);
  // Drive |fd|, a socket whose non-blocking connect() is under way (StartConnectSocket). Returns
  // false (and closes |fd|) if out of memory. Until the first write succeeds the socket is
  // connecting(): queue bytes and Flush(); success is reported as on_event(BEV_EVENT_CONNECTED)
  // if the first try would have blocked, and failure as a write error, from the event callback.
  bool AdoptConnecting(event_base* base, evutil_socket_t fd, const Callbacks* callbacks, void* ctx);
  bool connecting() const { return connecting_; }
  // Hand the callbacks to a new owner (the socket's next stage); safe inside a callback.
  void SetCallbacks(const Callbacks* callbacks, void* ctx) {
    callbacks_ = callbacks;
    ctx_ = ctx;
  }

  bool open() const { return fd_ >= 0; }
  evutil_socket_t fd() const { return fd_; }
  // The buffers exist only while bytes wait in them: an empty one goes back to a per-thread
  // cache (Flush, InputConsumed), so an idle connection holds no evbuffer. These make one on
  // demand; the *_length() forms never do.
  evbuffer* input() { return input_ ? input_ : (input_ = AcquireBuffer()); }
  evbuffer* output() { return output_ ? output_ : (output_ = AcquireBuffer()); }
  size_t input_length() const { return input_ ? evbuffer_get_length(input_) : 0; }
  size_t output_length() const { return output_ ? evbuffer_get_length(output_) : 0; }
  bool holds_buffers() const { return input_ != nullptr || output_ != nullptr; }

  void SetReading(bool on);
  // Stop reading while the input holds |limit| bytes or more (0 = no limit).
  void SetReadLimit(size_t limit);
  // Call after taking bytes from input(): polling resumes once it is below the read limit.
  // (An evbuffer callback would do this by itself, but costs ~7 % of the relay's instructions.)
  void InputConsumed() {
    if (read_full_ && !over_read_limit()) {
      read_full_ = false;
      UpdateInterest();
    }
    if (input_ != nullptr && evbuffer_get_length(input_) == 0) ReleaseBuffer(input_);
  }
  // on_write fires after a write leaves at most |low| bytes queued.
  void WatchWritable(size_t low) {
    watch_write_ = true;
    write_low_ = static_cast<uint32_t>(std::min<size_t>(low, UINT32_MAX));
  }
  // Write what is queued now; what the kernel does not take waits for EV_WRITE. Never calls
  // back: a failed write is reported from the event callback on the next loop pass.
  void Flush();
  // Safe inside this socket's own callbacks.
  void Close();

  // Splicing. While a limit is set, readable events move up to |limit| bytes from the socket
  // into |pipe_write_fd| (no more than the read budget per event) instead of into input(), and
  // on_read fires after each move. EOF and errors are reported as for reads. Call again to set
  // a new limit; StopSplicing() goes back to reading into input().
  void SpliceInto(int pipe_write_fd, size_t limit);
  void StopSplicing() {
    splice_fd_ = -1;
    splice_limit_ = 0;
  }
  // Bytes spliced into the pipe since the last call.
  size_t TakeSplicedBytes() {
    size_t n = spliced_;
    spliced_ = 0;
    return n;
  }
  // Move up to |n| bytes from |pipe_read_fd| to the socket; the output must be empty. Returns
  // the bytes moved. When the socket takes fewer, EV_WRITE is armed: on_write follows once it
  // is writable (or on_event, from the event callback, if the socket failed).
  size_t SpliceFrom(int pipe_read_fd, size_t n);

 private:
  static void OnEventTrampoline(evutil_socket_t, short what, void* self);
  // True once the socket was closed (and perhaps reopened) since |epoch| = closes_ was read: a
  // callback did it, so nothing of the old connection may be touched.
  bool ClosedSince(uint32_t epoch) const { return closes_ != epoch; }
  void OnReadable();
  void OnSpliceReadable(size_t total);  // |total|: bytes this event already read
  void ReportEndOfInput(bool eof, bool failed);
  void OnWritable();
  void UpdateInterest();
  bool over_read_limit() const { return read_limit_ != 0 && input_length() >= read_limit_; }
  static evbuffer* AcquireBuffer();
  // Hand |buffer| back (cached if empty, else freed) and clear the pointer.
  static void ReleaseBuffer(evbuffer*& buffer);

  evutil_socket_t fd_ = -1;
  int splice_fd_ = -1;          // the pipe reads go to while splicing (fills fd_'s padding)
  evbuffer* input_ = nullptr;   // owned; see input()
  evbuffer* output_ = nullptr;  // owned
  EventPtr event_;
  const Callbacks* callbacks_ = nullptr;
  void* ctx_ = nullptr;
  size_t read_limit_ = 0;
  uint32_t splice_limit_ = 0;  // bytes still to splice into the pipe (≤ its capacity)
  uint32_t spliced_ = 0;       // see TakeSplicedBytes()
  uint32_t write_low_ = 0;
  uint32_t closes_ = 0;     // Close() calls; see ClosedSince()
  short interest_ = 0;      // what event_ is registered for
  bool reading_ = false;    // the session wants input
  bool read_full_ = false;  // ...but the input is at its limit, so the fd is not polled
  bool want_write_ = false;
  bool watch_write_ = false;
  bool write_failed_ = false;  // a splice to the socket failed; reported on EV_WRITE
  bool connecting_ = false;    // adopted while connecting, no byte written yet
};
static_assert(sizeof(DirectSocket) <= 80, "two per idle connection: keep it small");

}  // namespace wsgate
