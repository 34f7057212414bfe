#include "vm.hpp"

#include "ship.hpp"

#include "child_xml.hpp"
#include "domain_xml.hpp"
#include "errors.hpp"
#include "fork_point.hpp"
#include "gc.hpp"
#include "gpus.hpp"
#include "images.hpp"
#include "log.hpp"
#include "names.hpp"
#include "network.hpp"
#include "operation.hpp"
#include "policies.hpp"
#include "transaction.hpp"
#include "vm_lock.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <thread>

namespace forky {

std::optional<Lineage> read_lineage(virDomainPtr dom) {
    char* xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, lineage_namespace, 0);
    if (xml == nullptr) {
        expect_absent(VIR_ERR_NO_DOMAIN_METADATA, "Failed to read forky's metadata of a VM");
        return std::nullopt;
    }
    CString owned(xml);
    return lineage_from_xml(owned.get());
}

std::string disk_volume_name(const std::string& vm, const std::string& target) {
    return vm + "." + target + ".qcow2";
}

std::string console_volume_name(const std::string& vm) {
    return vm + ".console.log";
}

void require_same_pool(const Host& host, const std::string& name, const Lineage& lineage) {
    if (!lineage.pool.empty() && lineage.pool != host.options().pool)
        throw ConflictError("VM '" + name + "' keeps its volumes in pool '" + lineage.pool +
                            "', not '" + host.options().pool + "'; use --pool " + lineage.pool);
}

void write_lineage(virDomainPtr dom, const std::string& name, const Lineage& lineage,
                   bool live_only) {
    // The running instance when there is one; the definition unless `live_only` (a
    // VM that is off has only its definition).
    unsigned flags = 0;
    if (lv_check(virDomainIsActive(dom), "Failed to query VM '" + name + "'") == 1)
        flags |= VIR_DOMAIN_AFFECT_LIVE;
    if (!live_only &&
        lv_check(virDomainIsPersistent(dom), "Failed to query VM '" + name + "'") == 1)
        flags |= VIR_DOMAIN_AFFECT_CONFIG;
    if (flags == 0)
        return;
    lv_check(virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT,
                                  lineage_to_xml(lineage, /*bare=*/true).c_str(), lineage_prefix,
                                  lineage_namespace, flags),
             "Failed to record the lineage of VM '" + name + "'");
}

namespace {
// "; ... forky gc ..." when a lock of `name` is left (a killed forky made the domain).
std::string left_by_killed_operation(Host& host, const std::string& name) {
    if (!host.find_volume(lock_volume_name(name)))
        return "";
    return " (its lock '" + lock_volume_name(name) +
           "' is still held: if a killed forky left it, 'forky gc' removes it)";
}
} // namespace

Lineage require_forky_vm(virDomainPtr dom, const std::string& name, const std::string& what) {
    auto lineage = read_lineage(dom);
    if (!lineage)
        throw ConflictError("Domain '" + name + "' was not made by forky (no forky metadata); " +
                            what + " it");
    return *lineage;
}

namespace {

// Starts a defined domain with its vCPUs paused, checks the chains QEMU really opened
// against the image rules, then lets it run. A driver without paused starts (libvirt's
// test driver) starts it running and is checked the same, just later.
void start_checked(virDomainPtr dom, const std::string& name, const ImageRules& rules, bool local) {
    bool paused = true;
    if (virDomainCreateWithFlags(dom, VIR_DOMAIN_START_PAUSED) < 0) {
        virErrorPtr err = virGetLastError();
        if (err == nullptr || err->code != VIR_ERR_INVALID_ARG)
            throw_libvirt_error("Failed to start VM '" + name + "'");
        clear_libvirt_error();
        lv_check(virDomainCreate(dom), "Failed to start VM '" + name + "'");
        paused = false;
    }
    auto problems = live_image_problems(domain_xml(dom), rules, local);
    if (!problems.empty()) {
        std::string all;
        for (const auto& p : problems)
            all += (all.empty() ? "" : "; ") + p;
        throw SpecError("VM '" + name + "' was removed before it ran: once started, " + all +
                        " (a file changed after forky checked it)");
    }
    if (paused)
        lv_check(virDomainResume(dom), "Failed to resume VM '" + name + "'");
}

} // namespace

