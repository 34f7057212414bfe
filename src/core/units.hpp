// Sizes and durations as people write them: "256MiB", "2GiB", "90s", "2h".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace forky {

// Bytes from "<integer><unit>": KiB MiB GiB TiB (powers of 1024), KB MB GB TB (powers of
// 1000) or B. A bare number is refused: it is too easy to mean MiB and get bytes.
// Returns nullopt and sets `why` on failure.
std::optional<std::uint64_t> parse_size(std::string_view text, std::string* why = nullptr);

// Seconds from "<integer><unit>" with unit s, m, h or d.
std::optional<std::chrono::seconds> parse_duration(std::string_view text,
                                                   std::string* why = nullptr);

// "256MiB", "1.5GiB": the largest binary unit that keeps one decimal.
std::string format_size(std::uint64_t bytes);

// "45s", "12m05s", "3h20m", "2d04h" for a number of seconds.
std::string format_duration(std::int64_t seconds);

} // namespace forky
