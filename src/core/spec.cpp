#include "spec.hpp"

#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"

#include "yaml_reader.hpp"

#include <cstdio>
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

// PCI vendor ids by the names a spec may use.
std::optional<std::string> vendor_id(const std::string& v) {
    if (v == "nvidia")
        return "0x10de";
    if (v == "amd")
        return "0x1002";
    if (v == "intel")
        return "0x8086";
    if (v.size() == 6 && v.compare(0, 2, "0x") == 0 &&
        v.find_first_not_of("0123456789abcdef", 2) == std::string::npos)
        return v;
    return std::nullopt;
}

bool valid_mdev_type(const std::string& t) {
    return !t.empty() && t.size() <= 64 &&
           t.find_first_not_of(
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
               std::string::npos;
}

unsigned gpu_count(const YamlReader& r, const YAML::Node& n, const std::string& key) {
    const std::string text = r.scalar(n, key);
    unsigned c = 0;
    try {
        c = n.as<unsigned>();
    } catch (const YAML::Exception&) {
        r.fail(n, key, "expected a whole number, got '" + text + "'");
    }
    if (c == 0 || c > 16)
        r.fail(n, key, "must be between 1 and 16");
    return c;
}

std::vector<GpuSpec> parse_gpus(const YamlReader& r, const YAML::Node& gpus) {
    if (!gpus.IsSequence())
        r.fail(gpus, "gpus",
               "expected a list, e.g. [{pci: \"0000:65:00.0\"}], [{vendor: nvidia, count: 2}] "
               "or [{mdev_type: nvidia-593}]");
    std::vector<GpuSpec> out;
    std::set<std::string> addresses;
    for (std::size_t i = 0; i < gpus.size(); ++i) {
        YAML::Node g = gpus[i];
        const std::string key = "gpus[" + std::to_string(i) + "]";
        r.require_map(g, key);
        r.only_keys(g, key, {"pci", "vendor", "count", "mdev_type"});
        GpuSpec gpu;
        gpu.ref = ref_of(g, key);
        const int kinds = int(g["pci"].IsDefined()) + int(g["vendor"].IsDefined()) +
                          int(g["mdev_type"].IsDefined());
        if (kinds != 1)
            r.fail(g, key, "give exactly one of pci, vendor or mdev_type");
        if (YAML::Node pci = g["pci"]; pci.IsDefined()) {
            gpu.kind = GpuSpec::Kind::pci;
            const std::string text = r.scalar(pci, key + ".pci");
            auto a = canonical_pci_address(text);
            if (!a)
                r.fail(pci, key + ".pci",
                       forky::quoted(text) +
                           " is not a PCI address (DDDD:BB:SS.F, e.g. 0000:65:00.0)");
            if (g["count"].IsDefined())
                r.fail(g["count"], key + ".count", "goes with vendor or mdev_type, not pci");
            if (!addresses.insert(*a).second)
                r.fail(pci, key + ".pci", *a + " is listed twice");
            gpu.pci = *a;
        } else if (YAML::Node vendor = g["vendor"]; vendor.IsDefined()) {
            gpu.kind = GpuSpec::Kind::vendor;
            gpu.vendor = r.scalar(vendor, key + ".vendor");
            auto id = vendor_id(gpu.vendor);
            if (!id)
                r.fail(vendor, key + ".vendor",
                       "must be nvidia, amd, intel or a PCI vendor id (0x10de), got " +
                           forky::quoted(gpu.vendor));
            gpu.vendor_id = *id;
        } else {
            YAML::Node type = g["mdev_type"];
            gpu.kind = GpuSpec::Kind::mdev;
            gpu.mdev_type = r.scalar(type, key + ".mdev_type");
            if (!valid_mdev_type(gpu.mdev_type))
                r.fail(type, key + ".mdev_type",
                       forky::quoted(gpu.mdev_type) +
                           " is not a mediated device type (e.g. nvidia-593)");
        }
        if (YAML::Node count = g["count"]; count.IsDefined())
            gpu.count = gpu_count(r, count, key + ".count");
        out.push_back(std::move(gpu));
    }
    return out;
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
                 "ttl", "guest_agent", "gpus", "gpu_fork"});

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

    if (YAML::Node gpus = root["gpus"]; gpus.IsDefined())
        spec.gpus = parse_gpus(r, gpus);
    if (YAML::Node fork = root["gpu_fork"]; fork.IsDefined()) {
        const std::string f = r.scalar(fork, "gpu_fork");
        if (f == "detach")
            spec.gpu_fork = GpuFork::detach;
        else if (f == "refuse")
            spec.gpu_fork = GpuFork::refuse;
        else
            r.fail(fork, "gpu_fork", "must be refuse or detach, got '" + f + "'");
    }

    if (YAML::Node ttl = root["ttl"]; ttl.IsDefined())
        spec.ttl = r.duration(ttl, "ttl");
    return spec;
}

std::optional<std::string> canonical_pci_address(const std::string& text) {
    unsigned domain = 0, bus = 0, slot = 0, function = 0;
    char tail = 0;
    auto hex = [](const std::string& t) {
        return t.find_first_not_of("0123456789abcdefABCDEF:.") == std::string::npos;
    };
    if (!hex(text))
        return std::nullopt;
    if (std::sscanf(text.c_str(), "%4x:%2x:%2x.%1x%c", &domain, &bus, &slot, &function, &tail) ==
            4 &&
        text.size() == 12) {
    } else if (std::sscanf(text.c_str(), "%2x:%2x.%1x%c", &bus, &slot, &function, &tail) == 3 &&
               text.size() == 7) {
        domain = 0;
    } else {
        return std::nullopt;
    }
    if (slot > 0x1f || function > 7)
        return std::nullopt;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, slot, function);
    return std::string(buf);
}

DomainSpec load_spec(const fs::path& file) {
    return parse_spec(read_small_file(file), file);
}

std::string spec_where(const DomainSpec& spec, const SpecRef& ref) {
    return YamlReader(spec.source).where(ref.line, ref.key);
}

} // namespace forky
