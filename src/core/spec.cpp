#include "spec.hpp"

#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"

#include "yaml_reader.hpp"

#include <fstream>
#include <set>

namespace forky {

namespace fs = std::filesystem;

const char* to_string(Accel a) {
    switch (a) {
    case Accel::automatic:
        return "auto";
    case Accel::kvm:
        return "kvm";
    case Accel::tcg:
        return "tcg";
    }
    return "?";
}

const char* to_string(DiskFormat f) {
    return f == DiskFormat::qcow2 ? "qcow2" : "raw";
}

namespace {

constexpr std::uint64_t min_memory = 16ULL << 20;
constexpr std::uint64_t max_memory = 16ULL << 40;
constexpr unsigned max_vcpus = 512;

bool has_qcow2_magic(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    char magic[4] = {};
    in.read(magic, sizeof magic);
    return in.gcount() == 4 && magic[0] == 'Q' && magic[1] == 'F' && magic[2] == 'I' &&
           static_cast<unsigned char>(magic[3]) == 0xfb;
}

SpecRef ref_of(const YAML::Node& node, const std::string& key) {
    return {node.IsDefined() && node.Mark().line >= 0 ? node.Mark().line + 1 : 0, key};
}

SpecFile spec_file(const YamlReader& r, const YAML::Node& node, const std::string& key) {
    return {r.existing_file(node, key), ref_of(node, key)};
}

bool valid_target(const std::string& t) {
    if (t.size() < 3 || t.size() > 4 || t.compare(0, 2, "vd") != 0)
        return false;
    for (std::size_t i = 2; i < t.size(); ++i)
        if (t[i] < 'a' || t[i] > 'z')
            return false;
    return true;
}

} // namespace

DomainSpec parse_spec(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    YAML::Node root = r.load(text);
    if (!root.IsMap())
        throw SpecError(r.file().string() +
                        ": a domain spec is a YAML mapping (name, memory, ...)");
    r.only_keys(root, "",
                {"name", "memory", "vcpus", "accel", "boot", "disks", "console", "network", "ports",
                 "ttl", "guest_agent"});

    DomainSpec spec;
    spec.source = r.file();

    YAML::Node name = r.required(root, "name", "name");
    spec.name = r.scalar(name, "name");
    if (auto why = name_problem(spec.name))
        r.fail(name, "name", forky::quoted(spec.name) + " is not a valid VM name: " + *why);

    YAML::Node memory = r.required(root, "memory", "memory");
    std::string why;
    auto bytes = parse_size(r.scalar(memory, "memory"), &why);
    if (!bytes)
        r.fail(memory, "memory", why);
    if (*bytes < min_memory || *bytes > max_memory)
        r.fail(memory, "memory", "must be between 16MiB and 16TiB");
    if (*bytes % 1024 != 0)
        r.fail(memory, "memory", "must be a whole number of KiB");
    spec.memory_bytes = *bytes;

    if (YAML::Node vcpus = root["vcpus"]; vcpus.IsDefined()) {
        std::string v = r.scalar(vcpus, "vcpus");
        unsigned n = 0;
        try {
            n = vcpus.as<unsigned>();
        } catch (const YAML::Exception&) {
            r.fail(vcpus, "vcpus", "expected a whole number, got '" + v + "'");
        }
        if (n == 0 || n > max_vcpus)
            r.fail(vcpus, "vcpus", "must be between 1 and " + std::to_string(max_vcpus));
        spec.vcpus = n;
    }

    if (YAML::Node accel = root["accel"]; accel.IsDefined()) {
        std::string a = r.scalar(accel, "accel");
        if (a == "auto")
            spec.accel = Accel::automatic;
        else if (a == "kvm")
            spec.accel = Accel::kvm;
        else if (a == "tcg")
            spec.accel = Accel::tcg;
        else
            r.fail(accel, "accel", "must be auto, kvm or tcg, got '" + a + "'");
    }

    YAML::Node boot = r.required(root, "boot", "boot");
    r.require_map(boot, "boot");
    r.only_keys(boot, "boot", {"kernel", "initrd", "cmdline"});
    spec.boot.kernel = spec_file(r, r.required(boot, "kernel", "boot.kernel"), "boot.kernel");
    if (YAML::Node initrd = boot["initrd"]; initrd.IsDefined())
        spec.boot.initrd = spec_file(r, initrd, "boot.initrd");
    if (YAML::Node cmdline = boot["cmdline"]; cmdline.IsDefined())
        spec.boot.cmdline = r.scalar(cmdline, "boot.cmdline");

    if (YAML::Node disks = root["disks"]; disks.IsDefined()) {
        if (!disks.IsSequence())
            r.fail(disks, "disks", "expected a list of disks");
        std::set<std::string> targets;
        for (std::size_t i = 0; i < disks.size(); ++i) {
            YAML::Node d = disks[i];
            std::string key = "disks[" + std::to_string(i) + "]";
            r.require_map(d, key);
            r.only_keys(d, key, {"base", "format", "target"});
            DiskSpec disk;
            disk.base = spec_file(r, r.required(d, "base", key + ".base"), key + ".base");
            disk.has_qcow2_header = has_qcow2_magic(disk.base.path);
            disk.format_ref = ref_of(d, key + ".format");
            if (YAML::Node f = d["format"]; f.IsDefined()) {
                std::string fmt = r.scalar(f, key + ".format");
                if (fmt == "qcow2")
                    disk.base_format = DiskFormat::qcow2;
                else if (fmt == "raw")
                    disk.base_format = DiskFormat::raw;
                else
                    r.fail(f, key + ".format", "must be qcow2 or raw, got '" + fmt + "'");
                disk.format_stated = true;
                disk.format_ref = ref_of(f, key + ".format");
            } else {
                // Read as what it looks like; images.hpp refuses an unstated qcow2.
                disk.base_format = disk.has_qcow2_header ? DiskFormat::qcow2 : DiskFormat::raw;
            }
            if (YAML::Node t = d["target"]; t.IsDefined()) {
                disk.target = r.scalar(t, key + ".target");
                if (!valid_target(disk.target))
                    r.fail(t, key + ".target",
                           "'" + disk.target + "' is not a virtio disk name (vda, vdb, ...)");
            } else {
                disk.target = std::string("vd") + static_cast<char>('a' + i);
            }
            if (!targets.insert(disk.target).second)
                r.fail(d, key + ".target", "target '" + disk.target + "' is used twice");
            spec.disks.push_back(std::move(disk));
        }
    }

    if (YAML::Node console = root["console"]; console.IsDefined()) {
        std::string c = r.scalar(console, "console");
        if (c == "log")
            spec.console = ConsoleMode::log;
        else if (c == "none")
            spec.console = ConsoleMode::none;
        else
            r.fail(console, "console", "must be log or none, got '" + c + "'");
    }

    if (YAML::Node network = root["network"]; network.IsDefined()) {
        std::string n = r.scalar(network, "network");
        if (n == "user")
            spec.network = NetworkMode::user;
        else if (n == "none")
            spec.network = NetworkMode::none;
        else
            r.fail(network, "network", "must be user or none, got '" + n + "'");
    }

    if (YAML::Node agent = root["guest_agent"]; agent.IsDefined()) {
        std::string a = r.scalar(agent, "guest_agent");
        if (a == "true")
            spec.guest_agent = true;
        else if (a == "false")
            spec.guest_agent = false;
        else
            r.fail(agent, "guest_agent", "must be true or false, got '" + a + "'");
    }

    if (YAML::Node ports = root["ports"]; ports.IsDefined()) {
        if (!ports.IsSequence())
            r.fail(ports, "ports", "expected a list of guest TCP ports, e.g. [22, 8080]");
        if (spec.network != NetworkMode::user)
            r.fail(ports, "ports", "port forwards need network: user");
        std::set<unsigned> seen;
        for (std::size_t i = 0; i < ports.size(); ++i) {
            std::string key = "ports[" + std::to_string(i) + "]";
            std::string text = r.scalar(ports[i], key);
            unsigned port = 0;
            try {
                port = ports[i].as<unsigned>();
            } catch (const YAML::Exception&) {
                r.fail(ports[i], key, "expected a port number, got '" + text + "'");
            }
            if (port == 0 || port > 65535)
                r.fail(ports[i], key, "must be between 1 and 65535");
            if (!seen.insert(port).second)
                r.fail(ports[i], key, "port " + text + " is listed twice");
            spec.ports.push_back(port);
        }
    }

    if (YAML::Node ttl = root["ttl"]; ttl.IsDefined()) {
        auto seconds = parse_duration(r.scalar(ttl, "ttl"), &why);
        if (!seconds)
            r.fail(ttl, "ttl", why);
        if (seconds->count() == 0)
            r.fail(ttl, "ttl", "must be longer than 0s");
        spec.ttl = *seconds;
    }
    return spec;
}

DomainSpec load_spec(const fs::path& file) {
    return parse_spec(read_small_file(file), file);
}

std::string spec_where(const DomainSpec& spec, const SpecRef& ref) {
    return YamlReader(spec.source).where(ref.line, ref.key);
}

} // namespace forky
