#include "bench.hpp"

#include "diff.hpp"
#include "export.hpp"

#include "errors.hpp"
#include "fleet.hpp"
#include "fork.hpp"
#include "gc.hpp"
#include "history.hpp"
#include "ksm.hpp"
#include "save_image.hpp"
#include "vm.hpp"
#include "warm_pool.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// Polls a VM's console until `needle` appears after `offset`; returns when it was seen.
Clock::time_point wait_console(Host& host, const std::string& vm, const std::string& needle,
                               std::uint64_t offset = 0,
                               std::chrono::seconds timeout = std::chrono::seconds(180)) {
    const auto deadline = Clock::now() + timeout;
    std::string tail;
    while (Clock::now() < deadline) {
        VolumeChunk c = vm_console(host, vm, offset);
        offset = c.next_offset;
        tail += c.data;
        if (tail.find(needle) != std::string::npos)
            return Clock::now();
        if (tail.size() > needle.size())
            tail.erase(0, tail.size() - needle.size());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw Error("VM '" + vm + "' did not print '" + needle + "' within " +
                std::to_string(timeout.count()) + " s");
}

std::uint64_t volume_allocation(Host& host, const std::string& name) {
    StorageVolPtr vol = host.find_volume(name);
    if (!vol)
        return 0;
    virStorageVolInfo info{};
    lv_check(virStorageVolGetInfo(vol.get(), &info), "Failed to query volume '" + name + "'");
    return info.allocation;
}

void remove_quietly(Host& host, const std::string& vm) {
    try {
        if (host.find_domain(vm))
            vm_remove(host, vm, /*force=*/true);
    } catch (const std::exception&) {
        // best effort: the error that stopped the bench is the one to report
    }
}

// The bench VM, its snapshots and whatever descends from it.
void remove_everything(Host& host, const std::string& vm) {
    try {
        vm_remove_recursive(host, vm, HistoryOptions{});
    } catch (const std::exception&) {
        remove_quietly(host, vm);
    }
}

// KSM on, hard, until its savings settle: at least three full scans, and the last one
// adding under 1 % (or 3 minutes). Then the children's QEMUs as the kernel counts them.
KsmRound settle_ksm(Host& host, const std::vector<std::string>& children, const OpContext& ctx) {
    KsmRound k;
    k.count = static_cast<unsigned>(children.size());
    KsmTuner tuner({1, 5000, 20});
    const auto t0 = Clock::now();
    tuner.update(1);
    try {
        const std::uint64_t scans0 = ksm_full_scans();
        std::uint64_t last_scan = scans0, last_saved = 0;
        while (Clock::now() - t0 < std::chrono::minutes(3)) {
            ctx.cancel.sleep_for(std::chrono::milliseconds(500), "Waiting for KSM");
            const std::uint64_t scans = ksm_full_scans();
            if (scans == last_scan)
                continue;
            const std::uint64_t saved = read_ksm().saved_bytes();
            const bool settled = scans - scans0 >= 3 && saved - std::min(saved, last_saved) <
                                                            std::max<std::uint64_t>(saved / 100, 1);
            last_scan = scans;
            last_saved = saved;
            if (settled)
                break;
        }
        k.settle_ms = ms_between(t0, Clock::now());
        k.full_scans = ksm_full_scans() - scans0;
        k.saved_bytes = read_ksm().saved_bytes();
        const auto procs = qemu_processes();
        for (const auto& c : children) {
            auto p = procs.find(vm_info(host, c).uuid);
            if (p == procs.end())
                continue;
            k.children_pss_bytes += p->second.pss_bytes;
            k.children_rss_bytes += p->second.rss_bytes;
        }
    } catch (...) {
        tuner.restore();
        throw;
    }
    tuner.restore();
    return k;
}

// A warm pool of `source`: refilled, its paused children's memory (and after KSM, where
// the bench may turn it on), then one acquire timed to the child's first tick. Every
// child made is added to `children` (the caller removes them).
PoolBench bench_pool(Host& host, const std::string& source, const BenchOptions& o,
                     std::vector<std::string>& children, const std::string& ksm_skipped) {
    PoolBench b;
    b.size = o.pool_size;
    WarmPool pool;
    pool.name = o.name + "-pool";
    pool.source = source;
    pool.size = o.pool_size;
    pool.created_at = utc_now_rfc3339();
    Fleet fleet(one_host_inventory(host.options().uri, host.options().pool),
                [&host](const HostEntry&) { return host.options(); });
    warm_pool_create(host, pool, o.ctx.cancel);
    try {
        ForkOptions fo;
        fo.ctx = o.ctx;
        const auto t_refill = Clock::now();
        RefillResult r = warm_pool_refill(fleet, pool.name, PlacementPolicy{}, fo);
        b.refill_ms = ms_between(t_refill, Clock::now());
        children = r.made;
        std::this_thread::sleep_for(std::chrono::seconds(1));
        for (const auto& c : ready_children(host, "default", pool.name, /*with_memory=*/true))
            b.paused_rss_bytes += c.rss_bytes;
        if (o.ksm && ksm_skipped.empty() && host.is_local() && read_ksm().available) {
            try {
                b.ksm = settle_ksm(host, children, o.ctx);
            } catch (const Error&) {
                // not root: the figures without KSM stand
            }
        }
        // Where each ready child's console ends: the one handed out prints after it.
        std::map<std::string, std::uint64_t> offsets;
        for (const auto& c : ready_children(host, "default", pool.name))
            offsets[c.name] = host.read_volume(console_volume_name(c.name), 0).next_offset;
        const auto t_acquire = Clock::now();
        Acquired got = warm_pool_acquire(fleet, pool.name, {}, o.ctx.cancel);
        b.acquire_call_ms = ms_between(t_acquire, Clock::now());
        const std::uint64_t from = offsets[got.name];
        b.acquire_print_ms =
            ms_between(t_acquire, wait_console(host, got.name, "FORKY-TICK", from));
    } catch (...) {
        warm_pool_remove_record(host, pool.name);
        throw;
    }
    warm_pool_remove_record(host, pool.name);
    return b;
}

ExportBench bench_export(Host& host, const BenchOptions& o, const std::string& snapshot,
                         std::vector<std::string>& made) {
    ExportBench b;
    std::string tmpl = (std::filesystem::temp_directory_path() / "forky-bench-XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr)
        throw StorageError("Cannot make a folder for the bench's export");
    const std::filesystem::path tmp = buf.data();
    struct Cleanup {
        std::filesystem::path dir;
        ~Cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } cleanup{tmp};
    ExportOptions eo;
    eo.ctx = o.ctx;
    auto t = Clock::now();
    ExportResult ex = vm_export(host, o.name, tmp / "export", eo);
    b.export_ms = ms_between(t, Clock::now());
    b.export_bytes = ex.bytes;
    ImportOptions io;
    io.ctx = o.ctx;
    io.name = o.name + "-imported";
    made.push_back(io.name);
    t = Clock::now();
    vm_import(host, tmp / "export", io);
    b.import_print_ms = ms_between(t, wait_console(host, io.name, "FORKY-TICK"));
    remove_everything(host, io.name);
    made.pop_back();
    DiffOptions d;
    d.ctx = o.ctx;
    d.blocks = true;
    t = Clock::now();
    vm_diff(host, o.name, snapshot, d);
    b.diff_blocks_ms = ms_between(t, Clock::now());
    if (host.is_local()) {
        d.blocks = false;
        t = Clock::now();
        DiffResult r = vm_diff(host, o.name, snapshot, d);
        b.diff_ms = ms_between(t, Clock::now());
        b.diff_appliance_ms = r.appliance_s * 1000;
        b.diff_tcg = guestfs_needs_tcg();
    }
    return b;
}

} // namespace

BenchReport run_bench(Host& host, const DomainSpec& spec, const BenchOptions& o) {
    auto say = [&](const std::string& line) {
        if (o.progress)
            o.progress(line);
    };
    if (host.find_domain(o.name))
        throw ConflictError("A VM named '" + o.name + "' already exists; bench needs its own");
    if (spec.console != ConsoleMode::log)
        throw UsageError("forky bench reads the guest's console: its spec needs console: log");
    BenchReport report;
    std::vector<std::string> children;
    try {
        say("cold boot of '" + o.name + "'");
        UpOptions up;
        up.name = o.name;
        up.image_dirs = o.image_dirs;
        up.upload = o.upload;
        up.ctx = o.ctx;
        const auto t_up = Clock::now();
        vm_up(host, spec, up);
        report.cold_boot_ms = ms_between(t_up, wait_console(host, o.name, "FORKY-BOOT"));
        wait_console(host, o.name, "FORKY-TICK");
        VmInfo info = vm_info(host, o.name);
        report.domain_type = info.domain_type;
        report.memory_bytes = info.memory_bytes;
        report.vcpus = info.vcpus;
        std::this_thread::sleep_for(std::chrono::seconds(1));
        report.parent_rss_bytes = rss_bytes(host, o.name);
        {
            // The guest's own pace: a "child printing" waits for its next tick, at most
            // one period after it runs.
            const std::uint64_t from = host.read_volume(console_volume_name(o.name), 0).next_offset;
            const auto t0 = Clock::now();
            o.ctx.cancel.sleep_for(std::chrono::seconds(3), "Timing the guest's ticks");
            const std::string seen = host.read_volume(console_volume_name(o.name), from).data;
            std::size_t ticks = 0;
            for (auto at = seen.find("FORKY-TICK"); at != std::string::npos;
                 at = seen.find("FORKY-TICK", at + 1))
                ++ticks;
            if (ticks > 0)
                report.tick_period_ms = ms_between(t0, Clock::now()) / static_cast<double>(ticks);
        }

        for (unsigned count : o.counts) {
            say("fork into " + std::to_string(count));
            BenchRound round;
            round.count = count;
            ForkOptions fo;
            fo.count = count;
            fo.ctx = o.ctx;
            const auto t_fork = Clock::now();
            ForkResult r = vm_fork(host, o.name, fo);
            const auto t_done = Clock::now();
            children = r.children;
            round.fork_ms = ms_between(t_fork, t_done);
            round.first_child_print_ms =
                ms_between(t_fork, wait_console(host, r.children.front(), "FORKY-TICK"));
            round.snapshot_ms = r.snapshot_ms;
            round.parent_downtime_ms = r.parent_downtime_ms;
            round.memory_image_bytes = r.memory_image_bytes;
            round.header_bytes_per_child = r.header_bytes;
            for (const auto& c : r.children)
                wait_console(host, c, "FORKY-TICK");
            std::this_thread::sleep_for(std::chrono::seconds(1));
            std::uint64_t disk = 0;
            for (const auto& c : r.children) {
                for (const auto& v : vm_info(host, c).lineage.volumes)
                    disk += volume_allocation(host, v.name);
                round.children_rss_bytes += rss_bytes(host, c);
            }
            round.child_disk_bytes = disk / r.children.size();
            report.rounds.push_back(round);
            const bool largest = count == *std::max_element(o.counts.begin(), o.counts.end());
            if (largest && o.ksm) {
                if (!is_local_uri(host.options().uri))
                    report.ksm_skipped = "the hypervisor is not this machine's";
                else if (!read_ksm().available)
                    report.ksm_skipped = "no KSM in this kernel";
                else {
                    say("KSM on until it settles, " + std::to_string(count) + " children");
                    try {
                        report.ksm = settle_ksm(host, r.children, o.ctx);
                    } catch (const StorageError& e) {
                        report.ksm_skipped = e.what(); // not root
                    }
                }
            }
            if (largest && o.while_forked)
                o.while_forked();
            for (const auto& c : children)
                remove_quietly(host, c);
            children.clear();
        }

        say("snapshot of '" + o.name + "', a fork from it, a revert to it");
        HistoryOptions ho;
        ho.ctx = o.ctx;
        SnapshotResult snap = vm_snapshot(host, o.name, "bench", ho);
        report.snapshot_ms = snap.ms;
        report.snapshot_paused_ms = snap.paused_ms;
        ForkOptions fo;
        fo.ctx = o.ctx;
        fo.prefix = o.name + "-snap";
        auto t_fork = Clock::now();
        ForkResult r = vm_fork(host, snap.point.label(), fo);
        children = r.children;
        report.fork_from_snapshot_ms =
            ms_between(t_fork, wait_console(host, r.children.front(), "FORKY-TICK"));
        for (const auto& c : children)
            remove_quietly(host, c);
        children.clear();
        if (o.export_diff) {
            say("export of '" + o.name + "', its import, diffs against '" + snap.point.label() +
                "'");
            report.exported = bench_export(host, o, snap.point.label(), children);
        }
        if (o.pool_size > 0) {
            say("warm pool of " + std::to_string(o.pool_size) + " children of '" +
                snap.point.label() + "', an acquire");
            report.pool = bench_pool(host, snap.point.label(), o, children, report.ksm_skipped);
            for (const auto& c : children)
                remove_quietly(host, c);
            children.clear();
        }
        const std::uint64_t offset = host.read_volume(console_volume_name(o.name), 0).next_offset;
        RevertOptions ro;
        ro.ctx = o.ctx;
        ro.discard = true;
        const auto t_revert = Clock::now();
        vm_revert(host, o.name, "bench", ro);
        report.revert_ms = ms_between(t_revert, wait_console(host, o.name, "FORKY-TICK", offset));
    } catch (...) {
        for (const auto& c : children)
            remove_quietly(host, c);
        remove_everything(host, o.name);
        throw;
    }
    remove_everything(host, o.name);
    return report;
}

CrossHostReport run_cross_host_bench(Host& a, const std::string& a_name, Host& b,
                                     const std::string& b_name, const DomainSpec& spec,
                                     const BenchOptions& o) {
    auto say = [&](const std::string& line) {
        if (o.progress)
            o.progress(line);
    };
    const std::string vm = o.name + "-x";
    if (a.find_domain(vm))
        throw ConflictError("A VM named '" + vm + "' already exists; bench needs its own");
    CrossHostReport report;
    report.from = a_name;
    report.to = b_name;
    std::vector<std::pair<Host*, std::string>> children;
    auto cleanup = [&] {
        for (auto it = children.rbegin(); it != children.rend(); ++it)
            remove_quietly(*it->first, it->second);
        remove_everything(a, vm);
    };
    try {
        say("cross-host: '" + vm + "' up on '" + a_name + "'");
        UpOptions up;
        up.name = vm;
        up.image_dirs = o.image_dirs;
        up.upload = true;
        up.ctx = o.ctx;
        vm_up(a, spec, up);
        wait_console(a, vm, "FORKY-TICK");
        HistoryOptions ho;
        ho.ctx = o.ctx;
        const SnapshotResult snap = vm_snapshot(a, vm, "xbench", ho);
        if (auto mem = a.volume_info(snap.point.memory_image))
            report.memory_image_bytes = mem->allocation;
        auto fork_once = [&](Host* to, const std::string& to_name, std::uint64_t* shipped,
                             double* ship_ms) {
            ForkOptions fo;
            fo.ctx = o.ctx;
            fo.host_name = a_name;
            if (to != &a)
                fo.elsewhere.push_back({to, to_name, 1});
            const auto t = Clock::now();
            ForkResult r = vm_fork(a, snap.point.label(), fo);
            children.emplace_back(to, r.children.front());
            const double ms = ms_between(t, wait_console(*to, r.children.front(), "FORKY-TICK"));
            if (shipped)
                *shipped = r.bytes_shipped;
            if (ship_ms)
                *ship_ms = r.ship_ms;
            return ms;
        };
        // The same guests run during the fork on the same host and the later one to b (the
        // VM and the first child on b, which keeps the copy there): on a small machine
        // every running guest slows the next start.
        say("cross-host: first fork to '" + b_name + "' (ships the fork point)");
        report.first_ms = fork_once(&b, b_name, &report.first_bytes, &report.ship_ms);
        say("cross-host: fork on '" + a_name + "'");
        report.same_host_ms = fork_once(&a, a_name, nullptr, nullptr);
        remove_quietly(a, children.back().second);
        children.pop_back();
        say("cross-host: later fork to '" + b_name + "' (its copy there)");
        report.later_ms = fork_once(&b, b_name, &report.later_bytes, nullptr);
    } catch (...) {
        cleanup();
        throw;
    }
    cleanup();
    return report;
}

} // namespace forky
