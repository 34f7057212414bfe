// forky bench: fork against cold boot of the same guest, measured side by side in one run
// on one host. Figures, not verdicts: the machine may be shared and noisy.
#pragma once

#include "host.hpp"
#include "operation.hpp"
#include "spec.hpp"

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace forky {

struct BenchOptions {
    std::string name = "forky-bench"; // the parent; children are NAME-N
    std::vector<unsigned> counts{1, 4, 8};
    std::function<void(const std::string&)> progress; // one line per step
    std::vector<std::filesystem::path> image_dirs;    // as UpOptions::image_dirs
    bool upload = false;                              // as UpOptions::upload (a fleet)
    // After the largest round: KSM on (this machine's hypervisor only) until it settles,
    // then the children's memory again; the settings it found are put back.
    bool ksm = true;
    // Called once while the largest round's children run (after KSM), to time what a
    // busy host answers (forky bench --server: a listing through forkyd).
    std::function<void()> while_forked;
    // A warm pool of this many children of the stored snapshot (0: none).
    unsigned pool_size = 8;
    // An export of the running parent and its import; diffs against its snapshot (file by
    // file only where the host is this machine: libguestfs reads the images here).
    bool export_diff = true;
    OpContext ctx;
};

struct BenchRound {
    unsigned count = 0;
    double fork_ms = 0;              // forky fork until every child runs
    double first_child_print_ms = 0; // fork start until child 1 prints a tick
    double snapshot_ms = 0;          // freezing the fork point (parent side)
    std::optional<std::uint64_t> parent_downtime_ms;
    std::uint64_t memory_image_bytes = 0;     // written once per fork point
    std::uint64_t child_disk_bytes = 0;       // per child: its volumes' allocation
    std::uint64_t header_bytes_per_child = 0; // the memory image's header, rewritten per child
    std::uint64_t children_rss_bytes = 0;     // all children together
};

// The largest round's children once KSM has merged what they share.
struct KsmRound {
    unsigned count = 0;
    double settle_ms = 0;                 // KSM on until its savings stopped growing
    std::uint64_t full_scans = 0;         // KSM's passes over memory meanwhile
    std::uint64_t saved_bytes = 0;        // the host's, pages_sharing * page size
    std::uint64_t children_pss_bytes = 0; // the children's QEMUs, shared pages split
    std::uint64_t children_rss_bytes = 0; // the same, each shared page counted in each
};

// A warm pool of the stored snapshot: its refill, the memory its paused children hold,
// and an acquire (a resume) against the cold boot.
struct PoolBench {
    unsigned size = 0;
    double refill_ms = 0;               // forky pool refill of `size` children
    std::uint64_t paused_rss_bytes = 0; // the ready children's QEMUs together
    std::optional<KsmRound> ksm;        // the same after KSM (none: not here)
    double acquire_call_ms = 0;         // forky acquire, call to answer (the resume)
    double acquire_print_ms = 0;        // acquire until the child prints a tick
};

// forky export of the running parent, forky import of it, forky diff against its stored
// snapshot (--blocks, and file by file through libguestfs).
struct ExportBench {
    double export_ms = 0;           // forky export of the running VM, call to directory
    std::uint64_t export_bytes = 0; // the directory's files
    double import_print_ms = 0;     // forky import until the copy prints a tick
    double diff_blocks_ms = 0;      // forky diff --blocks
    std::optional<double> diff_ms;  // forky diff, file by file (none: remote host)
    double diff_appliance_ms = 0;   // of which libguestfs (launch, reads, shutdown)
    bool diff_tcg = false;          // libguestfs's appliance under emulation
};

struct BenchReport {
    std::string domain_type;
    std::uint64_t memory_bytes = 0;
    unsigned vcpus = 0;
    double cold_boot_ms = 0; // forky up until the boot line is on the console
    std::uint64_t parent_rss_bytes = 0;
    double tick_period_ms = 0; // the guest's FORKY-TICK lines, one every this long
    std::vector<BenchRound> rounds;
    // History: a named snapshot, a fork from it once stored, a revert to it.
    double snapshot_ms = 0;                          // forky snapshot, start to end
    std::optional<std::uint64_t> snapshot_paused_ms; // the VM's pause during it
    double fork_from_snapshot_ms = 0;                // fork VM@SNAP until the child prints
    double revert_ms = 0;                            // forky revert until the VM prints again
    std::optional<KsmRound> ksm;                     // none: no KSM here, or a remote host
    std::string ksm_skipped;                         // why not
    std::optional<PoolBench> pool;                   // a warm pool (pool_size > 0)
    std::optional<ExportBench> exported;             // export_diff
};

// Forks to another host of the fleet against a fork on the same host, side by side: the
// fork point's first fork to host B (everything shipped) and a later one (its copy there).
struct CrossHostReport {
    std::string from, to;          // the hosts' names
    double same_host_ms = 0;       // fork VM@SNAP on A until the child prints
    double first_ms = 0;           // fork VM@SNAP --host B, first time, until the child prints
    double later_ms = 0;           // the same again (nothing to ship)
    std::uint64_t first_bytes = 0; // shipped by the first (data; holes not counted)
    std::uint64_t later_bytes = 0; // shipped by the later one
    double ship_ms = 0;            // the first's shipping alone
    std::uint64_t memory_image_bytes = 0;
};

// Boots spec as options.name on `a` (its files uploaded there), snapshots it, forks the
// snapshot once on `a`, then twice to `b`; removes everything at the end, also on failure.
CrossHostReport run_cross_host_bench(Host& a, const std::string& a_name, Host& b,
                                     const std::string& b_name, const DomainSpec& spec,
                                     const BenchOptions& options);


// Boots spec as options.name, forks it for each count (removing the children between
// rounds), then snapshots it, forks from the stored snapshot and reverts to it; removes
// everything at the end, also on failure.
BenchReport run_bench(Host& host, const DomainSpec& spec, const BenchOptions& options);

} // namespace forky
