#include "config/suggest.h"

#include <algorithm>
#include <cctype>

namespace wsgate::config {
namespace {

char Lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// Typos grow with the name: one slip in a short word, a few in a long one.
size_t AllowedDistance(size_t length) {
  if (length <= 5) return 1;
  if (length <= 8) return 2;
  return 3;
}

}  // namespace

size_t EditDistance(std::string_view a, std::string_view b) {
  // Three rows of the dynamic-programming table: two back for the adjacent swap.
  std::vector<size_t> before(b.size() + 1), previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = Lower(a[i - 1]) == Lower(b[j - 1]) ? 0 : 1;
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost});
      if (i > 1 && j > 1 && Lower(a[i - 1]) == Lower(b[j - 2]) &&
          Lower(a[i - 2]) == Lower(b[j - 1])) {
        current[j] = std::min(current[j], before[j - 2] + 1);
      }
    }
    std::swap(before, previous);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string ClosestName(std::string_view input, const std::vector<std::string_view>& candidates) {
  // Long inputs cannot be typos of our short names, and cost quadratic time to compare.
  constexpr size_t kMaxCompared = 64;
  if (input.empty() || input.size() > kMaxCompared) return {};
  std::string_view best;
  size_t best_distance = AllowedDistance(input.size()) + 1;
  for (std::string_view candidate : candidates) {
    if (candidate == input || candidate.size() > kMaxCompared) continue;
    const size_t distance = EditDistance(input, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return std::string(best);
}

std::string ClosestName(std::string_view input,
                        std::initializer_list<std::string_view> candidates) {
  return ClosestName(input, std::vector<std::string_view>(candidates));
}

std::string DidYouMean(std::string_view input, const std::vector<std::string_view>& candidates) {
  const std::string name = ClosestName(input, candidates);
  if (name.empty()) return {};
  return " (did you mean \"" + name + "\"?)";
}

std::string DidYouMean(std::string_view input, std::initializer_list<std::string_view> candidates) {
  return DidYouMean(input, std::vector<std::string_view>(candidates));
}

}  // namespace wsgate::config
