#include "engine.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "log.hpp"
#include "network.hpp"
#include "save_image.hpp"
#include "units.hpp"
#include "vm.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <future>
#include <sstream>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
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
    if (memory_path.empty()) {
        mem.append_attribute("snapshot") = "no";
    } else {
        mem.append_attribute("snapshot") = "external";
        mem.append_attribute("file") = memory_path.c_str();
    }
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
                          format_size(*available) + " free; this needs about " +
                          format_size(needed) + ")");
        full.with_libvirt_code(e.libvirt_code());
        throw full;
    }
    if (what.find("paused due to previous migration") != std::string::npos)
        // QEMU keeps a VM it saved while paused in its post-migration state and saves it
        // again only after it ran (QEMU 7.2; libvirt cannot leave that state otherwise).
        throw ConflictError(what + " (the VM has been paused since it was last frozen; QEMU "
                                   "freezes it again only after it ran: resume it first, "
                                   "e.g. 'virsh resume', and pause it again if need be)");
    throw;
}

DomainPtr domain_by_uuid(Host& host, const std::string& uuid, const std::string& name) {
    DomainPtr d(virDomainLookupByUUIDString(host.conn(), uuid.c_str()));
    lv_check(d.get(), "Failed to find VM '" + name + "'");
    return d;
}

} // namespace

std::string spawn_target_xml(std::string_view domain_xml, const SpawnTarget& t) {
    ChildPlan plan;
    plan.name = t.name;
    plan.uuid = t.uuid;
    plan.disk_paths = t.disk_paths;
    plan.console_log_path = t.console_path;
    plan.lineage = t.lineage;
    std::string xml = make_child_xml(domain_xml, plan);
    if (t.boot_paths.empty())
        return xml;
    // On another host: its kernel and initrd are the copies there.
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    for (const auto& [role, path] : t.boot_paths)
        if (pugi::xml_node n = doc.select_node(("/domain/os/" + role).c_str()).node())
            n.text().set(path.c_str());
    std::ostringstream out;
    doc.save(out, "", pugi::format_raw | pugi::format_no_declaration);
    return out.str();
}

SaveImageHeader read_header(Host& host, const ForkPoint& point) {
    if (point.memory_image.empty())
        throw ConflictError("Fork point '" + point.label() +
                            "' has no memory image (the VM was off): nothing to start from");
    // Deleted behind forky's back: said as such, not as a bare missing volume.
    auto lost = [&](const std::string& what, const std::string& volume) {
        return NotFoundError("Fork point '" + point.label() + "' lost its " + what + " '" + volume +
                             "' (deleted outside forky?): nothing to start from; " + "'forky rm " +
                             point.label() + "' removes what is left of it");
    };
    if (!host.volume_info(point.memory_image))
        throw lost("memory image", point.memory_image);
    for (const auto& [target, layer] : point.layers)
        if (!host.volume_info(layer))
            throw lost("frozen layer of disk " + target, layer);
    const std::string fixed = host.read_volume_range(point.memory_image, 0, save_header_size);
    return parse_save_header(host.read_volume_range(
        point.memory_image, 0, save_header_size + save_header_data_len(fixed)));
}

PoolFacts pool_facts(Host& host) {
    PoolFacts pool;
    pool.pool = host.options().pool;
    for (const auto& v : host.volumes()) {
        pool.volume_names.insert(v.name);
        pool.volume_by_path[v.path] = v.name;
    }
    pool.available = host.pool_available();
    pool.fork_points = read_fork_points(host);
    for (const auto& d : host.domains()) {
        try {
            pool.domain_names.insert(domain_name(d.get()));
        } catch (const NotFoundError&) {
        }
    }
    return pool;
}

VmFacts vm_facts(Host& host, virDomainPtr dom, const PoolFacts& pool) {
    VmFacts vm;
    vm.name = domain_name(dom);
    vm.uuid = domain_uuid(dom);
    vm.lineage = require_forky_vm(dom, vm.name, "not freezing");
    require_same_pool(host, vm.name, vm.lineage);
    vm.state = domain_state(dom);
    vm.xml = domain_xml(dom);
    vm.top_paths = disk_sources(vm.xml);
    for (const auto& [target, path] : vm.top_paths) {
        auto v = pool.volume_by_path.find(path);
        if (v != pool.volume_by_path.end())
            vm.top_volumes[target] = v->second;
    }
    pugi::xml_document doc;
    doc.load_string(vm.xml.c_str());
    vm.memory_bytes = doc.select_node("/domain/memory").node().text().as_ullong() * 1024;
    return vm;
}

