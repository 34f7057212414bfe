#include "units.hpp"

#include <array>
#include <charconv>
#include <cstdio>
#include <limits>
#include <utility>

namespace forky {

namespace {

// Splits "<digits><suffix>"; false when there are no digits or they overflow.
bool split_number(std::string_view text, std::uint64_t& number, std::string_view& suffix,
                  std::string* why, const char* example) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (end == text.data()) {
        if (why)
            *why = std::string("expected a number with a unit, e.g. ") + example;
        return false;
    }
    if (ec == std::errc::result_out_of_range) {
        if (why)
            *why = "number is too large";
        return false;
    }
    suffix = text.substr(static_cast<std::size_t>(end - text.data()));
    return true;
}

bool checked_multiply(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a)
        return false;
    out = a * b;
    return true;
}

} // namespace

std::optional<std::uint64_t> parse_size(std::string_view text, std::string* why) {
    static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 9> units{{
        {"B", 1},
        {"KiB", 1ULL << 10},
        {"MiB", 1ULL << 20},
        {"GiB", 1ULL << 30},
        {"TiB", 1ULL << 40},
        {"KB", 1000ULL},
        {"MB", 1000ULL * 1000},
        {"GB", 1000ULL * 1000 * 1000},
        {"TB", 1000ULL * 1000 * 1000 * 1000},
    }};
    std::uint64_t number = 0;
    std::string_view suffix;
    if (!split_number(text, number, suffix, why, "256MiB"))
        return std::nullopt;
    if (suffix.empty()) {
        if (why)
            *why = "'" + std::string(text) + "' has no unit; write e.g. 256MiB or 2GiB";
        return std::nullopt;
    }
    for (const auto& [name, factor] : units) {
        if (suffix == name) {
            std::uint64_t bytes = 0;
            if (!checked_multiply(number, factor, bytes)) {
                if (why)
                    *why = "'" + std::string(text) + "' is too large";
                return std::nullopt;
            }
            return bytes;
        }
    }
    if (why)
        *why = "unknown unit '" + std::string(suffix) +
               "' (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)";
    return std::nullopt;
}

std::optional<std::chrono::seconds> parse_duration(std::string_view text, std::string* why) {
    std::uint64_t number = 0;
    std::string_view suffix;
    if (!split_number(text, number, suffix, why, "90s"))
        return std::nullopt;
    std::uint64_t factor = 0;
    if (suffix == "s")
        factor = 1;
    else if (suffix == "m")
        factor = 60;
    else if (suffix == "h")
        factor = 3600;
    else if (suffix == "d")
        factor = 86400;
    else {
        if (why)
            *why = suffix.empty() ? "'" + std::string(text) + "' has no unit; write e.g. 90s or 2h"
                                  : "unknown unit '" + std::string(suffix) + "' (use s, m, h or d)";
        return std::nullopt;
    }
    std::uint64_t seconds = 0;
    if (!checked_multiply(number, factor, seconds) ||
        seconds > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        if (why)
            *why = "'" + std::string(text) + "' is too long";
        return std::nullopt;
    }
    return std::chrono::seconds(static_cast<std::int64_t>(seconds));
}

std::string format_size(std::uint64_t bytes) {
    static constexpr std::array<const char*, 5> names{"B", "KiB", "MiB", "GiB", "TiB"};
    std::size_t unit = 0;
    std::uint64_t whole = bytes;
    while (unit + 1 < names.size() && whole >= 1024 && whole % 1024 == 0) {
        whole /= 1024;
        ++unit;
    }
    if (whole < 1024 || unit + 1 == names.size())
        return std::to_string(whole) + names[unit];
    double value = static_cast<double>(bytes);
    unit = 0;
    while (unit + 1 < names.size() && value >= 1024) {
        value /= 1024;
        ++unit;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%s", value, names[unit]);
    return buf;
}

std::string format_duration(std::int64_t s) {
    char buf[32];
    if (s < 60)
        std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
    else if (s < 3600)
        std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                      static_cast<long long>(s % 60));
    else if (s < 86400)
        std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                      static_cast<long long>(s % 3600 / 60));
    else
        std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400),
                      static_cast<long long>(s % 86400 / 3600));
    return buf;
}

} // namespace forky
