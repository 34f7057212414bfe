#include "images.hpp"

#include "errors.hpp"
#include "names.hpp"
#include "process.hpp"
#include "safe_path.hpp"

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace forky {

namespace fs = std::filesystem;

bool is_under(const fs::path& file, const fs::path& dir) {
    auto f = file.begin();
    for (auto d = dir.begin(); d != dir.end(); ++d, ++f) {
        if (d->empty()) // a trailing separator
            continue;
        if (f == file.end() || *f != *d)
            return false;
    }
    return true;
}

namespace {

std::string join(const std::vector<fs::path>& dirs) {
    std::string out;
    for (const auto& d : dirs)
        out += (out.empty() ? "" : ", ") + d.string();
    return out;
}

std::optional<std::string> forbidden_dir_of(const fs::path& p) {
    for (const auto& dir : forbidden_image_dirs())
        if (is_under(p, dir))
            return "lies under " + dir.string() + ", where forky never reads images";
    return std::nullopt;
}

// "a (qcow2) -> b (raw)"
std::string describe_chain(const std::vector<ImageLayer>& chain) {
    std::string out;
    for (const auto& l : chain)
        out += (out.empty() ? "" : " -> ") + l.file + " (" + l.format + ")";
    return out;
}

} // namespace

const std::vector<fs::path>& forbidden_image_dirs() {
    static const std::vector<fs::path> dirs{"/proc", "/sys", "/dev", "/etc", "/root", "/run"};
    return dirs;
}

namespace {

fs::path resolved_dir(const fs::path& dir) {
    return dir.is_absolute() ? walk_path(dir).resolved : dir.lexically_normal();
}

// Why others than root and this user could change `path` (nullopt when they cannot).
std::optional<std::string> writable_by_others(const fs::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0)
        return std::nullopt;
    if (st.st_uid != 0 && st.st_uid != ::geteuid())
        return "belongs to uid " + std::to_string(st.st_uid);
    if ((st.st_mode & 022) != 0) {
        char mode[16];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return std::string("can be written by others (mode ") + mode + ")";
    }
    return std::nullopt;
}

bool is_forky_made(const fs::path& file, const fs::path& pool_dir) {
    const std::string name = file.filename().string();
    const bool lock = name.size() > 5 && name.compare(name.size() - 5, 5, ".lock") == 0;
    return file.parent_path() != pool_dir || lock || is_forky_volume_name(name);
}

} // namespace

ImageRules image_rules_for(const DomainSpec& spec, const std::vector<fs::path>& configured,
                           const std::string& pool, const std::string& pool_dir,
                           const std::vector<fs::path>& other_pool_dirs) {
    ImageRules rules;
    if (!pool_dir.empty())
        rules.pool_dir = resolved_dir(pool_dir);
    if (!configured.empty()) {
        for (const auto& d : configured) {
            const fs::path real = resolved_dir(d);
            if (real == real.root_path())
                throw SpecError("image_dirs entry '" + d.string() +
                                "' leads to /, which would allow every file");
            rules.allowed_dirs.push_back(real);
        }
        rules.allowed_by = "image_dirs in forky's configuration";
    } else {
        const fs::path spec_dir = resolved_dir(spec.source.parent_path());
        std::string note;
        if (spec_dir == spec_dir.root_path())
            note = "; the spec's folder is /, which is no image folder";
        else if (auto why = writable_by_others(spec_dir))
            note = "; the spec's folder " + spec_dir.string() + " " + *why +
                   ", so it is no image folder";
        else
            rules.allowed_dirs.push_back(spec_dir);
        if (!rules.pool_dir.empty())
            rules.allowed_dirs.push_back(rules.pool_dir);
        rules.allowed_by = "by default the spec's folder and pool '" + pool + "'" + note +
                           "; an administrator sets image_dirs in /etc/forky/forky.yaml";
    }
    // Other pools hold other VMs' disks: out of bounds unless an image_dir lies in one.
    for (const auto& d : other_pool_dirs) {
        const fs::path other = resolved_dir(d);
        if (other == rules.pool_dir)
            continue;
        bool configured_inside = false;
        for (const auto& c : configured)
            configured_inside = configured_inside || is_under(resolved_dir(c), other);
        if (!configured_inside)
            rules.denied_dirs.push_back(other);
    }
    return rules;
}