Lineage lineage_at(Host& host, const ForkPoint& point) {
    if (!point.vm_lineage.empty())
        return lineage_from_xml(point.vm_lineage);
    // Records made before they kept it: the header's (a killed spawn may have left a
    // child's there; gc of that operation does not put it back).
    const SaveImageHeader header = read_header(host, point);
    pugi::xml_document doc;
    doc.load_string(header.xml.c_str());
    for (pugi::xml_node n : doc.select_node("/domain/metadata").node().children()) {
        std::string_view name = n.name();
        if (name.size() >= 8 && name.substr(name.size() - 7) == "lineage") {
            std::ostringstream out;
            n.print(out);
            return lineage_from_xml(out.str());
        }
    }
    throw Error("The memory image of '" + point.label() + "' carries no forky lineage");
}

FreezeResult freeze(Operation& op, const VmFacts& vm, const FreezePlan& plan) {
    Host& host = op.host();
    const auto t_start = Clock::now();
    FreezeResult result;
    ForkPoint& point = result.point;
    point = plan.point;
    point.vm_lineage = lineage_to_xml(vm.lineage);
    point.id = random_uuid();
    point.created_at = utc_now_rfc3339();
    point.host = host.options().uri;
    point.operation = op.id();
    DomainPtr dom = domain_by_uuid(host, vm.uuid, vm.name);

    const std::string record = fork_point_record_name(vm.name, point.seq);
    op.create_raw(record, fork_point_record_capacity);
    std::string mem_path;
    if (plan.memory) {
        mem_path = op.create_raw(point.memory_image);
        op.step("memory-volume");
    }

    const std::string& name = vm.name;
    const std::string uuid = vm.uuid;
    auto resume = [&host, uuid, name] {
        DomainPtr d = domain_by_uuid(host, uuid, name);
        lv_check(virDomainResume(d.get()), "Failed to resume VM '" + name + "'");
    };
    std::optional<Clock::time_point> suspended;
    {
        Operation::Scope before_snapshot(op); // kept once the snapshot is taken
        std::map<std::string, std::string> new_paths;
        for (const auto& [target, top] : plan.new_tops) {
            new_paths[target] = op.create_overlay(top, vm.top_paths.at(target), DiskFormat::qcow2);
            op.step("parent-overlay");
        }
        if (plan.memory && plan.cold && domain_state(dom.get()) == VmState::running) {
            // Journalled first: should forky be killed before the operation is complete,
            // gc resumes the VM (--keep-paused is for an operation that succeeds).
            op.lock().record_paused(uuid);
            lv_check(virDomainSuspend(dom.get()), "Failed to pause VM '" + name + "'");
            suspended = Clock::now();
            op.on_undo("resume VM '" + name + "'", resume);
        }
        op.step("snapshot");
        unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA |
                         VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC | VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT;
        if (!plan.memory)
            flags |= VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
        else if (!plan.cold)
            flags |= VIR_DOMAIN_SNAPSHOT_CREATE_LIVE;
        try {
            SnapshotPtr snap(virDomainSnapshotCreateXML(
                dom.get(), snapshot_xml(point.name, mem_path, new_paths).c_str(), flags));
            lv_check(snap.get(), "Failed to freeze '" + point.label() + "'");
        } catch (const Error& e) {
            rethrow_snapshot_failure(host, e, plan.bytes_needed);
        }
        // The VM now runs on its new tops, whatever happens next: say so first.
        before_snapshot.keep();
    }
    if (plan.memory && !plan.cold)
        result.paused_ms = completed_job_downtime(dom.get());
    Lineage lineage = vm.lineage;
    lineage.forks = point.seq;
    if (plan.children_made)
        lineage.children_made = *plan.children_made;
    for (auto& owned : lineage.volumes)
        if (owned.role == "disk" && plan.new_tops.count(owned.target))
            owned.name = plan.new_tops.at(owned.target);
    write_lineage(dom.get(), name, lineage);
    if (suspended && plan.keep_paused) {
        result.left_paused = true;
        op.on_undo("resume VM '" + name + "'", resume); // a failure runs it again, as it was
    } else if (suspended) {
        if (virDomainResume(dom.get()) < 0) {
            // The fork point is good: what comes next can still be done.
            try {
                throw_libvirt_error("Failed to resume VM '" + name + "'");
            } catch (const Error& e) {
                logger("engine")->warn("{}; it stays paused", e.what());
            }
            result.left_paused = true;
        } else {
            result.paused_ms = static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *suspended)
                    .count());
            op.lock().record_resumed();
        }
    }

    // The record, then libvirt's view of it (the VM's XML at the instant: its frozen
    // layers as its disks).
    write_fork_point(host, point);
    define_snapshot_metadata(host, point, vm.xml);
    op.on_undo("remove libvirt's record of '" + point.label() + "'",
               [&host, point] { remove_snapshot_metadata(host, point); });
    op.step("parent-metadata");
    result.ms = ms_since(t_start);
    return result;
}

