#include "history.hpp"

#include "gpus.hpp"

#include "child_xml.hpp"
#include "engine.hpp"
#include "errors.hpp"
#include "fork.hpp"
#include "gc.hpp"
#include "log.hpp"
#include "names.hpp"
#include "vm.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <algorithm>
#include <deque>
#include <set>
#include <thread>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The pool's volumes and their backing chains.
struct Chains {
    std::map<std::string, VolumeInfo> by_name;
    std::map<std::string, std::string> name_by_path;

    explicit Chains(Host& host) {
        for (auto& v : host.volumes()) {
            name_by_path[v.path] = v.name;
            by_name[v.name] = std::move(v);
        }
    }
    // `name` and every pool volume below it.
    std::vector<std::string> chain(const std::string& name) const {
        std::vector<std::string> out;
        std::string at = name;
        while (by_name.count(at) && out.size() < 4096) {
            out.push_back(at);
            auto b = name_by_path.find(by_name.at(at).backing);
            if (b == name_by_path.end())
                break;
            at = b->second;
        }
        return out;
    }
    std::uint64_t allocation(const std::string& name) const {
        auto v = by_name.find(name);
        return v == by_name.end() ? 0 : v->second.allocation;
    }
};

struct ForkyDomain {
    std::string name;
    std::string uuid;
    Lineage lineage;
};

// forky's VMs of this pool.
std::vector<ForkyDomain> forky_domains(Host& host) {
    std::vector<ForkyDomain> out;
    for (const auto& d : host.domains()) {
        try {
            auto lineage = read_lineage(d.get());
            if (lineage && lineage->pool == host.options().pool)
                out.push_back({domain_name(d.get()), domain_uuid(d.get()), std::move(*lineage)});
        } catch (const NotFoundError&) {
        }
    }
    return out;
}

std::optional<std::string> uuid_of(Host& host, const std::string& vm) {
    DomainPtr d = host.find_domain(vm);
    if (!d)
        return std::nullopt;
    require_forky_vm(d.get(), vm, "not touching");
    return domain_uuid(d.get());
}

std::vector<std::string> children_of(const std::vector<ForkyDomain>& domains,
                                     const ForkPoint& point) {
    std::vector<std::string> out;
    for (const auto& d : domains)
        if (d.lineage.fork_point_id == point.id)
            out.push_back(d.name);
    std::sort(out.begin(), out.end());
    return out;
}

// Deletes a fork point's record, memory image and libvirt's record of it. Its layers are
// left to the sweep: gone once nothing needs them.
void drop_fork_point(Host& host, const ForkPoint& point, std::vector<std::string>& deleted) {
    remove_snapshot_metadata(host, point);
    for (const auto& v : {point.record_volume, point.memory_image})
        if (!v.empty() && host.delete_volume(v))
            deleted.push_back(v);
}

std::vector<std::string> sweep(Host& host) {
    GcOptions o;
    o.undo_dead_operations = false;
    return collect_garbage(host, o).deleted_volumes;
}

} // namespace

SnapshotResult vm_snapshot(Host& host, const std::string& vm, const std::string& name,
                           const HistoryOptions& o) {
    require_valid_name(vm);
    if (!name.empty())
        if (auto why = snapshot_name_problem(name))
            throw UsageError("Invalid snapshot name " + forky::quoted(name) + ": " + *why);
    host.pool();
    DomainPtr dom = host.domain(vm);
    require_forky_vm(dom.get(), vm, "not snapshotting");
    Operation op(host, vm, "snapshot", o.ctx, o.lock_wait);
    op.step("lock");
    const PoolFacts pool = pool_facts(host);
    dom = host.domain(vm);
    const VmFacts facts = vm_facts(host, dom.get(), pool);
    const std::vector<GpuAssignment> gpus = domain_gpus(domain_xml(dom.get()));
    require_gpu_cut_allowed(vm, facts.lineage.gpu_fork_detach, gpus, "a snapshot");
    FreezeRequest request;
    request.kind = ForkPoint::Kind::snapshot;
    request.name = name;
    request.cold = !gpus.empty(); // with its GPUs detached (a VFIO device cannot be saved)
    const FreezePlan plan = plan_freeze(facts, pool, request);
    op.lock().reserve(journal_bytes(op.lock().journal(), &plan, nullptr));
    std::optional<GpusDetached> detached;
    if (!gpus.empty())
        detached.emplace(gpu_devices(host, o.ctx), dom.get(), vm, gpus, &op.lock());
    FreezeResult frozen = freeze(op, facts, plan);
    if (detached)
        detached->reattach();
    op.step("commit");
    op.commit();
    return {frozen.point, frozen.paused_ms, frozen.ms};
}

