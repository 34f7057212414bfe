// Whether a path names something that only root and whoever runs forky can change. A file
// forky checks and QEMU opens later (a base image, a backing file), a folder forky keeps
// its state in (the pool), the settings that decide what is trusted: if anybody else could
// rename, replace or rewrite it, or any folder or link on the way to it, they could swap
// it between forky's check and its use.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace forky {

// Why someone other than root and this user could change what `path` names (nullopt when
// nobody can). Every component of the path as written and of every link it passes
// through: owned by root or this user; a folder that others can write must be sticky (as
// /tmp is: nobody but an entry's owner renames it). The final component must not be
// writable by others, and a regular file must have one name only (no hard links). A path
// that does not exist (yet) is judged by the folders above it.
std::optional<std::string> others_could_change(const std::filesystem::path& path);

} // namespace forky