std::vector<SpawnTarget> make_children(Operation& op, const ForkPoint& point,
                                       const Lineage& at_point, const SpawnPlan& plan) {
    Host& host = op.host();
    std::map<std::string, std::string> layer_paths; // target -> frozen layer's path
    for (const auto& [target, layer] : point.layers) {
        StorageVolPtr v = host.find_volume(layer);
        if (!v)
            throw NotFoundError("Layer '" + layer + "' of fork point '" + point.label() +
                                "' is missing from pool '" + host.options().pool + "'");
        layer_paths[target] = host.volume_path(v.get());
    }
    std::vector<SpawnTarget> targets;
    for (std::size_t i = 0; i < plan.children.size(); ++i) {
        const PlannedChild& c = plan.children[i];
        const unsigned n = static_cast<unsigned>(i + 1);
        op.cancel().check("Making children");
        SpawnTarget t;
        t.name = c.name;
        t.uuid = c.uuid;
        Lineage& cl = t.lineage;
        cl.parent = point.vm;
        cl.parent_uuid = point.vm_uuid;
        cl.fork_point = point.label();
        cl.fork_point_id = point.id;
        cl.generation = at_point.generation + 1;
        cl.created_at = utc_now_rfc3339();
        cl.operation = op.id();
        cl.ttl = at_point.ttl;
        cl.pool = host.options().pool;
        cl.spec = at_point.spec;
        cl.gpu_fork_detach = at_point.gpu_fork_detach;
        cl.memory_image = point.memory_image;
        for (const auto& p : at_point.ports)
            cl.ports.push_back({p.guest, 0});
        for (const auto& [target, disk] : c.disks) {
            t.disk_paths[target] =
                op.create_overlay(disk, layer_paths.at(target), DiskFormat::qcow2);
            cl.volumes.push_back({"disk", target, disk});
            cl.layers.push_back({"layer", target, point.layers.at(target)});
            op.step("child-overlay", n);
        }
        if (!c.console.empty()) {
            t.console_path = op.create_raw(c.console);
            cl.volumes.push_back({"console", "", c.console});
            op.step("child-console", n);
        }
        targets.push_back(std::move(t));
    }
    return targets;
}

SpawnPlan reserve_children(Operation& op, const ForkPoint& point, const PoolFacts& pool,
                           SpawnRequest request) {
    Host& host = op.host();
    std::set<std::string> taken = taken_names(pool);
    taken.insert(request.also_taken.begin(), request.also_taken.end());
    std::map<std::string, VmLock> mine;
    for (;;) {
        op.cancel().check("Reserving names");
        SpawnPlan plan = plan_spawn(point, taken, request);
        bool complete = true;
        for (const auto& c : plan.children) {
            if (mine.count(c.name))
                continue;
            auto lock = VmLock::try_acquire(host, c.name, "child");
            // Under its lock, nothing may have been made under this name meanwhile.
            if (!lock || host.find_domain(c.name) ||
                host.find_volume(console_volume_name(c.name))) {
                taken.insert(c.name); // another operation's (or made meanwhile): the next one
                complete = false;
                break;
            }
            mine.emplace(c.name, std::move(*lock));
        }
        if (!complete)
            continue;
        for (auto& [name, lock] : mine)
            op.hold(std::move(lock));
        return plan;
    }
}

void restore_onto(Host& host, const ForkPoint& point, const SpawnTarget& t, bool paused) {
    const SaveImageHeader header = read_header(host, point);
    StorageVolPtr mem = host.find_volume(point.memory_image);
    const std::string mem_path = host.volume_path(mem.get());
    const std::string xml = spawn_target_xml(header.xml, t);
    host.write_volume(point.memory_image, 0, encode_save_header(header, xml));
    const int rc = virDomainRestoreFlags(host.conn(), mem_path.c_str(), nullptr,
                                         paused ? VIR_DOMAIN_SAVE_PAUSED : VIR_DOMAIN_SAVE_RUNNING);
    std::exception_ptr failed;
    if (rc < 0) {
        try {
            throw_libvirt_error("Failed to restore '" + t.name + "' from '" + point.label() + "'");
        } catch (const Error&) {
            failed = std::current_exception();
        }
    }
    host.write_volume(point.memory_image, 0, encode_save_header(header, header.xml));
    if (failed)
        std::rethrow_exception(failed);
    DomainPtr defined(virDomainDefineXML(host.conn(), xml.c_str()));
    lv_check(defined.get(), "Failed to define '" + t.name + "'");
    std::vector<unsigned> guest_ports;
    for (const auto& p : t.lineage.ports)
        guest_ports.push_back(p.guest);
    if (!guest_ports.empty()) {
        Lineage with_ports = t.lineage;
        with_ports.ports = forward_ports(defined.get(), t.name, guest_ports);
        write_lineage(defined.get(), t.name, with_ports, /*live_only=*/true);
    }
}

