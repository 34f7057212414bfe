#include "ksm.hpp"

#include "errors.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace forky {

namespace fs = std::filesystem;

namespace {

std::optional<std::uint64_t> read_number(const fs::path& file) {
    std::ifstream in(file);
    std::uint64_t v = 0;
    if (!(in >> v))
        return std::nullopt;
    return v;
}

void write_number(const fs::path& file, unsigned v) {
    std::ofstream out(file);
    out << v << '\n';
    out.flush();
    if (!out)
        throw StorageError("Cannot write " + std::to_string(v) + " to " + file.string() + ": " +
                           std::strerror(errno) + " (KSM is tuned by root)");
}

} // namespace

KsmStatus read_ksm(const fs::path& dir) {
    KsmStatus s;
    const long page = ::sysconf(_SC_PAGESIZE);
    s.page_size = page > 0 ? static_cast<std::uint64_t>(page) : 4096;
    const auto run = read_number(dir / "run");
    if (!run)
        return s; // no KSM in this kernel (or not readable): available stays false
    s.available = true;
    s.settings.run = static_cast<unsigned>(*run);
    s.settings.pages_to_scan =
        static_cast<unsigned>(read_number(dir / "pages_to_scan").value_or(0));
    s.settings.sleep_ms = static_cast<unsigned>(read_number(dir / "sleep_millisecs").value_or(0));
    s.pages_shared = read_number(dir / "pages_shared").value_or(0);
    s.pages_sharing = read_number(dir / "pages_sharing").value_or(0);
    return s;
}

void write_ksm(const KsmSettings& s, const fs::path& dir) {
    write_number(dir / "pages_to_scan", s.pages_to_scan);
    write_number(dir / "sleep_millisecs", s.sleep_ms);
    write_number(dir / "run", s.run);
}

std::uint64_t ksm_full_scans(const fs::path& dir) {
    return read_number(dir / "full_scans").value_or(0);
}

std::map<std::string, QemuProcess> qemu_processes(const fs::path& proc) {
    std::map<std::string, QemuProcess> out;
    std::error_code ec;
    const long page = ::sysconf(_SC_PAGESIZE);
    const std::uint64_t page_size = page > 0 ? static_cast<std::uint64_t>(page) : 4096;
    for (const auto& e : fs::directory_iterator(proc, ec)) {
        const std::string pid = e.path().filename().string();
        if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos)
            continue;
        std::ifstream cmd(e.path() / "cmdline", std::ios::binary);
        std::string arg, uuid;
        bool next_is_uuid = false, qemu = false, first = true;
        while (std::getline(cmd, arg, '\0')) {
            if (first)
                qemu = arg.find("qemu") != std::string::npos;
            first = false;
            if (!qemu)
                break;
            if (next_is_uuid) {
                uuid = arg;
                break;
            }
            next_is_uuid = arg == "-uuid";
        }
        if (uuid.empty())
            continue; // not a QEMU of libvirt's, or gone meanwhile
        QemuProcess p;
        p.pid = std::stoi(pid);
        std::ifstream statm(e.path() / "statm");
        std::uint64_t size = 0, resident = 0;
        if (statm >> size >> resident)
            p.rss_bytes = resident * page_size;
        p.merging_pages = read_number(e.path() / "ksm_merging_pages").value_or(0);
        std::ifstream rollup(e.path() / "smaps_rollup");
        for (std::string line; std::getline(rollup, line);)
            if (line.rfind("Pss:", 0) == 0) {
                p.pss_bytes = std::strtoull(line.c_str() + 4, nullptr, 10) * 1024; // kB
                break;
            }
        out[uuid] = p;
    }
    return out;
}

MemoryStats memory_stats(const std::vector<VmInfo>& vms,
                         const std::map<std::string, QemuProcess>& processes,
                         const KsmStatus& ksm) {
    MemoryStats out;
    out.ksm = ksm;
    std::map<std::string, const VmInfo*> by_name;
    for (const auto& v : vms)
        by_name[v.name] = &v;
    std::map<std::string, FamilyMemory> families;
    for (const auto& v : vms) {
        // Up the parents forky still knows; a removed parent's name ends the walk.
        std::string root = v.name;
        std::set<std::string> seen{root};
        for (const VmInfo* at = &v; !at->lineage.parent.empty();) {
            root = at->lineage.parent;
            auto it = by_name.find(root);
            if (it == by_name.end() || !seen.insert(root).second)
                break;
            at = it->second;
        }
        FamilyMemory& f = families[root];
        f.root = root;
        auto p = processes.find(v.uuid);
        if (p == processes.end())
            continue;
        f.vms.push_back(v.name);
        f.rss_bytes += p->second.rss_bytes;
        f.merging_pages += p->second.merging_pages;
    }
    for (auto& [root, f] : families) {
        if (f.vms.empty())
            continue;
        const std::uint64_t n = f.vms.size();
        f.saved_bytes = f.merging_pages * (n - 1) / n * ksm.page_size;
        out.families.push_back(std::move(f));
    }
    return out;
}

MemoryStats host_memory_stats(Host& host) {
    if (!is_local_uri(host.options().uri))
        throw UsageError("Memory figures come from this machine's /proc and " +
                         std::string(default_ksm_dir) + ", not from '" + host.options().uri +
                         "': ask that host's forkyd (forky --server) or run forky there");
    return memory_stats(vm_list(host), qemu_processes(), read_ksm());
}

bool is_local_uri(const std::string& uri) {
    const auto scheme = uri.find("://");
    return scheme != std::string::npos && uri.compare(scheme + 3, 1, "/") == 0;
}

std::optional<std::string> KsmTuner::update(unsigned forks) {
    if (forks > 0 && !saved_) {
        const KsmStatus now = read_ksm(dir_);
        if (!now.available)
            return std::nullopt;
        KsmSettings wanted = wanted_;
        wanted.run = 1;
        write_ksm(wanted, dir_);
        saved_ = now.settings;
        std::ostringstream msg;
        msg << "KSM on while forks run (" << forks << " now): pages_to_scan "
            << wanted.pages_to_scan << ", sleep_millisecs " << wanted.sleep_ms << " (it was run "
            << now.settings.run << ", pages_to_scan " << now.settings.pages_to_scan
            << ", sleep_millisecs " << now.settings.sleep_ms << ")";
        return msg.str();
    }
    if (forks == 0 && saved_)
        return *restore() + ": no forked VM runs";
    return std::nullopt;
}

std::optional<std::string> KsmTuner::restore() {
    if (!saved_)
        return std::nullopt;
    const KsmSettings back = *saved_;
    saved_.reset();
    write_ksm(back, dir_); // run 0 stops merging; pages merged stay merged until written
    std::ostringstream msg;
    msg << "KSM settings put back (run " << back.run << ", pages_to_scan " << back.pages_to_scan
        << ", sleep_millisecs " << back.sleep_ms << ")";
    return msg.str();
}

} // namespace forky
