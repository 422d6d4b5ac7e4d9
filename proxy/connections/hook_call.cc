#include "proxy/connections/hook_call.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

namespace wsgate {

std::unique_ptr<HookCall> HookCall::Start(
    event_base* base, const std::string& url, evhttp_cmd_type method,
    const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body,
    config::Duration timeout, Done done, std::string* error) {
  evhttp_uri* uri = evhttp_uri_parse(url.c_str());
  if (uri == nullptr || evhttp_uri_get_host(uri) == nullptr) {
    if (uri != nullptr) evhttp_uri_free(uri);
    *error = "invalid hook URL";
    return nullptr;
  }
  std::string host = evhttp_uri_get_host(uri);
  int port = evhttp_uri_get_port(uri);
  if (port < 0) port = 80;
  const char* path = evhttp_uri_get_path(uri);
  const char* query = evhttp_uri_get_query(uri);
  std::string target = path != nullptr && *path != '\0' ? path : "/";
  if (query != nullptr) target += std::string("?") + query;
  evhttp_uri_free(uri);

  std::unique_ptr<HookCall> call(new HookCall());
  call->done_ = std::move(done);
  call->connection_ =
      evhttp_connection_base_new(base, nullptr, host.c_str(), static_cast<uint16_t>(port));
  if (call->connection_ == nullptr) {
    *error = "cannot create an HTTP connection";
    return nullptr;
  }
  timeval tv = ToTimeval(timeout);
  evhttp_connection_set_timeout_tv(call->connection_, &tv);
  evhttp_request* request = evhttp_request_new(&HookCall::OnResponse, call.get());
  if (request == nullptr) {
    *error = "cannot create an HTTP request";
    return nullptr;
  }
  evkeyvalq* out = evhttp_request_get_output_headers(request);
  std::string host_header = host + ":" + std::to_string(port);
  evhttp_add_header(out, "Host", host_header.c_str());
  evhttp_add_header(out, "Connection", "close");
  for (const auto& [name, value] : headers) evhttp_add_header(out, name.c_str(), value.c_str());
  if (!body.empty())
    evbuffer_add(evhttp_request_get_output_buffer(request), body.data(), body.size());
  // On failure evhttp_make_request frees the request itself.
  if (evhttp_make_request(call->connection_, request, method, target.c_str()) != 0) {
    *error = "cannot send the HTTP request";
    return nullptr;
  }
  return call;
}

HookCall::~HookCall() {
  // Cancels a request still in flight; its callback does not run.
  if (connection_ != nullptr) evhttp_connection_free(connection_);
}

void HookCall::OnResponse(evhttp_request* response, void* ctx) {
  auto* call = static_cast<HookCall*>(ctx);
  if (call->finished_) return;
  call->finished_ = true;
  // evhttp reports a failed request with a null request or a zero status.
  if (response != nullptr && evhttp_request_get_response_code(response) == 0) response = nullptr;
  Done done = std::move(call->done_);
  done(response);
}

}  // namespace wsgate
