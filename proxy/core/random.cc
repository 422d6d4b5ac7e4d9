#include "proxy/core/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace wsgate {
namespace {

constexpr size_t kPoolBytes = 4096;

struct RandomPool {
  unsigned char bytes[kPoolBytes];
  size_t used = kPoolBytes;  // empty until first use
  ~RandomPool() { OPENSSL_cleanse(bytes, sizeof(bytes)); }
};

}  // namespace

bool SecureRandom(void* out, size_t size) {
  if (size > kPoolBytes / 4)
    return RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(size)) == 1;
  thread_local RandomPool pool;
  auto* dest = static_cast<unsigned char*>(out);
  while (size > 0) {
    if (pool.used == kPoolBytes) {
      if (RAND_bytes(pool.bytes, static_cast<int>(kPoolBytes)) != 1) return false;
      pool.used = 0;
    }
    size_t n = std::min(size, kPoolBytes - pool.used);
    std::memcpy(dest, pool.bytes + pool.used, n);
    // Bytes handed out are not kept around to be read again.
    OPENSSL_cleanse(pool.bytes + pool.used, n);
    pool.used += n;
    dest += n;
    size -= n;
  }
  return true;
}

}  // namespace wsgate
