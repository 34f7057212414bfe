#include "fork.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "fault.hpp"
#include "log.hpp"
#include "names.hpp"
#include "network.hpp"
#include "save_image.hpp"
#include "transaction.hpp"
#include "units.hpp"
#include "vm.hpp"
#include "vm_lock.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <cstdlib>
#include <future>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The parent must be a running (or, for a cold fork, paused) VM of forky's.
void require_forkable(virDomainPtr dom, const std::string& name, const ForkOptions& o) {
    int state = 0;
    int reason = 0;
    lv_check(virDomainGetState(dom, &state, &reason, 0),
             "Failed to read the state of VM '" + name + "'");
    if (state == VIR_DOMAIN_RUNNING)
        return;
    if (state == VIR_DOMAIN_PAUSED) {
        if (o.cold)
            return;
        throw ConflictError("VM '" + name + "' is paused; fork it with --cold");
    }
    throw ConflictError("VM '" + name + "' is " + domain_state(dom) +
                        "; only a running VM can be forked (start it first)");
}

// The next fork-point number: past what the lineage says and past any volume left by a
// fork that died before it could say so.
unsigned next_fork_point(const std::string& parent, const Lineage& lineage,
                         const std::vector<VolumeInfo>& volumes) {
    unsigned highest = lineage.forks;
    std::regex re("^" + parent + R"(\.(?:vd[a-z]+\.)?fp([0-9]+)\.(?:mem|qcow2)$)");
    for (const auto& v : volumes) {
        std::smatch m;
        if (std::regex_match(v.name, m, re))
            highest = std::max(highest, static_cast<unsigned>(std::stoul(m[1])));
    }
    return highest + 1;
}

// `count` fresh names PREFIX-N, each reserved by its own lock: never one in use by a
// domain, a volume or another operation, and, for the parent's own prefix, never one it
// handed out before.
struct ReservedNames {
    std::vector<std::string> names;
    std::vector<VmLock> locks; // held until the children are whole (or undone)
    unsigned last_index = 0;
};

ReservedNames reserve_names(Host& host, const std::string& prefix, unsigned start, unsigned count,
                            const std::set<std::string>& volume_names, const CancelToken& cancel) {
    ReservedNames r;
    unsigned index = start;
    auto has_volumes = [&](const std::string& name) {
        for (const auto& v : volume_names)
            if (v.rfind(name + ".", 0) == 0 && v != lock_volume_name(name))
                return true;
        return host.find_volume(console_volume_name(name)) != nullptr;
    };
    while (r.names.size() < count) {
        cancel.check("Reserving names");
        ++index;
        std::string name = prefix + "-" + std::to_string(index);
        if (auto why = name_problem(name))
            throw UsageError("Cannot name children '" + prefix + "-N': " + *why);
        if (host.find_domain(name) || has_volumes(name))
            continue;
        auto lock = VmLock::try_acquire(host, name, "child");
        if (!lock)
            continue; // another operation holds the name
        // Under its lock: nothing was made under this name meanwhile.
        if (host.find_domain(name) || has_volumes(name))
            continue;
        r.names.push_back(name);
        r.locks.push_back(std::move(*lock));
    }
    r.last_index = index;
    return r;
}

std::optional<std::uint64_t> completed_job_downtime(virDomainPtr dom) {
    virTypedParameterPtr params = nullptr;
    int nparams = 0;
    int type = 0;
    if (virDomainGetJobStats(dom, &type, &params, &nparams, VIR_DOMAIN_JOB_STATS_COMPLETED) < 0) {
        clear_libvirt_error();
        return std::nullopt;
    }
    unsigned long long downtime = 0;
    int found = virTypedParamsGetULLong(params, nparams, VIR_DOMAIN_JOB_DOWNTIME, &downtime);
    virTypedParamsFree(params, nparams);
    if (found != 1)
        return std::nullopt;
    return downtime;
}

