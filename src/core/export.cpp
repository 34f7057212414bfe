#include "export.hpp"

#include "checksum.hpp"
#include "child_xml.hpp"
#include "engine.hpp"
#include "errors.hpp"
#include "fork.hpp"
#include "images.hpp"
#include "lineage.hpp"
#include "log.hpp"
#include "names.hpp"
#include "network.hpp"
#include "process.hpp"
#include "qcow2.hpp"
#include "save_image.hpp"
#include "ship.hpp"
#include "vm.hpp"

#include <libvirt/libvirt.h>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace forky {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

constexpr const char* manifest_name = "manifest.json";
constexpr std::uint64_t manifest_limit = 1 << 20;
constexpr std::uint64_t text_file_limit = 16 << 20; // domain.xml, lineage.xml, spec.yaml

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The caller's progress line for one file, which also stops the copy on Ctrl-C (the
// copy's file or volume goes, the operation undoes the rest).
ProgressFn progress_of(const ProgressFor& p, const std::string& what, const CancelToken& cancel) {
    ProgressFn shown = p ? p(what) : ProgressFn{};
    return [shown, what, cancel](std::uint64_t done, std::uint64_t total) {
        cancel.check("Copying the " + what);
        if (shown)
            shown(done, total);
    };
}

void write_text(const fs::path& file, const std::string& text) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out)
        throw StorageError("Failed to write '" + file.string() + "'");
}

std::string read_text(const fs::path& file, std::uint64_t limit) {
    struct stat st {};
    if (::lstat(file.c_str(), &st) != 0)
        throw NotFoundError("Cannot read '" + file.string() + "': " + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        throw ConflictError("'" + file.string() + "' is not a regular file");
    if (static_cast<std::uint64_t>(st.st_size) > limit)
        throw ConflictError("'" + file.string() + "' is larger than forky reads (" +
                            std::to_string(limit) + " bytes)");
    std::ifstream in(file, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The directory an export is written into, beside its final place; removed unless the
// export completes (then renamed into place, never over anything).
struct StagingDir {
    fs::path path;
    bool kept = false;
    explicit StagingDir(const fs::path& final_dir) {
        std::string tmpl = final_dir.string() + ".partial-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (::mkdtemp(buf.data()) == nullptr)
            throw StorageError("Cannot create a directory beside '" + final_dir.string() +
                               "': " + std::strerror(errno));
        path = buf.data();
    }
    ~StagingDir() {
        if (!kept) {
            std::error_code ec;
            fs::remove_all(path, ec);
        }
    }
    void move_to(const fs::path& final_dir) {
        if (::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_NOREPLACE) != 0)
            throw StorageError("Cannot move the export into '" + final_dir.string() +
                               "': " + std::strerror(errno));
        kept = true;
    }
};

std::string xml_text(const pugi::xml_document& doc, const char* xpath) {
    return doc.select_node(xpath).node().text().get();
}

std::string xml_attr(const pugi::xml_document& doc, const char* xpath) {
    return doc.select_node(xpath).attribute().value();
}

// What a memory image needs of the host it is restored on, from the domain XML.
json machine_of(const std::string& domain_xml) {
    pugi::xml_document doc;
    doc.load_string(domain_xml.c_str());
    json m;
    m["domain_type"] = xml_attr(doc, "/domain/@type");
    m["arch"] = xml_attr(doc, "/domain/os/type/@arch");
    m["machine"] = xml_attr(doc, "/domain/os/type/@machine");
    pugi::xml_node cpu = doc.select_node("/domain/cpu").node();
    std::string mode = cpu.attribute("mode").value();
    const std::string model = cpu.child("model").text().get();
    if (mode.empty())
        mode = model.empty() ? "default" : "custom";
    m["cpu_mode"] = mode;
    m["cpu_model"] = model;
    return m;
}

// The volume of the pool whose file is `path`.
std::string volume_at(Host& host, const std::string& path) {
    for (const auto& v : host.volumes())
        if (v.path == path)
            return v.name;
    return {};
}

bool simple_file_name(const std::string& name) {
    return !name.empty() && name.size() < 128 && name != "." && name != ".." &&
           name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                  "._-") == std::string::npos;
}

} // namespace