std::optional<std::string> set_guest_clock(virDomainPtr dom) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(now);
    const auto nsecs = std::chrono::duration_cast<std::chrono::nanoseconds>(now - secs);
    if (virDomainSetTime(dom, secs.count(), static_cast<unsigned>(nsecs.count()), 0) == 0)
        return std::nullopt;
    const char* why = virGetLastErrorMessage();
    std::string reason = why ? why : "unknown";
    clear_libvirt_error();
    return reason;
}

SpawnResult spawn(Operation& op, const ForkPoint& point, std::vector<SpawnTarget> targets,
                  const SpawnOptions& options) {
    Host& host = op.host();
    const auto t_start = Clock::now();
    SpawnResult result;
    const SaveImageHeader header = read_header(host, point);
    result.header_bytes = header.size();
    if (auto info = host.volume_info(point.memory_image))
        result.memory_image_bytes = info->allocation;
    StorageVolPtr mem_vol = host.find_volume(point.memory_image);
    const std::string mem_path = host.volume_path(mem_vol.get());
    // However this ends, the image reads as the fork point's own again.
    op.on_undo("restore the header of '" + point.memory_image + "'", [&host, point, header] {
        host.write_volume(point.memory_image, 0, encode_save_header(header, header.xml));
    });

    // Restores run side by side. libvirt reads an image's header (the domain's XML) once,
    // as the restore begins, and adds the domain under the name it found there; once that
    // name is visible the header is free for the next one, while the earlier restores go
    // on reading the migration stream after it.
    struct Started {
        SpawnTarget* target;
        std::string xml;
        std::future<void> restore;
    };
    constexpr std::size_t restore_lanes = 4;
    std::vector<ConnectPtr> lanes; // outlive the restores that use them (declared before)
    std::vector<Started> started;
    // Any restore still running is waited for before an undo touches its domain.
    struct WaitAll {
        std::vector<Started>& s;
        ~WaitAll() {
            for (auto& x : s)
                if (x.restore.valid())
                    x.restore.wait();
        }
    } wait_all{started};
    // Restored paused, all of them, and only then let run: a restore is mostly QEMU
    // starting, CPU-bound, and a guest already running takes CPU from the restores still
    // going (8 children here: 3.4 s paused against 4.7 s running; README, Benchmarks).
    const unsigned flags = VIR_DOMAIN_SAVE_PAUSED;
    // Every instance restored from the image runs under a VM generation ID of its own,
    // where the VM has the device: the guest's cue to reseed its random pool.
    const bool with_genid = !domain_genid(header.xml).empty();
    for (std::size_t i = 0; i < targets.size(); ++i) {
        SpawnTarget& t = targets[i];
        const unsigned n = static_cast<unsigned>(i + 1);
        t.lineage.genid = with_genid ? random_uuid() : std::string();
        std::string xml = spawn_target_xml(header.xml, t);
        host.write_volume(point.memory_image, 0, encode_save_header(header, xml));
        op.step("header", n);
        op.step("restore", n);
        if (t.is_new) {
            op.expect_domain(t.name, t.uuid);
        } else {
            // The VM itself: should the operation fail from here, the instance started now
            // is stopped again, before the operation's own undo brings the VM back.
            op.on_undo("stop '" + t.name + "' as restored", [&host, uuid = t.uuid] {
                DomainPtr d(virDomainLookupByUUIDString(host.conn(), uuid.c_str()));
                if (!d) {
                    clear_libvirt_error();
                    return;
                }
                if (domain_is_active(d.get()) && virDomainDestroy(d.get()) < 0)
                    clear_libvirt_error();
            });
        }
        const std::string context =
            "Failed to start '" + t.name + "' from fork point '" + point.label() + "'";
        // Restores issued on the connection that also polls for the domains' names ran
        // one after another here (libvirt 9.0); on a few connections of their own, shared
        // round-robin, they overlap.
        if (lanes.size() < restore_lanes && lanes.size() < targets.size())
            lanes.push_back(host.open_connection());
        virConnectPtr lane = lanes[i % lanes.size()].get();
        started.push_back(
            {&t, std::move(xml), std::async(std::launch::async, [lane, mem_path, flags, context] {
                 lv_check(virDomainRestoreFlags(lane, mem_path.c_str(), nullptr, flags), context);
             })});
        // Wait until libvirt has taken this domain's header (or the restore is over).
        auto& restore = started.back().restore;
        auto took_header = [&] {
            DomainPtr d(virDomainLookupByUUIDString(host.conn(), t.uuid.c_str()));
            if (!d) {
                clear_libvirt_error();
                return false;
            }
            return domain_is_active(d.get());
        };
        while (!took_header() &&
               restore.wait_for(std::chrono::milliseconds(2)) != std::future_status::ready) {
        }
        logger("engine")->debug("'{}' took its header after {:.0f} ms", t.name, ms_since(t_start));
    }
    for (std::size_t i = 0; i < started.size(); ++i) {
        Started& s = started[i];
        SpawnTarget& t = *s.target;
        s.restore.get(); // rethrows a failed restore
        logger("engine")->debug("'{}' restored after {:.0f} ms", t.name, ms_since(t_start));
        op.step("restored", static_cast<unsigned>(i + 1));
        // Only the domain this operation restored is made persistent: the same name and
        // UUID, running. (Its lock kept forky's own commands away; virsh is not.)
        auto running = [&] {
            DomainPtr d(virDomainLookupByUUIDString(host.conn(), t.uuid.c_str()));
            if (!d) {
                expect_absent(VIR_ERR_NO_DOMAIN, "Failed to look up '" + t.name + "'");
                return false;
            }
            return domain_name(d.get()) == t.name && domain_is_active(d.get());
        };
        if (!running())
            throw ConflictError("'" + t.name + "' is not running under the UUID forky gave it " +
                                "(removed meanwhile?); not defining it");
        // libvirt 9.0 gives a restored domain a new generation ID of its own, whatever the
        // image's XML says (seen here); where it does not, it runs under forky's. The
        // lineage and the definition record the one it runs under.
        bool genid_moved = false;
        if (with_genid) {
            DomainPtr live(virDomainLookupByUUIDString(host.conn(), t.uuid.c_str()));
            lv_check(live.get(), "Failed to look up '" + t.name + "'");
            const std::string genid = domain_genid(domain_xml(live.get()));
            if (!genid.empty() && genid != t.lineage.genid) {
                t.lineage.genid = genid;
                s.xml = spawn_target_xml(header.xml, t);
                genid_moved = true;
            }
        }
        DomainPtr defined(virDomainDefineXML(host.conn(), s.xml.c_str()));
        lv_check(defined.get(), "Failed to define '" + t.name + "'");
        if (!running())
            throw ConflictError("'" + t.name + "' stopped as forky defined it");
        op.step("define", static_cast<unsigned>(i + 1));
        std::vector<unsigned> guest_ports;
        for (const auto& p : t.lineage.ports)
            guest_ports.push_back(p.guest);
        if (!guest_ports.empty() || genid_moved) {
            Lineage live = t.lineage;
            if (!guest_ports.empty())
                live.ports = forward_ports(defined.get(), t.name, guest_ports);
            write_lineage(defined.get(), t.name, live, /*live_only=*/true);
        }
        result.started.push_back(t.name);
    }
    for (const auto& s : started) {
        const SpawnTarget& t = *s.target;
        if (!options.paused) {
            DomainPtr d(virDomainLookupByUUIDString(host.conn(), t.uuid.c_str()));
            lv_check(d.get(), "Failed to find '" + t.name + "'");
            lv_check(virDomainResume(d.get()), "Failed to start the vCPUs of '" + t.name + "'");
        }
        logger("engine")->info("'{}' started from '{}', {}", t.name, point.label(),
                               options.paused ? "paused" : "running");
    }
    if (options.set_clock) {
        for (const auto& s : started) {
            const SpawnTarget& t = *s.target;
            if (options.paused) {
                result.clock_not_set.push_back("'" + t.name + "': left paused");
                continue;
            }
            DomainPtr d(virDomainLookupByUUIDString(host.conn(), t.uuid.c_str()));
            lv_check(d.get(), "Failed to find '" + t.name + "'");
            if (auto why = set_guest_clock(d.get()))
                result.clock_not_set.push_back("'" + t.name + "': " + *why);
        }
    }
    host.write_volume(point.memory_image, 0, encode_save_header(header, header.xml));
    result.ms = ms_since(t_start);
    return result;
}

} // namespace forky
