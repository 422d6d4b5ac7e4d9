// Session's part in moving to another backend (pools[].migrate), kept apart from session.cc:
// the BackendMove makes the new backend's connection, the Tunnel keeps the messages whole and
// in order (tunnel_move.cc), and the session sequences the two, holds the backend lease and
// counts the outcome.
#include "proxy/core/log.h"
#include "proxy/session.h"

namespace wsgate {

void Session::KeepForMoves(const http::UpstreamVerdict& negotiated) {
  resume_ = std::make_unique<Resume>();
  resume_->request = std::move(handshake_->resume_request);
  resume_->expected_accept = std::move(handshake_->resume_accept);
  resume_->terms = ResumeTerms::Of(negotiated, subprotocol_);
}

bool Session::Migrate(metrics::MigrationReason reason) {
  if (state_ != State::kSpliced || going_away_ || !resume_ || resume_->move || tunnel_->closing()) {
    return false;
  }
  if (!resume_->terms.movable()) {
    if (!resume_->unsupported_counted) meters_.CountMove(reason, metrics::kMoveUnsupported);
    resume_->unsupported_counted = true;
    return false;
  }
  if (!tunnel_->BeginMove()) return false;
  Endpoint& target = resume_->on_other ? backend_ : resume_->other;
  resume_->move =
      std::make_unique<BackendMove>(static_cast<BackendMoveOwner&>(*this), context_.loop.base(),
                                    context_.current, context_.metrics, reason, client_, target,
                                    resume_->request, resume_->expected_accept, resume_->terms);
  LOG_DEBUG("session client=" + peer_text() + " moving off " + chosen_backend_->address +
            " reason=" + BackendMove::ResumeValue(reason));
  // May end at once (no backend left): OnMoveFailed then ran already.
  resume_->move->Start(pool().name, upstream_.pick(), chosen_backend_.get());
  return true;
}

bool Session::OnBackendLost() { return Migrate(metrics::kMoveBackendLost); }

void Session::OnMoveUpgraded() {
  if (!tunnel_->moving()) {  // the tunnel began closing meanwhile
    EndMove(metrics::kMoveAborted);
    return;
  }
  tunnel_->ReplaceBackend(resume_->on_other ? backend_ : resume_->other);
}

void Session::OnMoveFailed(metrics::MigrationResult result, const std::string& why) {
  LOG_INFO("session client=" + peer_text() + " could not move off " + chosen_backend_->address +
           ": " + why);
  EndMove(result);
  if (result == metrics::kMoveNoBackend) {
    // No other backend yet (a rollout may bring one): the session stays where it is, tried again
    // later, until its backend's drain deadline closes it as in any other pool.
    resume_->retry_at = std::chrono::steady_clock::now() + kMoveRetryInterval;
    tunnel_->CancelMove(/*end_session=*/false);
    return;
  }
  // As without moving: the client is told to reconnect (1012), or 1014 if its backend is gone.
  tunnel_->CancelMove(/*end_session=*/true);
}

void Session::OnBackendReplaced(std::chrono::steady_clock::duration pause) {
  BackendMove& move = *resume_->move;
  resume_->on_other = !resume_->on_other;
  LOG_INFO("session client=" + peer_text() + " moved from " + chosen_backend_->address + " to " +
           move.lease()->address + " reason=" + BackendMove::ResumeValue(move.reason()) +
           " pause_ms=" +
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(pause).count()));
  chosen_backend_ = std::move(move.lease());  // the old backend's lease ends here
  meters_.Moved(pool().name, chosen_backend_->address, pause);
  meters_.CountMove(move.reason(), metrics::kMoved);
  ++resume_->moves;
  context_.loop.DeferDelete(std::move(resume_->move));  // its attempt may be on the stack
  RegisterConnection();                                 // the API shows the new backend
}

void Session::EndMove(metrics::MigrationResult result) {
  std::unique_ptr<BackendMove>& move = resume_->move;
  move->Stop();
  meters_.CountMove(move->reason(), result);
  (resume_->on_other ? backend_ : resume_->other).Close();  // the target slot
  context_.loop.DeferDelete(std::move(move));  // releases its lease; it may be on the stack
}

}  // namespace wsgate
