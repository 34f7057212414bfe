#include "vm_lock.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "log.hpp"
#include "names.hpp"

#include <libvirt/virterror.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace forky {

namespace {

constexpr std::uint64_t journal_capacity = 64 * 1024; // grows with reserve()
constexpr std::string_view journal_magic = "forky-journal 2";
constexpr std::string_view lock_suffix = ".lock";

// For people reading a journal; one word, as the journal's lines are split on blanks.
std::string this_host() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    std::string host = name;
    for (char& c : host)
        if (std::isspace(static_cast<unsigned char>(c)))
            c = '_';
    return host.empty() ? "-" : host;
}

std::string first_line_of(const char* file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    return line;
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

bool same_holder(const Journal& a, const Journal& b) {
    return a.holder_id == b.holder_id && a.holder_pid == b.holder_pid &&
           a.holder_start == b.holder_start;
}

bool is_uuid(const std::string& s) {
    if (s.size() != 36)
        return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-' : !std::isxdigit(static_cast<unsigned char>(c)))
            return false;
    }
    return true;
}

bool is_volume_name(const std::string& s) {
    if (s.empty() || s.size() > 255 || s.front() == '.')
        return false;
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_')
            return false;
    return true;
}

} // namespace

const std::string& this_machine_id() {
    static const std::string id = [] {
        std::string machine = first_line_of("/etc/machine-id");
        if (machine.empty())
            machine = first_line_of("/var/lib/dbus/machine-id");
        char ns[64] = {};
        ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
        std::string pidns = n > 0 ? std::string(ns, static_cast<std::size_t>(n)) : "";
        // "pid:[4026531836]" -> "4026531836"
        auto open = pidns.find('[');
        if (open != std::string::npos)
            pidns = pidns.substr(open + 1, pidns.size() - open - 2);
        return (machine.empty() ? "-" : machine) + ":" +
               first_line_of("/proc/sys/kernel/random/boot_id") + ":" + pidns;
    }();
    return id;
}

std::string lock_volume_name(const std::string& vm) {
    return vm + std::string(lock_suffix);
}

std::string Journal::encode() const {
    std::ostringstream out;
    out << journal_magic << '\n'
        << "operation " << operation << '\n'
        << "vm " << vm << '\n'
        << "holder " << holder_host << ' ' << holder_id << ' ' << holder_pid << ' ' << holder_start
        << '\n'
        << "since " << since << '\n'
        << "op " << op << '\n';
    if (!paused.empty())
        out << "paused " << paused << '\n';
    if (resumed)
        out << "resumed\n";
    if (committed)
        out << "committed\n";
    for (const auto& [name, uuid] : children)
        out << "child " << name << ' ' << uuid << '\n';
    for (const auto& v : volumes)
        out << "volume " << v << '\n';
    for (const auto& m : mdevs)
        out << "mdev " << m << '\n';
    if (!detached.empty())
        out << "detached " << detached << '\n';
    if (reattached)
        out << "reattached\n";
    return out.str();
}

namespace {
// The warm pool a lock is of ("NAME.warmpool" -> NAME), or nullopt for a VM's.
std::optional<std::string_view> warm_pool_of(std::string_view name) {
    if (name.size() > warm_pool_suffix.size() && name.ends_with(warm_pool_suffix))
        return name.substr(0, name.size() - warm_pool_suffix.size());
    return std::nullopt;
}

// What a lock is taken on: a VM's name, or a warm pool's.
bool lockable_name(const std::string& name) {
    return !name_problem(warm_pool_of(name).value_or(name));
}

// What a lock is of, for messages: "VM 'web'", or "warm pool 'sandbox'".
std::string subject(const std::string& name) {
    if (auto pool = warm_pool_of(name))
        return "warm pool '" + std::string(*pool) + "'";
    return "VM '" + name + "'";
}

// "a fork", "an acquire".
std::string with_article(const std::string& operation) {
    const bool vowel = !operation.empty() &&
                       std::string_view("aeiou").find(operation[0]) != std::string_view::npos;
    return (vowel ? "an " : "a ") + operation;
}
} // namespace

