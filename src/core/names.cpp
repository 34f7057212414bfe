#include "names.hpp"

#include "errors.hpp"

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
        throw UsageError("Invalid VM name '" + std::string(name) + "': " + *why);
}

} // namespace forky
