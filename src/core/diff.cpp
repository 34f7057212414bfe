#include "diff.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "fork.hpp"
#include "log.hpp"
#include "names.hpp"
#include "vm.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <unistd.h>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

// One side of a diff: its disks' volumes, and the fork point taken to read a running VM.
struct Side {
    std::string label;
    std::string vm;
    std::map<std::string, std::string> disks; // target -> volume
    std::optional<ForkPoint> borrowed;
};

// The volumes of the pool, by name and by path.
struct PoolView {
    std::map<std::string, VolumeInfo> by_name;
    std::map<std::string, std::string> name_by_path;
    explicit PoolView(Host& host) {
        for (auto& v : host.volumes()) {
            name_by_path[v.path] = v.name;
            by_name[v.name] = std::move(v);
        }
    }
    // `volume` and the volumes below it, newest first (a backing file outside the pool
    // ends the chain).
    std::vector<std::string> chain(const std::string& volume) const {
        std::vector<std::string> out;
        std::string v = volume;
        while (out.size() < 1024) {
            auto it = by_name.find(v);
            if (it == by_name.end() || std::find(out.begin(), out.end(), v) != out.end())
                break;
            out.push_back(v);
            auto next = name_by_path.find(it->second.backing);
            if (it->second.backing.empty() || next == name_by_path.end())
                break;
            v = next->second;
        }
        return out;
    }
};

Side resolve(Host& host, const std::string& text, bool read_files, const DiffOptions& o) {
    Side side;
    side.label = text;
    if (auto ref = parse_point_ref(text)) {
        side.vm = ref->vm;
        std::optional<std::string> uuid;
        if (DomainPtr d = host.find_domain(ref->vm)) {
            require_forky_vm(d.get(), ref->vm, "not comparing");
            uuid = domain_uuid(d.get());
        }
        const ForkPoint point = find_fork_point(read_fork_points(host), *ref, uuid);
        side.disks = point.layers;
        return side;
    }
    require_valid_name(text);
    side.vm = text;
    DomainPtr dom = host.find_domain(text);
    if (!dom)
        throw NotFoundError("No VM " + forky::quoted(text) + " on '" + host.options().uri +
                            "' ('forky ls' lists them; a snapshot is written VM@NAME)");
    require_forky_vm(dom.get(), text, "not comparing");
    const VmState state = domain_state(dom.get());
    if (read_files && state != VmState::shut_off) {
        if (o.no_snapshot)
            throw ConflictError("VM " + forky::quoted(text) + " is " + to_string(state) +
                                ": its disks are open for writing, and --no-snapshot forbids "
                                "the disk-only snapshot forky diff reads a live VM through; "
                                "stop it, compare one of its snapshots (" +
                                text + "@NAME), or use --blocks");
        if (o.progress)
            o.progress("freezing the disks of '" + text + "' to read them", 0);
        Operation op(host, text, "diff", o.ctx, o.lock_wait);
        op.step("lock");
        ForkPoint point = freeze_for_reading(op, text, /*memory=*/false);
        op.step("commit");
        op.commit();
        side.disks = point.layers;
        side.borrowed = std::move(point);
        return side;
    }
    PoolView pool(host);
    for (const auto& [target, path] : disk_sources(domain_xml(dom.get()))) {
        auto it = pool.name_by_path.find(path);
        if (it == pool.name_by_path.end())
            throw ConflictError("Disk '" + target + "' of VM " + forky::quoted(text) + " ('" +
                                path + "') is not in pool '" + host.options().pool + "'");
        side.disks[target] = it->second;
    }
    return side;
}

// Gives back the fork points taken to read running VMs, whatever happens.
struct Borrowed {
    Host& host;
    const DiffOptions& o;
    std::vector<Side*> sides;
    ~Borrowed() {
        for (Side* s : sides) {
            if (!s->borrowed)
                continue;
            try {
                // Also after Ctrl-C: a context of its own, which nothing cancels.
                Operation op(host, s->vm, "rm", OpContext{}, o.lock_wait);
                drop_reading_point(host, *s->borrowed);
                op.commit();
            } catch (const std::exception& e) {
                logger("diff")->warn("Could not remove fork point '{}' taken for the diff ({}); "
                                     "'forky gc' will",
                                     s->borrowed->label(), e.what());
            }
        }
    }
};

