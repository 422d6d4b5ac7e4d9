// Tunnel: kernel splicing of large frame payloads between two direct sockets.
#include <algorithm>
#include <climits>

#include "proxy/tunnel.h"

namespace wsgate {

namespace {

// A data frame's payload goes by splice(2), past user space, once at least this much of it is
// still to come: below it the pipe's extra syscalls cost more than the copies they save.
constexpr uint64_t kSpliceThreshold = 16 * 1024;

}  // namespace

// Kernel splicing. It moves only the tail of a large data frame, once everything before it has
// gone the evbuffer way: the source's input is empty and the sink's output has been written out.
// The frame counts as relayed only as its bytes reach the sink socket, so FramePipe stays off
// its boundary and no close, ping or pushed message can overtake bytes waiting in the pipe.

void Tunnel::MaybeStartSplice(Side from) {
  Peer& source = peer(from);
  Peer& sink = peer(Other(from));
  Endpoint& in = *source.socket;
  Endpoint& out = *sink.socket;
  uint64_t left = pipe_from(from).spliceable_bytes();
  if (left < kSpliceThreshold || source.splice) return;
  if (in.bev || out.bev || !in.direct.open() || !out.direct.open()) return;
  if (source.in == Inbound::kDiscarding || sink.close_sent() || in.direct.input_length() != 0) {
    return;
  }
  out.Flush();
  if (out.output_length() != 0) return;  // its queued bytes go first
  source.splice = TakeSplicePipe();
  if (!source.splice) return;  // all this thread's pipes are busy: stay on the evbuffers
  SpliceMore(from, left);
}

void Tunnel::SpliceMore(Side from, uint64_t frame_left) {
  Peer& source = peer(from);
  SplicePipe& pipe = *source.splice;
  source.socket->direct.SpliceInto(
      pipe.write_fd, static_cast<size_t>(std::min<uint64_t>(frame_left, pipe.capacity)));
}

bool Tunnel::DrainSplice(Side from) {
  Peer& source = peer(from);
  Peer& sink = peer(Other(from));
  DirectSocket& out = sink.socket->direct;
  FramePipe& frames = pipe_from(from);
  SplicePipe& pipe = *source.splice;
  pipe.held += source.socket->direct.TakeSplicedBytes();
  if (source.in == Inbound::kDiscarding || !out.open() || sink.close_sent()) {
    frames.SplicedAndDropped(pipe.held);  // nobody will receive them (the pipe is closed)
    EndSplice(from);
    return true;
  }
  if (from == Side::kClient && pipe.held > 0) NoteClientAlive(std::chrono::steady_clock::now());
  if (pipe.held > 0) {
    size_t moved = out.SpliceFrom(pipe.read_fd, pipe.held);
    if (moved > 0) last_activity_ = std::chrono::steady_clock::now();  // a slow sink is not idle
    pipe.held -= moved;
    frames.SplicedToSink(moved);
    if (pipe.held > 0) {
      // The sink is full: its EV_WRITE is armed, and OnWritable resumes this side.
      source.socket->SetReading(false);
      source.backpressured = true;
      return false;
    }
  }
  uint64_t left = frames.spliceable_bytes();
  if (left == 0) {
    EndSplice(from);  // the frame is delivered; the next header is read as usual
    return true;
  }
  SpliceMore(from, left);
  return true;
}

void Tunnel::SpliceToOutput(Side from) {
  Peer& source = peer(from);
  Peer& sink = peer(Other(from));
  FramePipe& frames = pipe_from(from);
  SplicePipe& pipe = *source.splice;
  pipe.held += source.socket->direct.TakeSplicedBytes();
  if (sink.socket->open() && !sink.close_sent() && source.in != Inbound::kDiscarding) {
    evbuffer* output = sink.socket->output();
    while (pipe.held > 0) {
      int got = evbuffer_read(output, pipe.read_fd,
                              static_cast<int>(std::min<size_t>(pipe.held, INT32_MAX)));
      if (got <= 0) break;
      pipe.held -= static_cast<size_t>(got);
      frames.SplicedToSink(static_cast<size_t>(got));
    }
    sink.socket->Flush();
  }
  frames.SplicedAndDropped(pipe.held);
  EndSplice(from);
}

void Tunnel::EndSplice(Side from) {
  Peer& source = peer(from);
  source.socket->direct.StopSplicing();
  source.splice.reset();  // back to the pool if empty, else closed
}

}  // namespace wsgate