ExportResult vm_export(Host& host, const std::string& text, const fs::path& dir_in,
                       const ExportOptions& o) {
    const auto t0 = Clock::now();
    ExportResult result;
    result.source = text;
    if (dir_in.empty())
        throw UsageError("The export directory is empty; name a new directory");
    fs::path dir = fs::absolute(dir_in).lexically_normal();
    if (dir.filename().empty()) // "exports/new/"
        dir = dir.parent_path();
    result.dir = dir;
    if (dir.filename().empty() || dir == dir.root_path())
        throw UsageError("Export directory '" + dir_in.string() + "' names no new directory");
    std::error_code ec;
    if (fs::symlink_status(dir, ec).type() != fs::file_type::not_found)
        throw ConflictError("'" + dir.string() + "' exists; forky export writes a new directory");
    if (!fs::is_directory(dir.parent_path()))
        throw NotFoundError("No directory '" + dir.parent_path().string() + "' to export into");

    const auto ref = parse_point_ref(text);
    const std::string vm = ref ? ref->vm : text;
    require_valid_name(vm);
    host.pool();
    // (links resolved: a link into the pool's folder is the pool's folder)
    if (host.is_local() && (is_under(dir, host.pool_path()) ||
                            is_under(fs::weakly_canonical(dir.parent_path(), ec) / dir.filename(),
                                     fs::weakly_canonical(host.pool_path(), ec))))
        throw ConflictError("'" + dir.string() + "' lies in pool '" + host.options().pool +
                            "''s folder, which is forky's alone; export somewhere else");
    DomainPtr dom = host.find_domain(vm);
    if (!ref && !dom)
        throw NotFoundError("No VM " + forky::quoted(vm) + " on '" + host.options().uri +
                            "' ('forky ls' lists them; a snapshot is written VM@NAME)");
    if (dom)
        require_forky_vm(dom.get(), vm, "not exporting");

    Operation op(host, vm, "export", o.ctx, o.lock_wait);
    op.step("lock");
    ForkPoint point;
    bool borrowed = false;
    if (ref) {
        std::optional<std::string> uuid;
        if ((dom = host.find_domain(vm)))
            uuid = domain_uuid(dom.get());
        point = find_fork_point(read_fork_points(host), *ref, uuid);
    } else {
        dom = host.domain(vm);
        point = freeze_for_reading(op, vm, /*memory=*/true);
        borrowed = true;
    }
    result.point = point.label();
    result.memory = !point.memory_image.empty();

    // The definition and lineage at that instant.
    std::string domain_def;
    Lineage lineage;
    if (result.memory) {
        domain_def = read_header(host, point).xml;
        lineage = lineage_at(host, point);
    } else {
        if (!dom)
            throw ConflictError("'" + point.label() +
                                "' holds disks only and its VM is gone: nothing says how to "
                                "start it elsewhere");
        domain_def = domain_xml(dom.get(), VIR_DOMAIN_XML_INACTIVE);
        lineage = point.vm_lineage.empty() ? require_forky_vm(dom.get(), vm, "not exporting")
                                           : lineage_from_xml(point.vm_lineage);
    }

    // An export killed midway leaves its staging folder (nothing else knows of it).
    for (const auto& e : fs::directory_iterator(dir.parent_path(), ec))
        if (e.path().filename().string().rfind(dir.filename().string() + ".partial-", 0) == 0)
            logger("export")->warn("'{}' is left from an export to '{}' that did not finish; "
                                   "remove it",
                                   e.path().string(), dir.string());
    StagingDir staging(dir);
    json files = json::array();
    auto add_file = [&](const std::string& name, const std::string& role, const std::string& target,
                        std::uint64_t bytes, const std::string& sha, json extra = json::object()) {
        json f = {{"name", name}, {"role", role}, {"bytes", bytes}, {"sha256", sha}};
        if (!target.empty())
            f["target"] = target;
        f.update(extra);
        files.push_back(f);
        result.files.push_back({name, role, target, bytes, sha});
        result.bytes += bytes;
    };

    // Disks: flattened on the host (libvirt), downloaded, compressed here if asked.
    for (const auto& [target, layer] : point.layers) {
        op.cancel().check("Exporting");
        const std::string flat = vm + "." + target + ".export-" + op.id().substr(0, 8) + ".qcow2";
        op.flatten(flat, layer);
        op.step("export-flatten");
        const auto info = host.volume_info(flat);
        const std::string name = "disk-" + target + ".qcow2";
        fs::path file = staging.path / name;
        ShipResult got;
        if (o.compress) {
            const fs::path raw = staging.path / (name + ".uncompressed");
            host.download_file(flat, raw.string(),
                               progress_of(o.progress, "disk " + target, o.ctx.cancel));
            ProcessResult r =
                run_process({"qemu-img", "convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2", "-o",
                             "compat=1.1", raw.string(), file.string()},
                            std::chrono::hours(6));
            fs::remove(raw, ec);
            if (r.rc != 0)
                throw StorageError("Failed to compress disk '" + target + "': " + r.err);
            got.size = fs::file_size(file);
            got.sha256 = file_sha256(file);
        } else {
            got = host.download_file(flat, file.string(),
                                     progress_of(o.progress, "disk " + target, o.ctx.cancel));
        }
        host.delete_volume(flat);
        op.step("export-disk");
        add_file(name, "disk", target, got.size, got.sha256,
                 {{"format", "qcow2"},
                  {"virtual_size", info ? info->capacity : 0},
                  {"compressed", o.compress}});
    }
    if (result.memory) {
        const ShipResult got =
            host.download_file(point.memory_image, (staging.path / "memory.img").string(),
                               progress_of(o.progress, "memory image", o.ctx.cancel));
        op.step("export-memory");
        add_file("memory.img", "memory", "", got.size, got.sha256);
    }
    // The kernel and initrd it boots: volumes of the pool (a copy's are its boot_files).
    {
        pugi::xml_document doc;
        doc.load_string(domain_def.c_str());
        for (const auto& [role, name] :
             {std::pair<std::string, std::string>{"kernel", "vmlinuz"}, {"initrd", "initrd.img"}}) {
            const std::string path = xml_text(doc, ("/domain/os/" + role).c_str());
            if (path.empty())
                continue;
            std::string volume =
                point.boot_files.count(role) ? point.boot_files.at(role) : volume_at(host, path);
            const fs::path file = staging.path / name;
            if (!volume.empty()) {
                const ShipResult got = host.download_file(
                    volume, file.string(), progress_of(o.progress, role, o.ctx.cancel));
                add_file(name, role, "", got.size, got.sha256);
                continue;
            }
            // A spec's file the host reads in place ('forky up' on this machine).
            if (!host.is_local())
                throw ConflictError("The " + role + " of '" + point.label() + "', '" + path +
                                    "', is not in pool '" + host.options().pool + "' on '" +
                                    host.options().uri +
                                    "': forky exports only what the pool holds from another "
                                    "machine");
            if (!fs::copy_file(path, file, ec) || ec)
                throw StorageError("Cannot copy the " + role + " '" + path + "': " + ec.message());
            add_file(name, role, "", fs::file_size(file), file_sha256(file));
        }
    }
    auto add_text = [&](const std::string& name, const std::string& role,
                        const std::string& content) {
        write_text(staging.path / name, content);
        add_file(name, role, "", content.size(), sha256_hex(content));
    };
    add_text("domain.xml", "domain", domain_def);
    add_text("lineage.xml", "lineage", lineage_to_xml(lineage));
    if (!lineage.spec.empty()) {
        try {
            add_text("spec.yaml", "spec", read_text(lineage.spec, text_file_limit));
        } catch (const Error& e) {
            logger("export")->warn("The spec '{}' is not in the export: {}", lineage.spec,
                                   e.what());
        }
    }

    json manifest = {{"format", export_format},
                     {"version", export_version},
                     {"source", text},
                     {"vm", vm},
                     {"vm_uuid", point.vm_uuid},
                     {"fork_point", point.label()},
                     {"state", to_string(point.state)},
                     {"frozen_at", point.created_at},
                     {"exported_at", utc_now_rfc3339()},
                     {"host", host.options().uri},
                     {"memory", result.memory},
                     {"files", files}};
    manifest.update(machine_of(domain_def));
    if (manifest["cpu_mode"] == "host-passthrough" || manifest["cpu_mode"] == "host-model") {
        pugi::xml_document d;
        d.load_string(host.capabilities().c_str());
        manifest["host_cpu_model"] = xml_text(d, "/capabilities/host/cpu/model");
    }
    write_text(staging.path / manifest_name, manifest.dump(2) + "\n");
    ::sync();
    staging.move_to(dir);
    if (borrowed)
        drop_reading_point(host, point);
    op.step("commit");
    op.commit();
    result.ms = ms_since(t0);
    return result;
}