namespace {

// A new VM's lineage, before its volumes are named.
Lineage new_vm_lineage(Host& host, const DomainSpec& spec, const std::string& operation) {
    Lineage lineage;
    lineage.generation = 0;
    lineage.created_at = utc_now_rfc3339();
    lineage.operation = operation;
    lineage.ttl = spec.ttl;
    lineage.pool = host.options().pool;
    lineage.spec = spec.source.string();
    lineage.genid = random_uuid();
    for (unsigned port : spec.ports)
        lineage.ports.push_back({port, 0}); // the host side is known once it runs
    lineage.gpu_fork_detach = spec.gpu_fork == GpuFork::detach;
    return lineage;
}

// The GPUs `spec` asks for, picked on the host for VM `name`: passthrough support first
// (libvirt's domain capabilities), then the devices, their IOMMU groups and who holds them.
// Each mdev gets the UUID it will be made under. ConflictError before anything changes.
std::vector<GpuAssignment> pick_spec_gpus(Host& host, const DomainSpec& spec,
                                          const std::string& name, const std::string& domain_type,
                                          GpuDevices& devices) {
    const std::string where = "'" + host.options().uri + "'";
    bool pci = false, mdev = false;
    for (const auto& g : spec.gpus)
        (g.kind == GpuSpec::Kind::mdev ? mdev : pci) = true;
    require_passthrough(devices.domain_capabilities(domain_type), pci, mdev, where);
    std::vector<GpuAssignment> picked = pick_gpus(read_inventory(host), spec.gpus, name, where);
    for (auto& g : picked)
        if (g.kind == GpuAssignment::Kind::mdev)
            g.mdev_uuid = random_uuid();
    return picked;
}

void add_gpus(DomainPlan& plan, const std::vector<GpuAssignment>& gpus) {
    for (const auto& g : gpus) {
        plan.hostdevs.push_back(hostdev_xml(g));
        if (g.kind == GpuAssignment::Kind::mdev)
            plan.lineage.mdevs.push_back(g.mdev_uuid);
    }
}

} // namespace

std::string vm_up_xml(Host& host, const DomainSpec& given, const UpOptions& options) {
    const std::string name = options.name.empty() ? given.name : options.name;
    require_valid_name(name);
    const auto others = host.other_pool_dirs();
    const std::string pool_dir = host.pool_dir_if_any();
    const ImageRules rules = image_rules_for(given, options.image_dirs, host.options().pool,
                                             pool_dir, {others.begin(), others.end()});
    const DomainSpec spec = check_spec_images(given, rules);
    DomainPlan plan;
    plan.name = name;
    plan.domain_type = host.domain_type_for(spec.accel);
    plan.uuid = random_uuid();
    plan.lineage = new_vm_lineage(host, spec, "");
    for (const auto& disk : spec.disks) {
        const std::string vol = disk_volume_name(name, disk.target);
        plan.disk_paths.push_back(pool_dir + "/" + vol);
        plan.lineage.volumes.push_back({"disk", disk.target, vol});
    }
    if (spec.console == ConsoleMode::log) {
        plan.console_log_path = pool_dir + "/" + console_volume_name(name);
        plan.lineage.volumes.push_back({"console", "", console_volume_name(name)});
    }
    if (!spec.gpus.empty())
        add_gpus(plan, pick_spec_gpus(host, spec, name, plan.domain_type,
                                      *gpu_devices(host, options.ctx)));
    return build_domain_xml(spec, plan);
}

