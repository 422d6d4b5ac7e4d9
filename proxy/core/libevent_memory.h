// libevent's allocations, with a per-thread cache of the power-of-two blocks evbuffer chains use.
//
// Every socket read lands in a fresh evbuffer chain of 2 KiB to 64 KiB, freed once the bytes are
// written on. glibc serves those sizes from its sorted bins (its fast per-thread cache stops at
// ~1 KiB), which cost a sixth of the relay's instructions; a few cached blocks per size remove
// that. Sanitizer builds skip the cache so ASan still sees every use after free.
#pragma once

namespace wsgate {

// Call once, before any other libevent function (blocks from plain malloc may still be freed
// through it: both end in the same heap).
void InstallLibeventAllocator();
// False in sanitizer builds, where libevent allocates straight from malloc.
bool LibeventBlockCacheEnabled();

}  // namespace wsgate
