// The Lua scripts of the fleet registry on Redis (docs/fleet.md), run with EVALSHA: each is
// loaded (SCRIPT LOAD) whenever the registry link comes up. One script per registry change
// keeps it to one command per change, and makes each change atomic.
#pragma once

#include <string>

namespace wsgate::registry_scripts {

enum class Script {
  kOwner,      // who holds a connection, and whether that instance lives
  kCountUser,  // a user's connections on live instances
  kAdmitUser,  // the fleet-wide max_connections_per_user check, recording our count
  kForget,     // delete the entries of dead instances (or of ourselves, before a resync)
  kAdd,        // a new connection
  kUpdate,     // changed fields of a registered connection
  kRemove,     // a connection ended
  kUserCount,  // this instance's count of a user
  kCount
};

const std::string& Text(Script script);
const std::string& Sha1(Script script);  // lower-case hex, as EVALSHA wants it

}  // namespace wsgate::registry_scripts
