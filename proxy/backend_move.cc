#include "proxy/backend_move.h"

#include <utility>

namespace wsgate {

ResumeTerms ResumeTerms::Of(const http::UpstreamVerdict& verdict, std::string subprotocol) {
  ResumeTerms terms;
  terms.subprotocol = std::move(subprotocol);
  terms.permessage_deflate = verdict.permessage_deflate;
  terms.other_extension = verdict.other_extension;
  if (verdict.permessage_deflate) terms.deflate = verdict.deflate;
  return terms;
}

std::string ResumeTerms::Mismatch(const ResumeTerms& other) const {
  if (other.subprotocol != subprotocol) {
    return "subprotocol \"" + other.subprotocol + "\" instead of \"" + subprotocol + "\"";
  }
  const http::DeflateParams& a = deflate;
  const http::DeflateParams& b = other.deflate;
  if (other.permessage_deflate != permessage_deflate || other.other_extension != other_extension ||
      a.server_no_context_takeover != b.server_no_context_takeover ||
      a.client_no_context_takeover != b.client_no_context_takeover ||
      a.server_max_window_bits != b.server_max_window_bits ||
      a.client_max_window_bits != b.client_max_window_bits) {
    return "other extensions than the session's";
  }
  return "";
}

BackendMove::BackendMove(BackendMoveOwner& owner, event_base* base, RuntimePtr current,
                         metrics::Registry& metrics, metrics::MigrationReason reason,
                         Endpoint& client, Endpoint& target, const std::string& request,
                         std::string expected_accept, const ResumeTerms& terms)
    : owner_(owner),
      runtime_(std::move(current)),
      placement_("move", *runtime_, metrics),
      terms_(terms),
      reason_(reason),
      started_at_(std::chrono::steady_clock::now()),
      attempt_(static_cast<UpgradeAttemptOwner&>(*this), base, runtime_->config, placement_, client,
               target, lease_, ResumeRequest(request, reason), std::move(expected_accept)) {
  attempt_.set_resuming();
}

BackendMove::~BackendMove() { Stop(); }

void BackendMove::Start(const std::string& pool, const PickRequest& sticky,
                        const Backend* leaving) {
  if (!placement_.PlaceForMove(pool, sticky, leaving)) {
    attempt_.Stop();
    owner_.OnMoveFailed(metrics::kMoveNoBackend, "pool " + pool + " is no longer configured");
    return;
  }
  attempt_.Start();
}

void BackendMove::Stop() { attempt_.Stop(); }

const char* BackendMove::ResumeValue(metrics::MigrationReason reason) {
  return metrics::kMigrationReasonLabels[reason].data();  // the label is the header's value
}

std::string BackendMove::ResumeRequest(const std::string& request,
                                       metrics::MigrationReason reason) {
  std::string resumed = request;
  std::string field = "X-Wsgate-Resume: " + std::string(ResumeValue(reason)) + "\r\n";
  resumed.insert(resumed.size() - 2, field);  // before the head's final CRLF
  return resumed;
}

void BackendMove::OnUpgradeAccepted(const http::UpstreamVerdict& verdict,
                                    const std::string& subprotocol) {
  std::string mismatch = terms_.Mismatch(ResumeTerms::Of(verdict, subprotocol));
  if (!mismatch.empty()) {
    owner_.OnMoveFailed(metrics::kMoveRefused,
                        lease_->address + " cannot resume the session: it answered " + mismatch);
    return;
  }
  owner_.OnMoveUpgraded();
}

void BackendMove::OnUpgradeRefused(int status, const std::string& reason) {
  owner_.OnMoveFailed(metrics::kMoveRefused, lease_->address + " refused to resume the session: " +
                                                 std::to_string(status) + " " + reason);
}

void BackendMove::OnUpgradeFailed(int status, const std::string& reason,
                                  const std::string& /*extra_header*/) {
  // 502 for an unusable answer (an invalid 101): refused; else no backend was reachable.
  owner_.OnMoveFailed(status == 502 && lease_ ? metrics::kMoveRefused : metrics::kMoveNoBackend,
                      reason);
}

}  // namespace wsgate
