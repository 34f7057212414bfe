#include "vm_lock.hpp"

#include "errors.hpp"
#include "log.hpp"

#include <libvirt/virterror.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace forky {

namespace {

constexpr std::uint64_t journal_capacity = 64 * 1024;
constexpr std::string_view journal_magic = "forky-journal 1";
constexpr std::string_view lock_suffix = ".lock";

std::string this_host() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    return name;
}

// Field 22 of /proc/PID/stat: the start time, which tells a reused pid apart.
unsigned long long process_start(long pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto paren = stat.rfind(')');
    if (paren == std::string::npos)
        return 0;
    std::istringstream fields(stat.substr(paren + 2));
    std::string field;
    for (int i = 3; i <= 22 && fields >> field; ++i) {
        if (i == 22)
            return std::stoull(field);
    }
    return 0;
}

std::int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// libvirt refuses to write or delete a volume while another client streams it ("volume
// is still in use"): a waiter reading the journal holds it for a moment. Try again.
template <typename F>
void in_use_retry(F&& f) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        try {
            f();
            return;
        } catch (const ConflictError&) {
            if (std::chrono::steady_clock::now() >= deadline)
                throw;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// Whether the lock volume still carries the journal of `holder`: a holder that was seen
// dead may only have exited after releasing the lock; a dead one cannot release it.
bool still_held_by(Host& host, const std::string& lock, const Journal& holder) {
    try {
        Journal now = Journal::decode(host.read_volume_range(lock, 0, journal_capacity));
        return now.holder_host == holder.holder_host && now.holder_pid == holder.holder_pid &&
               now.holder_start == holder.holder_start;
    } catch (const Error&) {
        return false;
    }
}

} // namespace

std::string lock_volume_name(const std::string& vm) {
    return vm + std::string(lock_suffix);
}

std::string Journal::encode() const {
    std::ostringstream out;
    out << journal_magic << '\n'
        << "operation " << operation << '\n'
        << "vm " << vm << '\n'
        << "holder " << holder_host << ' ' << holder_pid << ' ' << holder_start << '\n'
        << "since " << since << '\n';
    for (const auto& [name, uuid] : children)
        out << "child " << name << ' ' << uuid << '\n';
    for (const auto& v : volumes)
        out << "volume " << v << '\n';
    return out.str();
}

Journal Journal::decode(std::string_view text) {
    Journal j;
    std::istringstream in(std::string(text.substr(0, text.find('\0'))));
    std::string line;
    if (!std::getline(in, line) || line != journal_magic)
        return j;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string key;
        f >> key;
        if (key == "operation")
            f >> j.operation;
        else if (key == "vm")
            f >> j.vm;
        else if (key == "holder")
            f >> j.holder_host >> j.holder_pid >> j.holder_start;
        else if (key == "since")
            f >> j.since;
        else if (key == "child") {
            std::string name;
            std::string uuid;
            f >> name >> uuid;
            j.children.emplace_back(name, uuid);
        } else if (key == "volume") {
            std::string v;
            f >> v;
            j.volumes.push_back(v);
        }
    }
    return j;
}

bool Journal::holder_alive(std::chrono::seconds stale_after) const {
    if (holder_host == this_host())
        return holder_pid > 0 && process_start(holder_pid) == holder_start;
    return now_seconds() - since < stale_after.count();
}

VmLock::VmLock(Host& host, Journal journal) : host_(&host), journal_(std::move(journal)) {}

VmLock::VmLock(VmLock&& other) noexcept
    : host_(other.host_), journal_(std::move(other.journal_)), held_(other.held_),
      journaling_(other.journaling_) {
    other.held_ = false;
}

VmLock::~VmLock() {
    release();
}

