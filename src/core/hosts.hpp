// The fleet: forky's host inventory (/etc/forky/hosts.yaml, --hosts FILE, FORKY_HOSTS),
// each host a stock libvirtd reached over libvirt's own remote protocol, and what each
// one reports about itself. Without an inventory forky works on --connect alone.
#pragma once

#include "cancel.hpp"
#include "host.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace forky {

inline constexpr const char* default_hosts_file = "/etc/forky/hosts.yaml";

struct HostEntry {
    std::string name;
    std::string uri;
    std::string pool = default_pool;
    std::map<std::string, std::string> labels;
    std::optional<unsigned> max_forks;
    int line = 0; // where it stands in the file, for messages
};

struct Inventory {
    std::filesystem::path source; // empty: no inventory (one host, --connect)
    std::vector<HostEntry> hosts;

    const HostEntry* find(const std::string& name) const; // null when absent
};

// The fleet of one host without an inventory: `uri` and its `pool`, named "default".
Inventory one_host_inventory(const std::string& uri, const std::string& pool);

// Parses inventory text as if it came from `file`. Strict as a domain spec: unknown keys,
// keys given twice, wrong types, bad names and URIs, a host or URI listed twice are
// SpecErrors naming the file, the line and the key.
Inventory parse_inventory(const std::string& text, const std::filesystem::path& file);

// Reads `file`. A missing file is no inventory, unless `required` (named by --hosts or
// FORKY_HOSTS). It decides which hypervisors forky connects to: like forky's settings,
// nobody else may have written it or a folder on its way.
Inventory load_inventory(const std::filesystem::path& file, bool required);

// What `forky hosts` says of one host.
struct HostReport {
    HostEntry entry;
    bool reachable = false;
    std::string problem; // why it is not reachable, or what failed after connecting
    std::string hostname;
    std::string libvirt_version; // "9.0.0"
    std::string qemu_version;    // "7.2.0"
    unsigned cpus = 0;
    std::uint64_t memory_bytes = 0;
    std::uint64_t memory_free_bytes = 0;
    unsigned forky_vms = 0;         // in its pool
    unsigned forky_vms_running = 0; // of those
    unsigned fork_points = 0;       // records in its pool
    bool pool_exists = false;
    std::uint64_t pool_free_bytes = 0;
};

// Asks every host of the inventory, side by side (one connection each); a host that does
// not answer within `timeout` is reported unreachable, never waited for longer.
// Ctrl-C (`cancel`) ends the wait with InterruptedError.
std::vector<HostReport> survey_hosts(const Inventory& inventory,
                                     std::chrono::seconds timeout = std::chrono::seconds(15),
                                     const CancelToken& cancel = {});

// "9.0.0" from libvirt's packed version number (major * 1000000 + minor * 1000 + release).
std::string version_string(unsigned long packed);

} // namespace forky