std::optional<std::string> image_file_problem(const std::string& file, const ImageRules& rules,
                                              bool resolve_links) {
    if (file.empty() || file.front() != '/')
        return "is not a plain local file (forky reads images by absolute path only)";
    // Where the path leads, followed as the kernel follows it (links where they stand,
    // ".." from where the walk really is), checked on the way: nobody else may be able to
    // swap any of it between this check and QEMU's open.
    fs::path real = fs::path(file).lexically_normal();
    if (resolve_links) {
        PathWalk walk = walk_path(file);
        if (walk.problem)
            return "could be swapped after forky checked it: " + *walk.problem;
        real = walk.resolved;
        if (!walk.exists)
            return "does not exist";
    }
    if (auto why = forbidden_dir_of(fs::path(file).lexically_normal()))
        return why;
    const std::string via =
        real != fs::path(file) ? "leads to '" + real.string() + "', which " : std::string();
    if (auto why = forbidden_dir_of(real))
        return via + *why;
    std::error_code ec;
    if (resolve_links && !fs::is_regular_file(real, ec))
        return via + "is not a regular file";
    for (const auto& dir : rules.denied_dirs)
        if (is_under(real, dir))
            return via + "lies in the folder of another storage pool (" + dir.string() +
                   "), where other VMs' disks are";
    if (!rules.pool_dir.empty() && is_under(real, rules.pool_dir) &&
        is_forky_made(real, rules.pool_dir))
        return via + "is a volume forky made for a VM (its disk, memory or journal)";
    bool allowed = false;
    for (const auto& dir : rules.allowed_dirs)
        allowed = allowed || is_under(real, dir);
    if (!allowed)
        return via + "is not under a folder allowed for images (" + join(rules.allowed_dirs) +
               ": " + rules.allowed_by + ")";
    return std::nullopt;
}

std::vector<ImageLayer> parse_image_chain(std::string_view text) {
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("Unreadable image information from qemu-img: ") + e.what());
    }
    if (doc.is_object())
        doc = nlohmann::json::array({doc});
    if (!doc.is_array() || doc.empty())
        throw Error("Unreadable image information from qemu-img: expected a list of images");
    auto text_of = [](const nlohmann::json& o, const char* key) {
        auto it = o.find(key);
        return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    std::vector<ImageLayer> chain;
    for (const auto& o : doc) {
        if (!o.is_object())
            throw Error("Unreadable image information from qemu-img: expected objects");
        ImageLayer l;
        l.file = text_of(o, "filename");
        l.format = text_of(o, "format");
        l.backing = text_of(o, "full-backing-filename");
        if (l.backing.empty())
            l.backing = text_of(o, "backing-filename");
        l.backing_format = text_of(o, "backing-filename-format");
        if (auto fs = o.find("format-specific"); fs != o.end() && fs->is_object())
            if (auto data = fs->find("data"); data != fs->end() && data->is_object())
                l.data_file = text_of(*data, "data-file");
        chain.push_back(std::move(l));
    }
    return chain;
}

std::vector<ImageLayer> inspect_image_chain(const fs::path& file, DiskFormat format) {
    // -U: a base image in use by running VMs is only read here.
    ProcessResult r = run_process({"qemu-img", "info", "-U", "--output=json", "--backing-chain",
                                   "-f", to_string(format), file.string()});
    if (r.rc != 0) {
        std::string why = r.err;
        while (!why.empty() && (why.back() == '\n' || why.back() == ' '))
            why.pop_back();
        throw Error("qemu-img cannot read '" + file.string() + "' as " + to_string(format) + ": " +
                    why);
    }
    return parse_image_chain(r.out);
}

