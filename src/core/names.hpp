// Names that become libvirt domain names, volume names and XML text. The charset keeps
// them out of paths ('/', '..') and XML (no markup characters) by construction.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace forky {

inline constexpr std::size_t max_name_length = 63;

// A warm pool's record and lock are named NAME.warmpool: a '.' no VM name has, so neither
// can be a VM's.
inline constexpr std::string_view warm_pool_suffix = ".warmpool";

// nullopt when `name` is a valid VM name, otherwise why it is not.
std::optional<std::string> name_problem(std::string_view name);

// Throws UsageError "Invalid VM name 'x': why" when the name is not valid.
void require_valid_name(std::string_view name);

// Whether `name` is a volume name forky makes for a VM (its overlays, console log, fork
// points' layers and memory images): what gc may collect, and what no spec may name.
bool is_forky_volume_name(const std::string& name);

// `text` in single quotes, with control characters and non-ASCII bytes escaped (\x1b), for
// messages that repeat what a user or a file gave.
std::string quoted(std::string_view text);

} // namespace forky
