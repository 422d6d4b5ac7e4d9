#include "proxy/core/libevent_memory.h"

#include <event2/event.h>
#include <malloc.h>

#include <cstddef>
#include <cstdlib>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define WSGATE_NO_BLOCK_CACHE 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define WSGATE_NO_BLOCK_CACHE 1
#endif

namespace wsgate {
namespace {

#ifndef WSGATE_NO_BLOCK_CACHE

constexpr int kMinShift = 11;  // 2 KiB: below this glibc's own per-thread cache is fast
constexpr int kMaxShift = 16;  // 64 KiB: the largest read a direct socket makes
constexpr size_t kBytesPerClass = 256 * 1024;  // bounds what an idle thread keeps

// Size class of a block by its usable size: only blocks just above a power of two (what
// evbuffer chains allocate) are cached, so an odd-sized block is never handed out for a size
// class it would waste.
int ClassOf(size_t usable) {
  if (usable < (size_t{1} << kMinShift) || usable >= (size_t{1} << kMaxShift) + 64) return -1;
  int shift = 63 - __builtin_clzl(usable);
  return usable - (size_t{1} << shift) < 64 ? shift - kMinShift : -1;
}

int ClassOfRequest(size_t size) {
  if (size < (size_t{1} << kMinShift) || size > (size_t{1} << kMaxShift) ||
      (size & (size - 1)) != 0) {
    return -1;
  }
  return __builtin_ctzl(size) - kMinShift;
}

struct BlockCache {
  static constexpr int kClasses = kMaxShift - kMinShift + 1;
  static constexpr size_t kSlots = kBytesPerClass >> kMinShift;
  void* blocks[kClasses][kSlots];
  size_t counts[kClasses] = {};
  ~BlockCache();
};

// Trivially destructible, so it is valid even while the cache itself is being torn down.
thread_local bool cache_gone = false;
thread_local BlockCache cache;

BlockCache::~BlockCache() {
  cache_gone = true;
  for (int c = 0; c < kClasses; ++c) {
    for (size_t i = 0; i < counts[c]; ++i) std::free(blocks[c][i]);
    counts[c] = 0;
  }
}

size_t SlotsFor(int size_class) { return kBytesPerClass >> (size_class + kMinShift); }

void* Allocate(size_t size) {
  int c = ClassOfRequest(size);
  if (c >= 0 && !cache_gone && cache.counts[c] > 0) return cache.blocks[c][--cache.counts[c]];
  return std::malloc(size);
}

void Release(void* block) {
  if (block == nullptr) return;
  if (!cache_gone) {
    int c = ClassOf(malloc_usable_size(block));
    if (c >= 0 && cache.counts[c] < SlotsFor(c)) {
      cache.blocks[c][cache.counts[c]++] = block;
      return;
    }
  }
  std::free(block);
}

void* Reallocate(void* block, size_t size) { return std::realloc(block, size); }

#endif  // WSGATE_NO_BLOCK_CACHE

}  // namespace

void InstallLibeventAllocator() {
#ifndef WSGATE_NO_BLOCK_CACHE
  event_set_mem_functions(&Allocate, &Reallocate, &Release);
#endif
}

bool LibeventBlockCacheEnabled() {
#ifndef WSGATE_NO_BLOCK_CACHE
  return true;
#else
  return false;
#endif
}

}  // namespace wsgate