std::string vm_up(Host& host, const DomainSpec& given, const UpOptions& options) {
    const std::string name = options.name.empty() ? given.name : options.name;
    require_valid_name(name);
    if (name == images_lock_name || name == gpus_lock_name || name == quotas_lock_name)
        throw UsageError("'" + name + "' is forky's own (a lock of the host's); pick another name");
    if (host.find_domain(name))
        throw ConflictError("A VM named '" + name + "' already exists on '" + host.options().uri +
                            "'" + left_by_killed_operation(host, name));
    // Every file the spec names, checked before anything is made.
    const auto others = host.other_pool_dirs();
    const ImageRules rules =
        image_rules_for(given, options.image_dirs, host.options().pool, host.pool_dir_if_any(),
                        {others.begin(), others.end()});
    DomainSpec spec = check_spec_images(given, rules);
    const std::string domain_type = host.domain_type_for(spec.accel);
    std::shared_ptr<GpuDevices> devices;
    if (!spec.gpus.empty()) {
        devices = gpu_devices(host, options.ctx);
        pick_spec_gpus(host, spec, name, domain_type, *devices); // refusals before anything
    }
    options.ctx.cancel.check("forky up");
    Operation op(host, name, "up", options.ctx, std::chrono::seconds(0));
    if (host.find_domain(name)) // made meanwhile by someone else
        throw ConflictError("A VM named '" + name + "' already exists on '" + host.options().uri +
                            "'");
    std::vector<GpuAssignment> gpus;
    if (devices) {
        // Picked again under the host's GPU lock, held until the domain names them.
        op.hold(lock_gpus(host, options.ctx.cancel));
        gpus = pick_spec_gpus(host, spec, name, domain_type, *devices);
        for (const auto& g : gpus) {
            if (g.kind != GpuAssignment::Kind::mdev)
                continue;
            make_mdev(op, devices, g);
        }
        op.step("up-gpus");
    }
    if (options.upload) {
        UploadStats stats;
        spec = upload_spec_files(
            host, spec, stats, [&op](const std::string& v) { op.lock().record_volume(v); },
            options.progress, options.ctx.cancel);
        op.step("up-upload");
    }

    Lineage lineage = new_vm_lineage(host, spec, op.id());

    DomainPlan plan;
    plan.name = name;
    plan.domain_type = domain_type;
    auto own_volume = [&](const std::string& vol_name) {
        if (!host.find_volume(vol_name))
            return;
        // A removed VM of this name whose snapshots were kept: its layer, not litter.
        for (const auto& fp : read_fork_points(host))
            if (fp.vm == name)
                throw ConflictError("Volume '" + vol_name + "' already exists in pool '" +
                                    host.options().pool + "': a removed VM named '" + name +
                                    "' kept snapshots ('forky snapshots " + name +
                                    "'); pick another name, or remove them first ('forky rm "
                                    "--recursive " +
                                    name + "')");
        throw ConflictError("Volume '" + vol_name + "' already exists in pool '" +
                            host.options().pool + "'; remove it or pick another name");
    };
    for (const auto& disk : spec.disks) {
        std::string vol_name = disk_volume_name(name, disk.target);
        own_volume(vol_name);
        plan.disk_paths.push_back(
            op.create_overlay(vol_name, disk.base.path.string(), disk.base_format));
        lineage.volumes.push_back({"disk", disk.target, vol_name});
        options.ctx.cancel.check("forky up");
    }
    if (spec.console == ConsoleMode::log) {
        std::string vol_name = console_volume_name(name);
        own_volume(vol_name);
        plan.console_log_path = op.create_raw(vol_name);
        lineage.volumes.push_back({"console", "", vol_name});
    }
    plan.lineage = lineage;
    add_gpus(plan, gpus);
    op.step("up-volumes");

    plan.uuid = random_uuid();
    std::string xml = build_domain_xml(spec, plan);
    op.expect_domain(name, plan.uuid);
    DomainPtr dom(virDomainDefineXML(host.conn(), xml.c_str()));
    lv_check(dom.get(), "Failed to define VM '" + name + "'");
    op.step("up-define");
    if (options.start) {
        start_checked(dom.get(), name, rules, host.is_local());
        if (!spec.ports.empty()) {
            Lineage running = plan.lineage;
            running.ports = forward_ports(dom.get(), name, spec.ports);
            write_lineage(dom.get(), name, running, /*live_only=*/true);
        }
        op.step("up-start");
    }
    options.ctx.cancel.check("forky up");
    op.commit(); // the commit point: fails (and undoes) if libvirt is gone
    logger("vm")->info("VM '{}' is up ({})", name, domain_type);
    return name;
}

