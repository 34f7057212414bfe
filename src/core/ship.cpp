#include "ship.hpp"

#include "checksum.hpp"
#include "engine.hpp"
#include "errors.hpp"
#include "images.hpp"
#include "log.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

namespace forky {

namespace {

using Clock = std::chrono::steady_clock;

// The volumes `point` stands on in `from`'s pool (`volumes`: its listing), each after the
// one it is backed by.
std::vector<std::string> chain_bottom_up(Host& from, const std::vector<VolumeInfo>& volumes,
                                         const ForkPoint& point) {
    std::map<std::string, const VolumeInfo*> by_name;
    std::map<std::string, const VolumeInfo*> by_path;
    for (const auto& v : volumes) {
        by_name[v.name] = &v;
        by_path[v.path] = &v;
    }
    std::vector<std::string> order;
    std::set<std::string> seen;
    for (const auto& [target, layer] : point.layers) {
        std::vector<std::string> chain;
        std::string name = layer;
        for (;;) {
            auto v = by_name.find(name);
            if (v == by_name.end())
                throw NotFoundError("Fork point '" + point.label() + "' lost its layer '" + name +
                                    "' (deleted outside forky?): nothing to ship");
            if (std::find(chain.begin(), chain.end(), name) != chain.end())
                throw Error("The backing chain of '" + layer + "' loops at '" + name + "'");
            chain.push_back(name);
            const std::string& backing = v->second->backing;
            if (backing.empty())
                break;
            auto b = by_path.find(backing);
            if (b == by_path.end())
                throw ConflictError(
                    "Layer '" + name + "' of fork point '" + point.label() + "' is backed by '" +
                    backing + "', which is not in pool '" + from.options().pool +
                    "' on that host: forky ships only volumes of its pool (a VM made by "
                    "'forky up' with a host inventory has its images there)");
            name = b->second->name;
        }
        for (auto it = chain.rbegin(); it != chain.rend(); ++it)
            if (seen.insert(*it).second)
                order.push_back(*it);
    }
    return order;
}

// Whether every volume of a copy is still there.
bool whole(Host& to, const ForkPoint& copy) {
    if (!copy.memory_image.empty() && !to.volume_info(copy.memory_image))
        return false;
    for (const auto& [target, layer] : copy.layers)
        if (!to.volume_info(layer))
            return false;
    return true;
}

} // namespace

std::string image_sha(const std::string& name) {
    if (name.rfind("img-", 0) != 0 || name.size() < 4 + 64)
        return "";
    const std::string sha = name.substr(4, 64);
    if (!is_sha256_hex(sha) || (name.size() > 68 && name[68] != '.'))
        return "";
    return sha;
}

bool image_complete(Host& host, const std::string& name) {
    const std::string sha = image_sha(name);
    if (sha.empty() || !host.volume_info(name) || !host.volume_info(name + ".ok"))
        return false;
    return host.read_volume_range(name + ".ok", 0, sha.size()) == sha;
}

void mark_image_whole(Host& host, const std::string& name) {
    const std::string sha = image_sha(name);
    const std::string mark = name + ".ok";
    host.delete_volume(mark); // a stale one, of an image since deleted
    host.create_raw_volume(mark, sha.size());
    host.write_volume(mark, 0, sha);
}

bool image_verified(Host& host, const std::string& name) {
    return image_complete(host, name) && host.volume_sha256(name) == image_sha(name);
}

VmLock lock_images(Host& host, const CancelToken& cancel) {
    return VmLock::acquire(host, images_lock_name, "upload", std::chrono::minutes(10), cancel);
}

ForkPoint ship_fork_point(Host& from, const std::string& from_name, const ForkPoint& point,
                          Operation& op, const std::string& to_name, ShipStats& stats,
                          const ProgressFn& progress) {
    const auto t_start = Clock::now();
    Host& to = op.host();
    const std::string there = "host '" + to_name + "'";
    if (point.memory_image.empty())
        throw ConflictError("Fork point '" + point.label() +
                            "' has no memory image (the VM was off): nothing to start from");
    const auto copies = read_fork_points(to);
    // A copy of this very fork point (its id): nothing to ship.
    for (const auto& c : copies) {
        if (c.id != point.id)
            continue;
        if (!whole(to, c))
            throw ConflictError("The copy of '" + point.label() + "' on " + there +
                                " lost a volume (deleted outside forky?); 'forky gc' there "
                                "removes what is left of it");
        stats.volumes_reused = static_cast<unsigned>(c.layers.size()) + 1;
        stats.ms = std::chrono::duration<double, std::milli>(Clock::now() - t_start).count();
        return c;
    }
    const std::string record = fork_point_record_name(point.vm, point.seq);
    if (to.volume_info(record))
        throw ConflictError(there + " has a fork point record '" + record +
                            "' of another VM named '" + point.vm +
                            "' (another fork point, not this one): not overwriting it");

    // Images travel under the host's images lock (as uploads do).
    VmLock images = lock_images(to, op.cancel());
    const auto from_volumes = from.volumes();
    std::map<std::string, std::string> name_by_path; // on `from`
    for (const auto& v : from_volumes)
        name_by_path[v.path] = v.name;
    std::vector<std::string> order = chain_bottom_up(from, from_volumes, point);
    // The kernel and initrd the domain boots (paths on `from`): volumes of its pool too.
    std::map<std::string, std::string> boot_files; // role -> volume
    {
        const SaveImageHeader header = read_header(from, point);
        pugi::xml_document doc;
        doc.load_string(header.xml.c_str());
        for (const char* role : {"kernel", "initrd"}) {
            const std::string path =
                doc.select_node((std::string("/domain/os/") + role).c_str()).node().text().get();
            if (path.empty())
                continue;
            auto v = name_by_path.find(path);
            if (v == name_by_path.end())
                throw ConflictError("The " + std::string(role) + " of '" + point.label() + "', '" +
                                    path + "', is not in pool '" + from.options().pool +
                                    "' on its host: forky ships only volumes of its pool (a VM "
                                    "made by 'forky up' with a host inventory has its files "
                                    "there)");
            boot_files[role] = v->second;
            if (std::find(order.begin(), order.end(), v->second) == order.end())
                order.push_back(v->second);
        }
    }
    order.push_back(point.memory_image);

    // What `to` knows of its volumes: the checksums its copies recorded on arrival, and
    // which fork points (by id) each copy's layers belong to.
    std::map<std::string, std::string> known_sha;
    std::map<std::string, std::set<std::string>> ids_there;
    for (const auto& c : copies) {
        for (const auto& [volume, sha] : c.checksums)
            known_sha[volume] = sha;
        for (const auto& [target, layer] : c.layers)
            ids_there[layer].insert(c.id);
    }
    std::map<std::string, std::set<std::string>> ids_here;
    for (const auto& p : read_fork_points(from))
        for (const auto& [target, layer] : p.layers)
            ids_here[layer].insert(p.id);

    ForkPoint copy = point;
    copy.boot_files = boot_files;
    copy.kind = ForkPoint::Kind::fork; // reclaimed with its last child there
    copy.shipped_from = from_name;
    copy.pool = to.options().pool;
    copy.checksums.clear();
    std::map<std::string, std::string> path_there; // volume -> its path on `to`
    std::set<std::string> shipped_now;
    for (const auto& name : order) {
        op.cancel().check("Shipping '" + point.label() + "'");
        // An image there that does not hold what its name says (a killed upload's, or
        // damaged) is replaced, as an upload replaces it: under the images lock nobody
        // else is writing it.
        if (!image_sha(name).empty() && to.volume_info(name) && !image_verified(to, name)) {
            logger("ship")->warn("Image '{}' on host '{}' is incomplete or damaged: replaced", name,
                                 to_name);
            to.delete_volume(name);
            to.delete_volume(name + ".ok");
        }
        if (auto there_info = to.volume_info(name)) {
            // The same fork point's layer (one UUID on both hosts), else the same content.
            bool same = false;
            const auto& a = ids_here[name];
            for (const auto& id : ids_there[name])
                same = same || a.count(id) > 0;
            std::string sha = image_sha(name);
            same = same || !sha.empty(); // verified above: it holds what its name says
            auto k = known_sha.find(name);
            if (!same && k != known_sha.end()) {
                sha = k->second;
                same = same || from.volume_sha256(name) == sha;
            }
            if (!same)
                throw ConflictError(there + " has a volume '" + name +
                                    "' that forky cannot tell is the same as the one of '" +
                                    point.label() + "' on host '" + from_name +
                                    "' (a VM of the same name there?): not overwriting it");
            if (!sha.empty())
                copy.checksums[name] = sha;
            path_there[name] = there_info->path;
            ++stats.volumes_reused;
            continue;
        }
        const ShipResult shipped = op.ship_in(from, name, progress);
        // Verified on arrival: what the pool there holds is what left here.
        const std::string arrived = to.volume_sha256(name);
        if (arrived != shipped.sha256)
            throw StorageError("Volume '" + name + "' arrived on " + there +
                               " with another SHA-256 (" + arrived + ") than it left with (" +
                               shipped.sha256 + ")");
        copy.checksums[name] = shipped.sha256;
        if (const std::string sha = image_sha(name); !sha.empty()) {
            if (sha != shipped.sha256)
                throw StorageError("Image '" + name + "' does not hold what its name says (" +
                                   shipped.sha256 + ")");
            // Marked whole, as an upload marks it: `forky up` there reuses it.
            const std::string mark = name + ".ok";
            op.on_undo("delete volume '" + mark + "'", [&to, mark] { to.delete_volume(mark); });
            mark_image_whole(to, name);
        }
        stats.bytes_sent += shipped.data_bytes;
        ++stats.volumes_shipped;
        shipped_now.insert(name);
        auto info = to.volume_info(name);
        if (!info)
            throw NotFoundError("Volume '" + name + "' went from " + there + " as it arrived");
        path_there[name] = info->path;
    }
    // Each layer names its backing file's copy there (the chain was shipped bottom up).
    for (const auto& v : from_volumes) {
        if (v.backing.empty() || !shipped_now.count(v.name))
            continue;
        auto below = name_by_path.find(v.backing);
        if (below == name_by_path.end() || !path_there.count(below->second))
            continue;
        to.set_qcow2_backing(v.name, path_there[below->second]);
    }
    to.refresh_pool();
    op.create_raw(record, fork_point_record_capacity);
    write_fork_point(to, copy);
    copy.record_volume = record;
    stats.ms = std::chrono::duration<double, std::milli>(Clock::now() - t_start).count();
    logger("ship")->info("'{}' on '{}': {} volumes shipped ({} bytes), {} there already",
                         point.label(), to.options().uri, stats.volumes_shipped, stats.bytes_sent,
                         stats.volumes_reused);
    return copy;
}

namespace {

// "qcow2" of "rootfs.qcow2"; empty when the name has no plain extension.
std::string extension_of(const std::filesystem::path& file) {
    std::string ext = file.extension().string();
    if (ext.size() < 2 || ext.size() > 8)
        return "";
    ext = ext.substr(1);
    for (char c : ext)
        if (!std::isalnum(static_cast<unsigned char>(c)))
            return "";
    return ext;
}

} // namespace

DomainSpec upload_spec_files(Host& host, const DomainSpec& checked, UploadStats& stats,
                             const std::function<void(const std::string&)>& journal,
                             const ProgressFn& progress, const CancelToken& cancel) {
    DomainSpec spec = checked;
    std::map<std::string, std::string> done; // local path -> path in the pool
    // One upload of images at a time per host: two of the same file never share a volume.
    VmLock images = lock_images(host, cancel);
    auto upload = [&](SpecFile& f, bool is_disk) {
        if (f.empty())
            return;
        const std::string local = f.path.string();
        if (auto d = done.find(local); d != done.end()) {
            f.path = d->second;
            return;
        }
        cancel.check("Uploading '" + local + "'");
        if (is_disk) {
            const DiskSpec* disk = nullptr;
            for (const auto& d : spec.disks)
                if (d.base.path == f.path)
                    disk = &d;
            if (disk && disk->base_format == DiskFormat::qcow2 &&
                inspect_image_chain(f.path, DiskFormat::qcow2).size() > 1)
                throw SpecError(spec.source.string() + ":" + std::to_string(f.ref.line) + ": " +
                                f.ref.key + ": '" + local +
                                "' has a backing file; only a whole image can be uploaded to "
                                "host '" +
                                host.options().uri + "' (qemu-img convert -O qcow2 makes one)");
        }
        const std::string sha = file_sha256(f.path);
        const std::string ext = extension_of(f.path);
        const std::string name = "img-" + sha + (ext.empty() ? "" : "." + ext);
        const std::string mark = name + ".ok";
        // Reused only when it holds what its name says (read back: a mark is no proof).
        const bool there = image_verified(host, name);
        if (!there && host.volume_info(name)) {
            host.delete_volume(name); // a killed upload's, or damaged
            host.delete_volume(mark);
        }
        if (there) {
            ++stats.files_reused;
        } else {
            journal(name);
            journal(mark);
            const ShipResult r = host.upload_file(local, name, progress);
            try {
                if (r.sha256 != sha)
                    throw StorageError("'" + local + "' changed while it was uploaded");
                const std::string arrived = host.volume_sha256(name);
                if (arrived != sha)
                    throw StorageError("'" + local + "' arrived on '" + host.options().uri +
                                       "' with another SHA-256 (" + arrived + ", not " + sha + ")");
                mark_image_whole(host, name);
            } catch (...) {
                host.delete_volume(name);
                host.delete_volume(mark);
                throw;
            }
            stats.bytes_sent += r.data_bytes;
            ++stats.files_uploaded;
        }
        auto info = host.volume_info(name);
        if (!info)
            throw NotFoundError("Image '" + name + "' went from pool '" + host.options().pool +
                                "' as it was uploaded");
        done[local] = info->path;
        f.path = info->path;
    };
    upload(spec.boot.kernel, false);
    upload(spec.boot.initrd, false);
    for (auto& d : spec.disks)
        upload(d.base, true);
    return spec;
}

} // namespace forky