std::vector<std::string> imported_xml_problems(std::string_view xml,
                                               const std::vector<std::string>& disk_targets) {
    std::vector<std::string> out;
    pugi::xml_document doc;
    if (!doc.load_buffer(xml.data(), xml.size()))
        return {"its domain XML does not parse"};
    pugi::xml_node dom = doc.child("domain");
    if (!dom)
        return {"its domain XML has no <domain>"};
    // libvirt reads an attribute by its local name whatever its prefix (z:type='ethernet'
    // is type='ethernet' to it): no prefixed names at all outside <metadata>, no element
    // twice where libvirt reads one (a second <devices>), and no attribute that names a host
    // path except where forky sets it itself.
    std::set<std::string> seen_top;
    std::function<void(pugi::xml_node, const std::string&)> walk = [&](pugi::xml_node n,
                                                                       const std::string& at) {
        for (pugi::xml_attribute a : n.attributes()) {
            const std::string name = a.name();
            if (name.find(':') != std::string::npos || name == "xmlns")
                out.push_back("<" + at + "> has a namespaced attribute '" + name + "'");
            static const std::set<std::string> paths = {
                "path", "file",  "dir",   "socket", "script",   "rendernode",
                "tap",  "vhost", "evdev", "dev",    "filename", "rom"};
            if (!paths.count(name))
                continue;
            const std::string_view value = a.value();
            // Set by forky (disk sources, console logs), dropped (a pty's /dev/pts/N),
            // libvirt's own (a guest agent's socket), or no path at all (a disk's target, the
            // boot device).
            const bool forky_sets =
                (at == "domain/devices/disk/source" && name == "file") ||
                (at == "domain/devices/disk/target" && name == "dev") ||
                (at == "domain/os/boot" && name == "dev") ||
                ((at == "domain/devices/serial/log" || at == "domain/devices/console/log") &&
                 name == "file") ||
                ((at == "domain/devices/serial/source" || at == "domain/devices/console/source") &&
                 name == "path" && value.rfind("/dev/pts/", 0) == 0) ||
                (at == "domain/devices/channel/source" && name == "path" &&
                 (value.rfind("/var/lib/libvirt/qemu/channel/", 0) == 0 ||
                  value.rfind("/run/libvirt/qemu/channel/", 0) == 0) &&
                 value.find("/..") == std::string_view::npos);
            if (!forky_sets)
                out.push_back("<" + at + "> names a host path ('" + name + "')");
        }
        for (pugi::xml_node c : n.children()) {
            if (c.type() != pugi::node_element)
                continue;
            const std::string name = c.name();
            if (name.find(':') != std::string::npos) {
                out.push_back("it has <" + name + ">, which forky does not import");
                continue;
            }
            if (at == "domain" && name == "metadata")
                continue; // forky's lineage is replaced; others' metadata is only data
            walk(c, at + "/" + name);
        }
    };
    walk(dom, "domain");
    for (pugi::xml_node n : dom.children())
        if (n.type() == pugi::node_element && std::string_view(n.name()) != "seclabel" &&
            !seen_top.insert(n.name()).second)
            out.push_back(std::string("it has <") + n.name() + "> twice");
    for (const char* action : {"on_poweroff", "on_reboot", "on_crash"})
        if (std::string_view(dom.child(action).text().get()).find("coredump") !=
            std::string_view::npos)
            out.push_back(std::string("its <") + action + "> dumps the guest's memory on the host");
    // What a definition may hold, element by element: anything else may reach the host
    // (files QEMU opens or writes, sockets, listening ports, host devices, host memory)
    // and is refused, never dropped (a memory image's definition must stay as it was).
    static const std::set<std::string> top = {
        "name",        "uuid",      "genid",    "title",
        "description", "metadata",  "memory",   "currentMemory",
        "maxMemory",   "vcpu",      "vcpus",    "iothreads",
        "os",          "features",  "cpu",      "clock",
        "on_poweroff", "on_reboot", "on_crash", "pm",
        "devices",     "seclabel"};
    for (pugi::xml_node n : dom.children()) {
        const std::string name = n.name();
        if (name == "resource") { // libvirt's own default for a running domain
            const std::string_view partition = n.child("partition").text().get();
            if (partition != "/machine" || n.select_nodes("*").size() != 1)
                out.push_back("its <resource> is not libvirt's default (/machine)");
            continue;
        }
        if (n.type() == pugi::node_element && !top.count(name))
            out.push_back("it has <" + name + ">, which forky does not import");
    }
    static const std::set<std::string> os = {"type",    "kernel", "initrd",
                                             "cmdline", "boot",   "bootmenu"};
    for (pugi::xml_node n : dom.child("os").children())
        if (n.type() == pugi::node_element && !os.count(n.name()))
            out.push_back(std::string("it has <os><") + n.name() +
                          ">, which forky does not import (firmware and tables are files)");
    for (pugi::xml_node c = dom.child("clock").first_child(); c; c = c.next_sibling())
        if (std::string_view(c.name()) != "timer")
            out.push_back(std::string("it has <clock><") + c.name() + ">");
    for (auto n : dom.select_nodes("cpu//*[@memAccess='shared' or @discard or @file]"))
        out.push_back(std::string("its CPU definition has <") + n.node().name() +
                      "> with host memory settings");
    std::set<std::string> seen_disks;
    auto only_local_listen = [&](pugi::xml_node g) {
        auto local = [](std::string_view a) { return a == "127.0.0.1" || a == "::1"; };
        if (g.attribute("listen") && !local(g.attribute("listen").value()))
            return false;
        for (pugi::xml_node l : g.children("listen")) {
            const std::string_view type = l.attribute("type").value();
            if (type == "none")
                continue;
            if (type != "address" || !local(l.attribute("address").value()))
                return false;
        }
        return !g.attribute("socket") && !g.child("gl");
    };
    for (pugi::xml_node d : dom.child("devices").children()) {
        if (d.type() != pugi::node_element)
            continue;
        const std::string kind = d.name();
        const std::string type = d.attribute("type").value();
        if (kind == "emulator" || kind == "controller" || kind == "video" || kind == "memballoon" ||
            kind == "watchdog" || kind == "panic") {
            if (kind == "watchdog" && std::string_view(d.attribute("action").value()) == "dump")
                out.push_back("its watchdog dumps the guest's memory on the host");
            continue; // the emulator: checked against the host's (require_restorable)
        } else if (kind == "disk") {
            const std::string target = d.child("target").attribute("dev").value();
            const std::string device = d.attribute("device").value();
            if (device != "disk") {
                if (d.child("source"))
                    out.push_back("its " + device + " '" + target + "' names a host file");
                continue;
            }
            if (std::find(disk_targets.begin(), disk_targets.end(), target) == disk_targets.end())
                out.push_back("its disk '" + target + "' is not one of the exported disks");
            else if (!seen_disks.insert(target).second)
                out.push_back("its disk '" + target + "' is defined twice");
            const std::string format = d.child("driver").attribute("type").value();
            if (format != "qcow2")
                out.push_back("its disk '" + target + "' is read as '" + format +
                              "', not qcow2 (a guest could rewrite the image's header)");
            for (pugi::xml_node c : d.children())
                if (c.type() == pugi::node_element &&
                    !std::set<std::string>{"driver", "source", "target", "address", "alias", "boot",
                                           "serial", "backingStore"}
                         .count(c.name()))
                    out.push_back("its disk '" + target + "' has <" + std::string(c.name()) + ">");
            for (pugi::xml_node c : d.child("source").children())
                if (c.type() == pugi::node_element && std::string_view(c.name()) != "seclabel")
                    out.push_back("its disk '" + target + "' has <source><" +
                                  std::string(c.name()) + ">");
        } else if (kind == "interface") {
            if (type != "user" && type != "network")
                out.push_back("its network interface is of type '" + type +
                              "' (only 'user' and 'network' are imported)");
            for (pugi::xml_node c : d.children())
                if (c.type() == pugi::node_element &&
                    !std::set<std::string>{"mac", "model", "address", "alias", "link", "ip",
                                           "route", "boot", "mtu", "source", "rom"}
                         .count(c.name()))
                    out.push_back(std::string("its network interface has <") + c.name() + ">");
            for (pugi::xml_attribute a : d.child("source").attributes())
                if (type != "network" || (std::string_view(a.name()) != "network" &&
                                          std::string_view(a.name()) != "portgroup"))
                    out.push_back("its network interface's source has '" + std::string(a.name()) +
                                  "'");
        } else if (kind == "serial" || kind == "console") {
            if (type != "pty")
                out.push_back("its " + kind + " is of type '" + type + "' (only 'pty')");
        } else if (kind == "channel") {
            if (type != "unix" && type != "spicevmc")
                out.push_back("its channel is of type '" + type + "'");
        } else if (kind == "input") {
            if (type != "mouse" && type != "keyboard" && type != "tablet")
                out.push_back("its input device is of type '" + type + "'");
        } else if (kind == "graphics") {
            if ((type != "vnc" && type != "spice") || !only_local_listen(d))
                out.push_back("its graphics (" + type +
                              ") listen beyond this host's loopback or on a socket");
        } else if (kind == "sound") {
            if (d.first_child())
                out.push_back("its sound device has settings of its own");
        } else if (kind == "audio") {
            if (type != "none")
                out.push_back("its audio backend is of type '" + type + "' (only 'none')");
        } else if (kind == "rng") {
            const std::string backend = d.child("backend").attribute("model").value();
            const std::string dev = d.child("backend").text().get();
            if (backend != "random" ||
                (!dev.empty() && dev != "/dev/urandom" && dev != "/dev/random"))
                out.push_back("its random number generator reads '" + backend + "' " + dev);
        } else {
            out.push_back("it has a <" + kind + "> device, which forky does not import");
        }
    }
    for (const auto& t : disk_targets)
        if (!seen_disks.count(t))
            out.push_back("exported disk '" + t + "' is not in its definition");
    return out;
}

