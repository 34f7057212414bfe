// A per-VM lock that works on any hypervisor forky can reach: a volume '<vm>.lock' in
// forky's pool. Creating a volume is atomic in libvirtd (a taken name is refused), so two
// forky processes, on this machine or on two, cannot both hold it. The volume's content
// is the operation's journal: who holds it and every child and volume it has created so
// far, so that `forky gc` can undo an operation whose process was killed.
//
// A journal is evidence, never an order: gc acts on it only where the domains it names
// carry forky's lineage for that operation (see journal_may_remove), and a journal that
// does not parse is reported and left alone.
#pragma once

#include "cancel.hpp"
#include "host.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace forky {

// This process's machine, unique where host names are not: the machine-id, the boot and
// the pid namespace (a pid means something only within those).
const std::string& this_machine_id();

struct Journal {
    enum class State {
        blank,      // a lock taken a moment ago, journal not written yet
        valid,      //
        malformed,  // does not parse: reported, never acted on
        unreadable, // libvirt could not read it (in use, no download support)
    };
    State state = State::blank;
    std::string problem; // why malformed or unreadable

    std::string operation; // "fork", "up", "rm", "stop", "child" (a name reserved by a fork)
    std::string vm;
    std::string holder_host;             // for people: the host name
    std::string holder_id;               // for liveness: this_machine_id() of the holder
    long holder_pid = 0;                 //
    unsigned long long holder_start = 0; // the process's start time (/proc/PID/stat)
    std::int64_t since = 0;              // seconds since the epoch
    std::string op;                      // this operation's id, also in its VMs' lineage
    std::vector<std::pair<std::string, std::string>> children; // domains created: name, UUID
    std::vector<std::string> volumes;                          // volumes created
    std::string paused;             // UUID of the VM the operation paused (a cold fork's parent)
    bool resumed = false;           // and resumed again
    bool committed = false;         // the operation is complete: gc only releases its lock
    std::vector<std::string> mdevs; // mediated devices created (UUIDs)
    std::string detached;           // UUID of the VM whose GPUs it detached for a cut
    bool reattached = false;        // and attached again

    std::string lock_volume; // where it was read from (read_journals)
    long long owner = -1;    // that volume's owner (uid), -1 when libvirt does not say

    std::string encode() const;
    static Journal decode(std::string_view text);

    // Whether the process that wrote it still runs. A holder on another machine cannot be
    // checked from here: it counts as alive until `stale_after` has passed.
    bool holder_alive(std::chrono::seconds stale_after = std::chrono::hours(1)) const;
};

std::string lock_volume_name(const std::string& vm);

class VmLock {
public:
    // Takes the lock of `vm`, waiting up to `wait` while another live process holds it
    // (ConflictError "busy" after that; InterruptedError at once when `cancel` is
    // requested). A lock left by a dead process is a ConflictError that points at gc.
    static VmLock acquire(Host& host, const std::string& vm, const std::string& operation,
                          std::chrono::milliseconds wait = std::chrono::seconds(120),
                          const CancelToken& cancel = {});
    // Takes it only if nobody holds it (alive or not); nullopt otherwise.
    static std::optional<VmLock> try_acquire(Host& host, const std::string& vm,
                                             const std::string& operation);

    VmLock(VmLock&& other) noexcept;
    VmLock& operator=(VmLock&&) = delete;
    VmLock(const VmLock&) = delete;
    ~VmLock();

    const Journal& journal() const { return journal_; }
    // Makes room for a journal of `bytes` (the whole plan of the operation), before any
    // of it is made, so a large fork never finds its journal full half-way.
    void reserve(std::size_t bytes);

    // Journal a change before making it, so a kill between the two loses nothing.
    void record_child(const std::string& name, const std::string& uuid);
    void record_volume(const std::string& name);
    void record_paused(const std::string& uuid);
    void record_resumed();
    void record_mdev(const std::string& uuid);
    void record_detached(const std::string& vm_uuid);
    void record_reattached();
    // The commit point: once this is written, gc never undoes the operation (should the
    // lock outlive it). Called last, before the transaction commits in memory.
    void record_committed();
    void release() noexcept;
    // Leaves the lock and its journal in the pool for `forky gc` (an undo failed).
    void abandon() noexcept { held_ = false; }

private:
    VmLock(Host& host, Journal journal);
    static bool try_create(Host& host, const std::string& vm);
    void write();

    Host* host_;
    Journal journal_;
    std::uint64_t capacity_;
    bool held_ = false;
    bool journaling_ = true; // off where the storage driver cannot upload
};

// The journal in lock volume `lock` (whole volume).
Journal read_journal(Host& host, const std::string& lock);

// Every lock in the pool with its journal.
std::vector<Journal> read_journals(Host& host);

} // namespace forky
