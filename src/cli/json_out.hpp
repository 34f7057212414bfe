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

inline void print_json(const Json& j) {
    std::cout << j.dump() << '\n';
}

} // namespace forky::cli
