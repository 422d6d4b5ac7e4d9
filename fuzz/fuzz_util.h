// Helpers shared by the fuzz targets: an always-on check (assert() is compiled out in
// RelWithDebInfo) and a small deterministic PRNG seeded from the input, so every cut pattern is
// reproducible from the input file alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Same, with a printf-style explanation.
#define FUZZ_CHECK_MSG(cond, ...)                                                        \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                 \
      std::fprintf(stderr, "\n");                                                        \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace wsgate::fuzz {

// FNV-1a over the input: the seed for the cut-point generator.
inline uint64_t HashBytes(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform-ish in [lo, hi] (hi >= lo).
  size_t Range(size_t lo, size_t hi) { return lo + static_cast<size_t>(Next() % (hi - lo + 1)); }

 private:
  uint64_t state_;
};

// True if |part| is empty or points into |whole| (a view handed out by a parser must).
inline bool ViewWithin(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  const auto begin = reinterpret_cast<uintptr_t>(whole.data());
  const auto first = reinterpret_cast<uintptr_t>(part.data());
  return first >= begin && first - begin <= whole.size() &&
         part.size() <= whole.size() - (first - begin);
}

}  // namespace wsgate::fuzz
