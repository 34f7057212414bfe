// Names that become libvirt domain names, volume names and XML text. The charset keeps
// them out of paths ('/', '..') and XML (no markup characters) by construction.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace forky {

inline constexpr std::size_t max_name_length = 63;

// nullopt when `name` is a valid VM name, otherwise why it is not.
std::optional<std::string> name_problem(std::string_view name);

// Throws UsageError "Invalid VM name 'x': why" when the name is not valid.
void require_valid_name(std::string_view name);

} // namespace forky
