// KSM, the kernel's same-page merging: children of one fork point start with the same
// memory, so KSM can keep one copy of each page they have not changed. What it shares
// (/sys/kernel/mm/ksm), each forky VM's part of it (/proc/PID/ksm_merging_pages of its
// QEMU), per family and per host, and the knobs forkyd turns while forks run.
// This machine's view only: libvirt has no call for a process's memory, so a remote host's
// figures come from its own forkyd (forky --server).
#pragma once

#include "vm.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace forky {

inline constexpr const char* default_ksm_dir = "/sys/kernel/mm/ksm";

struct KsmSettings {
    unsigned run = 0; // 0 stopped, 1 merging, 2 unmerge everything
    unsigned pages_to_scan = 100;
    unsigned sleep_ms = 20; // sleep_millisecs
    bool operator==(const KsmSettings&) const = default;
};

struct KsmStatus {
    bool available = false; // the kernel has KSM
    KsmSettings settings;
    std::uint64_t pages_shared = 0;  // KSM pages in use
    std::uint64_t pages_sharing = 0; // pages mapped onto them beyond the first: the saving
    std::uint64_t page_size = 4096;
    std::uint64_t saved_bytes() const { return pages_sharing * page_size; }
};

KsmStatus read_ksm(const std::filesystem::path& dir = default_ksm_dir);
// Writes pages_to_scan, sleep_millisecs, then run; throws Error naming the file and why.
void write_ksm(const KsmSettings& s, const std::filesystem::path& dir = default_ksm_dir);
// How many times KSM went through all mergeable memory (full_scans).
std::uint64_t ksm_full_scans(const std::filesystem::path& dir = default_ksm_dir);

struct QemuProcess {
    int pid = 0;
    std::uint64_t rss_bytes = 0;     // resident memory (a page KSM merged counts in each)
    std::uint64_t pss_bytes = 0;     // proportional: a shared page split among its sharers
    std::uint64_t merging_pages = 0; // its pages merged by KSM
};

// The QEMU process of each running domain on this machine, by the domain's UUID (QEMU
// runs with "-uuid UUID", which libvirt always passes).
std::map<std::string, QemuProcess> qemu_processes(const std::filesystem::path& proc = "/proc");

struct FamilyMemory {
    std::string root;             // the family's first VM (removed or not)
    std::vector<std::string> vms; // its VMs with a QEMU process here
    std::uint64_t rss_bytes = 0;
    std::uint64_t merging_pages = 0;
    // An estimate: what KSM saves the family if its merged pages are shared among its own
    // VMs (n VMs sharing a page save n - 1 copies of it).
    std::uint64_t saved_bytes = 0;
};

struct MemoryStats {
    KsmStatus ksm;
    std::vector<FamilyMemory> families; // by root's name
    bool tuned_by_forkyd = false;       // forkyd has KSM in hand (its figures: forky --server)
};

// Groups `vms` into families (a VM's family is its oldest ancestor forky knows by name)
// and adds up what their QEMU processes hold and share.
MemoryStats memory_stats(const std::vector<VmInfo>& vms,
                         const std::map<std::string, QemuProcess>& processes, const KsmStatus& ksm);

// memory_stats of `host`'s forky VMs, read here: refused (UsageError) when `host` is not
// this machine's hypervisor.
MemoryStats host_memory_stats(Host& host);

// UsageError unless `uri` is this machine's hypervisor (for memory figures).
void require_local_uri(const std::string& uri);

// Whether `uri` names this machine's hypervisor (no host part): /proc is then its own.
bool is_local_uri(const std::string& uri);

inline constexpr const char* default_ksm_state = "/run/forky/ksm.state";

// forkyd's hand on KSM: on, tuned to `wanted`, while forked VMs run; the settings found
// before any forkyd took it put back once none holds it. What was found, and who holds it
// (process id and start time), live in `state` under a lock, so two forkyds on one machine
// share KSM, and one killed (SIGKILL) leaves what the next forkyd needs to put it back.
class KsmTuner {
public:
    explicit KsmTuner(KsmSettings wanted, std::filesystem::path dir = default_ksm_dir,
                      std::filesystem::path state = default_ksm_state)
        : wanted_(wanted), dir_(std::move(dir)), state_(std::move(state)) {}
    // `forks`: how many forked VMs run now. Returns what it changed, for the log.
    std::optional<std::string> update(unsigned forks);
    // Lets go of KSM: the settings found are put back when no other forkyd holds it.
    std::optional<std::string> restore();
    bool active() const { return holding_; }

private:
    KsmSettings wanted_;
    std::filesystem::path dir_;
    std::filesystem::path state_;
    bool holding_ = false;
};

// The resident memory of a running VM's QEMU (libvirt's memory statistics: works on a
// remote host too).
std::uint64_t rss_bytes(Host& host, const std::string& vm);

} // namespace forky
