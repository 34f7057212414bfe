#include "ksm.hpp"

#include "errors.hpp"

#include <fcntl.h>
#include <sys/file.h>
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

void require_local_uri(const std::string& uri) {
    if (!is_local_uri(uri))
        throw UsageError("Memory figures come from this machine's /proc and " +
                         std::string(default_ksm_dir) + ", not from '" + uri +
                         "': ask that host's forkyd (forky --server) or run forky there");
}

MemoryStats host_memory_stats(Host& host) {
    require_local_uri(host.options().uri);
    return memory_stats(vm_list(host), qemu_processes(), read_ksm());
}

bool is_local_uri(const std::string& uri) {
    const auto scheme = uri.find("://");
    return scheme != std::string::npos && uri.compare(scheme + 3, 1, "/") == 0;
}

namespace {

// This process as a holder: its id and start time (an id alone may be reused).
std::string holder_id(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(in, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos)
        return {};
    std::istringstream fields(stat.substr(close + 2));
    std::string f;
    for (int i = 3; i <= 22 && fields >> f; ++i)
        if (i == 22)
            return std::to_string(pid) + " " + f;
    return {};
}

struct KsmState {
    std::optional<KsmSettings> found; // before any forkyd took KSM
    std::vector<std::string> holders; // "PID STARTTIME" of live holders
};

// The state file, locked while it lives.
class LockedState {
public:
    explicit LockedState(const fs::path& file) : file_(file) {
        std::error_code ec;
        fs::create_directories(file.parent_path(), ec);
        fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0)
            throw StorageError("Cannot open and lock " + file.string() + ": " +
                               std::strerror(errno));
    }
    LockedState(const LockedState&) = delete;
    LockedState& operator=(const LockedState&) = delete;
    ~LockedState() {
        if (fd_ >= 0)
            ::close(fd_); // unlocks
    }
    KsmState read() const {
        KsmState st;
        std::ifstream in(file_);
        std::string word;
        while (in >> word) {
            if (word == "found") {
                KsmSettings k;
                if (in >> k.run >> k.pages_to_scan >> k.sleep_ms)
                    st.found = k;
            } else if (word == "holder") {
                std::string pid, start;
                if (in >> pid >> start &&
                    pid.find_first_not_of("0123456789") == std::string::npos &&
                    holder_id(static_cast<pid_t>(std::stol(pid))) == pid + " " + start)
                    st.holders.push_back(pid + " " + start); // alive still
            }
        }
        return st;
    }
    void write(const KsmState& st) const {
        std::ostringstream out;
        if (st.found)
            out << "found " << st.found->run << ' ' << st.found->pages_to_scan << ' '
                << st.found->sleep_ms << '\n';
        for (const auto& h : st.holders)
            out << "holder " << h << '\n';
        const std::string text = out.str();
        if (::ftruncate(fd_, 0) != 0 ||
            ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
            throw StorageError("Cannot write " + file_.string() + ": " + std::strerror(errno));
    }

private:
    fs::path file_;
    int fd_ = -1;
};

std::string describe(const KsmSettings& k) {
    return "run " + std::to_string(k.run) + ", pages_to_scan " + std::to_string(k.pages_to_scan) +
           ", sleep_millisecs " + std::to_string(k.sleep_ms);
}

} // namespace

std::optional<std::string> KsmTuner::update(unsigned forks) {
    if (forks > 0 && !holding_) {
        const KsmStatus now = read_ksm(dir_);
        if (!now.available)
            return std::nullopt;
        LockedState locked(state_);
        KsmState st = locked.read();
        // What was there before any forkyd, kept across a forkyd killed meanwhile.
        if (!st.found)
            st.found = now.settings;
        st.holders.push_back(holder_id(::getpid()));
        locked.write(st);
        KsmSettings wanted = wanted_;
        wanted.run = 1;
        write_ksm(wanted, dir_);
        holding_ = true;
        return "KSM on while forks run (" + std::to_string(forks) + " now): " + describe(wanted) +
               " (before forkyd: " + describe(*st.found) + ")";
    }
    if (forks == 0 && holding_)
        return *restore() + ": no forked VM runs";
    std::error_code ec;
    if (forks == 0 && !holding_ && fs::file_size(state_, ec) > 0 && !ec) {
        // A forkyd that died holding KSM: put back what it found, once nobody holds it.
        LockedState locked(state_);
        KsmState st = locked.read();
        if (st.found && st.holders.empty()) {
            write_ksm(*st.found, dir_);
            locked.write({}); // emptied, never removed: a waiter's lock stays on this file
            return "KSM settings put back (" + describe(*st.found) +
                   "): a forkyd that held them is gone";
        }
    }
    return std::nullopt;
}

std::optional<std::string> KsmTuner::restore() {
    if (!holding_)
        return std::nullopt;
    holding_ = false;
    LockedState locked(state_);
    KsmState st = locked.read();
    const std::string me = holder_id(::getpid());
    st.holders.erase(std::remove(st.holders.begin(), st.holders.end(), me), st.holders.end());
    if (!st.holders.empty()) {
        locked.write(st);
        return "KSM left on: " + std::to_string(st.holders.size()) + " other forkyd(s) hold it";
    }
    const KsmSettings back = st.found.value_or(KsmSettings{});
    write_ksm(back, dir_); // run 0 stops merging; pages merged stay merged until written
    locked.write({});
    return "KSM settings put back (" + describe(back) + ")";
}

std::uint64_t rss_bytes(Host& host, const std::string& vm) {
    DomainPtr dom = host.domain(vm);
    virDomainMemoryStatStruct stats[VIR_DOMAIN_MEMORY_STAT_NR];
    int n = lv_check(virDomainMemoryStats(dom.get(), stats, VIR_DOMAIN_MEMORY_STAT_NR, 0),
                     "Failed to read the memory statistics of VM '" + vm + "'");
    for (int i = 0; i < n; ++i)
        if (stats[i].tag == VIR_DOMAIN_MEMORY_STAT_RSS)
            return stats[i].val * 1024;
    return 0;
}

} // namespace forky
