// What the connections API may do with a live connection: the narrow view it gets of a
// Session, so connections/ never depends on the proxy's connection internals.
#pragma once

#include <event2/buffer.h>

#include <cstdint>
#include <string>

namespace wsgate {

class LiveConnection {
 public:
  // The connection finished (its deletion is queued): the API answers 410.
  virtual bool ended() const = 0;
  // The connection as a JSON object.
  virtual std::string InfoJson() const = 0;
  // Send |payload| (moved out) to the client as one message: the HTTP status to answer.
  virtual int Push(evbuffer* payload, bool text) = 0;
  // Close both sides with |code| and |reason|: the HTTP status to answer.
  virtual int CloseByApi(uint16_t code, const std::string& reason) = 0;
  // Add or remove a tag; |tags_json| gets the tags after the change. The HTTP status.
  virtual int SetTag(const std::string& tag, bool present, std::string* tags_json) = 0;
  // Its auth expiry (Unix seconds), 0 = none.
  virtual int64_t expires_at() const = 0;
  // auth.revalidate_interval: ask the auth hook again now (a refusal closes the connection).
  virtual void Revalidate() = 0;

 protected:
  ~LiveConnection() = default;
};

}  // namespace wsgate