namespace {

// Powers a domain off; a domain that went down by itself (or by another's hand)
// meanwhile is not an error. Returns whether this call powered it off.
bool destroy_unless_gone(virDomainPtr dom, const std::string& name) {
    if (virDomainDestroy(dom) == 0)
        return true;
    try {
        throw_libvirt_error("Failed to stop VM '" + name + "'");
    } catch (const NotFoundError&) {
        return false;
    } catch (const Error&) {
        if (domain_is_active(dom))
            throw;
    }
    return false;
}

VmInfo describe(virDomainPtr dom, Lineage lineage) {
    VmInfo info;
    info.name = domain_name(dom);
    info.uuid = domain_uuid(dom);
    info.state = domain_state(dom);
    pugi::xml_document doc;
    doc.load_string(domain_xml(dom).c_str());
    pugi::xml_node root = doc.document_element();
    info.domain_type = root.attribute("type").value();
    info.memory_bytes = root.child("memory").text().as_ullong() * 1024;
    info.vcpus = root.child("vcpu").text().as_uint();
    info.genid = root.child("genid").text().get();
    info.lineage = std::move(lineage);
    return info;
}

} // namespace

std::vector<VmInfo> vm_list(Host& host) {
    host.pool(); // a pool that does not exist (a typo in --pool) is an error, not "no VMs"
    std::vector<VmInfo> out;
    for (const auto& dom : host.domains()) {
        try {
            auto lineage = read_lineage(dom.get());
            if (lineage && lineage->pool == host.options().pool)
                out.push_back(describe(dom.get(), std::move(*lineage)));
        } catch (const NotFoundError&) {
            // undefined while being listed
        }
    }
    std::sort(out.begin(), out.end(),
              [](const VmInfo& a, const VmInfo& b) { return a.name < b.name; });
    return out;
}

std::string domain_uuid(virDomainPtr dom) {
    char uuid[VIR_UUID_STRING_BUFLEN];
    lv_check(virDomainGetUUIDString(dom, uuid), "Failed to read the UUID of a VM");
    return uuid;
}

bool remove_domain(Host& host, const std::string& name, const std::string& uuid) {
    DomainPtr d = host.find_domain(name);
    if (!d)
        return false;
    if (!uuid.empty() && domain_uuid(d.get()) != uuid)
        return false; // another VM has this name now
    // Undefine first: a running persistent domain becomes transient and goes with the
    // destroy, so nothing is asked of a domain that may have vanished meanwhile. Whoever
    // takes the last step (the undefine of a stopped one, the destroy of a running one)
    // removed it; a concurrent remover's same step fails as "not found".
    try {
        const bool active = domain_is_active(d.get());
        if (lv_check(virDomainIsPersistent(d.get()), "Failed to query VM '" + name + "'") == 1) {
            if (virDomainUndefineFlags(d.get(), VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                                    VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA) == 0) {
                if (!active)
                    return true;
            } else {
                try {
                    throw_libvirt_error("Failed to undefine VM '" + name + "'");
                } catch (const ConflictError&) {
                    // Undefined by a concurrent remover since we looked: on to the destroy.
                    if (virDomainIsPersistent(d.get()) != 0)
                        throw;
                }
            }
        }
        if (domain_is_active(d.get()))
            return destroy_unless_gone(d.get(), name);
    } catch (const NotFoundError&) {
        // gone by itself, or by another's hand
    }
    return false;
}

