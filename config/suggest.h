// "Did you mean" suggestions for misspelt names: config keys, enum values, pool names and
// command-line flags all use this one helper, so they agree on what counts as close.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::config {

// Optimal string alignment distance, case-insensitive: insertions, deletions, substitutions and
// swaps of two adjacent characters each cost 1 ("caht" is 1 from "chat").
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate closest to |input| if it is close enough to be a likely typo (distance at most
// 1 for names up to 5 characters, 2 up to 8, 3 beyond), else empty. Ties go to the earlier
// candidate; an exact match is never suggested.
std::string ClosestName(std::string_view input, const std::vector<std::string_view>& candidates);
std::string ClosestName(std::string_view input, std::initializer_list<std::string_view> candidates);

// " (did you mean \"NAME\"?)" for the closest candidate, or "" when none is close.
std::string DidYouMean(std::string_view input, const std::vector<std::string_view>& candidates);
std::string DidYouMean(std::string_view input, std::initializer_list<std::string_view> candidates);

}  // namespace wsgate::config
