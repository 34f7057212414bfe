#include "plan.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"
#include "vm.hpp"

#include <regex>

namespace forky {

unsigned next_seq(const std::string& vm, unsigned counter, const std::set<std::string>& volumes) {
    unsigned highest = counter;
    const std::regex re("^" + vm + R"(\.(?:vd[a-z]+\.)?fp([0-9]+)\.(?:mem|qcow2|point)$)");
    for (const auto& v : volumes) {
        std::smatch m;
        if (std::regex_match(v, m, re))
            highest = std::max(highest, static_cast<unsigned>(std::stoul(m[1])));
    }
    return highest + 1;
}

FreezePlan plan_freeze(const VmFacts& vm, const PoolFacts& pool, const FreezeRequest& req) {
    FreezePlan plan;
    // Children will start from it (a fork point only read, by diff or export, need not).
    const bool fork = req.kind == ForkPoint::Kind::fork && !req.disk_only;
    for (const auto& [target, path] : vm.top_paths)
        if (!vm.top_volumes.count(target))
            throw ConflictError("Disk '" + target + "' of VM '" + vm.name + "' ('" + path +
                                "') is not in pool '" + pool.pool +
                                "'; forky forks and snapshots only disks it manages");
    if (vm.top_paths.empty())
        throw ConflictError("VM '" + vm.name + "' has no disk for a fork point to freeze");
    switch (vm.state) {
    case VmState::running:
    case VmState::idle:
        plan.cold = req.cold;
        break;
    case VmState::paused:
        if (fork && !req.cold)
            throw ConflictError(
                "VM '" + vm.name +
                "' is paused; fork it with --cold (a VM paused since it was last frozen must "
                "be resumed first: QEMU freezes it again only after it ran)");
        plan.cold = true; // a paused VM has nothing to run on live
        break;
    case VmState::shut_off:
        if (fork)
            throw ConflictError("VM '" + vm.name +
                                "' is shut off; only a running VM can be forked (start it first)");
        plan.memory = false;
        break;
    default:
        throw ConflictError("VM '" + vm.name + "' is " + to_string(vm.state) +
                            "; only a running, paused or shut off VM can be frozen");
    }
    if (req.disk_only) {
        plan.memory = false;
        plan.cold = false;
    }
    plan.keep_paused = req.keep_paused;
    plan.children_made = req.children_made;

    const unsigned seq = next_seq(vm.name, vm.lineage.forks, pool.volume_names);
    auto taken = [&](const std::string& n) {
        for (const auto& fp : pool.fork_points)
            if (fp.vm_uuid == vm.uuid && fp.name == n)
                return true;
        return false;
    };
    std::string name = req.name;
    if (name.empty()) {
        std::string base;
        switch (req.kind) {
        case ForkPoint::Kind::fork:
            base = "fp" + std::to_string(seq);
            break;
        case ForkPoint::Kind::snapshot:
            base = "snap" + std::to_string(seq);
            break;
        case ForkPoint::Kind::pre_revert:
            base = "pre-revert-" + std::to_string(seq);
            break;
        }
        // A name the user gave an earlier snapshot is stepped over, never an error.
        name = base;
        for (unsigned k = 2; taken(name); ++k)
            name = base + "-" + std::to_string(k);
    } else if (auto why = snapshot_name_problem(name)) {
        throw UsageError("Invalid snapshot name " + forky::quoted(name) + ": " + *why);
    }
    for (const auto& fp : pool.fork_points)
        if (fp.vm_uuid == vm.uuid && fp.name == name)
            throw ConflictError("VM '" + vm.name + "' has a snapshot named '" + name +
                                "' already (" + fp.created_at + ")");

    ForkPoint& p = plan.point;
    p.name = name;
    p.kind = req.kind;
    p.seq = seq;
    p.vm = vm.name;
    p.vm_uuid = vm.uuid;
    p.pool = pool.pool;
    p.state = vm.state == VmState::idle ? VmState::running : vm.state;
    if (plan.memory)
        p.memory_image = fork_point_memory_name(vm.name, seq);
    p.layers = vm.top_volumes;
    for (const auto& [target, layer] : vm.top_volumes)
        plan.new_tops[target] = layer_volume_name(vm.name, target, seq);

    std::vector<std::string> made{fork_point_record_name(vm.name, seq)};
    if (plan.memory)
        made.push_back(p.memory_image);
    for (const auto& [target, top] : plan.new_tops)
        made.push_back(top);
    for (const auto& v : made)
        if (pool.volume_names.count(v))
            throw ConflictError("Volume '" + v + "' already exists in pool '" + pool.pool +
                                "'; run 'forky gc' or remove it");

    plan.bytes_needed = (plan.memory ? vm.memory_bytes : 0) + (1ULL << 20) + req.extra_bytes;
    if (pool.available < plan.bytes_needed)
        throw StorageError("Pool '" + pool.pool + "' has " + format_size(pool.available) +
                           " free; " + (fork ? "forking" : "a snapshot of") + " '" + vm.name +
                           "' needs about " + format_size(plan.bytes_needed));
    return plan;
}

std::set<std::string> taken_names(const PoolFacts& pool) {
    std::set<std::string> taken = pool.domain_names;
    for (const auto& v : pool.volume_names)
        taken.insert(v.substr(0, v.find('.')));
    return taken;
}

SpawnPlan plan_spawn(const ForkPoint& point, const std::set<std::string>& taken,
                     const SpawnRequest& req) {
    SpawnPlan plan;
    unsigned index = req.first_index;
    if (!req.name.empty()) {
        require_valid_name(req.name);
        if (req.count != 1)
            throw UsageError("A child's own name is for one child");
        if (taken.count(req.name))
            throw ConflictError("The name '" + req.name +
                                "' is taken (a VM, its volumes or an operation on it)");
    }
    while (plan.children.size() < req.count) {
        std::string name = req.name.empty() ? req.prefix + "-" + std::to_string(index) : req.name;
        if (auto why = name_problem(name))
            throw UsageError("Cannot name children '" + req.prefix + "-N': " + *why);
        plan.last_index = index++;
        if (taken.count(name))
            continue;
        PlannedChild c;
        c.name = name;
        c.uuid = random_uuid();
        for (const auto& [target, layer] : point.layers)
            c.disks[target] = disk_volume_name(name, target);
        if (req.console)
            c.console = console_volume_name(name);
        plan.children.push_back(std::move(c));
    }
    plan.bytes_needed = req.count * bytes_per_child;
    return plan;
}

std::size_t journal_bytes(const Journal& now, const FreezePlan* freeze, const SpawnPlan* spawn) {
    Journal j = now;
    if (freeze) {
        j.paused = std::string(36, '0');
        j.resumed = true;
        j.volumes.push_back(fork_point_record_name(freeze->point.vm, freeze->point.seq));
        if (freeze->memory)
            j.volumes.push_back(freeze->point.memory_image);
        for (const auto& [target, top] : freeze->new_tops)
            j.volumes.push_back(top);
    }
    if (spawn) {
        for (const auto& c : spawn->children) {
            j.children.emplace_back(c.name, c.uuid);
            for (const auto& [target, disk] : c.disks)
                j.volumes.push_back(disk);
            if (!c.console.empty())
                j.volumes.push_back(c.console);
        }
    }
    j.committed = true;
    return j.encode().size() + 1;
}

} // namespace forky
