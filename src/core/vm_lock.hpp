// A per-VM lock that works on any hypervisor forky can reach: a volume '<vm>.lock' in
// forky's pool. Creating a volume is atomic in libvirtd (a taken name is refused), so two
// forky processes, on this machine or on two, cannot both hold it. The volume's content
// is the operation's journal: who holds it and every child and volume it has created so
// far, so that `forky gc` can undo an operation whose process was killed.
#pragma once

#include "host.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace forky {

struct Journal {
    std::string operation; // "fork", "up", "rm"
    std::string vm;
    std::string holder_host;
    long holder_pid = 0;
    unsigned long long holder_start = 0; // the process's start time (/proc/PID/stat)
    std::int64_t since = 0;              // seconds since the epoch
    std::vector<std::pair<std::string, std::string>> children; // domains created: name, UUID
    std::vector<std::string> volumes;                          // volumes created
    bool readable = true; // false where the pool cannot be read back (no download support)

    std::string encode() const;
    static Journal decode(std::string_view text);

    // Whether the process that wrote it still runs. A holder on another machine cannot be
    // checked from here: it counts as alive until `stale_after` has passed.
    bool holder_alive(std::chrono::seconds stale_after = std::chrono::hours(1)) const;
};

std::string lock_volume_name(const std::string& vm);

class VmLock {
public:
    // Takes the lock of `vm`, waiting up to `wait` while another live process holds it.
    // A lock left by a dead process is a ConflictError that points at `forky gc`.
    static VmLock acquire(Host& host, const std::string& vm, const std::string& operation,
                          std::chrono::milliseconds wait = std::chrono::seconds(120));

    VmLock(VmLock&& other) noexcept;
    VmLock& operator=(VmLock&&) = delete;
    VmLock(const VmLock&) = delete;
    ~VmLock();

    // Journal a creation before making it, so a kill between the two loses nothing.
    void record_child(const std::string& name, const std::string& uuid);
    void record_volume(const std::string& name);
    void release() noexcept;
    // Leaves the lock and its journal in the pool for `forky gc` (an undo failed).
    void abandon() noexcept { held_ = false; }

private:
    VmLock(Host& host, Journal journal);
    void write();

    Host* host_;
    Journal journal_;
    bool held_ = false;
    bool journaling_ = true; // off where the storage driver cannot upload
};

// Every lock in the pool with its journal (unreadable ones have an empty journal).
std::vector<Journal> read_journals(Host& host);

} // namespace forky
