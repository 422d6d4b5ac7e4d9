#include "proxy/lingering_close.h"

#include "proxy/core/event_loop.h"
#include "proxy/core/guarded_callback.h"

namespace wsgate {

void LingeringClose::Start(event_base* base, config::Duration limit) {
  evbuffer* input = client_.input();
  evbuffer_drain(input, evbuffer_get_length(input));
  client_.SetReadLimit(0);
  client_.SetReading(true);
  client_.CloseAfterFlush(/*linger=*/true);
  timer_.reset(evtimer_new(base, &Guarded<&LingeringClose::End>::OnTimer, this));
  if (timer_) {  // without one (out of memory), TCP alone bounds the wait
    timeval tv = ToTimeval(limit);
    evtimer_add(timer_.get(), &tv);
  }
  if (client_.output_length() == 0) OnWritable();
}

void LingeringClose::Stop() {
  ended_ = true;
  if (timer_) event_del(timer_.get());
}

void LingeringClose::OnRead() {
  evbuffer* input = client_.input();
  evbuffer_drain(input, evbuffer_get_length(input));
}

void LingeringClose::OnWritable() {
  if (ended_ || !client_.flushing_to_close()) return;
  if (client_.ContinueEnding() == Endpoint::FlushStep::kClosed) End();
}

void LingeringClose::OnEvent(short what) {
  if (ended_) return;
  if ((what & BEV_EVENT_EOF) != 0 && client_.flushing_to_close() && client_.output_length() != 0) {
    // The client only half-closed: its answer still goes out, then the socket closes (nothing
    // is left to read, so no lingering after the flush).
    client_.SkipLinger();
    client_.SetReading(false);
    return;
  }
  End();
}

void LingeringClose::End() {
  Stop();
  owner_.OnLingerEnded();
}

}  // namespace wsgate