ForkPoint freeze_for_reading(Operation& op, const std::string& vm, bool memory) {
    Host& host = op.host();
    const PoolFacts pool = pool_facts(host);
    DomainPtr dom = host.domain(vm);
    const VmFacts facts = vm_facts(host, dom.get(), pool);
    FreezeRequest request;
    request.kind = ForkPoint::Kind::fork;
    request.disk_only = !memory || facts.state == VmState::shut_off;
    request.cold = facts.state == VmState::paused;
    request.keep_paused = request.cold; // as it was
    if (memory && !request.disk_only) {
        const std::vector<GpuAssignment> gpus = domain_gpus(domain_xml(dom.get()));
        if (!gpus.empty())
            throw ConflictError("VM '" + vm +
                                "' has GPUs passed through: its memory cannot be saved while "
                                "they are attached; take a snapshot first ('forky snapshot " +
                                vm + "', which detaches them for the cut) and use VM@SNAP");
    }
    const FreezePlan plan = plan_freeze(facts, pool, request);
    op.lock().reserve(journal_bytes(op.lock().journal(), &plan, nullptr));
    return freeze(op, facts, plan).point;
}

void drop_reading_point(Host& host, const ForkPoint& point) {
    std::vector<std::string> deleted;
    ForkPoint p = point;
    if (p.record_volume.empty()) // as freeze returned it, not as listed
        p.record_volume = fork_point_record_name(p.vm, p.seq);
    drop_fork_point(host, p, deleted);
}

std::vector<SnapshotInfo> vm_snapshots(Host& host, const std::string& vm) {
    require_valid_name(vm);
    host.pool();
    const std::optional<std::string> uuid = uuid_of(host, vm);
    const auto points = read_fork_points(host);
    const auto domains = forky_domains(host);
    const Chains chains(host);
    std::vector<SnapshotInfo> out;
    for (const auto& p : points) {
        if (uuid ? p.vm_uuid != *uuid : p.vm != vm)
            continue;
        SnapshotInfo info;
        info.point = p;
        info.children = children_of(domains, p);
        info.disk_bytes = chains.allocation(p.memory_image);
        std::set<std::string> layers;
        for (const auto& [target, layer] : p.layers) {
            layers.insert(layer);
            info.disk_bytes += chains.allocation(layer);
        }
        auto through = [&](const std::string& volume) {
            for (const auto& c : chains.chain(volume))
                if (layers.count(c))
                    return true;
            return false;
        };
        for (const auto& q : points) {
            if (q.id == p.id)
                continue;
            for (const auto& [target, layer] : q.layers)
                if (through(layer) && !layers.count(layer)) {
                    info.dependants.push_back(q.label());
                    break;
                }
        }
        for (const auto& d : domains) {
            if (std::find(info.children.begin(), info.children.end(), d.name) !=
                info.children.end())
                continue;
            for (const auto& v : d.lineage.volumes)
                if (v.role == "disk" && through(v.name)) {
                    info.dependants.push_back(d.name);
                    break;
                }
        }
        out.push_back(std::move(info));
    }
    if (out.empty() && !uuid)
        throw NotFoundError("No VM named '" + vm + "' on '" + host.options().uri +
                            "', and no snapshots kept of one");
    std::sort(out.begin(), out.end(), [](const SnapshotInfo& a, const SnapshotInfo& b) {
        return a.point.seq < b.point.seq;
    });
    return out;
}