Journal Journal::decode(std::string_view raw) {
    Journal j;
    const std::string_view text = raw.substr(0, raw.find('\0'));
    if (text.empty())
        return j; // blank: nothing written yet
    auto malformed = [&j](int line, const std::string& why) {
        j = Journal();
        j.state = State::malformed;
        j.problem = line > 0 ? "line " + std::to_string(line) + ": " + why : why;
        return j;
    };
    std::istringstream in{std::string(text)};
    std::string line;
    std::getline(in, line);
    if (line != journal_magic)
        return malformed(1, "not a forky journal (expected '" + std::string(journal_magic) + "')");
    j.state = State::valid;
    bool has_holder = false;
    for (int n = 2; std::getline(in, line); ++n) {
        std::istringstream f(line);
        std::string key;
        f >> key;
        std::string a;
        std::string b;
        bool ok = true;
        if (key == "operation") {
            ok = static_cast<bool>(f >> j.operation);
        } else if (key == "vm") {
            ok = f >> j.vm && lockable_name(j.vm);
        } else if (key == "holder") {
            ok = static_cast<bool>(f >> j.holder_host >> j.holder_id >> j.holder_pid >>
                                   j.holder_start) &&
                 j.holder_pid > 0;
            has_holder = ok;
        } else if (key == "since") {
            ok = static_cast<bool>(f >> j.since);
        } else if (key == "paused") {
            ok = f >> j.paused && is_uuid(j.paused);
        } else if (key == "op") {
            ok = f >> j.op && is_uuid(j.op);
        } else if (key == "resumed") {
            j.resumed = true;
        } else if (key == "committed") {
            j.committed = true;
        } else if (key == "mdev") {
            ok = f >> a && is_uuid(a);
            if (ok)
                j.mdevs.push_back(a);
        } else if (key == "detached") {
            ok = f >> j.detached && is_uuid(j.detached);
        } else if (key == "reattached") {
            j.reattached = true;
        } else if (key == "child") {
            ok = f >> a >> b && !name_problem(a) && is_uuid(b);
            if (ok)
                j.children.emplace_back(a, b);
        } else if (key == "volume") {
            ok = f >> a && is_volume_name(a);
            if (ok)
                j.volumes.push_back(a);
        } else {
            return malformed(n, "unknown entry '" + key + "'");
        }
        std::string extra;
        if (!ok || f >> extra)
            return malformed(n, "malformed '" + key + "' entry");
    }
    if (j.operation.empty() || j.vm.empty() || !has_holder || j.since <= 0 || j.op.empty())
        return malformed(0, "operation, vm, holder, since or op is missing");
    return j;
}

bool Journal::holder_alive(std::chrono::seconds stale_after) const {
    if (holder_id == this_machine_id())
        return holder_pid > 0 && process_start(holder_pid) == holder_start;
    // Another machine: alive until stale. A start far in the future is a wrong clock or a
    // forgery, never a reason to wait forever.
    const std::int64_t age = now_seconds() - since;
    return age > -300 && age < stale_after.count();
}

VmLock::VmLock(Host& host, Journal journal)
    : host_(&host), journal_(std::move(journal)), capacity_(journal_capacity) {}

VmLock::VmLock(VmLock&& other) noexcept
    : host_(other.host_), journal_(std::move(other.journal_)), capacity_(other.capacity_),
      held_(other.held_), journaling_(other.journaling_) {
    other.held_ = false;
}

VmLock::~VmLock() {
    release();
}