VmLock VmLock::acquire(Host& host, const std::string& vm, const std::string& operation,
                       std::chrono::milliseconds wait) {
    Journal j;
    j.operation = operation;
    j.vm = vm;
    j.holder_host = this_host();
    j.holder_pid = ::getpid();
    j.holder_start = process_start(j.holder_pid);
    j.since = now_seconds();
    VmLock lock(host, std::move(j));
    const std::string name = lock_volume_name(vm);
    auto deadline = std::chrono::steady_clock::now() + wait;
    bool told = false;
    Journal other;
    auto next_read = std::chrono::steady_clock::now();
    for (;;) {
        StorageVolPtr vol(virStorageVolCreateXML(
            host.pool(),
            ("<volume><name>" + name + "</name><capacity unit='bytes'>" +
             std::to_string(journal_capacity) +
             "</capacity><allocation>0</allocation><target><format type='raw'/></target>"
             "</volume>")
                .c_str(),
            0));
        if (vol) {
            lock.held_ = true;
            lock.write();
            return lock;
        }
        expect_absent(VIR_ERR_STORAGE_VOL_EXIST, "Failed to lock VM '" + vm + "'");
        // Read the holder's journal now and then, not at every try: a read keeps the
        // volume busy for the holder's own writes (which retry, see in_use_retry).
        const auto now = std::chrono::steady_clock::now();
        bool fresh = false;
        if (now >= next_read || now >= deadline) {
            next_read = now + std::chrono::seconds(1);
            try {
                other = Journal::decode(host.read_volume_range(name, 0, journal_capacity));
                fresh = true;
            } catch (const NotFoundError&) {
                continue; // released meanwhile
            } catch (const Error&) {
                // being written or just released: look again shortly
            }
        }
        // Only what was read just now says whether the holder is gone: the lock may have
        // changed hands since an older read.
        if (fresh && !other.holder_host.empty() && !other.holder_alive() &&
            still_held_by(host, name, other))
            throw ConflictError("VM '" + vm + "' is locked by a " + other.operation +
                                " of process " + std::to_string(other.holder_pid) + " on '" +
                                other.holder_host +
                                "' that is gone; run 'forky gc' to undo what it left");
        if (std::chrono::steady_clock::now() >= deadline)
            throw ConflictError("VM '" + vm + "' is busy: a " + other.operation + " by process " +
                                std::to_string(other.holder_pid) + " on '" + other.holder_host +
                                "' holds its lock");
        if (!told) {
            logger("lock")->info("Waiting for the {} of VM '{}' by process {} to finish",
                                 other.operation, vm, other.holder_pid);
            told = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

void VmLock::write() {
    if (!journaling_)
        return;
    std::string text = journal_.encode();
    if (text.size() >= journal_capacity)
        throw Error("The journal of VM '" + journal_.vm + "' is full");
    try {
        in_use_retry([&] { host_->write_volume(lock_volume_name(journal_.vm), 0, text + '\0'); });
    } catch (const Error& e) {
        if (e.libvirt_code() != VIR_ERR_NO_SUPPORT)
            throw;
        // The lock still excludes; only gc's undo of a killed operation is lost.
        logger("lock")->warn("This storage driver cannot write forky's journal: {}", e.what());
        journaling_ = false;
    }
}

void VmLock::record_child(const std::string& name, const std::string& uuid) {
    journal_.children.emplace_back(name, uuid);
    write();
}

void VmLock::record_volume(const std::string& name) {
    journal_.volumes.push_back(name);
    write();
}

void VmLock::release() noexcept {
    if (!held_)
        return;
    held_ = false;
    try {
        in_use_retry([&] { host_->delete_volume(lock_volume_name(journal_.vm)); });
    } catch (const std::exception& e) {
        logger("lock")->error("Failed to release the lock of VM '{}': {}", journal_.vm, e.what());
    }
}

std::vector<Journal> read_journals(Host& host) {
    std::vector<Journal> out;
    for (const auto& v : host.volumes()) {
        if (v.name.size() <= lock_suffix.size() ||
            v.name.compare(v.name.size() - lock_suffix.size(), lock_suffix.size(), lock_suffix) !=
                0)
            continue;
        Journal j;
        try {
            j = Journal::decode(host.read_volume_range(v.name, 0, journal_capacity));
        } catch (const Error&) {
            j.readable = false;
        }
        if (j.vm.empty())
            j.vm = v.name.substr(0, v.name.size() - lock_suffix.size());
        out.push_back(std::move(j));
    }
    return out;
}

} // namespace forky