RevertResult vm_revert(Host& host, const std::string& vm, const std::string& snap,
                       const RevertOptions& o) {
    const auto t_start = Clock::now();
    require_valid_name(vm);
    if (auto why = name_problem(snap))
        throw UsageError("Invalid snapshot name " + forky::quoted(snap) + ": " + *why);
    host.pool();
    DomainPtr dom = host.domain(vm);
    require_forky_vm(dom.get(), vm, "not reverting");
    Operation op(host, vm, "revert", o.ctx, o.lock_wait);
    op.step("lock");
    PoolFacts pool = pool_facts(host);
    dom = host.domain(vm);
    VmFacts facts = vm_facts(host, dom.get(), pool);
    if (!domain_gpus(domain_xml(dom.get())).empty())
        throw ConflictError("VM '" + vm +
                            "' has GPUs passed through: forky cannot revert such a VM yet (its "
                            "state would be restored without them); 'forky fork " +
                            vm + "@" + snap + "' starts a child from that snapshot instead");
    RevertResult result;
    result.to = find_fork_point(pool.fork_points, {vm, snap}, facts.uuid);
    const ForkPoint& to = result.to;
    for (const auto& [target, path] : facts.top_paths)
        if (!to.layers.count(target))
            throw ConflictError("VM '" + vm + "' has disk '" + target + "', which '" + to.label() +
                                "' does not: its disks changed since");
    for (const auto& [target, layer] : to.layers)
        if (!host.find_volume(layer))
            throw NotFoundError("Layer '" + layer + "' of '" + to.label() + "' is missing");

    // The plan: the state the VM leaves, kept as pre-revert-N (unless --discard), then new
    // tops over the snapshot's frozen layers.
    std::optional<FreezePlan> keep_plan;
    if (!o.discard) {
        FreezeRequest fr;
        fr.kind = ForkPoint::Kind::pre_revert;
        keep_plan = plan_freeze(facts, pool, fr);
    }
    const unsigned seq =
        keep_plan ? keep_plan->point.seq + 1 : next_seq(vm, facts.lineage.forks, pool.volume_names);
    std::map<std::string, std::string> new_tops;
    for (const auto& [target, layer] : to.layers)
        new_tops[target] = layer_volume_name(vm, target, seq);
    {
        Journal planned = op.lock().journal();
        for (const auto& [target, top] : new_tops)
            planned.volumes.push_back(top);
        op.lock().reserve(journal_bytes(planned, keep_plan ? &*keep_plan : nullptr, nullptr));
    }
    const bool was_active = domain_is_active(dom.get());

    if (keep_plan) {
        FreezeResult kept = freeze(op, facts, *keep_plan);
        result.kept = kept.point;
        // What the VM is now (its tops moved).
        dom = host.domain(vm);
        facts = vm_facts(host, dom.get(), pool_facts(host));
    }
    op.step("revert-snapshot");

    std::map<std::string, std::string> new_paths;
    for (const auto& [target, top] : new_tops) {
        StorageVolPtr layer = host.find_volume(to.layers.at(target));
        new_paths[target] =
            op.create_overlay(top, host.volume_path(layer.get()), DiskFormat::qcow2);
        op.step("revert-overlay");
    }

    // The VM as it will run: its own name, UUID and console; its lineage with the new tops.
    SpawnTarget self;
    self.name = vm;
    self.uuid = facts.uuid;
    self.is_new = false;
    self.disk_paths = new_paths;
    self.lineage = facts.lineage;
    self.lineage.forks = seq;
    for (auto& v : self.lineage.volumes)
        if (v.role == "disk" && new_tops.count(v.target))
            v.name = new_tops.at(v.target);
    if (const OwnedVolume* console = facts.lineage.console_volume())
        if (StorageVolPtr c = host.find_volume(console->name))
            self.console_path = host.volume_path(c.get());
    for (auto& p : self.lineage.ports)
        p.host = 0;

    // From here the VM is stopped: an undo brings it back as it was, from the state just
    // kept (with --discard, only its definition is left, on its old disks).
    if (was_active) {
        std::optional<ForkPoint> back = result.kept;
        SpawnTarget before = self;
        before.disk_paths = facts.top_paths;
        before.lineage = facts.lineage;
        for (auto& p : before.lineage.ports)
            p.host = 0;
        op.on_undo("bring VM '" + vm + "' back", [&host, back, before, vm] {
            DomainPtr d = host.find_domain(vm);
            if (d && domain_is_active(d.get()))
                return; // never stopped
            if (!back || back->memory_image.empty())
                throw Error("VM '" + vm +
                            "' stays shut off: --discard kept no state to bring "
                            "it back to");
            restore_onto(host, *back, before, back->state == VmState::paused);
        });
        if (virDomainDestroy(dom.get()) < 0 && domain_is_active(dom.get()))
            throw_libvirt_error("Failed to stop VM '" + vm + "' for its revert");
    }
    op.step("revert-stop");

    if (to.memory_image.empty()) {
        // A snapshot of a VM that was off: its disks only; the VM stays off.
        pugi::xml_document doc;
        doc.load_string(domain_xml(dom.get(), VIR_DOMAIN_XML_INACTIVE).c_str());
        for (auto d : doc.select_nodes("/domain/devices/disk[@device='disk']")) {
            pugi::xml_node disk = d.node();
            std::string target = disk.child("target").attribute("dev").value();
            if (new_paths.count(target))
                disk.child("source").attribute("file").set_value(new_paths.at(target).c_str());
            disk.remove_child("backingStore");
        }
        // Its disks went back in time: a new VM generation ID, as for any revert.
        if (pugi::xml_node genid = doc.child("domain").child("genid")) {
            self.lineage.genid = random_uuid();
            genid.text().set(self.lineage.genid.c_str());
        }
        std::ostringstream xml;
        doc.save(xml, "  ", pugi::format_indent | pugi::format_no_declaration);
        DomainPtr defined(virDomainDefineXML(host.conn(), xml.str().c_str()));
        lv_check(defined.get(), "Failed to define VM '" + vm + "'");
        write_lineage(defined.get(), vm, self.lineage);
    } else {
        SpawnOptions so;
        so.paused = to.state == VmState::paused;
        so.set_clock = true;
        op.step("revert-restore");
        result.clock_not_set = spawn(op, to, {self}, so).clock_not_set;
    }
    op.step("commit");
    op.commit();
    sweep(host); // --discard: the old tops nothing needs any more
    result.ms = ms_since(t_start);
    return result;
}