DomainSpec check_spec_images(const DomainSpec& spec, const ImageRules& rules) {
    DomainSpec resolved = spec;
    auto refuse = [&spec](const SpecRef& ref, const std::string& why) {
        throw SpecError(spec_where(spec, ref) + ": " + why);
    };
    auto resolve = [&](SpecFile& f, const char* what) {
        if (f.empty())
            return;
        if (auto why = image_file_problem(f.path.string(), rules))
            refuse(f.ref,
                   "refused " + std::string(what) + " '" + f.path.string() + "': it " + *why);
        f.path = walk_path(f.path).resolved;
    };
    resolve(resolved.boot.kernel, "kernel");
    resolve(resolved.boot.initrd, "initrd");
    for (std::size_t d = 0; d < resolved.disks.size(); ++d) {
        DiskSpec& disk = resolved.disks[d];
        resolve(disk.base, "base image");
        std::vector<ImageLayer> chain;
        try {
            chain = inspect_image_chain(disk.base.path, disk.base_format);
        } catch (const Error& e) {
            refuse(disk.base.ref, e.what());
        }
        const std::string shown = describe_chain(chain);
        for (std::size_t i = 0; i < chain.size(); ++i) {
            const ImageLayer& l = chain[i];
            const std::string role = i == 0 ? "the base image"
                                            : "backing file of '" + chain[i - 1].file + "'" +
                                                  (i == 1 ? ", the base image" : "");
            if (l.format != "qcow2" && l.format != "raw")
                refuse(disk.base.ref, "refused '" + l.file + "' (" + role + "): its format is " +
                                          l.format +
                                          "; forky reads qcow2 and raw layers only; "
                                          "chain: " +
                                          shown);
            if (i > 0)
                if (auto why = image_file_problem(l.file, rules))
                    refuse(disk.base.ref, "refused '" + l.file + "' (" + role + "): it " + *why +
                                              "; chain: " + shown);
            if (!l.backing.empty() && l.backing_format.empty())
                refuse(disk.base.ref,
                       "refused '" + l.file + "' (" + role + "): its backing file '" + l.backing +
                           "' has no recorded format, which qemu would guess; recreate it with "
                           "'qemu-img rebase -F FORMAT'; chain: " +
                           shown);
            if (!l.data_file.empty())
                if (auto why = image_file_problem(l.data_file, rules))
                    refuse(disk.base.ref, "refused '" + l.data_file + "' (external data file of '" +
                                              l.file + "'): it " + *why + "; chain: " + shown);
        }
        if (!disk.format_stated && disk.has_qcow2_header)
            refuse(disk.format_ref,
                   "'" + spec.disks[d].base.path.string() +
                       "' begins with a qcow2 header; forky reads it as qcow2 only when the spec "
                       "says so: add 'format: qcow2' to this disk (or 'format: raw' to give the "
                       "guest its bytes as they are)");
    }
    return resolved;
}

std::vector<std::string> live_image_problems(std::string_view live_xml, const ImageRules& rules,
                                             bool resolve_links) {
    pugi::xml_document doc;
    if (!doc.load_buffer(live_xml.data(), live_xml.size()))
        return {"the domain's live XML cannot be read"};
    std::vector<std::string> problems;
    auto judge = [&](const std::string& file, const std::string& what) {
        if (auto why = image_file_problem(file, rules, resolve_links))
            problems.push_back(what + " '" + file + "', which " + *why);
    };
    for (const char* boot : {"kernel", "initrd"})
        if (pugi::xml_node n = doc.select_node(("/domain/os/" + std::string(boot)).c_str()).node())
            judge(n.text().get(), boot);
    for (auto d : doc.select_nodes("/domain/devices/disk")) {
        pugi::xml_node disk = d.node();
        const std::string target = disk.child("target").attribute("dev").value();
        // The top layer is forky's own overlay; below it, every <backingStore> and
        // <dataStore> that libvirt resolved when QEMU opened the chain.
        for (auto s : disk.select_nodes(".//backingStore | .//dataStore")) {
            pugi::xml_node layer = s.node();
            pugi::xml_node source = layer.child("source");
            if (!source)
                continue; // the chain's end: <backingStore/>
            std::string type = layer.attribute("type").value();
            if (!type.empty() && type != "file") {
                problems.push_back("disk " + target + " reaches a " + type + " source, not a file");
                continue;
            }
            judge(source.attribute("file").value(), "disk " + target + " reaches");
        }
    }
    return problems;
}

} // namespace forky
