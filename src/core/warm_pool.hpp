// Warm pools: children of a stored snapshot (VM@SNAP) restored before anyone asks for
// them and left paused, so that handing one out is a resume, not a restore.
//
// A pool is a record in forky's storage pool ('<NAME>.warmpool', XML) on the host of its
// snapshot: what it is made from, how many children it keeps ready, where they go. Its
// ready children are ordinary forky VMs (forked from the snapshot, paused) whose lineage
// names the pool (`warm_pool`); `acquire` takes one under its VM lock, clears that mark
// and resumes it, so no child is handed out twice. A refill is a fork of the snapshot
// (one operation, journalled: a refill killed midway is gc's), under the pool's lock.
#pragma once

#include "cancel.hpp"
#include "host.hpp"
#include "lineage.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

struct WarmPool {
    std::string name;
    std::string source; // "VM@SNAP"
    unsigned size = 0;  // children kept ready
    // Where its children go with a host inventory: one host's name, or spread by the
    // placement policy; neither: the snapshot's own host.
    std::string host;
    bool spread = false;
    std::string created_at;
    // Declared in policies/pools.yaml (forkyd keeps it; `pool rm` of it is undone by
    // forkyd's next round unless the declaration goes too).
    bool declared = false;
    bool operator==(const WarmPool&) const = default;
};

inline constexpr unsigned max_warm_pool_size = 256;

// The record's XML, and back (Error on a malformed one).
std::string warm_pool_to_xml(const WarmPool& pool);
WarmPool warm_pool_from_xml(std::string_view xml);
std::string warm_pool_record_name(const std::string& pool);
// The lock a pool's changes (create, resize, refill, rm) are made under.
std::string warm_pool_lock_name(const std::string& pool);

// A pool's name must be a valid VM name (its children are named NAME-N); UsageError.
void check_warm_pool_name(const std::string& name);

// Every pool recorded on the host (records that do not parse are warned about, skipped).
std::vector<WarmPool> read_warm_pools(Host& host);
// One pool; NotFoundError naming it.
WarmPool read_warm_pool(Host& host, const std::string& name);

// Records a new pool (ConflictError when one of that name exists). The snapshot must exist
// on this host: NotFoundError otherwise. Makes no child (refill does).
void warm_pool_create(Host& host, const WarmPool& pool, const CancelToken& cancel = {});
// Changes what is recorded (size, placement) under the pool's lock.
void warm_pool_update(Host& host, const WarmPool& pool, const CancelToken& cancel = {});
// Removes the record. Its ready children are the caller's to remove first.
void warm_pool_remove_record(Host& host, const std::string& name, const CancelToken& cancel = {});

// A ready child of a pool on one host.
struct ReadyChild {
    Host* host = nullptr;
    std::string host_name; // in the inventory ("default" without one)
    std::string name;
    std::uint64_t rss_bytes = 0; // its QEMU's resident memory (libvirt's memory stats)
    // ready: paused, nobody holds its lock; held: paused, an operation holds its lock (an
    // acquire now, or a killed refill's half-made child until forky gc); stale: marked
    // but not paused (resumed or stopped behind forky's back): never handed out, removed
    // by the next refill.
    enum class Status { ready, held, stale };
    Status status = Status::ready;
};

// The children of pool `pool` on `host` that are not handed out (VMs whose lineage names
// the pool), each with its status, by name.
std::vector<ReadyChild> ready_children(Host& host, const std::string& host_name,
                                       const std::string& pool, bool with_memory = false);
// Those of `children` with status `status`.
std::vector<ReadyChild> with_status(const std::vector<ReadyChild>& children,
                                    ReadyChild::Status status);

struct Acquired {
    std::string name;
    std::string host_name;
    std::vector<PortForward> ports;
    std::optional<std::string> clock_not_set; // why the guest's clock could not be set
};

// Hands out one ready child from `candidates` (in order): takes its lock (a child another
// client holds is skipped), checks it is still ready, resumes it, then clears its pool
// mark (its TTL runs from now; a kill between the two leaves it stale, never handed out),
// and sets its clock where a guest agent answers. nullopt when none could be had.
std::optional<Acquired> warm_pool_take(const std::vector<ReadyChild>& candidates,
                                       const std::string& pool);

// Removes ready children of a pool (resize down, pool rm): each under its lock, only if
// still ready. Returns the names removed.
std::vector<std::string> remove_ready(const std::vector<ReadyChild>& children,
                                      const std::string& pool, std::size_t how_many,
                                      const CancelToken& cancel = {});

