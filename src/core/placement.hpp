// Placement: which hosts of the fleet take a new VM or a fork's children. A policy
// (policies/placement.yaml) filters hosts (labels, memory and pool headroom, max_forks)
// and ranks those left (the fork point's own host first, then spread or pack). Pure: it
// decides from what `forky hosts` reports, so it is tested without a fleet.
#pragma once

#include "hosts.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace forky {

inline constexpr const char* default_placement_file = "/etc/forky/placement.yaml";

struct PlacementPolicy {
    std::filesystem::path source; // empty: the defaults
    std::map<std::string, std::string> labels;
    std::uint64_t min_free_memory = 512ULL << 20;
    std::uint64_t min_pool_free = 1ULL << 30;
    bool respect_max_forks = true;
    bool prefer_fork_point_host = true;
    enum class Strategy { spread, pack } strategy = Strategy::spread;
};

// Strict, like a domain spec: file, line and key in every error.
PlacementPolicy parse_placement_policy(const std::string& text, const std::filesystem::path& file);
// A missing file is the defaults.
PlacementPolicy load_placement_policy(const std::filesystem::path& file);

struct PlacementRequest {
    unsigned count = 1;               // VMs to place
    std::uint64_t memory_bytes = 0;   // each one's memory
    std::uint64_t disk_bytes = 0;     // each one's new volumes in the pool
    std::string fork_point_host;      // the host holding the fork point (or the parent)
    std::vector<std::string> holding; // other hosts holding a copy of it already
    std::optional<std::string> host;  // --host: only this one
    // Bytes to ship to a host that does not hold the fork point yet (its memory image and
    // layers), once per host.
    std::uint64_t ship_bytes = 0;
};

struct Placement {
    std::vector<std::string> hosts;   // one per VM, in order
    std::vector<std::string> reasons; // per host: why it took what it took, or none
};

// Throws ConflictError naming each host and why it could not take (more), when the
// fleet cannot take `count`; UsageError for a --host that is not in the inventory.
Placement place(const PlacementPolicy& policy, const std::vector<HostReport>& fleet,
                const PlacementRequest& request);

} // namespace forky
