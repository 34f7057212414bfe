// Whether a path names something that only root and whoever runs forky can change. A file
// forky checks and QEMU opens later (a base image, a backing file), a folder forky keeps
// its state in (the pool), the settings that decide what is trusted: if anybody else could
// rename, replace or rewrite it, or any folder or link on the way to it, they could swap
// it between forky's check and its use.
//
// Paths are followed as the kernel follows them, one component at a time: a link is
// followed where it stands, and ".." goes up from where the walk really is (never
// "x/.." dropped as text: if x is a link, that is not where the kernel ends up).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace forky {

struct PathWalk {
    std::filesystem::path resolved; // where the path leads (the rest as written, if missing)
    bool exists = false;
    std::optional<std::string> problem; // why someone else could change it
};

// Follows absolute `path`. Every component reached, every link and every link's target:
// owned by root or this user; a folder on the way that others can write must be sticky (as
// /tmp is: nobody but an entry's owner renames it); the final component must not be
// writable by others (a folder: unless sticky), and a regular file must have one name only
// (no hard links). `allow_links` false: any link on the way is a problem too.
PathWalk walk_path(const std::filesystem::path& path, bool allow_links = true);

// walk_path(path).problem.
std::optional<std::string> others_could_change(const std::filesystem::path& path);

} // namespace forky
