// What every session (and the HTTP forwarder it may hand a connection to) needs from its
// worker and the process. All of it outlives every session.
#pragma once

#include "metrics/metrics.h"
#include "proxy/access_log.h"
#include "proxy/admission.h"
#include "proxy/backend_connection_pool.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"
#include "proxy/runtime.h"

namespace wsgate {

class SessionRegistry;

struct SessionContext {
  EventLoop& loop;
  SessionRegistry& registry;
  const RuntimePtr& current;  // the configuration generation new sessions start under
  metrics::Registry& metrics;
  AccessLog& access_log;
  Admission& admission;
  ConnectionDirectory* connections = nullptr;  // the connections API's view of this loop
  BackendConnectionPool& http_connections;     // this loop's idle backend connections (plain HTTP)
};

}  // namespace wsgate