RemoveSnapshotResult vm_remove_snapshot(Host& host, const std::string& text,
                                        const HistoryOptions& o) {
    const auto ref = parse_point_ref(text);
    if (!ref)
        throw UsageError("'" + text + "' names no snapshot: write VM@NAME");
    host.pool();
    Operation op(host, ref->vm, "rm", o.ctx, o.lock_wait);
    const auto points = read_fork_points(host);
    const ForkPoint point = find_fork_point(points, *ref, uuid_of(host, ref->vm));
    const auto children = children_of(forky_domains(host), point);
    if (!children.empty()) {
        std::string list;
        for (const auto& c : children)
            list += (list.empty() ? "'" : ", '") + c + "'";
        throw ConflictError("'" + point.label() + "' is needed: VMs were forked from it (" + list +
                            "); remove them first, or all of it with 'forky rm --recursive " +
                            ref->vm + "'");
    }
    RemoveSnapshotResult result;
    drop_fork_point(host, point, result.deleted);
    op.commit();
    for (auto& v : sweep(host))
        result.deleted.push_back(std::move(v));
    return result;
}

RecursiveRemoveResult vm_remove_recursive(Host& host, const std::string& vm,
                                          const HistoryOptions& o) {
    require_valid_name(vm);
    host.pool();
    RecursiveRemoveResult result;
    const std::optional<std::string> root = uuid_of(host, vm);
    auto points = read_fork_points(host);
    std::set<std::string> family; // UUIDs: the VM (or its removed self) and descendants
    if (root)
        family.insert(*root);
    else
        for (const auto& p : points)
            if (p.vm == vm)
                family.insert(p.vm_uuid);
    if (family.empty())
        throw NotFoundError("No VM named '" + vm + "' on '" + host.options().uri +
                            "', and no snapshots kept of one");
    const auto domains = forky_domains(host);
    std::vector<const ForkyDomain*> order; // parents before children
    std::deque<std::string> todo(family.begin(), family.end());
    while (!todo.empty()) {
        const std::string parent = todo.front();
        todo.pop_front();
        for (const auto& d : domains)
            if (d.lineage.parent_uuid == parent && family.insert(d.uuid).second) {
                order.push_back(&d);
                todo.push_back(d.uuid);
            }
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
        o.ctx.cancel.check("forky rm --recursive");
        const RemoveResult r = vm_remove(host, (*it)->name, /*force=*/true, o.ctx.cancel);
        result.removed_vms.push_back((*it)->name);
        result.deleted.insert(result.deleted.end(), r.deleted.begin(), r.deleted.end());
    }
    if (root) {
        const RemoveResult r = vm_remove(host, vm, /*force=*/true, o.ctx.cancel);
        result.removed_vms.push_back(vm);
        result.deleted.insert(result.deleted.end(), r.deleted.begin(), r.deleted.end());
    }
    Operation op(host, vm, "rm", o.ctx, o.lock_wait);
    for (const auto& p : read_fork_points(host)) {
        if (!family.count(p.vm_uuid))
            continue;
        drop_fork_point(host, p, result.deleted);
        result.removed_points.push_back(p.label());
    }
    op.commit();
    for (auto& v : sweep(host))
        result.deleted.push_back(std::move(v));
    return result;
}