namespace {

struct ManifestFile {
    std::string name;
    std::string role;
    std::string target;
    std::uint64_t bytes = 0;
    std::string sha256;
    std::uint64_t virtual_size = 0; // a disk's, as the export stated it
};

struct Manifest {
    json doc;
    std::vector<ManifestFile> files;
    const ManifestFile* role(const std::string& r) const {
        for (const auto& f : files)
            if (f.role == r)
                return &f;
        return nullptr;
    }
    std::string text(const char* key) const {
        auto it = doc.find(key);
        return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string();
    }
};

Manifest read_manifest(const fs::path& dir) {
    const fs::path file = dir / manifest_name;
    Manifest m;
    const std::string text = read_text(file, manifest_limit);
    try {
        m.doc = json::parse(text);
    } catch (const json::exception& e) {
        throw ConflictError("'" + file.string() + "' is not JSON: " + e.what());
    }
    auto bad = [&](const std::string& why) {
        return ConflictError("'" + file.string() + "' is not a forky export's manifest: " + why);
    };
    if (!m.doc.is_object() || m.text("format") != export_format)
        throw bad("no \"format\": \"" + std::string(export_format) + "\"");
    if (!m.doc.contains("version") || m.doc["version"] != export_version)
        throw bad("version " + (m.doc.contains("version") ? m.doc["version"].dump() : "none") +
                  " (this forky reads version " + std::to_string(export_version) + ")");
    if (!m.doc.contains("files") || !m.doc["files"].is_array())
        throw bad("no \"files\" list");
    static const std::set<std::string> roles = {"disk",   "memory",  "kernel", "initrd",
                                                "domain", "lineage", "spec"};
    std::set<std::string> names;
    std::set<std::string> single;
    for (const auto& f : m.doc["files"]) {
        ManifestFile mf;
        try {
            mf.name = f.at("name").get<std::string>();
            mf.role = f.at("role").get<std::string>();
            mf.bytes = f.at("bytes").get<std::uint64_t>();
            mf.sha256 = f.at("sha256").get<std::string>();
            if (f.contains("target"))
                mf.target = f.at("target").get<std::string>();
            if (f.contains("virtual_size"))
                mf.virtual_size = f.at("virtual_size").get<std::uint64_t>();
        } catch (const json::exception& e) {
            throw bad(std::string("a file entry: ") + e.what());
        }
        if (!simple_file_name(mf.name) || mf.name == manifest_name)
            throw bad("file name " + forky::quoted(mf.name) +
                      " (only plain names in the directory)");
        if (!roles.count(mf.role))
            throw bad("file role " + forky::quoted(mf.role));
        if (!is_sha256_hex(mf.sha256))
            throw bad("the SHA-256 of '" + mf.name + "'");
        if (!names.insert(mf.name).second)
            throw bad("'" + mf.name + "' is listed twice");
        if (mf.role == "disk") {
            if (name_problem(mf.target))
                throw bad("disk target " + forky::quoted(mf.target));
        } else if (!single.insert(mf.role).second) {
            throw bad("two files of role '" + mf.role + "'");
        }
        m.files.push_back(std::move(mf));
    }
    if (!m.role("domain"))
        throw bad("no domain.xml listed");
    if (!m.role("disk"))
        throw bad("no disk listed");
    return m;
}

// Every file as the manifest says: a regular file of its size and SHA-256.
void verify_files(const fs::path& dir, const Manifest& m, const ProgressFor& progress,
                  const CancelToken& cancel) {
    for (const auto& f : m.files) {
        cancel.check("Checking the export");
        const fs::path file = dir / f.name;
        struct stat st {};
        if (::lstat(file.c_str(), &st) != 0)
            throw NotFoundError("'" + file.string() + "', listed in the manifest, is missing");
        if (!S_ISREG(st.st_mode))
            throw ConflictError("'" + file.string() + "' is not a regular file");
        if (st.st_nlink > 1)
            throw ConflictError("'" + file.string() + "' has " + std::to_string(st.st_nlink) +
                                " names (hard links): forky cannot tell what else it is");
        if (static_cast<std::uint64_t>(st.st_size) != f.bytes)
            throw ConflictError("'" + file.string() + "' is " + std::to_string(st.st_size) +
                                " bytes, the manifest says " + std::to_string(f.bytes) +
                                ": the export was changed or damaged since it was written; "
                                "nothing imported");
        ProgressFn p = progress_of(progress, "checking " + f.name, cancel);
        const std::string sha = file_sha256(file, [&](std::uint64_t done) {
            if (p)
                p(done, f.bytes);
        });
        if (sha != f.sha256)
            throw ConflictError("'" + file.string() + "' does not match its SHA-256 in the " +
                                "manifest (it is " + sha + ", the manifest says " + f.sha256 +
                                "): the export was changed or damaged since it was written; "
                                "nothing imported");
    }
}

// Whether `host` can restore a memory image made for `m`'s machine; the reason when not.
void require_restorable(Host& host, const Manifest& m, const std::string& domain_def) {
    const std::string uri = host.options().uri;
    const std::string arch = m.text("arch");
    const std::string type = m.text("domain_type");
    const std::string machine = m.text("machine");
    pugi::xml_document caps;
    caps.load_string(host.capabilities().c_str());
    const std::string guest = "/capabilities/guest[arch/@name='" + arch + "']";
    if (arch.empty() || !caps.select_node(guest.c_str()))
        throw ConflictError("The export is for architecture '" + arch + "', which '" + uri +
                            "' does not run");
    if (!caps.select_node((guest + "/arch/domain[@type='" + type + "']").c_str()))
        throw ConflictError("The memory image was made under '" + type + "' (" +
                            (type == "kvm" ? "KVM" : "emulation") + "), which '" + uri +
                            "' does not offer: it cannot be restored there");
    bool has_machine = false;
    std::string offered;
    for (auto n : caps.select_nodes((guest + "/arch/machine").c_str())) {
        const std::string name = n.node().text().get();
        const std::string canonical = n.node().attribute("canonical").value();
        if (name == machine || canonical == machine)
            has_machine = true;
        if (name.rfind(machine.substr(0, machine.rfind('-') + 1), 0) == 0)
            offered += (offered.empty() ? "" : ", ") + name;
    }
    if (!has_machine)
        throw ConflictError("The memory image needs QEMU machine type '" + machine + "', which " +
                            "QEMU on '" + uri + "' does not offer" +
                            (offered.empty() ? "" : " (it offers " + offered + ")") +
                            ": a memory image restores only on the machine type it was made on");
    // The emulator the definition names must be the host's own.
    pugi::xml_document def;
    def.load_string(domain_def.c_str());
    const std::string emulator = xml_text(def, "/domain/devices/emulator");
    bool emulator_ok = emulator.empty();
    for (auto n : caps.select_nodes((guest + "/arch//emulator").c_str()))
        emulator_ok = emulator_ok || emulator == n.node().text().get();
    if (!emulator_ok)
        throw ConflictError("Its definition runs emulator '" + emulator + "', which is not one '" +
                            uri + "' offers");
    const std::string mode = m.text("cpu_mode");
    const std::string model = m.text("cpu_model");
    if (mode == "custom" && !model.empty()) {
        pugi::xml_document d;
        d.load_string(host.domain_capabilities(arch, machine, type).c_str());
        pugi::xml_node found;
        for (auto n : d.select_nodes("/domainCapabilities/cpu/mode[@name='custom']/model"))
            if (model == n.node().text().get())
                found = n.node();
        if (!found || std::string_view(found.attribute("usable").value()) == "no")
            throw ConflictError("The memory image needs CPU model '" + model + "', which " +
                                (found ? "is not usable" : "QEMU does not offer") + " on '" + uri +
                                "'");
    } else if (mode == "host-passthrough" || mode == "host-model") {
        const std::string here = xml_text(caps, "/capabilities/host/cpu/model");
        const std::string there = m.text("host_cpu_model");
        if (!there.empty() && here != there)
            throw ConflictError("The memory image passes the CPU of its host through (" + there +
                                "); '" + uri + "' has a " + here + ": it cannot be restored there");
    }
}

} // namespace