VmInfo vm_info(Host& host, const std::string& name) {
    host.pool();
    DomainPtr dom = host.domain(name);
    return describe(dom.get(), require_forky_vm(dom.get(), name, "not reading"));
}

bool vm_stop(Host& host, const std::string& name, const StopOptions& options) {
    host.pool();
    DomainPtr dom = host.domain(name);
    require_same_pool(host, name, require_forky_vm(dom.get(), name, "not stopping"));
    VmLock lock = VmLock::acquire(host, name, "stop", options.lock_wait, options.cancel);
    dom = host.domain(name); // as it is now that no operation runs on it
    require_same_pool(host, name, require_forky_vm(dom.get(), name, "not stopping"));
    if (!domain_is_active(dom.get()))
        return false;
    if (!options.force) {
        lv_check(virDomainShutdown(dom.get()), "Failed to shut down VM '" + name + "'");
        auto deadline = std::chrono::steady_clock::now() + options.timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (!domain_is_active(dom.get()))
                return true;
            options.cancel.sleep_for(std::chrono::milliseconds(100), "forky stop");
        }
        logger("vm")->warn("VM '{}' did not shut down within {} ms; forcing it off", name,
                           options.timeout.count());
    }
    destroy_unless_gone(dom.get(), name);
    return true;
}

namespace {

// Every path that something other than `except` needs: a volume's backing file or a
// domain's disk source.
std::map<std::string, std::string> needed_paths(Host& host, const std::vector<VolumeInfo>& volumes,
                                                const std::string& except,
                                                const std::set<std::string>& except_volumes) {
    std::map<std::string, std::string> users;
    for (const auto& vol : volumes) {
        if (!vol.backing.empty() && !except_volumes.count(vol.name))
            users.emplace(vol.backing, "volume '" + vol.name + "'");
    }
    for (const auto& dom : host.domains()) {
        try {
            std::string name = domain_name(dom.get());
            if (name == except)
                continue;
            pugi::xml_document doc;
            doc.load_string(domain_xml(dom.get(), VIR_DOMAIN_XML_INACTIVE).c_str());
            for (auto src : doc.select_nodes("/domain/devices/disk/source[@file]"))
                users.emplace(src.node().attribute("file").value(), "VM '" + name + "'");
        } catch (const NotFoundError&) {
            // removed meanwhile (a sibling's rm): it needs nothing any more
        }
    }
    return users;
}

} // namespace

namespace {

std::optional<RemoveResult> remove_vm(Host& host, const std::string& name, bool force,
                                      const CancelToken& cancel,
                                      const std::function<bool(const Lineage&)>& still,
                                      std::chrono::milliseconds lock_wait);

} // namespace

RemoveResult vm_remove(Host& host, const std::string& name, bool force, const CancelToken& cancel) {
    return *remove_vm(host, name, force, cancel, {}, std::chrono::seconds(120));
}

std::optional<RemoveResult> vm_remove_if(Host& host, const std::string& name,
                                         const std::function<bool(const Lineage&)>& still,
                                         std::chrono::milliseconds lock_wait,
                                         const CancelToken& cancel) {
    return remove_vm(host, name, /*force=*/true, cancel, still, lock_wait);
}

