#include "proxy/cluster/registry_scripts.h"

#include <openssl/evp.h>

#include <array>

namespace wsgate::registry_scripts {
namespace {

// KEYS: conn:ID, closed:ID. ARGV: prefix. Who holds a connection, and whether it lives.
constexpr const char* kOwnerScript = R"lua(
local instance = redis.call('HGET', KEYS[1], 'instance')
if not instance then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'closed'} end
  return {'unknown'}
end
local url = redis.call('GET', ARGV[1] .. 'instance:' .. instance)
if not url then return {'dead', instance} end
return {'alive', instance, url}
)lua";

// KEYS: user:U. ARGV: prefix. The user's connections on live instances.
constexpr const char* kCountUserScript = R"lua(
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'instance:' .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
  end
end
return total
)lua";

// KEYS: user:U. ARGV: prefix, instance, this instance's count (the new one included), cap,
// user. Admits and records our count atomically, so two instances cannot both take the last
// place.
constexpr const char* kAdmitUserScript = R"lua(
local prefix, me, mine, cap = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #fields, 2 do
  if fields[i] ~= me and redis.call('EXISTS', prefix .. 'instance:' .. fields[i]) == 1 then
    others = others + tonumber(fields[i + 1])
  end
end
if others + mine > cap then return 0 end
redis.call('HSET', KEYS[1], me, mine)
redis.call('SADD', prefix .. 'instance:' .. me .. ':users', ARGV[5])
return 1
)lua";

// ARGV: prefix, instance, only_self ("1": forget this instance's old entries; "0": every
// dead instance's). Deletes their connection hashes and per-user counts.
constexpr const char* kForgetScript = R"lua(
local prefix, me, only_self = ARGV[1], ARGV[2], ARGV[3] == '1'
local function forget(name)
  local conns = prefix .. 'instance:' .. name .. ':conns'
  for _, id in ipairs(redis.call('SMEMBERS', conns)) do
    redis.call('DEL', prefix .. 'conn:' .. id)
  end
  local users = prefix .. 'instance:' .. name .. ':users'
  for _, user in ipairs(redis.call('SMEMBERS', users)) do
    redis.call('HDEL', prefix .. 'user:' .. user, name)
  end
  redis.call('DEL', conns, users)
end
if only_self then
  forget(me)
  return 1
end
local forgotten = 0
for _, name in ipairs(redis.call('SMEMBERS', prefix .. 'instances')) do
  if name ~= me and redis.call('EXISTS', prefix .. 'instance:' .. name) == 0 then
    forget(name)
    redis.call('SREM', prefix .. 'instances', name)
    forgotten = forgotten + 1
  end
end
return forgotten
)lua";

// KEYS: conn:ID, instance:NAME:conns. ARGV: id, then field, value pairs. A new entry.
constexpr const char* kAddScript = R"lua(
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 0
)lua";

// KEYS: conn:ID. ARGV: field, value pairs. Only an entry still registered: HSET on a deleted
// hash would bring it back.
constexpr const char* kUpdateScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 0
)lua";

// KEYS: conn:ID, instance:NAME:conns, closed:ID. ARGV: id, instance, seconds the id is
// remembered as closed (410 rather than 404).
constexpr const char* kRemoveScript = R"lua(
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
return 0
)lua";

// KEYS: user:U, instance:NAME:users. ARGV: instance, user, this instance's count of the user.
constexpr const char* kUserCountScript = R"lua(
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 0
)lua";

struct Loaded {
  std::string text;
  std::string sha1;
};

std::string HexSha1(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha1(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

const std::array<Loaded, static_cast<size_t>(Script::kCount)>& All() {
  static const auto all = [] {
    std::array<Loaded, static_cast<size_t>(Script::kCount)> loaded;
    const char* texts[] = {kOwnerScript, kCountUserScript, kAdmitUserScript, kForgetScript,
                           kAddScript,   kUpdateScript,    kRemoveScript,    kUserCountScript};
    static_assert(std::size(texts) == static_cast<size_t>(Script::kCount));
    for (size_t i = 0; i < loaded.size(); ++i) loaded[i] = Loaded{texts[i], HexSha1(texts[i])};
    return loaded;
  }();
  return all;
}

}  // namespace

const std::string& Text(Script script) { return All()[static_cast<size_t>(script)].text; }

const std::string& Sha1(Script script) { return All()[static_cast<size_t>(script)].sha1; }

}  // namespace wsgate::registry_scripts