std::string snapshot_xml(const std::string& name, const std::string& memory_path,
                         const std::map<std::string, std::string>& new_tops) {
    pugi::xml_document doc;
    pugi::xml_node s = doc.append_child("domainsnapshot");
    s.append_child("name").text().set(name.c_str());
    pugi::xml_node mem = s.append_child("memory");
    mem.append_attribute("snapshot") = "external";
    mem.append_attribute("file") = memory_path.c_str();
    pugi::xml_node disks = s.append_child("disks");
    for (const auto& [target, path] : new_tops) {
        pugi::xml_node d = disks.append_child("disk");
        d.append_attribute("name") = target.c_str();
        d.append_attribute("snapshot") = "external";
        d.append_attribute("type") = "file";
        d.append_child("driver").append_attribute("type") = "qcow2";
        d.append_child("source").append_attribute("file") = path.c_str();
    }
    std::ostringstream out;
    doc.save(out, "", pugi::format_raw | pugi::format_no_declaration);
    return out.str();
}

} // namespace

namespace {

// A snapshot that failed because the pool filled up is a storage failure (exit 7, as for
// a pool found too small before), not a libvirt one.
[[noreturn]] void rethrow_snapshot_failure(Host& host, const Error& e, std::uint64_t needed) {
    const std::string what = e.what();
    std::optional<std::uint64_t> available;
    try {
        available = host.pool_available();
    } catch (const Error&) {
        // libvirt does not answer: not a question of space
    }
    const bool no_space = what.find("No space left on device") != std::string::npos;
    if (available && (no_space || *available < needed)) {
        StorageError full(what + " (pool '" + host.options().pool + "' has " +
                          format_size(*available) + " free; this fork needs about " +
                          format_size(needed) + ")");
        full.with_libvirt_code(e.libvirt_code());
        throw full;
    }
    throw;
}

} // namespace

