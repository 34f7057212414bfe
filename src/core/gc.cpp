#include "gc.hpp"

#include "errors.hpp"
#include "fork_point.hpp"
#include "gpus.hpp"
#include "log.hpp"
#include "names.hpp"
#include "ship.hpp"
#include "tree.hpp"
#include "vm.hpp"
#include "vm_lock.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <thread>

namespace forky {

namespace {

// Paths and volume names that domains use directly (`skip`: domains about to go). A
// domain that vanishes while it is being read is skipped.
void add_domain_roots(Host& host, const std::set<std::string>& skip, std::set<std::string>& paths,
                      std::set<std::string>& names, std::set<std::string>& point_ids) {
    for (const auto& dom : host.domains()) {
        try {
            if (skip.count(domain_name(dom.get())))
                continue;
            for (unsigned flags : {0U, static_cast<unsigned>(VIR_DOMAIN_XML_INACTIVE)}) {
                pugi::xml_document doc;
                doc.load_string(domain_xml(dom.get(), flags).c_str());
                for (auto n : doc.select_nodes("/domain/devices/disk/source[@file]"))
                    paths.insert(n.node().attribute("file").value());
                for (auto n : doc.select_nodes("/domain/devices/*/log[@file]"))
                    paths.insert(n.node().attribute("file").value());
            }
            if (auto lineage = read_lineage(dom.get())) {
                for (const auto& v : lineage->volumes)
                    names.insert(v.name);
                for (const auto& v : lineage->layers)
                    names.insert(v.name);
                if (!lineage->memory_image.empty())
                    names.insert(lineage->memory_image);
                if (!lineage->fork_point_id.empty())
                    point_ids.insert(lineage->fork_point_id);
            }
        } catch (const NotFoundError&) {
            // undefined meanwhile
        }
    }
}

std::vector<Journal> settled_journals(Host& host) {
    auto journals = read_journals(host);
    for (const auto& j : journals) {
        if (j.state == Journal::State::blank) {
            // A lock taken a moment ago whose journal is not written yet: look again.
            std::this_thread::sleep_for(std::chrono::seconds(1));
            return read_journals(host);
        }
    }
    return journals;
}

// Whether libvirt still runs a job (a snapshot, say) on `vm` that its dead client started:
// libvirtd finishes it whatever happened to the client.
bool job_running(Host& host, const std::string& vm) {
    DomainPtr d = host.find_domain(vm);
    if (!d)
        return false;
    virDomainJobInfo info{};
    if (virDomainGetJobInfo(d.get(), &info) < 0) {
        clear_libvirt_error();
        return false;
    }
    return info.type != VIR_DOMAIN_JOB_NONE;
}

// The parent a killed cold fork paused: resumed, if it is still that VM and still
// paused. Returns its name when it was (or, dry, would be) resumed.
std::optional<std::string> resume_paused_parent(Host& host, const Journal& j, bool dry_run) {
    DomainPtr d = host.find_domain(j.vm);
    if (!d || domain_uuid(d.get()) != j.paused || !read_lineage(d.get()))
        return std::nullopt;
    int state = 0;
    int reason = 0;
    if (virDomainGetState(d.get(), &state, &reason, 0) < 0) {
        clear_libvirt_error();
        return std::nullopt;
    }
    if (state != VIR_DOMAIN_PAUSED)
        return std::nullopt;
    if (!dry_run)
        lv_check(virDomainResume(d.get()), "Failed to resume VM '" + j.vm + "'");
    return j.vm;
}

// The GPUs a killed fork detached from its parent for the cut: those its definition names
// and the running domain lacks are attached again.
void reattach_gpus(Host& host, const Journal& j, bool dry_run, GcResult& result) {
    try {
        DomainPtr d = host.find_domain(j.vm);
        if (!d || domain_uuid(d.get()) != j.detached || !read_lineage(d.get()) ||
            !domain_is_active(d.get()))
            return;
        const auto live = domain_gpus(domain_xml(d.get()));
        auto devices = libvirt_gpu_devices(host);
        for (const auto& g : domain_gpus(domain_xml(d.get(), VIR_DOMAIN_XML_INACTIVE))) {
            if (std::find(live.begin(), live.end(), g) != live.end())
                continue;
            if (!dry_run)
                devices->attach(d.get(), hostdev_xml(g), /*persistent=*/false);
            result.reattached_gpus.push_back(j.vm + ": " + describe(g));
        }
    } catch (const NotFoundError&) {
        // removed meanwhile
    } catch (const Error& e) {
        result.problems.push_back("VM '" + j.vm + "' lost its GPUs to a killed fork and they " +
                                  "could not be attached again: " + e.what());
    }
}

// Mediated devices a dead operation made: removed unless a domain holds one.
void remove_mdevs(Host& host, const Journal& j, bool dry_run, GcResult& result) {
    try {
        for (auto& uuid : remove_unheld_mdevs(host, j.mdevs, dry_run).removed)
            result.removed_mdevs.push_back(std::move(uuid));
    } catch (const Error& e) {
        result.problems.push_back("The mediated devices of a dead operation on '" + j.vm +
                                  "' could not be removed: " + e.what());
    }
}

} // namespace

std::optional<std::string> journal_child_problem(const Journal& j, const std::string& name,
                                                 const std::optional<Lineage>& lineage,
                                                 const std::string& pool) {
    if (!lineage)
        return "it carries no forky metadata";
    if (lineage->pool != pool)
        return "its volumes are in pool '" + lineage->pool + "', not '" + pool + "'";
    if (j.operation == "up" || j.operation == "import") {
        if (name != j.vm || !lineage->parent.empty())
            return "it is not the VM that 'forky " + j.operation + "' of '" + j.vm + "' made";
    } else if (j.operation == "fork") {
        if (lineage->parent != j.vm)
            return "its parent is '" + lineage->parent + "', not '" + j.vm + "'";
    } else {
        return "'forky " + j.operation + "' creates no VMs";
    }
    auto created = parse_rfc3339(lineage->created_at);
    if (!created || *created < j.since)
        return "it was created (" + lineage->created_at + ") before that operation started";
    if (lineage->operation != j.op)
        return "another operation made it (" +
               (lineage->operation.empty() ? std::string("none recorded") : lineage->operation) +
               ", not " + j.op + ")";
    return std::nullopt;
}

GcResult collect_garbage(Host& host, const GcOptions& o) {
    GcResult result;
    // The candidates are listed first: a volume made after this by an operation that
    // journals it, or by one that then commits, is never among them.
    const auto candidates = host.volumes();
    const std::string& pool = host.options().pool;
    const long long pool_owner = host.pool_owner();
    std::set<std::string> protected_names;
    std::vector<std::string> dead_locks;
    std::vector<Journal> killed_reverts;
    for (const auto& j : settled_journals(host)) {
        const std::string lock = j.lock_volume;
        if (j.state == Journal::State::malformed) {
            result.refused.push_back(lock + ": its journal does not parse (" + j.problem +
                                     "); left alone");
            protected_names.insert(lock);
            continue;
        }
        if (pool_owner >= 0 && j.owner >= 0 && j.owner != pool_owner) {
            result.refused.push_back(lock + ": owned by uid " + std::to_string(j.owner) +
                                     ", not by the pool's owner; left alone");
            protected_names.insert(lock);
            continue;
        }
        if (j.state == Journal::State::valid && lock != lock_volume_name(j.vm)) {
            result.refused.push_back(lock + ": its journal is about VM '" + j.vm +
                                     "', whose lock is '" + lock_volume_name(j.vm) +
                                     "'; left alone");
            protected_names.insert(lock);
            continue;
        }
        // A journal still blank after a second belongs to a process that died at once;
        // one that cannot be read is assumed alive.
        const bool alive = j.state == Journal::State::unreadable ||
                           (j.state == Journal::State::valid && j.holder_alive());
        const bool settling = !alive && job_running(host, j.vm);
        if (alive || settling || !o.undo_dead_operations) {
            if (j.state == Journal::State::unreadable)
                result.busy.push_back(j.vm + " (its journal cannot be read now: " + j.problem +
                                      ")");
            else if (alive || settling)
                result.busy.push_back(j.vm + " (" + j.operation + " by process " +
                                      std::to_string(j.holder_pid) +
                                      (settling ? ", gone; libvirt is finishing its job)" : ")"));
            protected_names.insert(lock);
            protected_names.insert(j.volumes.begin(), j.volumes.end());
            continue;
        }
        if (j.committed) {
            // Complete: its VMs are whole. Only its lock outlived it.
            dead_locks.push_back(lock);
            continue;
        }
        for (const auto& [child, uuid] : j.children) {
            try {
                DomainPtr d = host.find_domain(child);
                if (!d || domain_uuid(d.get()) != uuid)
                    continue; // never made, or the name belongs to another VM now
                if (auto why = journal_child_problem(j, child, read_lineage(d.get()), pool)) {
                    result.refused.push_back(lock + ": names VM '" + child + "', but " + *why +
                                             "; VM left alone");
                    continue;
                }
                if (o.dry_run || remove_domain(host, child, uuid))
                    result.removed_domains.push_back(child);
            } catch (const NotFoundError&) {
                // removed meanwhile (a concurrent gc or rm): nothing left to do
            }
        }
        if (!j.detached.empty() && !j.reattached)
            reattach_gpus(host, j, o.dry_run, result);
        if (!j.mdevs.empty())
            remove_mdevs(host, j, o.dry_run, result);
        if (!j.paused.empty() && !j.resumed) {
            try {
                if (auto resumed = resume_paused_parent(host, j, o.dry_run))
                    result.resumed_domains.push_back(*resumed);
            } catch (const NotFoundError&) {
                // removed meanwhile
            }
        }
        if (j.operation == "revert")
            killed_reverts.push_back(j);
        dead_locks.push_back(lock);
    }

    std::set<std::string> live_paths;
    std::set<std::string> live_names;
    std::set<std::string> live_points;
    add_domain_roots(host, {result.removed_domains.begin(), result.removed_domains.end()},
                     live_paths, live_names, live_points);
    // Fork points: a kept one (a snapshot) is live with its memory image and layers; a
    // fork's own while a child came from it (or names its memory image). The others go,
    // libvirt's record of them too.
    std::vector<ForkPoint> dead_points;
    std::vector<UnreadableRecord> unreadable;
    const auto points = read_fork_points(host, &unreadable);
    // A record that cannot be read may be a snapshot: everything of its VM's that it may
    // name (its memory image, the VM's layers) is kept until someone looks.
    std::vector<std::string> kept_prefixes;
    for (const auto& u : unreadable) {
        const std::string vm = u.volume.substr(0, u.volume.rfind(".fp"));
        kept_prefixes.push_back(vm + ".");
        protected_names.insert(u.volume); // lineage_tree's problems say so, below
    }
    // A revert killed after it stopped the VM leaves it off; the state it left is kept as
    // its pre-revert snapshot, which a revert brings back (gc does not start VMs).
    for (const auto& j : killed_reverts) {
        try {
            DomainPtr d = host.find_domain(j.vm);
            if (!d || domain_is_active(d.get()))
                continue;
            for (const auto& fp : points)
                if (fp.operation == j.op && fp.kind == ForkPoint::Kind::pre_revert &&
                    fp.vm_uuid == domain_uuid(d.get()))
                    result.problems.push_back("VM '" + j.vm +
                                              "' was stopped by a revert that "
                                              "was killed; the state it left is kept as '" +
                                              fp.label() + "': 'forky revert " + fp.label() +
                                              "' brings it back");
        } catch (const NotFoundError&) {
            // removed meanwhile
        }
    }
    for (const auto& fp : points) {
        const bool used = live_points.count(fp.id) ||
                          (!fp.memory_image.empty() && live_names.count(fp.memory_image));
        if (fp.kept() || used || protected_names.count(fp.record_volume)) {
            live_names.insert(fp.record_volume);
            if (!fp.memory_image.empty())
                live_names.insert(fp.memory_image);
            for (const auto& [target, layer] : fp.layers)
                live_names.insert(layer);
        } else {
            dead_points.push_back(fp);
        }
    }

    // Close over backing chains as they are now, newer volumes included.
    const auto volumes = host.volumes();
    std::map<std::string, const VolumeInfo*> by_path;
    for (const auto& v : volumes)
        by_path[v.path] = &v;
    std::vector<const VolumeInfo*> work;
    std::set<std::string> live;
    auto mark = [&](const VolumeInfo* v) {
        if (v != nullptr && live.insert(v->name).second)
            work.push_back(v);
    };
    auto kept_by_prefix = [&](const std::string& name) {
        for (const auto& p : kept_prefixes)
            if (name.compare(0, p.size(), p) == 0)
                return true;
        return false;
    };
    for (const auto& v : volumes)
        if (live_paths.count(v.path) || live_names.count(v.name) || protected_names.count(v.name) ||
            kept_by_prefix(v.name))
            mark(&v);
    while (!work.empty()) {
        const VolumeInfo* v = work.back();
        work.pop_back();
        if (!v->backing.empty()) {
            auto b = by_path.find(v->backing);
            mark(b == by_path.end() ? nullptr : b->second);
        }
    }

    // Newest layers first, so a layer goes only after what was backed by it.
    std::set<std::string> listed_first;
    for (const auto& v : candidates)
        listed_first.insert(v.name);
    std::vector<const VolumeInfo*> garbage;
    for (const auto& v : volumes) {
        if (!listed_first.count(v.name) || live.count(v.name) || !is_forky_volume_name(v.name))
            continue;
        // Every disk volume forky makes is an overlay: a qcow2 with no backing file that
        // is named like one was put there by someone else (the pool is a folder images
        // may be taken from).
        if (v.name.size() > 6 && v.name.compare(v.name.size() - 6, 6, ".qcow2") == 0 &&
            v.backing.empty()) {
            result.refused.push_back(v.name + ": named like forky's volumes, but not an overlay "
                                              "forky made (no backing file); left alone");
            continue;
        }
        garbage.push_back(&v);
    }
    // Images (img-<sha256>) are kept while whole, used or not: the next `forky up` or
    // fork there reuses them. One without its mark (a killed upload or fork), and a mark
    // without its image, go when nothing uses them and no live operation is making them.
    std::set<std::string> names_now;
    for (const auto& v : volumes)
        names_now.insert(v.name);
    for (const auto& v : volumes) {
        if (!listed_first.count(v.name) || live.count(v.name))
            continue;
        const bool mark = v.name.size() > 3 && v.name.compare(v.name.size() - 3, 3, ".ok") == 0;
        const std::string image = mark ? v.name.substr(0, v.name.size() - 3) : v.name;
        if (image_sha(image).empty())
            continue;
        if (mark ? !names_now.count(image) : !image_complete(host, image))
            garbage.push_back(&v);
    }
    std::set<std::string> deleted;
    bool progress = true;
    while (progress) {
        progress = false;
        for (const VolumeInfo* v : garbage) {
            if (deleted.count(v->name))
                continue;
            bool still_backs = false;
            for (const VolumeInfo* w : garbage)
                still_backs = still_backs || (!deleted.count(w->name) && w->backing == v->path);
            if (still_backs)
                continue;
            // Gone already (a concurrent gc or rm took it): skipped, not counted.
            if (o.dry_run || host.delete_volume(v->name))
                result.deleted_volumes.push_back(v->name);
            deleted.insert(v->name);
            progress = true;
        }
    }
    for (const auto& fp : dead_points)
        if (!o.dry_run && deleted.count(fp.record_volume))
            remove_snapshot_metadata(host, fp);
    for (const auto& lock : dead_locks)
        if (o.dry_run || host.delete_volume(lock))
            result.released_locks.push_back(lock);
    // What gc cannot mend: libvirt and the pool contradicting each other (a layer or a
    // memory image deleted behind forky's back, a record gone). Said, never acted on.
    if (o.undo_dead_operations) { // gc itself, not the sweep after an rm
        try {
            for (auto& p : lineage_tree(host).problems)
                result.problems.push_back(std::move(p));
        } catch (const Error& e) {
            // What gc did stands; the look at the family could not be had.
            result.problems.push_back(std::string("could not check the lineage: ") + e.what());
        }
    }
    return result;
}

} // namespace forky