namespace {

void require_importable(const fs::path& dir, const std::string& domain_def,
                        const std::vector<std::string>& targets) {
    if (auto problems = imported_xml_problems(domain_def, targets); !problems.empty()) {
        std::string all;
        for (const auto& p : problems)
            all += (all.empty() ? "" : "; ") + p;
        throw ConflictError("Not importing '" + dir.string() + "': " + all);
    }
}

} // namespace

ImportResult vm_import(Host& host, const fs::path& dir_in, const ImportOptions& o) {
    const auto t0 = Clock::now();
    const fs::path dir = fs::absolute(dir_in).lexically_normal();
    if (!fs::is_directory(dir))
        throw NotFoundError("No export directory '" + dir_in.string() + "'");
    const Manifest m = read_manifest(dir);
    ImportResult result;
    result.vm = o.name.empty() ? m.text("vm") : o.name;
    if (auto why = name_problem(result.vm))
        throw UsageError("Invalid VM name " + forky::quoted(result.vm) + ": " + *why +
                         (o.name.empty() ? " (the export's; give one with --name)" : ""));
    const std::string& vm = result.vm;
    if (o.names_elsewhere.count(vm))
        throw ConflictError("A VM named " + forky::quoted(vm) +
                            " runs on another host of the fleet; import under another name "
                            "with --name NEW");

    // Everything checked before anything is made: here, to fail early; and again on what
    // arrived in the pool, which is what runs (the directory may change meanwhile).
    if (m.doc.contains("memory") && m.doc["memory"] != (m.role("memory") != nullptr))
        throw ConflictError("'" + (dir / manifest_name).string() +
                            "' says \"memory\": " + m.doc["memory"].dump() + " but lists " +
                            (m.role("memory") ? "a" : "no") + " memory image: not importing it");
    verify_files(dir, m, o.progress, o.ctx.cancel);
    std::vector<std::string> targets;
    for (const auto& f : m.files) {
        if (f.role != "disk")
            continue;
        std::vector<ImageLayer> chain;
        try {
            chain = inspect_image_chain(dir / f.name, DiskFormat::qcow2);
        } catch (const Error& e) {
            throw ConflictError("'" + (dir / f.name).string() +
                                "' is not a readable qcow2 image (" + e.what() +
                                "): not importing it");
        }
        if (chain.size() != 1 || !chain.front().backing.empty() || !chain.front().data_file.empty())
            throw ConflictError("'" + (dir / f.name).string() +
                                "' is not a whole qcow2 image (it names a backing or data file): "
                                "not importing it");
        const ProcessResult check =
            run_process({"qemu-img", "check", "-q", "-f", "qcow2", (dir / f.name).string()},
                        std::chrono::minutes(30));
        if (check.rc != 0)
            throw ConflictError("'" + (dir / f.name).string() + "' is damaged (qemu-img check: " +
                                check.out + check.err + "): not importing it");
        targets.push_back(f.target);
    }
    const bool memory = m.role("memory") != nullptr;
    // The definition and lineage, read once and checked in memory against the manifest.
    auto read_verified = [&](const ManifestFile& f) {
        std::string text = read_text(dir / f.name, text_file_limit);
        if (sha256_hex(text) != f.sha256)
            throw ConflictError("'" + (dir / f.name).string() +
                                "' changed while it was imported: not importing it");
        return text;
    };
    std::string domain_def = read_verified(*m.role("domain"));
    if (memory) {
        // The definition that runs is the one in the memory image's header.
        std::ifstream in(dir / m.role("memory")->name, std::ios::binary);
        std::string fixed(save_header_size, '\0');
        in.read(fixed.data(), static_cast<std::streamsize>(fixed.size()));
        std::string head(save_header_size + save_header_data_len(fixed), '\0');
        in.seekg(0);
        in.read(head.data(), static_cast<std::streamsize>(head.size()));
        domain_def = parse_save_header(head).xml;
    }
    require_importable(dir, domain_def, targets);
    Lineage exported;
    if (const ManifestFile* l = m.role("lineage"))
        exported = lineage_from_xml(read_verified(*l));

    host.pool();
    require_restorable(host, m, domain_def);
    if (host.find_domain(vm))
        throw ConflictError("A VM named " + forky::quoted(vm) + " exists on '" +
                            host.options().uri + "'; import under another name with --name NEW");
    Operation op(host, vm, "import", o.ctx, o.lock_wait);
    op.step("lock");
    if (host.find_domain(vm))
        throw ConflictError("A VM named " + forky::quoted(vm) + " exists on '" +
                            host.options().uri + "'");
    // A removed VM of that name may have kept snapshots (and its volumes' names).
    std::set<std::string> planned = {console_volume_name(vm), fork_point_record_name(vm, 1),
                                     fork_point_memory_name(vm, 1)};
    for (const auto& t : targets) {
        planned.insert(disk_volume_name(vm, t));
        planned.insert(layer_volume_name(vm, t, 1));
    }
    const auto kept = read_fork_points(host);
    for (const auto& v : host.volumes())
        if (planned.count(v.name) ||
            std::any_of(kept.begin(), kept.end(), [&](const ForkPoint& p) { return p.vm == vm; }))
            throw ConflictError("Pool '" + host.options().pool +
                                "' keeps volumes of a removed VM " + "named " + forky::quoted(vm) +
                                " (its snapshots: 'forky snapshots " + vm +
                                "'); import under another name with --name NEW");

    // The kernel, initrd and disks as the pool's content-named images (shared with any VM
    // that uses the same), through the same upload as a spec's files.
    DomainSpec files;
    files.source = dir / manifest_name;
    if (const ManifestFile* k = m.role("kernel"))
        files.boot.kernel = {dir / k->name, {1, "kernel"}};
    if (const ManifestFile* i = m.role("initrd"))
        files.boot.initrd = {dir / i->name, {1, "initrd"}};
    for (const auto& f : m.files)
        if (f.role == "disk") {
            DiskSpec d;
            d.base = {dir / f.name, {1, "disk"}};
            d.base_format = DiskFormat::qcow2;
            d.format_stated = true;
            d.has_qcow2_header = true;
            d.target = f.target;
            files.disks.push_back(d);
        }
    UploadStats stats;
    DomainSpec uploaded;
    try {
        uploaded = upload_spec_files(
            host, files, stats, [&op](const std::string& v) { op.lock().record_volume(v); },
            progress_of(o.progress, "uploading", o.ctx.cancel), o.ctx.cancel);
    } catch (const SpecError& e) { // a file changed since it was checked
        throw ConflictError(std::string(e.what()) + ": not importing it");
    }
    result.bytes_uploaded = stats.bytes_sent;
    result.images_reused = stats.files_reused;
    op.step("import-upload");
    // What arrived is what the manifest describes (its name is its content's SHA-256, read
    // back from the pool), and each disk is a whole qcow2 of the stated size.
    auto arrived = [&](const SpecFile& f, const ManifestFile& mf) {
        const std::string name = fs::path(f.path).filename().string();
        if (image_sha(name) != mf.sha256)
            throw ConflictError("'" + (dir / mf.name).string() +
                                "' changed while it was imported (it arrived as " + name +
                                "): not importing it");
        return name;
    };
    if (const ManifestFile* k = m.role("kernel"))
        arrived(uploaded.boot.kernel, *k);
    if (const ManifestFile* i = m.role("initrd"))
        arrived(uploaded.boot.initrd, *i);
    for (const auto& d : uploaded.disks) {
        const ManifestFile* mf = nullptr;
        for (const auto& f : m.files)
            if (f.role == "disk" && f.target == d.target)
                mf = &f;
        const std::string name = arrived(d.base, *mf);
        Qcow2Facts q;
        try {
            q = qcow2_facts(host.read_volume_range(name, 0, 4096));
        } catch (const Error& e) {
            throw ConflictError("'" + (dir / mf->name).string() + "' is not a qcow2 image (" +
                                e.what() + "): not importing it");
        }
        if (q.has_backing || q.external_data)
            throw ConflictError("'" + (dir / mf->name).string() +
                                "' names a backing or data file: not importing it");
        if (q.virtual_size != mf->virtual_size)
            throw ConflictError("Disk '" + d.target + "' is " + std::to_string(q.virtual_size) +
                                " bytes, the manifest says " + std::to_string(mf->virtual_size) +
                                ": not importing it");
    }

    // The imported state as the VM's first fork point, 'imported': its own first tops
    // (empty overlays on the images) frozen below the tops it runs on.
    const unsigned seq = 1;
    const std::string uuid = random_uuid();
    ForkPoint point;
    point.id = random_uuid();
    point.name = "imported";
    point.kind = ForkPoint::Kind::snapshot;
    point.seq = seq;
    point.vm = vm;
    point.vm_uuid = uuid;
    point.created_at = utc_now_rfc3339();
    point.host = host.options().uri;
    point.pool = host.options().pool;
    point.state = memory ? VmState::running : VmState::shut_off;
    point.operation = op.id();

    Lineage at_point;
    at_point.created_at = point.created_at;
    at_point.operation = op.id();
    at_point.pool = host.options().pool;
    // The spec path names a file on the exporting machine: nothing here (its copy is in
    // the export directory).
    at_point.spec.clear();
    at_point.ttl = std::nullopt;
    at_point.gpu_fork_detach = exported.gpu_fork_detach;
    for (const auto& p : exported.ports)
        at_point.ports.push_back({p.guest, 0});
    SpawnTarget t;
    t.name = vm;
    t.uuid = uuid;
    for (const auto& d : uploaded.disks) {
        const std::string frozen = disk_volume_name(vm, d.target);
        const std::string frozen_path = op.create_overlay(frozen, d.base.path, DiskFormat::qcow2);
        point.layers[d.target] = frozen;
        at_point.volumes.push_back({"disk", d.target, frozen});
        const std::string top = layer_volume_name(vm, d.target, seq);
        t.disk_paths[d.target] = op.create_overlay(top, frozen_path, DiskFormat::qcow2);
        t.lineage.volumes.push_back({"disk", d.target, top});
        op.step("import-overlay");
    }
    const bool console = exported.console_volume() != nullptr;
    if (console) {
        const std::string log = console_volume_name(vm);
        t.console_path = op.create_raw(log);
        at_point.volumes.push_back({"console", "", log});
        t.lineage.volumes.push_back({"console", "", log});
    }
    if (!uploaded.boot.kernel.empty())
        t.boot_paths["kernel"] = uploaded.boot.kernel.path.string();
    if (!uploaded.boot.initrd.empty())
        t.boot_paths["initrd"] = uploaded.boot.initrd.path.string();
    for (const auto& [role, path] : t.boot_paths)
        point.boot_files[role] = volume_at(host, path);
    {
        Lineage& l = t.lineage;
        const auto volumes = l.volumes;
        l = at_point;
        l.volumes = volumes;
        l.forks = seq;
    }
    point.vm_lineage = lineage_to_xml(at_point);
    op.create_raw(fork_point_record_name(vm, seq), fork_point_record_capacity);

    if (memory) {
        point.memory_image = fork_point_memory_name(vm, seq);
        const ShipResult up = op.upload((dir / m.role("memory")->name).string(), point.memory_image,
                                        progress_of(o.progress, "memory image", o.ctx.cancel));
        op.step("import-memory");
        if (up.sha256 != m.role("memory")->sha256)
            throw ConflictError("'" + (dir / m.role("memory")->name).string() +
                                "' changed while it was imported: not importing it");
        // The definition QEMU will run is the pool copy's: checked again there.
        const std::string header_xml = read_header(host, point).xml;
        require_importable(dir, header_xml, targets);
        require_restorable(host, m, header_xml);
        SpawnOptions so;
        so.set_clock = true; // the image is as old as the export
        SpawnResult spawned = spawn(op, point, {t}, so);
        result.clock_not_set = spawned.clock_not_set;
        result.resumed = true;
    } else {
        pugi::xml_document def;
        def.load_string(domain_def.c_str());
        if (!xml_text(def, "/domain/genid").empty())
            t.lineage.genid = random_uuid();
        const std::string xml = spawn_target_xml(domain_def, t);
        op.expect_domain(vm, uuid);
        DomainPtr dom(virDomainDefineXML(host.conn(), xml.c_str()));
        lv_check(dom.get(), "Failed to define VM '" + vm + "'");
        op.step("import-define");
        lv_check(virDomainCreate(dom.get()), "Failed to start VM '" + vm + "'");
        op.step("import-start");
        std::vector<unsigned> guest_ports;
        for (const auto& p : t.lineage.ports)
            guest_ports.push_back(p.guest);
        if (!guest_ports.empty()) {
            Lineage running = t.lineage;
            running.ports = forward_ports(dom.get(), vm, guest_ports);
            write_lineage(dom.get(), vm, running, /*live_only=*/true);
        }
    }
    write_fork_point(host, point);
    DomainPtr dom = host.domain(vm);
    define_snapshot_metadata(host, point, domain_xml(dom.get(), VIR_DOMAIN_XML_INACTIVE));
    op.step("commit");
    op.commit();
    result.snapshot = point.label();
    result.ms = ms_since(t0);
    return result;
}

} // namespace forky
