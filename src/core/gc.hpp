// Garbage collection of forky's pool. A volume is live when a domain uses it (a disk, a
// console log, the memory image of its fork point), when a live volume is backed by it,
// or while a running forky operation has journalled it. Everything else that forky
// named is garbage: frozen layers and memory images whose last dependant went, and what
// a killed operation left (its journal says what; its half-made children go too).
#pragma once

#include "host.hpp"

#include <string>
#include <vector>

namespace forky {

struct GcOptions {
    bool dry_run = false;
    // Undo operations whose process is gone: remove the children their journals name.
    bool undo_dead_operations = true;
};

struct GcResult {
    std::vector<std::string> removed_domains; // half-made children of dead operations
    std::vector<std::string> deleted_volumes;
    std::vector<std::string> released_locks; // journals of dead operations
    std::vector<std::string> busy;           // live operations left alone
};

GcResult collect_garbage(Host& host, const GcOptions& options = {});

// Whether `name` is a volume name forky makes (and so may collect).
bool is_forky_volume_name(const std::string& name);

} // namespace forky
