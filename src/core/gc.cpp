#include "gc.hpp"

#include "errors.hpp"
#include "log.hpp"
#include "vm.hpp"
#include "vm_lock.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <map>
#include <regex>
#include <set>
#include <thread>

namespace forky {

bool is_forky_volume_name(const std::string& name) {
    static const std::regex re(
        R"(^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\.(vd[a-z]{1,2}(\.fp[0-9]+)?\.qcow2|console\.log|fp[0-9]+\.mem)$)");
    return std::regex_match(name, re);
}

namespace {

// Paths and volume names that domains use directly (`skip`: domains about to go). A
// domain that vanishes while it is being read is skipped.
void add_domain_roots(Host& host, const std::set<std::string>& skip, std::set<std::string>& paths,
                      std::set<std::string>& names) {
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
            }
        } catch (const NotFoundError&) {
            // undefined meanwhile
        }
    }
}

std::vector<Journal> settled_journals(Host& host) {
    auto journals = read_journals(host);
    for (const auto& j : journals) {
        if (j.readable && j.holder_host.empty()) {
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

} // namespace

GcResult collect_garbage(Host& host, const GcOptions& o) {
    GcResult result;
    // The candidates are listed first: a volume made after this by an operation that
    // journals it, or by one that then commits, is never among them.
    const auto candidates = host.volumes();
    std::set<std::string> protected_names;
    std::vector<std::string> dead_locks;
    for (const auto& j : settled_journals(host)) {
        // A journal still blank after a second belongs to a process that died at once;
        // one that cannot be read is assumed alive.
        bool alive = !j.readable || (!j.holder_host.empty() && j.holder_alive());
        bool settling = !alive && job_running(host, j.vm);
        if (alive || settling || !o.undo_dead_operations) {
            if (alive || settling)
                result.busy.push_back(j.vm + " (" + j.operation + " by process " +
                                      std::to_string(j.holder_pid) +
                                      (settling ? ", gone; libvirt is finishing its job)" : ")"));
            protected_names.insert(lock_volume_name(j.vm));
            protected_names.insert(j.volumes.begin(), j.volumes.end());
            continue;
        }
        for (const auto& [child, uuid] : j.children) {
            DomainPtr d = host.find_domain(child);
            if (!d || domain_uuid(d.get()) != uuid)
                continue; // never made, or the name belongs to another VM now
            if (!o.dry_run)
                remove_domain(host, child, uuid);
            result.removed_domains.push_back(child);
        }
        dead_locks.push_back(lock_volume_name(j.vm));
    }

    std::set<std::string> live_paths;
    std::set<std::string> live_names;
    add_domain_roots(host, {result.removed_domains.begin(), result.removed_domains.end()},
                     live_paths, live_names);

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
    for (const auto& v : volumes)
        if (live_paths.count(v.path) || live_names.count(v.name) || protected_names.count(v.name))
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
    for (const auto& v : volumes)
        if (listed_first.count(v.name) && !live.count(v.name) && is_forky_volume_name(v.name))
            garbage.push_back(&v);
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
            if (!o.dry_run)
                host.delete_volume(v->name);
            deleted.insert(v->name);
            result.deleted_volumes.push_back(v->name);
            progress = true;
        }
    }
    for (const auto& lock : dead_locks) {
        if (!o.dry_run)
            host.delete_volume(lock);
        result.released_locks.push_back(lock);
    }
    return result;
}

} // namespace forky
