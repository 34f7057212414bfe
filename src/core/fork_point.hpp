// A fork point: a VM frozen at one instant, a memory image and a frozen disk layer per
// disk, consistent with each other. `forky fork` makes one (named fpN) and spawns children
// from it; `forky snapshot` makes one with a name of the user's and keeps it; `forky
// revert` keeps the state it leaves as one (pre-revert-N). Children can be spawned from
// any of them later, as often as wanted, while the VM moves on, stops or is removed.
//
// Its record is a small volume in the pool, '<vm>.fp<seq>.point' (XML), beside its memory
// image '<vm>.fp<seq>.mem': visible to every forky that reaches the pool, on any machine,
// and it outlives the VM. libvirt shows the same fork points as the VM's snapshots (virsh
// snapshot-list), defined as metadata whose disks name the record, not a layer: libvirt
// 9.0 deletes an external snapshot by merging layers that children share, so
// `virsh snapshot-delete` must (and does) refuse them; `forky rm VM@SNAP` removes them.
#pragma once

#include "host.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

inline constexpr const char* fork_point_namespace = "https://forky.dev/xmlns/fork-point/1";

struct ForkPoint {
    enum class Kind { fork, snapshot, pre_revert };

    std::string id;   // a UUID of its own
    std::string name; // "fp3", the user's "before-upgrade", "pre-revert-4"
    Kind kind = Kind::fork;
    unsigned seq = 0;    // the number in its volumes' names
    std::string vm;      // the VM's name at the time (for display)
    std::string vm_uuid; // the VM's identity
    std::string created_at;
    std::string host; // libvirt URI it was made on
    std::string pool;
    VmState state = VmState::running;          // the VM's state when frozen
    std::string operation;                     // id of the operation that made it
    std::string memory_image;                  // volume; empty for a disk-only fork point
    std::map<std::string, std::string> layers; // disk target -> frozen layer (volume)
    // The VM's lineage at the instant (lineage_to_xml), what its children inherit. Kept in
    // the record: the memory image's header is rewritten for every child, and a killed
    // spawn leaves a child's there. Empty in records made before it was kept.
    std::string vm_lineage;
    // A copy shipped here from another host (forky fork --host): where it was made (the
    // host's name in the inventory, else its URI). Its id is the original's, so a later
    // fork to this host finds it and ships nothing. A copy is never kept for its own
    // sake: gc reclaims it with the last child that uses it.
    std::string shipped_from;
    // SHA-256 of each volume shipped here for it (its memory image, its layers and the
    // layers below them), checked on arrival; what a later fork compares against.
    std::map<std::string, std::string> checksums; // volume -> sha256
    // A copy's kernel and initrd ("kernel"/"initrd" -> volume here): its children boot
    // from these, not from the paths in the memory image (the other host's).
    std::map<std::string, std::string> boot_files;

    // Read from the pool when listed (not stored).
    std::string record_volume;
    std::uint64_t memory_bytes = 0; // allocation of the memory image

    bool kept() const { return kind != Kind::fork; } // snapshots stay until removed
    std::string label() const { return vm + "@" + name; }
};

const char* to_string(ForkPoint::Kind k);

// The record's XML, and back (Error on a malformed one).
std::string fork_point_to_xml(const ForkPoint& fp);
ForkPoint fork_point_from_xml(std::string_view xml);

// Volume names of fork point `seq` of `vm`.
std::string fork_point_record_name(const std::string& vm, unsigned seq);
std::string fork_point_memory_name(const std::string& vm, unsigned seq);
// A VM's top layer made at step `seq` (a fork, a snapshot, a revert).
std::string layer_volume_name(const std::string& vm, const std::string& target, unsigned seq);

// Whether `name` may name a snapshot: a VM name's characters, not "fpN" (forks' own).
std::optional<std::string> snapshot_name_problem(std::string_view name);

// Why a record read from volume `record_volume` cannot be trusted (nullopt when it can):
// every volume it names must be one forky would have made for it (its memory image
// '<vm>.fp<seq>.mem', frozen layers of that VM made before it), so a planted or damaged
// record never makes forky delete or restore from another VM's volumes.
std::optional<std::string> fork_point_problem(const ForkPoint& fp,
                                              const std::string& record_volume);

struct UnreadableRecord {
    std::string volume; // '<vm>.fp<seq>.point'
    std::string why;
};

// Every fork point record in the pool. Records that do not parse or cannot be trusted
// are left out (and listed in `unreadable` when given: gc keeps what they may name);
// empty ones belong to an operation still writing them and are skipped silently.
std::vector<ForkPoint> read_fork_points(Host& host,
                                        std::vector<UnreadableRecord>* unreadable = nullptr);

// Writes a record into its (existing) volume.
void write_fork_point(Host& host, const ForkPoint& fp);

// The record volume's capacity: room for any record.
inline constexpr std::uint64_t fork_point_record_capacity = 16 * 1024;

// libvirt's view: the fork point as a snapshot of its VM (metadata only), so virsh
// snapshot-list shows it; `domain_xml` is the VM's XML at the instant. Removed with the
// fork point. A VM that is gone has no snapshot metadata: nothing to do.
void define_snapshot_metadata(Host& host, const ForkPoint& fp, const std::string& domain_xml);
void remove_snapshot_metadata(Host& host, const ForkPoint& fp);

} // namespace forky
