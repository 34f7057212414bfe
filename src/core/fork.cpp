#include "fork.hpp"

#include "engine.hpp"
#include "errors.hpp"
#include "names.hpp"
#include "ship.hpp"
#include "vm.hpp"

#include <libvirt/libvirt.h>

#include <memory>
#include <pugixml.hpp>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// A domain XML's memory in bytes (<memory unit='KiB'>, libvirt's default unit).
std::uint64_t memory_of(const std::string& xml) {
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    pugi::xml_node m = doc.child("domain").child("memory");
    const std::string unit = m.attribute("unit").value();
    const std::uint64_t v = m.text().as_ullong();
    if (unit == "b" || unit == "bytes")
        return v;
    if (unit == "MiB" || unit == "M")
        return v << 20;
    if (unit == "GiB" || unit == "G")
        return v << 30;
    return v << 10; // KiB
}

} // namespace

std::optional<PointRef> parse_point_ref(const std::string& text) {
    auto at = text.find('@');
    if (at == std::string::npos)
        return std::nullopt;
    PointRef ref{text.substr(0, at), text.substr(at + 1)};
    require_valid_name(ref.vm);
    if (auto why = name_problem(ref.name))
        throw UsageError("Invalid snapshot name " + forky::quoted(ref.name) + " in '" + text +
                         "': " + *why);
    return ref;
}

ForkPoint find_fork_point(const std::vector<ForkPoint>& points, const PointRef& ref,
                          const std::optional<std::string>& vm_uuid) {
    std::vector<const ForkPoint*> found;
    for (const auto& p : points) {
        const bool same_vm = vm_uuid ? p.vm_uuid == *vm_uuid : p.vm == ref.vm;
        if (same_vm && p.name == ref.name)
            found.push_back(&p);
    }
    if (found.empty())
        throw NotFoundError("No snapshot or fork point '" + ref.name + "' of VM '" + ref.vm + "'" +
                            (vm_uuid ? "" : " (no VM of that name either)") +
                            "; 'forky snapshots " + ref.vm + "' lists them");
    if (found.size() > 1) {
        std::string uuids;
        for (const auto* p : found)
            uuids += (uuids.empty() ? "" : ", ") + p->vm_uuid;
        throw ConflictError("'" + ref.vm + "@" + ref.name +
                            "' is ambiguous: removed VMs of that "
                            "name (" +
                            uuids + ") each kept one");
    }
    return *found.front();
}

void load_fork_policies(ForkOptions& o, const std::filesystem::path& dir) {
    o.quotas = load_quota_policy(dir);
    o.children_ttl = load_ttl_policy(dir).children;
}

