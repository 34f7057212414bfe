#include "fork.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
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

void fault_point(const char* step, unsigned index) {
    static const auto first = std::chrono::steady_clock::now();
    logger("fork")->debug(
        "step {}{} at {:.0f} ms", step, index ? ":" + std::to_string(index) : std::string(),
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first)
            .count());
    auto matches = [&](const char* var) {
        const char* v = std::getenv(var);
        if (v == nullptr)
            return false;
        std::string want = v;
        std::string here = step;
        return want == here || (index != 0 && want == here + ":" + std::to_string(index));
    };
    if (matches("FORKY_FAULT_SLEEP")) {
        logger("fork")->warn("FORKY_FAULT_SLEEP: sleeping at step '{}'", step);
        std::this_thread::sleep_for(std::chrono::seconds(60));
    }
    if (matches("FORKY_FAULT"))
        throw Error(std::string("Injected fault at step '") + step + "' (FORKY_FAULT)");
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

void check_cancelled(const ForkOptions& o) {
    if (o.cancelled && o.cancelled())
        throw InterruptedError("Fork interrupted; undoing what it had done");
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

// `count` fresh names PREFIX-N: never one in use by a domain or a volume, and, for the
// parent's own prefix, never one it handed out before.
std::vector<std::string> pick_names(Host& host, const std::string& prefix, unsigned start,
                                    unsigned count, const std::set<std::string>& volume_names,
                                    unsigned& last_index) {
    std::vector<std::string> names;
    unsigned index = start;
    while (names.size() < count) {
        ++index;
        std::string name = prefix + "-" + std::to_string(index);
        if (auto why = name_problem(name))
            throw UsageError("Cannot name children '" + prefix + "-N': " + *why);
        bool taken = host.find_domain(name) != nullptr;
        for (const auto& v : volume_names)
            taken = taken || v.rfind(name + ".", 0) == 0;
        if (!taken)
            names.push_back(name);
    }
    last_index = index;
    return names;
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

ForkResult vm_fork(Host& host, const std::string& parent, const ForkOptions& o) {
    const auto t_start = Clock::now();
    require_valid_name(parent);
    if (o.count == 0 || o.count > max_fork_count)
        throw UsageError("The number of children must be between 1 and " +
                         std::to_string(max_fork_count) + ", not " + std::to_string(o.count));
    const std::string prefix = o.prefix.empty() ? parent : o.prefix;
    if (auto why = name_problem(prefix))
        throw UsageError("Invalid prefix '" + prefix + "': " + *why);

    DomainPtr dom = host.domain(parent);
    if (!read_lineage(dom.get()))
        throw ConflictError("Domain '" + parent + "' was not made by forky (no forky metadata)");
    require_forkable(dom.get(), parent, o);

    VmLock lock = VmLock::acquire(host, parent, "fork", o.lock_wait);
    fault_point("lock");
    // Under the lock: what another fork did meanwhile is now visible.
    require_forkable(dom.get(), parent, o);
    Lineage lineage = *read_lineage(dom.get());
    require_same_pool(host, parent, lineage);

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

    const unsigned fp = next_fork_point(parent, lineage, volumes);
    const std::string fork_point = parent + ".fp" + std::to_string(fp);
    const std::string mem_name = fork_point + ".mem";
    unsigned last_index = 0;
    const std::vector<std::string> names =
        pick_names(host, prefix, prefix == parent ? lineage.children_made : 0, o.count,
                   volume_names, last_index);

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

    ForkResult result;
    result.parent = parent;
    result.fork_point = fork_point;
    Transaction txn; // everything but the parent's move onto new layers
    txn.if_rollback_fails([&lock] { lock.abandon(); }); // gc finishes what rollback could not

    // 1. The fork point: a memory image and new top layers for the parent.
    check_cancelled(o);
    lock.record_volume(mem_name);
    StorageVolPtr mem_vol = host.create_raw_volume(mem_name);
    txn.on_rollback("delete memory image '" + mem_name + "'",
                    [&host, mem_name] { host.delete_volume(mem_name); });
    const std::string mem_path = host.volume_path(mem_vol.get());
    fault_point("memory-volume");

    const auto t_snapshot = Clock::now();
    std::map<std::string, std::string> new_tops; // target -> path
    Lineage parent_lineage = lineage;
    {
        Transaction before_snapshot;
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
            fault_point("parent-overlay");
        }
        check_cancelled(o);
        bool suspended = false;
        if (o.cold && domain_state(dom.get()) == "running") {
            lv_check(virDomainSuspend(dom.get()), "Failed to pause VM '" + parent + "'");
            suspended = true;
            before_snapshot.on_rollback("resume VM '" + parent + "'", [d = dom.get(), parent] {
                lv_check(virDomainResume(d), "Failed to resume VM '" + parent + "'");
            });
        }
        fault_point("snapshot");
        unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA |
                         VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC | VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT;
        if (!o.cold)
            flags |= VIR_DOMAIN_SNAPSHOT_CREATE_LIVE;
        SnapshotPtr snap(virDomainSnapshotCreateXML(
            dom.get(), snapshot_xml(fork_point, mem_path, new_tops).c_str(), flags));
        lv_check(snap.get(),
                 "Failed to freeze fork point '" + fork_point + "' of VM '" + parent + "'");
        // The parent now runs on its new layers, whatever happens next: say so first.
        before_snapshot.commit();
        result.parent_downtime_ms = completed_job_downtime(dom.get());
        parent_lineage.forks = fp;
        if (prefix == parent)
            parent_lineage.children_made = last_index;
        write_lineage(dom.get(), parent, parent_lineage);
        if (suspended && !o.keep_paused && virDomainResume(dom.get()) < 0) {
            // The fork point is good and the children can still be made.
            try {
                throw_libvirt_error("Failed to resume VM '" + parent + "'");
            } catch (const Error& e) {
                logger("fork")->warn("{}; it stays paused", e.what());
            }
        }
    }
    result.snapshot_ms = ms_since(t_snapshot);
    fault_point("parent-metadata");

    // 2 + 3. The children.
    const auto t_children = Clock::now();
    const std::string fixed = host.read_volume_range(mem_name, 0, save_header_size);
    const SaveImageHeader header = parse_save_header(
        host.read_volume_range(mem_name, 0, save_header_size + save_header_data_len(fixed)));
    virStorageVolInfo mem_info{};
    lv_check(virStorageVolGetInfo(mem_vol.get(), &mem_info),
             "Failed to query memory image '" + mem_name + "'");
    result.memory_image_bytes = mem_info.allocation;
    const bool has_console = lineage.console_volume() != nullptr;
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
        check_cancelled(o);
        ChildPlan plan;
        plan.name = name;
        plan.uuid = random_uuid();
        lock.record_child(name, plan.uuid);
        Lineage& cl = plan.lineage;
        cl.parent = parent;
        cl.fork_point = fork_point;
        cl.generation = lineage.generation + 1;
        cl.created_at = utc_now_rfc3339();
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
            fault_point("child-overlay", n);
        }
        if (has_console) {
            std::string vol_name = console_volume_name(name);
            lock.record_volume(vol_name);
            StorageVolPtr v = host.create_raw_volume(vol_name);
            txn.on_rollback("delete volume '" + vol_name + "'",
                            [&host, vol_name] { host.delete_volume(vol_name); });
            plan.console_log_path = host.volume_path(v.get());
            cl.volumes.push_back({"console", "", vol_name});
            fault_point("child-console", n);
        }
        std::string xml = make_child_xml(header.xml, plan);
        host.write_volume(mem_name, 0, encode_save_header(header, xml));
        fault_point("header", n);
        check_cancelled(o);
        fault_point("restore", n);
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
            {name, std::move(xml), cl,
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
        DomainPtr defined(virDomainDefineXML(host.conn(), s.xml.c_str()));
        lv_check(defined.get(), "Failed to define child '" + s.name + "'");
        fault_point("define", i + 1);
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
    fault_point("commit");
    result.children_ms = ms_since(t_children);
    txn.commit();
    lock.release();
    result.total_ms = ms_since(t_start);
    return result;
}

} // namespace forky
