// `--json` output: nlohmann's JSON (Debian's nlohmann-json3-dev), keys in the order they
// are set, printed compact on one line.
#pragma once

#include <nlohmann/json.hpp>

#include <iostream>
#include <optional>
#include <string>

namespace forky::cli {

using Json = nlohmann::ordered_json;

// null for an empty text (a VM without a parent, say).
inline Json text_or_null(const std::string& s) {
    return s.empty() ? Json(nullptr) : Json(s);
}

template <typename T>
Json value_or_null(const std::optional<T>& v) {
    return v ? Json(*v) : Json(nullptr);
}

// Bytes that are not UTF-8 (in a label, a host's answer) become U+FFFD: the output always
// parses.
inline void print_json(const Json& j) {
    std::cout << j.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
}

} // namespace forky::cli
