// A VM's history: named snapshots (kept fork points), the list of them with what depends
// on each, revert, removal, and squash of a chain grown deep. Built on the engine's freeze
// and spawn (engine.hpp); the history lives in the pool (fork point records, layers,
// memory images) and in libvirt (the domains' lineage, snapshot metadata), so a second
// forky, here or through a remote URI, sees the same.
#pragma once

#include "fork_point.hpp"
#include "operation.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace forky {

struct HistoryOptions {
    std::chrono::milliseconds lock_wait = std::chrono::seconds(120);
    OpContext ctx;
};

struct SnapshotResult {
    ForkPoint point;
    std::optional<std::uint64_t> paused_ms; // the VM's pause (a live snapshot's switch-over)
    double ms = 0;
};

// A named snapshot (memory and disk) of a running or paused VM; of a VM that is off, of
// its disks. The VM keeps running, paused only for the final switch-over. `name` empty:
// snapN.
SnapshotResult vm_snapshot(Host& host, const std::string& vm, const std::string& name,
                           const HistoryOptions& options);

struct SnapshotInfo {
    ForkPoint point;
    std::vector<std::string> children;   // VMs forked from it
    std::vector<std::string> dependants; // later fork points and VMs whose disks it backs
    std::uint64_t disk_bytes = 0;        // its memory image and frozen layers
};

// The fork points of `vm` (of the VM of that name, or of a removed VM whose snapshots were
// kept), oldest first.
std::vector<SnapshotInfo> vm_snapshots(Host& host, const std::string& vm);

struct RevertOptions : HistoryOptions {
    bool discard = false; // do not keep the state the VM leaves as pre-revert-N
};

struct RevertResult {
    ForkPoint to;
    std::optional<ForkPoint> kept;          // the state it left (unless --discard)
    std::vector<std::string> clock_not_set; // as ForkResult's: no guest agent answered
    double ms = 0;
};

// Puts `vm` back to the memory and disk state of its snapshot `snap`, under the same name
// and UUID (libvirt 9.0 cannot revert an external snapshot: the snapshot's memory image is
// restored onto new tops over its frozen layers). Children it has are not touched.
RevertResult vm_revert(Host& host, const std::string& vm, const std::string& snap,
                       const RevertOptions& options);

// A fork point of the VM `op` locks, taken inside `op` for a command that only reads that
// state and lets it go (forky diff, forky export): kind fork (fpN), so gc reclaims it
// should the command be killed once `op` is gone, and leaves it alone while `op` lives.
// `memory` false: its disks alone (a disk-only snapshot: the VM never pauses). A paused VM
// is frozen cold. The VM carries on on new tops, one layer deeper ('forky squash').
ForkPoint freeze_for_reading(Operation& op, const std::string& vm, bool memory);
// Removes such a fork point (its record, memory image and libvirt's record of it); its
// layers stay below the VM's tops. Gone already (gc) is fine.
void drop_reading_point(Host& host, const ForkPoint& point);

struct RemoveSnapshotResult {
    std::vector<std::string> deleted; // volumes
};

// Removes fork point "VM@NAME": its record, memory image and libvirt's record; its layers
// go once nothing needs them. Refused, naming them, while VMs forked from it exist.
RemoveSnapshotResult vm_remove_snapshot(Host& host, const std::string& ref,
                                        const HistoryOptions& options);

struct RecursiveRemoveResult {
    std::vector<std::string> removed_vms;    // descendants first
    std::vector<std::string> removed_points; // VM@NAME
    std::vector<std::string> deleted;        // volumes
};

// `vm`, its snapshots and every descendant (and theirs).
RecursiveRemoveResult vm_remove_recursive(Host& host, const std::string& vm,
                                          const HistoryOptions& options);

struct SquashOptions : HistoryOptions {
    std::optional<unsigned> keep; // keep only the N newest snapshots (unused ones go)
};

struct SquashResult {
    std::map<std::string, unsigned> depth_before; // disk target -> layers in its chain
    std::map<std::string, unsigned> depth_after;
    std::vector<std::string> merged;         // layers pulled into the top
    std::vector<std::string> removed_points; // snapshots dropped by --keep
    std::vector<std::string> deleted;        // volumes freed
};

// Shortens a running VM's chains: the layers above the newest one something still needs
// (a kept snapshot, a child's backing) are pulled into the VM's top (libvirt's block pull,
// which writes only the VM's own top) and freed.
SquashResult vm_squash(Host& host, const std::string& vm, const SquashOptions& options);

} // namespace forky
