// Planning an operation: pure, no libvirt calls. What is known of the VM and the pool is
// gathered first (VmFacts, PoolFacts); a plan names every fork point, layer, child and
// volume, checks names, states and space, and sizes the journal, before anything is made.
// A daemon and policies can look at a plan before it runs; tests run it without libvirt.
#pragma once

#include "fork_point.hpp"
#include "lineage.hpp"
#include "vm_lock.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace forky {

struct VmFacts {
    std::string name;
    std::string uuid;
    VmState state = VmState::unknown;
    Lineage lineage;
    std::string xml;                                // as it runs (or as defined, if off)
    std::map<std::string, std::string> top_paths;   // disk target -> its top layer's path
    std::map<std::string, std::string> top_volumes; // disk target -> that layer's volume
    std::uint64_t memory_bytes = 0;
};

struct PoolFacts {
    std::string pool;
    std::set<std::string> volume_names;
    std::map<std::string, std::string> volume_by_path;
    std::uint64_t available = 0;
    std::vector<ForkPoint> fork_points; // every record in the pool
    std::set<std::string> domain_names; // every domain on the host
};

// Gathered from a domain and the pool it keeps its volumes in.
struct FreezeRequest {
    ForkPoint::Kind kind = ForkPoint::Kind::fork;
    std::string name;              // a snapshot's name; empty: fpN (fork), snapN, pre-revert-N
    bool cold = false;             // pause for the cut instead of a live snapshot
    bool keep_paused = false;      // cold: leave it paused afterwards
    bool disk_only = false;        // its disks alone, even of a running VM (never paused)
    std::uint64_t extra_bytes = 0; // what the operation needs besides (its children)
    std::optional<unsigned> children_made; // the VM's new count of children named
};

struct FreezePlan {
    ForkPoint point;                             // as it will be recorded (id and time later)
    std::map<std::string, std::string> new_tops; // disk target -> the VM's new top (volume)
    bool memory = true;                          // false: a VM that is off, disk only
    bool cold = false;
    bool keep_paused = false;
    std::optional<unsigned> children_made;
    std::uint64_t bytes_needed = 0;
};

// Throws UsageError (a bad name), ConflictError (a taken name, a VM in the wrong state, a
// disk forky does not manage) or StorageError (not enough room in the pool).
FreezePlan plan_freeze(const VmFacts& vm, const PoolFacts& pool, const FreezeRequest& request);

struct PlannedChild {
    std::string name;
    std::string uuid;
    std::map<std::string, std::string> disks; // target -> its own top (volume)
    std::string console;                      // its console log (volume), or empty
};

struct SpawnRequest {
    unsigned count = 1;
    std::string prefix;       // children PREFIX-N
    std::string name;         // else the one child's own name (count 1)
    unsigned first_index = 1; // N of the first candidate
    bool console = true;      // each child gets a console log
    // Names in use elsewhere (VMs on other hosts of the fleet): never given to a child.
    std::set<std::string> also_taken;
};

struct SpawnPlan {
    std::vector<PlannedChild> children;
    unsigned last_index = 0; // the highest N used
    std::uint64_t bytes_needed = 0;
};

// Children of `point` named PREFIX-N from first_index on, skipping every name in `taken`
// (domains, and names that have volumes or locks in the pool). Throws UsageError when the
// names run past 63 characters.
SpawnPlan plan_spawn(const ForkPoint& point, const std::set<std::string>& taken,
                     const SpawnRequest& request);

// Names in use: domains, and names that own a volume in the pool ("<name>.<...>").
std::set<std::string> taken_names(const PoolFacts& pool);

// The largest journal the operation will write: `now` plus everything the plans make.
std::size_t journal_bytes(const Journal& now, const FreezePlan* freeze, const SpawnPlan* spawn);

// Space a fork point's memory image and metadata take at most, and each child.
inline constexpr std::uint64_t bytes_per_child = 4ULL << 20;

// The next number for a VM's layers and fork points: past its lineage's counter and every
// volume of that VM's name in the pool (a removed VM's kept snapshots included).
unsigned next_seq(const std::string& vm, unsigned counter, const std::set<std::string>& volumes);

} // namespace forky