bool VmLock::try_create(Host& host, const std::string& vm) {
    const std::string name = lock_volume_name(vm);
    StorageVolPtr vol(virStorageVolCreateXML(
        host.pool(),
        ("<volume><name>" + name + "</name><capacity unit='bytes'>" +
         std::to_string(journal_capacity) +
         "</capacity><allocation>0</allocation><target><format type='raw'/></target>"
         "</volume>")
            .c_str(),
        0));
    if (vol)
        return true;
    expect_absent(VIR_ERR_STORAGE_VOL_EXIST, "Failed to lock VM '" + vm + "'");
    return false;
}

namespace {
Journal new_journal(const std::string& vm, const std::string& operation) {
    Journal j;
    j.state = Journal::State::valid;
    j.operation = operation;
    j.vm = vm;
    j.holder_host = this_host();
    j.holder_id = this_machine_id();
    j.holder_pid = ::getpid();
    j.holder_start = process_start(j.holder_pid);
    j.since = now_seconds();
    j.op = random_uuid();
    return j;
}
} // namespace

std::optional<VmLock> VmLock::try_acquire(Host& host, const std::string& vm,
                                          const std::string& operation) {
    if (!try_create(host, vm))
        return std::nullopt;
    VmLock lock(host, new_journal(vm, operation));
    lock.held_ = true;
    lock.write();
    return lock;
}

VmLock VmLock::acquire(Host& host, const std::string& vm, const std::string& operation,
                       std::chrono::milliseconds wait, const CancelToken& cancel) {
    VmLock lock(host, new_journal(vm, operation));
    const std::string name = lock_volume_name(vm);
    const std::string what = "Waiting for the lock of " + subject(vm);
    auto deadline = std::chrono::steady_clock::now() + wait;
    bool told = false;
    Journal other;
    auto next_read = std::chrono::steady_clock::now();
    for (;;) {
        cancel.check(what);
        if (try_create(host, vm)) {
            lock.held_ = true;
            lock.write();
            return lock;
        }
        // Read the holder's journal now and then, not at every try: a read keeps the
        // volume busy for the holder's own writes (which retry, see in_use_retry).
        const auto now = std::chrono::steady_clock::now();
        bool fresh = false;
        if (now >= next_read || now >= deadline) {
            next_read = now + std::chrono::seconds(1);
            Journal read = read_journal(host, name);
            if (read.state == Journal::State::unreadable && read.problem == "gone")
                continue; // released meanwhile
            if (read.state == Journal::State::valid || read.state == Journal::State::malformed) {
                other = read;
                fresh = true;
            }
        }
        if (fresh) {
            // A lock forky made belongs to the pool's owner (libvirtd made it); one of
            // another user's was planted, and is nobody's to act on.
            const long long pool_owner = host.pool_owner();
            auto info = host.volume_info(name);
            if (info && pool_owner >= 0 && info->owner >= 0 && info->owner != pool_owner)
                throw ConflictError(subject(vm) + " is locked by '" + name +
                                    "', which belongs to uid " + std::to_string(info->owner) +
                                    ", not to the pool's owner; forky does not act on it: "
                                    "look at it and remove it with 'virsh vol-delete " +
                                    name + " --pool " + host.options().pool + "'");
        }
        if (fresh && other.state == Journal::State::malformed)
            throw ConflictError(subject(vm) + " is locked by '" + name +
                                "', whose journal does not parse (" + other.problem +
                                "); forky does not act on it: look at it and remove it with "
                                "'virsh vol-delete " +
                                name + " --pool " + host.options().pool + "'");
        // Only what was read just now says whether the holder is gone: the lock may have
        // changed hands since an older read.
        if (fresh && !other.holder_alive()) {
            Journal again = read_journal(host, name);
            if (again.state == Journal::State::valid && same_holder(again, other))
                throw ConflictError(subject(vm) + " is locked by " + with_article(other.operation) +
                                    " of process " + std::to_string(other.holder_pid) + " on '" +
                                    other.holder_host +
                                    "' that is gone; run 'forky gc' to undo what it left");
        }
        if (std::chrono::steady_clock::now() >= deadline)
            throw ConflictError(subject(vm) + " is busy: " +
                                (other.operation.empty()
                                     ? std::string("another forky holds its lock")
                                     : with_article(other.operation) + " by process " +
                                           std::to_string(other.holder_pid) + " on '" +
                                           other.holder_host + "' holds its lock"));
        if (!told) {
            logger("lock")->info("Waiting for the {} of VM '{}' by process {} to finish",
                                 other.operation, vm, other.holder_pid);
            told = true;
        }
        cancel.sleep_for(std::chrono::milliseconds(100), what);
    }
}

