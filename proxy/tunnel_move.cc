// Tunnel: moving the backend side to another backend while the client stays connected
// (pools[].migrate). The order that keeps every message whole, once, and in order:
//   1. BeginMove: the client's messages are held from the next message boundary on.
//   2. ReplaceBackend: the new backend has upgraded. Once held, the old backend gets close 1001
//      after the last client message meant for it (RetireOldBackend); whatever it sends until
//      its close reply still reaches the client, and the reply itself is swallowed.
//   3. SwapBackend: the old backend is done (its reply, its loss, or timeouts.close); the backend
//      side becomes the new endpoint and the held messages flow to it.
// Each step runs from the move's own event (OnMoveStep), never inside a pump or another
// object's callback, so no step re-enters the relay or the owner.
#include "proxy/core/event_loop.h"
#include "proxy/core/guarded_callback.h"
#include "proxy/core/log.h"
#include "proxy/tunnel.h"

namespace wsgate {

bool Tunnel::BeginMove() {
  if (ended_ || closing_ || move_) return false;
  move_ = std::make_unique<Move>();
  move_->step.reset(event_new(base_, -1, 0, &Guarded<&Tunnel::OnMoveStep>::OnTimer, this));
  if (!move_->step) {
    move_.reset();
    return false;
  }
  client_to_backend_.StopAtMessageBoundary();
  // Already between two messages: nothing more goes to the old backend.
  if (client_to_backend_.at_message_boundary()) OnClientHeld();
  return true;
}

void Tunnel::ReplaceBackend(Endpoint& next) {
  if (!move_) return;
  move_->next = &next;
  // A client message still going to the old backend must end within timeouts.close.
  move_->retire_deadline = std::chrono::steady_clock::now() + config_.timeouts.close;
  ScheduleMoveStep();
}

void Tunnel::CancelMove(bool end_session) {
  if (!move_) return;
  move_->cancelled = true;
  move_->end_session = end_session;
  ScheduleMoveStep();
}

void Tunnel::ScheduleMoveStep() {
  if (move_) event_active(move_->step.get(), EV_TIMEOUT, 0);
}

void Tunnel::OnClientHeld() {
  if (move_->held) return;
  move_->held = true;
  move_->held_since = std::chrono::steady_clock::now();
  ScheduleMoveStep();
}

void Tunnel::OnMoveStep() {
  if (!move_) return;
  Move& move = *move_;
  if (move.cancelled) {
    EndFailedMove(move.end_session);
    return;
  }
  if (move.next == nullptr) return;  // waiting for the 101
  auto now = std::chrono::steady_clock::now();
  if (!move.held) {
    // Waiting for the client's message in progress to end, at most timeouts.close (the old
    // backend may have stopped reading it): then the move fails and the session ends as usual.
    if (now >= move.retire_deadline) return EndFailedMove(/*end_session=*/true);
    ArmMoveStep(move.retire_deadline - now);
    return;
  }
  if (!move.retired) RetireOldBackend();
  if (!move.old_done && now >= move.retire_deadline) {
    // No close reply in time: what it sent is relayed (ignoring the watermark), then it goes.
    flush_all_ = true;
    Pump(Side::kBackend);
    flush_all_ = false;
    if (ended_ || !move_) return;
    CloseSocket(Side::kBackend);
    move.old_done = true;
  }
  if (!move.old_done) {
    ArmMoveStep(move.retire_deadline - now);
    return;
  }
  SwapBackend();
}

void Tunnel::ArmMoveStep(std::chrono::steady_clock::duration after) {
  timeval wait =
      ToTimeval(std::chrono::duration_cast<config::Duration>(after) + config::Duration(1));
  evtimer_add(move_->step.get(), &wait);
}

void Tunnel::RetireOldBackend() {
  Move& move = *move_;
  move.retired = true;
  move.retire_deadline = std::chrono::steady_clock::now() + config_.timeouts.close;  // its reply
  Peer& old = backend_;
  if (!old.socket->open()) {
    move.old_done = true;
    return;
  }
  backend_to_client_.SwallowClose();
  if (old.out == Outbound::kOpen) WriteClose(Side::kBackend, ws::kGoingAway, "session moved");
}

void Tunnel::SwapBackend() {
  if (backend_.socket->open()) CloseSocket(Side::kBackend);
  if (!backend_to_client_.at_message_boundary()) {
    // The old backend left inside a message to the client: the rest can never come, so the
    // session ends as a lost backend does (the owner counts the move as aborted).
    close_.Decide(ws::kBadGateway, ClosedBy::kBackend, "backend left inside a message");
    DropMove();
    if (backend_to_client_.at_boundary()) {
      InsertClose(Side::kClient, ws::kBadGateway, "backend went away");
    } else {
      closing_ = true;
      StartClosingTimer();
      CloseAfterFlush(Side::kClient);
    }
    return;
  }
  auto pause = std::chrono::steady_clock::now() - move_->held_since;
  backend_ = Peer(*move_->next);
  client_to_backend_.ContinueWithNewPeer();
  backend_to_client_.ContinueWithNewPeer();
  std::unique_ptr<CloseDecision> deferred = std::move(move_->deferred_close);
  move_.reset();
  Attach(Side::kBackend);
  if (client_.backpressured) {
    // Paused for the old backend's full output: the new one has room, and no write event of
    // the old one will ever resume it.
    client_.backpressured = false;
    if (!client_.throttled) client_.socket->SetReading(true);
  }
  owner_.OnBackendReplaced(pause);
  if (ended_) return;
  // The new backend may have spoken first; then the held client messages go to it.
  Pump(Side::kBackend);
  if (!ended_) Pump(Side::kClient);
  if (ended_ || !deferred) return;
  if (deferred->by == ClosedBy::kApi) {
    (void)CloseByApi(deferred->code, deferred->reason);
  } else {
    GoAway(deferred->code, deferred->reason);
  }
}

void Tunnel::EndFailedMove(bool end_session) {
  bool old_usable = backend_.socket->open() && backend_.out == Outbound::kOpen;
  DropMove();
  if (old_usable && end_session) {
    // As without moving: the held messages go to the old backend, then the client is told to
    // reconnect.
    GoAway(ws::kServiceRestart, "could not move to another backend");
  } else if (old_usable) {
    Pump(Side::kClient);  // the held messages go to the old backend, which carries on
  } else if (!closing_) {
    close_.Decide(ws::kBadGateway, ClosedBy::kBackend, "backend went away");
    if (backend_.socket->open()) CloseSocket(Side::kBackend);
    InsertClose(Side::kClient, ws::kBadGateway, "backend went away");
  }
}

void Tunnel::DropMove() {
  // Freed here, possibly from its own event's callback: libevent allows that for an event
  // that is not persistent. The client pipe's pending stop at a message boundary is harmless:
  // it takes effect once and the pump carries on (Pump flushes pushes only for the backend's).
  move_.reset();
}

}  // namespace wsgate
