#include "spec.hpp"

#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>

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

// Reads one spec, keeping the file name for every message.
class SpecReader {
public:
    explicit SpecReader(fs::path file) : file_(std::move(file)) {}

    [[noreturn]] void fail(const YAML::Node& at, const std::string& key,
                           const std::string& why) const {
        std::ostringstream out;
        out << file_.string();
        if (at.IsDefined() && at.Mark().line >= 0)
            out << ':' << at.Mark().line + 1;
        if (!key.empty())
            out << ": key '" << key << "'";
        out << ": " << why;
        throw SpecError(out.str());
    }

    void require_map(const YAML::Node& node, const std::string& key) const {
        if (!node.IsMap())
            fail(node, key, "expected a mapping");
    }

    // Every key of `map` must be one of `known`.
    void only_keys(const YAML::Node& map, const std::string& where,
                   std::initializer_list<const char*> known) const {
        std::set<std::string> allowed(known.begin(), known.end());
        for (const auto& kv : map) {
            std::string k = kv.first.Scalar();
            if (!allowed.count(k)) {
                std::string list;
                for (const auto* a : known)
                    list += (list.empty() ? "" : ", ") + std::string(a);
                fail(kv.first, where.empty() ? k : where + "." + k,
                     "unknown key (known keys: " + list + ")");
            }
        }
    }

    std::string scalar(const YAML::Node& node, const std::string& key) const {
        if (!node.IsScalar())
            fail(node, key, "expected a single value");
        return node.Scalar();
    }

    YAML::Node required(const YAML::Node& map, const char* name, const std::string& key) const {
        YAML::Node n = map[name];
        if (!n.IsDefined() || n.IsNull())
            fail(map, key, "is required");
        return n;
    }

    fs::path existing_file(const YAML::Node& node, const std::string& key) const {
        std::string text = scalar(node, key);
        if (text.empty())
            fail(node, key, "path is empty");
        fs::path p(text);
        if (p.is_relative())
            p = file_.parent_path() / p;
        p = p.lexically_normal();
        std::error_code ec;
        if (!fs::is_regular_file(p, ec))
            fail(node, key, "file '" + p.string() + "' does not exist");
        return p;
    }

    const fs::path& file() const { return file_; }

private:
    fs::path file_;
};

DiskFormat sniff_format(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    char magic[4] = {};
    in.read(magic, sizeof magic);
    if (in.gcount() == 4 && magic[0] == 'Q' && magic[1] == 'F' && magic[2] == 'I' &&
        static_cast<unsigned char>(magic[3]) == 0xfb)
        return DiskFormat::qcow2;
    return DiskFormat::raw;
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
    SpecReader r(fs::absolute(file).lexically_normal());
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        std::ostringstream out;
        out << r.file().string() << ':' << e.mark.line + 1 << ": invalid YAML: " << e.msg;
        throw SpecError(out.str());
    }
    if (!root.IsMap())
        throw SpecError(r.file().string() +
                        ": a domain spec is a YAML mapping (name, memory, ...)");
    r.only_keys(root, "",
                {"name", "memory", "vcpus", "accel", "boot", "disks", "console", "network", "ports",
                 "ttl"});

    DomainSpec spec;
    spec.source = r.file();

    YAML::Node name = r.required(root, "name", "name");
    spec.name = r.scalar(name, "name");
    if (auto why = name_problem(spec.name))
        r.fail(name, "name", "'" + spec.name + "' is not a valid VM name: " + *why);

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
    spec.boot.kernel = r.existing_file(r.required(boot, "kernel", "boot.kernel"), "boot.kernel");
    if (YAML::Node initrd = boot["initrd"]; initrd.IsDefined())
        spec.boot.initrd = r.existing_file(initrd, "boot.initrd");
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
            r.only_keys(d, key, {"base", "target"});
            DiskSpec disk;
            disk.base = r.existing_file(r.required(d, "base", key + ".base"), key + ".base");
            disk.base_format = sniff_format(disk.base);
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
    std::ifstream in(file);
    if (!in)
        throw SpecError(file.string() + ": cannot read the spec file");
    std::ostringstream text;
    text << in.rdbuf();
    return parse_spec(text.str(), file);
}

} // namespace forky