ForkResult vm_fork(Host& host, const std::string& source, const ForkOptions& o) {
    const auto t_start = Clock::now();
    const std::optional<PointRef> ref = parse_point_ref(source);
    const std::string parent = ref ? ref->vm : source;
    require_valid_name(parent);
    if (o.count == 0 || o.count > max_fork_count)
        throw UsageError("The number of children must be between 1 and " +
                         std::to_string(max_fork_count) + ", not " + std::to_string(o.count));
    const std::string prefix = o.prefix.empty() ? parent : o.prefix;
    if (auto why = name_problem(prefix))
        throw UsageError("Invalid prefix '" + prefix + "': " + *why);
    if (o.keep_paused && !o.cold)
        throw UsageError("--keep-paused goes with --cold");
    unsigned placed_elsewhere = 0;
    for (const auto& t : o.elsewhere) {
        if (t.host == nullptr || t.count == 0)
            throw UsageError("A host named for children takes at least one");
        placed_elsewhere += t.count;
    }
    if (placed_elsewhere > o.count)
        throw UsageError("More children placed on other hosts than asked for");
    const unsigned count_here = o.count - placed_elsewhere;
    if (ref && (o.cold || o.keep_paused))
        throw UsageError("--cold and --keep-paused are about freezing a running VM; '" + source +
                         "' is frozen already");

    host.pool(); // NotFoundError for a pool that does not exist
    DomainPtr dom = host.find_domain(parent);
    if (!ref && !dom)
        throw NotFoundError("No VM named '" + parent + "' on '" + host.options().uri + "'");
    if (dom)
        require_forky_vm(dom.get(), parent, "not forking");

    // The lock first: a VM left paused by a killed cold fork is explained by its lock.
    Operation op(host, parent, "fork", o.ctx, o.lock_wait);
    op.step("lock");
    // Under the lock: what another operation did meanwhile is now visible.
    const PoolFacts pool = pool_facts(host);
    dom = host.find_domain(parent);
    std::optional<VmFacts> vm;
    if (dom)
        vm = vm_facts(host, dom.get(), pool);
    else if (!ref)
        throw NotFoundError("No VM named '" + parent + "' on '" + host.options().uri + "'");

    // GPUs: the parent's, and what the policy gives each child here, picked under the
    // host's GPU lock (held until the children name theirs) before anything changes.
    ChildGpuPlan gpus;
    std::shared_ptr<GpuDevices> devices;
    if (dom) {
        const std::string xml =
            domain_xml(dom.get(), ref ? static_cast<unsigned>(VIR_DOMAIN_XML_INACTIVE) : 0);
        if (const auto held = domain_gpus(xml); !held.empty()) {
            if (!ref)
                require_gpu_cut_allowed(parent, vm->lineage.gpu_fork_detach, held, "a fork");
            const GpuPolicy policy = o.load_gpu_policy ? o.load_gpu_policy() : o.gpu_policy;
            if (policy.children != GpuPolicy::Children::none && !o.elsewhere.empty())
                throw ConflictError("VM '" + parent +
                                    "' has GPUs and the GPU policy gives its children some: "
                                    "children on other hosts cannot have GPUs yet; fork it on "
                                    "its own host");
            devices = gpu_devices(host, o.ctx);
            if (policy.children != GpuPolicy::Children::none)
                op.hold(lock_gpus(host, o.ctx.cancel));
            gpus = plan_child_gpus(host, *devices, xml, policy, count_here);
        }
    }

    ForkResult result;
    result.parent = parent;
    SpawnRequest request;
    request.count = count_here;
    request.prefix = prefix;
    request.name = o.name;
    request.also_taken = o.names_elsewhere;
    const bool own_prefix = vm && prefix == parent && o.name.empty();
    request.first_index = own_prefix ? vm->lineage.children_made + 1 : 1;

    ForkPoint point;
    Lineage at_point;
    auto children_ttl = [&o](Lineage& l) {
        if (!l.ttl)
            l.ttl = o.children_ttl;
    };
    std::optional<FreezePlan> freeze_plan;
    if (ref) {
        point = find_fork_point(pool.fork_points, *ref,
                                vm ? std::optional<std::string>(vm->uuid) : std::nullopt);
        at_point = lineage_at(host, point);
        children_ttl(at_point);
        request.console = at_point.console_volume() != nullptr;
    } else {
        FreezeRequest fr;
        fr.kind = ForkPoint::Kind::fork;
        // A VFIO device's state cannot be saved: the cut is cold, with the GPUs detached.
        fr.cold = o.cold || !gpus.parent.empty();
        fr.keep_paused = o.keep_paused;
        fr.extra_bytes = count_here * bytes_per_child;
        freeze_plan = plan_freeze(*vm, pool, fr);
        point = freeze_plan->point;
        at_point = vm->lineage;
        children_ttl(at_point);
        request.console = at_point.console_volume() != nullptr;
    }

    // Quotas, before anything is made, under the host's quota lock (held until the fork
    // commits, so two forks cannot both take the last place).
    if (o.quotas.any()) {
        op.hold(VmLock::acquire(host, quotas_lock_name, "quotas", o.lock_wait, o.ctx.cancel));
        const std::string uuid = vm ? vm->uuid : point.vm_uuid;
        // Each child has the memory the VM had at the fork point (the VM may be gone).
        const std::uint64_t memory =
            dom ? vm_info(host, parent).memory_bytes : memory_of(read_header(host, point).xml);
        check_fork_quotas(host, o.quotas, parent, uuid, memory, count_here, o.count);
    }

    // Names first, on every host: each child's own lock where it will run. Children on
    // other hosts are numbered after those here, host after host.
    SpawnPlan spawn_plan;
    if (count_here > 0)
        spawn_plan = reserve_children(op, point, pool, request);
    unsigned last_index = count_here > 0 ? spawn_plan.last_index : request.first_index - 1;
    struct Elsewhere {
        const ForkTarget* target;
        std::unique_ptr<Operation> op;
        SpawnPlan plan;
    };
    std::vector<Elsewhere> elsewhere;
    for (const auto& t : o.elsewhere) {
        Elsewhere e{
            &t, std::make_unique<Operation>(*t.host, parent, "fork", o.ctx, o.lock_wait), {}};
        e.op->step("lock-elsewhere");
        SpawnRequest r = request;
        r.count = t.count;
        r.first_index = last_index + 1;
        e.plan = reserve_children(*e.op, point, pool_facts(*t.host), r);
        last_index = e.plan.last_index;
        e.op->lock().reserve(journal_bytes(e.op->lock().journal(), nullptr, &e.plan) + 4096);
        elsewhere.push_back(std::move(e));
    }
    if (freeze_plan && own_prefix)
        freeze_plan->children_made = last_index;
    op.lock().reserve(journal_bytes(op.lock().journal(), freeze_plan ? &*freeze_plan : nullptr,
                                    count_here > 0 ? &spawn_plan : nullptr));

    if (freeze_plan) {
        std::optional<GpusDetached> detached;
        if (!gpus.parent.empty())
            detached.emplace(devices, dom.get(), parent, gpus.parent, &op.lock());
        op.step("gpus-detached");
        FreezeResult frozen = freeze(op, *vm, *freeze_plan);
        point = frozen.point;
        result.parent_downtime_ms = frozen.paused_ms;
        result.parent_left_paused = frozen.left_paused;
        result.snapshot_ms = frozen.ms;
        if (detached) {
            detached->reattach();
            result.parent_gpus_detached = static_cast<unsigned>(gpus.parent.size());
        }
    } else if (own_prefix) {
        // Names are never handed out twice: the VM remembers the last one.
        Lineage lineage = vm->lineage;
        lineage.children_made = last_index;
        write_lineage(dom.get(), parent, lineage);
    }
    result.fork_point = point.label();

    const auto t_children = Clock::now();
    if (count_here > 0) {
        std::vector<SpawnTarget> targets = make_children(op, point, at_point, spawn_plan);
        for (auto& t : targets)
            t.lineage.warm_pool = o.warm_pool;
        // Mediated devices first: their removal is undone after the children's.
        for (const auto& child : gpus.children)
            for (const auto& g : child)
                if (g.kind == GpuAssignment::Kind::mdev)
                    make_mdev(op, devices, g);
        SpawnOptions so;
        so.paused = o.children_paused;
        so.set_clock = ref.has_value(); // a stored fork point's clock is as old as it is
        SpawnResult spawned = spawn(op, point, std::move(targets), so);
        result.children = spawned.started;
        // Each child's GPUs, plugged in as it runs (the guest sees them arrive).
        for (std::size_t i = 0; i < spawned.started.size() && i < gpus.children.size(); ++i) {
            std::vector<std::string> got;
            if (!gpus.children[i].empty()) {
                const std::string& name = spawned.started[i];
                DomainPtr child = host.domain(name);
                Lineage lineage = require_forky_vm(child.get(), name, "not giving it a GPU");
                for (const auto& g : gpus.children[i]) {
                    devices->attach(child.get(), hostdev_xml(g), /*persistent=*/true);
                    if (g.kind == GpuAssignment::Kind::mdev)
                        lineage.mdevs.push_back(g.mdev_uuid);
                    got.push_back(describe(g));
                }
                write_lineage(child.get(), name, lineage);
                op.step("child-gpus", static_cast<unsigned>(i + 1));
            }
            result.child_gpus.push_back(std::move(got));
        }
        result.child_hosts.assign(spawned.started.size(), o.host_name);
        result.clock_not_set = spawned.clock_not_set;
        result.memory_image_bytes = spawned.memory_image_bytes;
        result.header_bytes = spawned.header_bytes;
    }
    result.child_gpus.resize(result.children.size());
    for (auto& e : elsewhere) {
        ShipStats stats;
        const ForkPoint copy =
            ship_fork_point(host, o.host_name, point, *e.op, e.target->name, stats, o.progress);
        e.op->step("shipped");
        result.bytes_shipped += stats.bytes_sent;
        result.volumes_shipped += stats.volumes_shipped;
        result.volumes_reused += stats.volumes_reused;
        result.ship_ms += stats.ms;
        std::vector<SpawnTarget> targets = make_children(*e.op, copy, at_point, e.plan);
        std::map<std::string, std::string> boot_paths;
        for (const auto& [role, volume] : copy.boot_files) {
            auto info = e.target->host->volume_info(volume);
            if (!info)
                throw NotFoundError("The copy of '" + point.label() + "' on host '" +
                                    e.target->name + "' lost its " + role + " '" + volume + "'");
            boot_paths[role] = info->path;
        }
        for (auto& t : targets) {
            t.lineage.warm_pool = o.warm_pool;
            t.lineage.parent_host = o.host_name;
            t.boot_paths = boot_paths;
        }
        SpawnOptions so;
        so.paused = o.children_paused;
        // The image was made a while ago by the time it arrived.
        so.set_clock = true;
        SpawnResult spawned = spawn(*e.op, copy, std::move(targets), so);
        for (const auto& c : spawned.started) {
            result.children.push_back(c);
            result.child_hosts.push_back(e.target->name);
            result.child_gpus.emplace_back();
        }
        result.clock_not_set.insert(result.clock_not_set.end(), spawned.clock_not_set.begin(),
                                    spawned.clock_not_set.end());
        result.memory_image_bytes = spawned.memory_image_bytes;
        result.header_bytes = spawned.header_bytes;
    }
    result.children_ms = ms_since(t_children) - result.ship_ms;
    // This host's commit point first: should it fail, every host undoes its part; should
    // another host's commit fail after it, that host undoes its children, and the fork
    // point left here unused is gc's.
    op.step("commit");
    op.commit();
    for (auto& e : elsewhere) {
        e.op->step("commit-elsewhere");
        e.op->commit();
    }
    result.total_ms = ms_since(t_start);
    return result;
}

} // namespace forky