// ---- Across the fleet (or the one host): what the CLI and forkyd call. ----
class Fleet;
struct PlacementPolicy;
struct ForkOptions;

struct WarmPoolView {
    WarmPool pool;
    std::string host_name;          // where its record (and snapshot) is
    std::vector<ReadyChild> ready;  // status ready
    unsigned held = 0;              // status held
    unsigned stale = 0;             // status stale
    std::uint64_t memory_bytes = 0; // held by the ready children (with_memory)
    bool snapshot_missing = false;  // its snapshot is gone: refills fail until pool rm
};
// Every pool of the fleet with its ready children (on whichever hosts they are). A host
// that does not answer is named in `unreachable` (its pools and children are missing).
std::vector<WarmPoolView> list_warm_pools(Fleet& fleet, bool with_memory,
                                          std::vector<std::string>* unreachable = nullptr);
// The host holding pool `name`'s record; NotFoundError when none does.
Host& warm_pool_host(Fleet& fleet, const std::string& name, std::string* host_name = nullptr);
// Pool `name`'s children not handed out, across the fleet (each with its status).
std::vector<ReadyChild> fleet_ready(Fleet& fleet, const std::string& name,
                                    bool with_memory = false);

// Hands out one ready child of pool `name` (warm_pool_take over the fleet's). When none is
// ready: ConflictError "pool empty", or, with `wait`, waits up to it for a refill
// (`on_empty` is called once, when it first finds none: start one). NotFoundError when the
// pool is removed meanwhile.
Acquired warm_pool_acquire(Fleet& fleet, const std::string& name,
                           std::chrono::milliseconds wait = {}, const CancelToken& cancel = {},
                           const std::function<void()>& on_empty = {});

struct RefillResult {
    unsigned ready_before = 0;
    std::vector<std::string> made;
    std::vector<std::string> removed;   // above the size (after a resize down)
    std::vector<std::string> placement; // reasons, with --spread
};
// Brings pool `name` to its size, under its lock (a concurrent refill waits, then finds
// nothing to do): a fork of its snapshot into the missing children, paused, marked ready,
// placed as the pool says; extra ready children (a pool made smaller) are removed.
// `base` carries the caller's cancellation, policies and lock wait.
RefillResult warm_pool_refill(Fleet& fleet, const std::string& name,
                              const PlacementPolicy& placement, ForkOptions base);

// The commands, as the CLI runs them and forkyd serves them:
// pool create: records `pool` on its snapshot's host (ConflictError when the fleet has a
// pool of that name) and fills it; a pool that cannot be filled at all is not kept.
RefillResult warm_pool_make(Fleet& fleet, const WarmPool& pool, const PlacementPolicy& placement,
                            ForkOptions base);
// pool resize: the new size recorded, then a refill (made or removed to it).
RefillResult warm_pool_resize(Fleet& fleet, const std::string& name, unsigned size,
                              const PlacementPolicy& placement, ForkOptions base);
struct PoolRemoved {
    std::size_t removed = 0; // ready children removed
    std::size_t ready = 0;   // ready children found (the others were being handed out)
    bool declared = false;   // pools.yaml declares it: forkyd makes it again
};
// pool rm: the record first (no refill makes another child after it), then its ready
// children. Children handed out stay.
PoolRemoved warm_pool_remove(Fleet& fleet, const std::string& name, const CancelToken& cancel);
// acquire --name NEW: libvirt renames only shut-off domains, so a child under a name of
// the caller's is restored from the pool's snapshot now (a fork, not a resume), marked as
// handed out by the pool; the ready children stay ready.
Acquired warm_pool_acquire_as(Fleet& fleet, const std::string& pool, const std::string& name,
                              ForkOptions base);
// release: removes a child a pool handed out (ConflictError for a ready child or any other
// VM). Returns the pool's name.
std::string warm_pool_release(Fleet& fleet, const std::string& vm, const CancelToken& cancel);

// policies/pools.yaml: pools forkyd keeps filled.
//   pools:
//     - name: sandbox
//       from: tiny@seeded
//       size: 4
//       host: a        # optional (with forkyd's hosts:); or spread: true
std::vector<WarmPool> parse_pools_policy(std::string_view text, const std::filesystem::path& file);
// The folder's pools.yaml; none there: no pool.
std::vector<WarmPool> load_pools_policy(const std::filesystem::path& dir);

} // namespace forky
