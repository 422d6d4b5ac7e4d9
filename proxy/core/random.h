// Cryptographically secure random bytes, cheap enough for every connection.
//
// Each RAND_bytes call pays for OpenSSL's DRBG locking and setup (about 9,000 instructions for
// 16 bytes, 9 % of a whole proxied handshake in a profile). Each thread draws 4 KiB at a time
// and hands it out in pieces; the bytes are the same CSPRNG output, only fetched in bulk.
#pragma once

#include <cstddef>

namespace wsgate {

// Fill |out| with |size| random bytes. False only if OpenSSL's CSPRNG cannot be seeded.
bool SecureRandom(void* out, size_t size);

}  // namespace wsgate