namespace {

// Layers of a disk's chain as libvirt reports it (top first): the live XML's backingStore.
std::vector<std::string> live_chain(const std::string& xml, const std::string& target) {
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    std::vector<std::string> out;
    pugi::xml_node disk =
        doc.select_node(("/domain/devices/disk[target/@dev='" + target + "']").c_str()).node();
    for (pugi::xml_node n = disk; n; n = n.child("backingStore")) {
        std::string file = n.child("source").attribute("file").value();
        if (file.empty())
            break;
        out.push_back(file);
    }
    return out;
}

void wait_for_block_job(virDomainPtr dom, const std::string& vm, const std::string& target,
                        const CancelToken& cancel) {
    for (;;) {
        cancel.check("forky squash");
        virDomainBlockJobInfo info{};
        const int rc = virDomainGetBlockJobInfo(dom, target.c_str(), &info, 0);
        if (rc < 0)
            throw_libvirt_error("Failed to follow the block pull of disk '" + target + "' of VM '" +
                                vm + "'");
        if (rc == 0)
            return; // done (libvirt ends a pull job by itself)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

} // namespace

SquashResult vm_squash(Host& host, const std::string& vm, const SquashOptions& o) {
    require_valid_name(vm);
    host.pool();
    DomainPtr dom = host.domain(vm);
    require_forky_vm(dom.get(), vm, "not squashing");
    Operation op(host, vm, "squash", o.ctx, o.lock_wait);
    op.step("lock");
    dom = host.domain(vm);
    if (!domain_is_active(dom.get()))
        throw ConflictError("VM '" + vm + "' is " + to_string(domain_state(dom.get())) +
                            "; squash uses libvirt's block pull, which needs it running "
                            "(start it first)");
    const std::string uuid = domain_uuid(dom.get());
    SquashResult result;

    // --keep N: the VM's snapshots beyond the N newest go, unless VMs came from them.
    auto points = read_fork_points(host);
    const auto domains = forky_domains(host);
    if (o.keep) {
        std::vector<ForkPoint> own;
        for (const auto& p : points)
            if (p.vm_uuid == uuid && p.kept())
                own.push_back(p);
        std::sort(own.begin(), own.end(),
                  [](const ForkPoint& a, const ForkPoint& b) { return a.seq > b.seq; });
        for (std::size_t i = *o.keep; i < own.size(); ++i) {
            if (!children_of(domains, own[i]).empty())
                continue;
            drop_fork_point(host, own[i], result.deleted);
            result.removed_points.push_back(own[i].label());
        }
        points = read_fork_points(host);
    }

    // What must stay in the chain: a layer of a fork point that is kept or that VMs came
    // from, a layer another volume is backed by, and everything outside the pool.
    const Chains chains(host);
    std::set<std::string> needed;
    for (const auto& p : points)
        if (p.kept() || !children_of(domains, p).empty())
            for (const auto& [target, layer] : p.layers)
                needed.insert(layer);
    const std::string xml = domain_xml(dom.get());
    std::set<std::string> own_chain;
    std::map<std::string, std::vector<std::string>> chain_of; // target -> volumes, top first
    for (const auto& [target, top] : disk_sources(xml)) {
        for (const auto& file : live_chain(xml, target)) {
            auto v = chains.name_by_path.find(file);
            chain_of[target].push_back(v == chains.name_by_path.end() ? "" : v->second);
            if (v != chains.name_by_path.end())
                own_chain.insert(v->second);
        }
        result.depth_before[target] = static_cast<unsigned>(live_chain(xml, target).size());
    }
    for (const auto& [name, info] : chains.by_name) {
        if (own_chain.count(name) || info.backing.empty())
            continue;
        auto b = chains.name_by_path.find(info.backing);
        if (b != chains.name_by_path.end())
            needed.insert(b->second);
    }

    for (const auto& [target, vols] : chain_of) {
        // The first layer below the top that must stay is the pull's base.
        const std::vector<std::string> files = live_chain(xml, target);
        std::size_t base = vols.size();
        for (std::size_t i = 1; i < vols.size(); ++i)
            if (vols[i].empty() || needed.count(vols[i])) {
                base = i;
                break;
            }
        if (base <= 1)
            continue; // the top sits on a layer that stays: nothing between to merge
        for (std::size_t i = 1; i < base; ++i)
            result.merged.push_back(vols[i]);
        op.step("squash-pull");
        const char* base_path = base < files.size() ? files[base].c_str() : nullptr;
        lv_check(virDomainBlockRebase(dom.get(), target.c_str(), base_path, 0, 0),
                 "Failed to start the block pull of disk '" + target + "' of VM '" + vm + "'");
        op.on_undo("stop the block pull of disk '" + target + "'", [d = dom.get(), target] {
            virDomainBlockJobAbort(d, target.c_str(), 0);
            clear_libvirt_error();
        });
        wait_for_block_job(dom.get(), vm, target, o.ctx.cancel);
    }
    const std::string after = domain_xml(dom.get());
    for (const auto& [target, depth] : result.depth_before)
        result.depth_after[target] = static_cast<unsigned>(live_chain(after, target).size());
    op.step("commit");
    op.commit();
    for (auto& v : sweep(host))
        result.deleted.push_back(std::move(v));
    return result;
}

} // namespace forky
