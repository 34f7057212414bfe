// The fork engine, in two parts that every history operation is made of:
//   freeze: a VM becomes a fork point (memory image + frozen layer per disk, recorded in
//           the pool and shown by libvirt as a snapshot); the VM carries on, on new tops.
//   spawn:  domains start from a fork point: children under new names and UUIDs, or,
//           for a revert, the VM itself under its own. Each from the one memory image, its
//           header set to that domain's XML in place; restores side by side.
// fork = freeze + spawn; snapshot = freeze; fork VM@SNAP = spawn; revert = spawn onto the
// VM (after freezing the state it leaves). Both run inside an Operation, which journals,
// makes and undoes each step.
#pragma once

#include "fork_point.hpp"
#include "operation.hpp"
#include "plan.hpp"
#include "save_image.hpp"

#include <optional>
#include <string>
#include <vector>

namespace forky {

// What is known of the pool and of one of forky's VMs (`dom`), gathered for a plan.
PoolFacts pool_facts(Host& host);
VmFacts vm_facts(Host& host, virDomainPtr dom, const PoolFacts& pool);

// The memory image's header: the domain's XML at the fork point. NotFoundError naming
// what the fork point lost when its memory image or a layer is gone.
SaveImageHeader read_header(Host& host, const ForkPoint& point);

// The VM's lineage as it was at the fork point (from the XML in its memory image).
Lineage lineage_at(Host& host, const ForkPoint& point);

struct FreezeResult {
    ForkPoint point;
    // How long the VM stood still: QEMU's downtime for a live snapshot's switch-over, or
    // the whole cut when cold. Unset when it stays paused (or was paused already).
    std::optional<std::uint64_t> paused_ms;
    bool left_paused = false;
    double ms = 0; // the freeze, start to end
};

// Freezes the VM of `vm` as planned. Once the snapshot is taken, the VM runs on its new
// tops whatever happens next (those steps are kept); the fork point itself (record,
// memory image, libvirt's record of it) is undone if the operation fails later.
FreezeResult freeze(Operation& op, const VmFacts& vm, const FreezePlan& plan);

// A domain to start from a fork point's memory image.
struct SpawnTarget {
    std::string name;
    std::string uuid;
    std::map<std::string, std::string> disk_paths; // target -> its top layer (made)
    std::string console_path;                      // its console log, or empty
    Lineage lineage;
    bool is_new = true; // a new child (false: the VM itself, reverted)
    // "kernel"/"initrd" -> its path on this host, where the image's differ (a fork point
    // shipped from another host).
    std::map<std::string, std::string> boot_paths;
};

struct SpawnOptions {
    bool paused = false; // leave them paused (warm)
    // Set each guest's clock to the host's time once it runs (a fork point stored a while
    // ago: the guest's clock would go on from the moment it was frozen). Needs a guest
    // agent in the guest (virDomainSetTime); where none answers, clock_not_set says why.
    bool set_clock = false;
};

struct SpawnResult {
    std::vector<std::string> started;
    std::uint64_t memory_image_bytes = 0;
    std::uint64_t header_bytes = 0;         // rewritten in place per domain
    std::vector<std::string> clock_not_set; // "'NAME': libvirt's reason" (set_clock)
    double ms = 0;
};

// Sets a running guest's clock to the host's time (virDomainSetTime: needs a guest agent
// that answers); the reason when it could not.
std::optional<std::string> set_guest_clock(virDomainPtr dom);

// The XML `t` runs under, made from `domain_xml` (a memory image's header, or a VM's
// definition): the target's identity, disks, console, lineage, kernel and initrd.
std::string spawn_target_xml(std::string_view domain_xml, const SpawnTarget& t);
// Starts each target from `point` (its memory image): the header set to the target's XML,
// restored side by side, made persistent only once its restore was seen to succeed under
// its UUID. The header is the fork point's own again afterwards.
SpawnResult spawn(Operation& op, const ForkPoint& point, std::vector<SpawnTarget> targets,
                  const SpawnOptions& options);

// One domain restored from `point` in place, outside any operation's journal: header set,
// restored, defined, ports forwarded, header back. What an undo uses to bring a VM back.
void restore_onto(Host& host, const ForkPoint& point, const SpawnTarget& target, bool paused);

// Children of `point` as `plan` names them: their own tops over its layers, console logs,
// lineage (generation from the VM's lineage at the fork point). Made in `op`.
std::vector<SpawnTarget> make_children(Operation& op, const ForkPoint& point,
                                       const Lineage& at_point, const SpawnPlan& plan);

// Reserves the plan's names (each child's own lock, held by `op`) and returns the plan of
// the names it got: a name another operation holds is skipped for the next free one.
SpawnPlan reserve_children(Operation& op, const ForkPoint& point, const PoolFacts& pool,
                           SpawnRequest request);

} // namespace forky