BlockDiff block_diff(const PoolView& pool, const std::string& target, const std::string& after,
                     const std::string& before) {
    BlockDiff d;
    d.target = target;
    const auto a = pool.chain(after);
    const auto b = pool.chain(before);
    const std::set<std::string> in_b(b.begin(), b.end());
    for (const auto& v : a)
        if (in_b.count(v)) {
            d.common = v;
            break;
        }
    auto above = [&](const std::vector<std::string>& chain, std::vector<LayerBytes>& out,
                     std::uint64_t& sum) {
        for (const auto& v : chain) {
            if (v == d.common)
                break;
            const std::uint64_t bytes = pool.by_name.at(v).allocation;
            out.push_back({v, bytes});
            sum += bytes;
        }
    };
    above(a, d.after_layers, d.after_bytes);
    above(b, d.before_layers, d.before_bytes);
    return d;
}

} // namespace

bool guestfs_needs_tcg() {
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return true;
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line))
        if (line.rfind("flags", 0) == 0)
            return line.find(" hypervisor") != std::string::npos;
    return false;
}

DiffResult vm_diff(Host& host, const std::string& after, const std::string& before,
                   const DiffOptions& o) {
    const auto t0 = Clock::now();
    DiffResult result;
    result.after = after;
    result.before = before;
    const bool files = !o.blocks;
    if (files && !host.is_local())
        throw ConflictError("forky diff reads the disk images themselves (libguestfs), on this "
                            "machine, and '" +
                            host.options().uri +
                            "' is another machine: run it on that host, or use --blocks "
                            "(libvirt's figures, from anywhere)");
    host.pool();
    Side a;
    Side b;
    Borrowed borrowed{host, o, {&a, &b}};
    a = resolve(host, after, files, o);
    b = resolve(host, before, files, o);
    result.froze = a.borrowed.has_value() || b.borrowed.has_value();

    const PoolView pool(host);
    std::vector<DiskPair> pairs;
    std::set<std::string> targets;
    for (const auto& [t, v] : a.disks)
        targets.insert(t);
    for (const auto& [t, v] : b.disks)
        targets.insert(t);
    for (const auto& t : targets) {
        const bool in_a = a.disks.count(t) != 0;
        const bool in_b = b.disks.count(t) != 0;
        if (!in_a || !in_b) {
            result.problems.push_back("Disk '" + t + "' is only in '" + (in_a ? after : before) +
                                      "': not compared");
            continue;
        }
        for (const auto* v : {&a.disks.at(t), &b.disks.at(t)})
            if (!pool.by_name.count(*v))
                throw NotFoundError("Volume '" + *v + "' (disk '" + t +
                                    "') is missing from pool '" + host.options().pool + "'");
        if (o.blocks) {
            result.blocks.push_back(block_diff(pool, t, a.disks.at(t), b.disks.at(t)));
            continue;
        }
        pairs.push_back(
            {t, pool.by_name.at(b.disks.at(t)).path, pool.by_name.at(a.disks.at(t)).path, "qcow2"});
    }
    if (!pairs.empty()) {
        GuestDiffOptions go;
        go.force_tcg = guestfs_needs_tcg();
        go.progress = o.progress;
        go.cancel = o.ctx.cancel;
        const auto t_g = Clock::now();
        try {
            result.files = guest_diff(pairs, go);
        } catch (const Error&) {
            o.ctx.cancel.check("The diff"); // the appliance died of the same signal
            throw;
        }
        result.appliance_s = std::chrono::duration<double>(Clock::now() - t_g).count();
        // Disks whose files could not be read: their block-level figures instead.
        for (const auto& d : result.files)
            if (!d.problem.empty())
                result.blocks.push_back(
                    block_diff(pool, d.target, a.disks.at(d.target), b.disks.at(d.target)));
    }
    result.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    return result;
}

} // namespace forky