ForkResult vm_fork(Host& host, const std::string& parent, const ForkOptions& o) {
    const auto t_start = Clock::now();
    require_valid_name(parent);
    if (o.count == 0 || o.count > max_fork_count)
        throw UsageError("The number of children must be between 1 and " +
                         std::to_string(max_fork_count) + ", not " + std::to_string(o.count));
    const std::string prefix = o.prefix.empty() ? parent : o.prefix;
    if (auto why = name_problem(prefix))
        throw UsageError("Invalid prefix '" + prefix + "': " + *why);
    const CancelToken& cancel = o.cancel;
    const std::string what = "Fork of VM '" + parent + "'";

    host.pool(); // NotFoundError for a pool that does not exist
    DomainPtr dom = host.domain(parent);
    require_forky_vm(dom.get(), parent, "not forking");

    // The lock first: a VM left paused by a killed cold fork is explained by its lock.
    VmLock lock = VmLock::acquire(host, parent, "fork", o.lock_wait, cancel);
    fault_point("lock", 0, cancel);
    // Under the lock: what another operation did meanwhile is now visible.
    dom = host.domain(parent);
    Lineage lineage = require_forky_vm(dom.get(), parent, "not forking");
    require_forkable(dom.get(), parent, o);
    require_same_pool(host, parent, lineage);
    const std::string parent_uuid = domain_uuid(dom.get());

    const std::string live_xml = domain_xml(dom.get());
    const auto tops = disk_sources(live_xml); // target -> current top layer (to be frozen)
    const auto volumes = host.volumes();
    std::map<std::string, std::string> volume_by_path;
    std::set<std::string> volume_names;
    for (const auto& v : volumes) {
        volume_by_path[v.path] = v.name;
        volume_names.insert(v.name);
    }
    std::map<std::string, std::string> frozen; // target -> volume name of the frozen layer
    for (const auto& [target, path] : tops) {
        auto v = volume_by_path.find(path);
        if (v == volume_by_path.end())
            throw ConflictError("Disk '" + target + "' of VM '" + parent + "' ('" + path +
                                "') is not in pool '" + host.options().pool +
                                "'; forky forks only disks it manages");
        frozen[target] = v->second;
    }

    pugi::xml_document live_doc;
    live_doc.load_string(live_xml.c_str());
    const std::uint64_t memory_bytes =
        live_doc.select_node("/domain/memory").node().text().as_ullong() * 1024;
    const std::uint64_t per_child = 4ULL << 20; // overlay metadata, console, early writes
    const std::uint64_t needed = memory_bytes + (1ULL << 20) + o.count * per_child;
    const std::uint64_t available = host.pool_available();
    if (available < needed)
        throw StorageError("Pool '" + host.options().pool + "' has " + format_size(available) +
                           " free; forking " + std::to_string(o.count) + " children of '" + parent +
                           "' needs about " + format_size(needed));

    // The plan: fork point, names (reserved), UUIDs, every volume. Declared before the
    // transaction, the names' locks are released only after an undo has run.
    const unsigned fp = next_fork_point(parent, lineage, volumes);
    const std::string fork_point = parent + ".fp" + std::to_string(fp);
    const std::string mem_name = fork_point + ".mem";
    ReservedNames reserved = reserve_names(
        host, prefix, prefix == parent ? lineage.children_made : 0, o.count, volume_names, cancel);
    const std::vector<std::string>& names = reserved.names;
    std::vector<std::string> uuids;
    for (std::size_t i = 0; i < names.size(); ++i)
        uuids.push_back(random_uuid());
    const bool has_console = lineage.console_volume() != nullptr;
    {
        // Room for the whole journal, before any of it is written.
        Journal planned = lock.journal();
        planned.paused = parent_uuid;
        planned.resumed = true;
        planned.volumes.push_back(mem_name);
        for (const auto& [target, path] : tops)
            planned.volumes.push_back(parent + "." + target + ".fp" + std::to_string(fp) +
                                      ".qcow2");
        for (std::size_t i = 0; i < names.size(); ++i) {
            planned.children.emplace_back(names[i], uuids[i]);
            for (const auto& [target, path] : tops)
                planned.volumes.push_back(disk_volume_name(names[i], target));
            if (has_console)
                planned.volumes.push_back(console_volume_name(names[i]));
        }
        lock.reserve(planned.encode().size() + 1);
    }

    ForkResult result;
    result.parent = parent;
    result.fork_point = fork_point;
    Transaction txn; // everything but the parent's move onto new layers
    txn.before_rollback([&host] { host.reconnect_if_lost(); });
    txn.if_rollback_fails([&lock] {
        lock.abandon(); // gc finishes what rollback could not
        logger("fork")->warn("Some steps could not be undone; run 'forky gc' to finish (it "
                             "undoes what the journal in the pool names)");
    });

    // 1. The fork point: a memory image and new top layers for the parent.
    cancel.check(what);
    lock.record_volume(mem_name);
    StorageVolPtr mem_vol = host.create_raw_volume(mem_name);
    txn.on_rollback("delete memory image '" + mem_name + "'",
                    [&host, mem_name] { host.delete_volume(mem_name); });
    const std::string mem_path = host.volume_path(mem_vol.get());
    fault_point("memory-volume", 0, cancel);

    auto resume_parent = [&host, parent_uuid, parent] {
        DomainPtr d(virDomainLookupByUUIDString(host.conn(), parent_uuid.c_str()));
        lv_check(d.get(), "Failed to find VM '" + parent + "'");
        lv_check(virDomainResume(d.get()), "Failed to resume VM '" + parent + "'");
    };
    const auto t_snapshot = Clock::now();
    std::map<std::string, std::string> new_tops; // target -> path
    Lineage parent_lineage = lineage;
    {
        Transaction before_snapshot;
        before_snapshot.before_rollback([&host] { host.reconnect_if_lost(); });
        for (const auto& [target, path] : tops) {
            std::string name = parent + "." + target + ".fp" + std::to_string(fp) + ".qcow2";
            lock.record_volume(name);
            StorageVolPtr v = host.create_overlay(name, path, DiskFormat::qcow2);
            before_snapshot.on_rollback("delete overlay '" + name + "'",
                                        [&host, name] { host.delete_volume(name); });
            new_tops[target] = host.volume_path(v.get());
            for (auto& owned : parent_lineage.volumes)
                if (owned.role == "disk" && owned.target == target)
                    owned.name = name;
            fault_point("parent-overlay", 0, cancel);
        }
        cancel.check(what);
        std::optional<Clock::time_point> suspended;
        if (o.cold && domain_state(dom.get()) == "running") {
            // Journalled first: should forky be killed before the fork is complete, gc
            // resumes the parent (--keep-paused is for a fork that succeeds).
            lock.record_paused(parent_uuid);
            lv_check(virDomainSuspend(dom.get()), "Failed to pause VM '" + parent + "'");
            suspended = Clock::now();
            before_snapshot.on_rollback("resume VM '" + parent + "'", resume_parent);
        }
        fault_point("snapshot", 0, cancel);
        unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA |
                         VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC | VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT;
        if (!o.cold)
            flags |= VIR_DOMAIN_SNAPSHOT_CREATE_LIVE;
        try {
            SnapshotPtr snap(virDomainSnapshotCreateXML(
                dom.get(), snapshot_xml(fork_point, mem_path, new_tops).c_str(), flags));
            lv_check(snap.get(),
                     "Failed to freeze fork point '" + fork_point + "' of VM '" + parent + "'");
        } catch (const Error& e) {
            rethrow_snapshot_failure(host, e, needed);
        }
        // The parent now runs on its new layers, whatever happens next: say so first.
        before_snapshot.commit();
        if (!o.cold)
            result.parent_downtime_ms = completed_job_downtime(dom.get());
        parent_lineage.forks = fp;
        if (prefix == parent)
            parent_lineage.children_made = reserved.last_index;
        write_lineage(dom.get(), parent, parent_lineage);
        if (suspended && o.keep_paused) {
            result.parent_left_paused = true;
            // A fork that fails after all runs the parent again, as it was.
            txn.on_rollback("resume VM '" + parent + "'", resume_parent);
        } else if (suspended) {
            if (virDomainResume(dom.get()) < 0) {
                // The fork point is good and the children can still be made.
                try {
                    throw_libvirt_error("Failed to resume VM '" + parent + "'");
                } catch (const Error& e) {
                    logger("fork")->warn("{}; it stays paused", e.what());
                }
                result.parent_left_paused = true;
            } else {
                result.parent_downtime_ms = static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *suspended)
                        .count());
                lock.record_resumed();
            }
        }
    }
    result.snapshot_ms = ms_since(t_snapshot);
    fault_point("parent-metadata", 0, cancel);

    // 2 + 3. The children.
    const auto t_children = Clock::now();
    const std::string fixed = host.read_volume_range(mem_name, 0, save_header_size);
    const SaveImageHeader header = parse_save_header(
        host.read_volume_range(mem_name, 0, save_header_size + save_header_data_len(fixed)));
    virStorageVolInfo mem_info{};
    lv_check(virStorageVolGetInfo(mem_vol.get(), &mem_info),
             "Failed to query memory image '" + mem_name + "'");
    result.memory_image_bytes = mem_info.allocation;
    std::vector<unsigned> guest_ports;
    for (const auto& p : lineage.ports)
        guest_ports.push_back(p.guest);

    // Restores run side by side. libvirt reads an image's header (the child's XML) once,
    // as the restore begins, and adds the domain under the name it found there; once that
    // name is visible the header is free for the next child, while the earlier restores
    // go on reading the migration stream after it. Declared after `txn`, so any restore
    // still running is waited for before the rollback touches its domain.
    struct Started {
        std::string name;
        std::string uuid;
        std::string xml;
        Lineage lineage;
        std::future<void> restore;
    };
    constexpr std::size_t restore_lanes = 4;
    std::vector<ConnectPtr> lanes; // outlive the restores that use them (declared before)
    std::vector<Started> started;
    const unsigned restore_flags =
        o.children_paused ? VIR_DOMAIN_SAVE_PAUSED : VIR_DOMAIN_SAVE_RUNNING;
    for (unsigned i = 0; i < names.size(); ++i) {
        const std::string& name = names[i];
        const unsigned n = i + 1;
        cancel.check(what);
        ChildPlan plan;
        plan.name = name;
        plan.uuid = uuids[i];
        lock.record_child(name, plan.uuid);
        Lineage& cl = plan.lineage;
        cl.parent = parent;
        cl.fork_point = fork_point;
        cl.generation = lineage.generation + 1;
        cl.created_at = utc_now_rfc3339();
        cl.operation = lock.journal().op;
        cl.ttl = lineage.ttl;
        cl.pool = host.options().pool;
        cl.spec = lineage.spec;
        cl.memory_image = mem_name;
        for (unsigned port : guest_ports)
            cl.ports.push_back({port, 0});
        for (const auto& [target, path] : tops) { // the frozen layers
            std::string vol_name = disk_volume_name(name, target);
            lock.record_volume(vol_name);
            StorageVolPtr v = host.create_overlay(vol_name, path, DiskFormat::qcow2);
            txn.on_rollback("delete volume '" + vol_name + "'",
                            [&host, vol_name] { host.delete_volume(vol_name); });
            plan.disk_paths[target] = host.volume_path(v.get());
            cl.volumes.push_back({"disk", target, vol_name});
            cl.layers.push_back({"layer", target, frozen.at(target)});
            fault_point("child-overlay", n, cancel);
        }
        if (has_console) {
            std::string vol_name = console_volume_name(name);
            lock.record_volume(vol_name);
            StorageVolPtr v = host.create_raw_volume(vol_name);
            txn.on_rollback("delete volume '" + vol_name + "'",
                            [&host, vol_name] { host.delete_volume(vol_name); });
            plan.console_log_path = host.volume_path(v.get());
            cl.volumes.push_back({"console", "", vol_name});
            fault_point("child-console", n, cancel);
        }
        std::string xml = make_child_xml(header.xml, plan);
        host.write_volume(mem_name, 0, encode_save_header(header, xml));
        fault_point("header", n, cancel);
        cancel.check(what);
        fault_point("restore", n, cancel);
        txn.on_rollback("remove child '" + name + "'",
                        [&host, name, uuid = plan.uuid] { remove_domain(host, name, uuid); });
        const std::string context =
            "Failed to start child '" + name + "' from fork point '" + fork_point + "'";
        // Restores issued on the connection that also polls for the children's names ran
        // one after another here (libvirt 9.0); on a few connections of their own, shared
        // round-robin, they overlap.
        if (lanes.size() < restore_lanes && lanes.size() < names.size())
            lanes.push_back(host.open_connection());
        virConnectPtr lane = lanes[i % lanes.size()].get();
        started.push_back(
            {name, plan.uuid, std::move(xml), cl,
             std::async(std::launch::async, [lane, mem_path, restore_flags, context] {
                 lv_check(virDomainRestoreFlags(lane, mem_path.c_str(), nullptr, restore_flags),
                          context);
             })});
        // Wait until libvirt has taken this child's header (or the restore is over).
        auto& restore = started.back().restore;
        auto restored = [&] {
            DomainPtr d = host.find_domain(name);
            return d && domain_uuid(d.get()) == plan.uuid;
        };
        while (!restored() &&
               restore.wait_for(std::chrono::milliseconds(2)) != std::future_status::ready) {
        }
        logger("fork")->debug("Child '{}' took its header after {:.0f} ms", name,
                              ms_since(t_children));
    }
    for (unsigned i = 0; i < started.size(); ++i) {
        Started& s = started[i];
        s.restore.get(); // rethrows a failed restore
        logger("fork")->debug("Child '{}' restored after {:.0f} ms", s.name, ms_since(t_children));
        // Only the domain this fork restored is made persistent: the same name and UUID,
        // running. (Its lock kept forky's own commands away; virsh is not.)
        auto child_running = [&] {
            DomainPtr d(virDomainLookupByUUIDString(host.conn(), s.uuid.c_str()));
            if (!d) {
                expect_absent(VIR_ERR_NO_DOMAIN, "Failed to look up child '" + s.name + "'");
                return false;
            }
            return domain_name(d.get()) == s.name && domain_is_active(d.get());
        };
        if (!child_running())
            throw ConflictError("Child '" + s.name +
                                "' is not running under the UUID forky gave "
                                "it (removed meanwhile?); not defining it");
        DomainPtr defined(virDomainDefineXML(host.conn(), s.xml.c_str()));
        lv_check(defined.get(), "Failed to define child '" + s.name + "'");
        if (!child_running())
            throw ConflictError("Child '" + s.name + "' stopped as forky defined it");
        fault_point("define", i + 1, cancel);
        if (!guest_ports.empty()) {
            s.lineage.ports = forward_ports(defined.get(), s.name, guest_ports);
            write_lineage(defined.get(), s.name, s.lineage, /*live_only=*/true);
        }
        result.children.push_back(s.name);
        logger("fork")->info("Child '{}' of '{}' is {}", s.name, parent,
                             o.children_paused ? "paused" : "running");
    }
    // The image reads as the parent's fork point again (for later forks and reverts).
    host.write_volume(mem_name, 0, encode_save_header(header, header.xml));
    fault_point("commit", 0, cancel);
    cancel.check(what);
    result.children_ms = ms_since(t_children);
    lock.record_committed(); // the commit point: fails (and undoes) if libvirt is gone
    txn.commit();
    lock.release();
    result.total_ms = ms_since(t_start);
    return result;
}

} // namespace forky