void VmLock::reserve(std::size_t bytes) {
    if (!journaling_ || bytes < capacity_)
        return;
    const std::uint64_t wanted = (bytes / journal_capacity + 1) * journal_capacity;
    host_->resize_volume(lock_volume_name(journal_.vm), wanted);
    capacity_ = wanted;
}

void VmLock::write() {
    if (!journaling_)
        return;
    std::string text = journal_.encode();
    if (text.size() >= capacity_)
        throw Error("The journal of VM '" + journal_.vm + "' is full (" +
                    std::to_string(capacity_) + " bytes); the operation did not reserve room");
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
    // Room for more where the operation could not know ahead (a chain shipped, images).
    reserve(journal_.encode().size() + 1);
    write();
}

void VmLock::record_mdev(const std::string& uuid) {
    journal_.mdevs.push_back(uuid);
    reserve(journal_.encode().size() + 1);
    write();
}

void VmLock::record_detached(const std::string& vm_uuid) {
    journal_.detached = vm_uuid;
    journal_.reattached = false;
    reserve(journal_.encode().size() + 16);
    write();
}

void VmLock::record_reattached() {
    journal_.reattached = true;
    write();
}

void VmLock::record_paused(const std::string& uuid) {
    journal_.paused = uuid;
    journal_.resumed = false;
    write();
}

void VmLock::record_resumed() {
    journal_.resumed = true;
    write();
}

void VmLock::record_committed() {
    journal_.committed = true;
    write();
}

void VmLock::release() noexcept {
    if (!held_)
        return;
    held_ = false;
    for (int attempt = 0; attempt < 2; ++attempt) {
        try {
            in_use_retry([&] { host_->delete_volume(lock_volume_name(journal_.vm)); });
            return;
        } catch (const std::exception& e) {
            // The connection may have dropped: once more on a fresh one.
            if (attempt == 0 && host_->reconnect_if_lost())
                continue;
            logger("lock")->error("Failed to release the lock of VM '{}': {}; 'forky gc' "
                                  "releases it{}",
                                  journal_.vm, e.what(),
                                  journal_.committed ? " (the operation is complete)" : "");
        }
    }
}

Journal read_journal(Host& host, const std::string& lock) {
    Journal j;
    try {
        j = Journal::decode(host.read_volume(lock, 0).data);
    } catch (const NotFoundError&) {
        j.state = Journal::State::unreadable;
        j.problem = "gone";
    } catch (const Error& e) {
        j.state = Journal::State::unreadable;
        j.problem = e.what();
    }
    j.lock_volume = lock;
    return j;
}

std::vector<Journal> read_journals(Host& host) {
    std::vector<Journal> out;
    for (const auto& v : host.volumes()) {
        if (v.name.size() <= lock_suffix.size() ||
            v.name.compare(v.name.size() - lock_suffix.size(), lock_suffix.size(), lock_suffix) !=
                0)
            continue;
        const std::string stem = v.name.substr(0, v.name.size() - lock_suffix.size());
        if (!lockable_name(stem))
            continue; // not a name forky gives a lock
        Journal j = read_journal(host, v.name);
        if (j.state == Journal::State::unreadable && j.problem == "gone")
            continue;
        if (j.vm.empty())
            j.vm = stem;
        j.owner = v.owner;
        out.push_back(std::move(j));
    }
    return out;
}

} // namespace forky