namespace {

std::optional<RemoveResult> remove_vm(Host& host, const std::string& name, bool force,
                                      const CancelToken& cancel,
                                      const std::function<bool(const Lineage&)>& still,
                                      std::chrono::milliseconds lock_wait) {
    host.pool();
    DomainPtr dom = host.find_domain(name);
    if (!dom) {
        // A VM removed with its snapshots kept: say how to reach them.
        for (const auto& fp : read_fork_points(host))
            if (fp.vm == name)
                throw NotFoundError("No VM named '" + name + "' on '" + host.options().uri +
                                    "'; its snapshots are kept ('forky snapshots " + name +
                                    "'): remove one with 'forky rm " + name +
                                    "@NAME', all with 'forky rm --recursive " + name + "'");
        dom = host.domain(name); // throws: no such VM
    }
    require_forky_vm(dom.get(), name, "not removing");
    // An operation that is making this VM (a fork restoring it) holds its lock until the
    // VM is whole; what it leaves, if anything, is what gets removed.
    VmLock lock = VmLock::acquire(host, name, "rm", lock_wait, cancel);
    dom = host.domain(name);
    Lineage lineage = require_forky_vm(dom.get(), name, "not removing");
    require_same_pool(host, name, lineage);
    if (still && !still(lineage))
        return std::nullopt;
    if (!force && domain_is_active(dom.get()))
        throw ConflictError("VM '" + name + "' is " + to_string(domain_state(dom.get())) +
                            "; stop it first or use --force");
    // Its own: what its lineage lists and the disks it runs on now.
    std::set<std::string> own;
    for (const auto& v : lineage.volumes)
        own.insert(v.name);
    const auto volumes = host.volumes();
    std::map<std::string, std::string> name_by_path;
    for (const auto& v : volumes)
        name_by_path[v.path] = v.name;
    for (const auto& [target, path] : disk_sources(domain_xml(dom.get()))) {
        auto v = name_by_path.find(path);
        if (v != name_by_path.end())
            own.insert(v->second);
    }
    auto users = needed_paths(host, volumes, name, own);

    remove_domain(host, name);
    RemoveResult result;
    // The mediated devices forky made for it, unless another domain holds one now.
    try {
        for (const auto& [uuid, holder] : remove_unheld_mdevs(host, lineage.mdevs).held)
            logger("vm")->warn("VM '{}' removed; its mediated device {} is left: '{}' holds it now",
                               name, uuid, holder);
    } catch (const Error& e) {
        logger("vm")->warn("VM '{}' removed, its mediated devices not: {}", name, e.what());
    }
    for (const auto& vol_name : own) {
        StorageVolPtr vol = host.find_volume(vol_name);
        if (!vol)
            continue;
        auto user = users.find(host.volume_path(vol.get()));
        if (user != users.end()) {
            result.kept.push_back(vol_name + " (needed by " + user->second + ")");
            continue;
        }
        host.delete_volume(vol_name);
        result.deleted.push_back(vol_name);
    }
    // Fork points that nothing depends on any more: memory images, frozen layers.
    GcOptions sweep;
    sweep.undo_dead_operations = false;
    lock.release();
    for (auto& v : collect_garbage(host, sweep).deleted_volumes)
        result.deleted.push_back(std::move(v));
    return result;
}

} // namespace

bool vm_pin(Host& host, const std::string& name, bool pinned, const CancelToken& cancel) {
    require_valid_name(name);
    host.pool();
    require_forky_vm(host.domain(name).get(), name, pinned ? "not pinning" : "not unpinning");
    VmLock lock =
        VmLock::acquire(host, name, pinned ? "pin" : "unpin", std::chrono::seconds(120), cancel);
    DomainPtr dom = host.domain(name);
    Lineage lineage = require_forky_vm(dom.get(), name, pinned ? "not pinning" : "not unpinning");
    require_same_pool(host, name, lineage);
    if (lineage.pinned == pinned)
        return false;
    lineage.pinned = pinned;
    write_lineage(dom.get(), name, lineage);
    return true;
}

VolumeChunk vm_console(Host& host, const std::string& name, std::uint64_t offset) {
    VmInfo info = vm_info(host, name);
    require_same_pool(host, name, info.lineage);
    const OwnedVolume* console = info.lineage.console_volume();
    if (console == nullptr)
        throw ConflictError("VM '" + name + "' has no console log (its spec says console: none)");
    return host.read_volume(console->name, offset);
}

} // namespace forky
