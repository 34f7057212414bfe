#include "names.hpp"

#include "errors.hpp"

#include <cstdio>
#include <regex>

namespace forky {

namespace {
bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
} // namespace

std::optional<std::string> name_problem(std::string_view name) {
    if (name.empty())
        return "a name cannot be empty";
    if (name.size() > max_name_length)
        return "a name has at most " + std::to_string(max_name_length) + " characters";
    if (!is_alnum(name.front()))
        return "a name starts with a letter or a digit";
    for (char c : name) {
        if (!is_alnum(c) && c != '-' && c != '_')
            return "a name has only letters, digits, '-' and '_'";
    }
    return std::nullopt;
}

void require_valid_name(std::string_view name) {
    if (auto why = name_problem(name))
        throw UsageError("Invalid VM name " + forky::quoted(name) + ": " + *why);
}

bool is_forky_volume_name(const std::string& name) {
    static const std::regex re(
        R"(^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\.(vd[a-z]{1,2}(\.fp[0-9]+)?\.qcow2|console\.log|fp[0-9]+\.(mem|point))$)");
    return std::regex_match(name, re);
}

std::string quoted(std::string_view text) {
    std::string out = "'";
    for (unsigned char c : text) {
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return out + "'";
}

} // namespace forky
