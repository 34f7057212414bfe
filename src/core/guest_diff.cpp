// guest_diff: one libguestfs appliance, every image added read-only, each filesystem
// mounted on both sides (/a<i> before, /b<i> after) and compared by listing both sides:
// find0 for the names (one round trip), then lstatnslist/readlinklist per directory (they
// take bare names within one directory), in batches. Under emulation each round trip into
// the appliance costs some 10-20 ms, so nothing here is done per file except the SHA-256
// (batched per subtree where that is cheaper) and byte comparisons of files whose
// metadata says they may differ. The cost thus grows with the number of directories.
#include "guest_diff.hpp"

#include "errors.hpp"

#include <guestfs.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stop_token>
#include <thread>
#include <unistd.h>

namespace forky {

const char* to_string(FileChange::Kind k) {
    switch (k) {
    case FileChange::Kind::added:
        return "added";
    case FileChange::Kind::removed:
        return "removed";
    case FileChange::Kind::changed:
        return "changed";
    }
    return "changed";
}

namespace {

using Clock = std::chrono::steady_clock;

// A libguestfs call failed after the appliance started: caught per disk (the disk gets a
// problem, the others are still compared).
class GuestfsFailure : public Error {
public:
    using Error::Error;
};

// --- handles for what libguestfs returns -------------------------------------------------

struct HandleCloser {
    void operator()(guestfs_h* g) const { guestfs_close(g); }
};
using HandlePtr = std::unique_ptr<guestfs_h, HandleCloser>;

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};
using CString = std::unique_ptr<char, FreeDeleter>;

// A NULL-terminated char** whose strings and array the caller frees.
struct StringListDeleter {
    void operator()(char** list) const {
        if (list == nullptr)
            return;
        for (char** p = list; *p != nullptr; ++p)
            std::free(*p);
        std::free(list);
    }
};
using StringList = std::unique_ptr<char*, StringListDeleter>;

struct StatnsListDeleter {
    void operator()(guestfs_statns_list* l) const { guestfs_free_statns_list(l); }
};
using StatnsList = std::unique_ptr<guestfs_statns_list, StatnsListDeleter>;

std::vector<std::string> to_vector(const StringList& list) {
    std::vector<std::string> out;
    for (char** p = list.get(); p != nullptr && *p != nullptr; ++p)
        out.emplace_back(*p);
    return out;
}

// "<context>: <libguestfs's last message>"
std::string failure_message(guestfs_h* g, const std::string& context) {
    const char* msg = guestfs_last_error(g);
    return context + ": " + (msg != nullptr ? msg : "unknown libguestfs error");
}

template <typename T>
T* check(guestfs_h* g, T* result, const std::string& context) {
    if (result == nullptr)
        throw GuestfsFailure(failure_message(g, context));
    return result;
}
inline int check(guestfs_h* g, int rc, const std::string& context) {
    if (rc < 0)
        throw GuestfsFailure(failure_message(g, context));
    return rc;
}

// A local temporary file, removed when it goes out of scope.
class TempFile {
public:
    TempFile() {
        const char* dir = std::getenv("TMPDIR");
        path_ =
            std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/forky-guest-diff-XXXXXX";
        const int fd = mkstemp(path_.data());
        if (fd < 0)
            throw Error("Failed to create a temporary file in '" +
                        path_.substr(0, path_.rfind('/')) + "'");
        ::close(fd);
    }
    ~TempFile() { std::remove(path_.c_str()); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// --- the appliance's start ---------------------------------------------------------------

// Calls `progress` about once a second from its own thread until destroyed.
class Heartbeat {
public:
    Heartbeat(const GuestDiffOptions& options, std::string stage, Clock::time_point t0) {
        if (!options.progress)
            return;
        thread_ = std::jthread([&options, stage = std::move(stage), t0](std::stop_token st) {
            std::mutex m;
            std::condition_variable_any cv;
            std::unique_lock lock(m);
            while (!st.stop_requested()) {
                options.progress(stage, std::chrono::duration<double>(Clock::now() - t0).count());
                cv.wait_for(lock, st, std::chrono::seconds(1), [] { return false; });
            }
        });
    }
    // jthread's destructor asks it to stop and joins.

private:
    std::jthread thread_;
};

HandlePtr open_handle(const GuestDiffOptions& options) {
    HandlePtr g(guestfs_create());
    if (!g)
        throw Error("Failed to create a libguestfs handle (is libguestfs installed?)");
    // Errors are read with guestfs_last_error, never printed.
    guestfs_set_error_handler(g.get(), nullptr, nullptr);
    // Warnings too would go to stderr without a callback for them.
    guestfs_set_event_callback(
        g.get(),
        [](guestfs_h*, void*, uint64_t, int, int, const char*, size_t, const uint64_t*, size_t) {},
        GUESTFS_EVENT_WARNING, 0, nullptr);
    if (options.force_tcg && std::getenv("LIBGUESTFS_BACKEND_SETTINGS") == nullptr) {
        char force_tcg[] = "force_tcg";
        char* settings[] = {force_tcg, nullptr};
        if (guestfs_set_backend(g.get(), "direct") < 0 ||
            guestfs_set_backend_settings(g.get(), settings) < 0)
            throw Error(failure_message(g.get(), "Failed to select libguestfs's emulated "
                                                 "appliance (direct backend, force_tcg)"));
    }
    return g;
}

void launch(guestfs_h* g, const GuestDiffOptions& options, Clock::time_point t0) {
    Heartbeat beat(options, "starting libguestfs's appliance", t0);
    if (guestfs_launch(g) < 0) {
        std::string msg = failure_message(g, "Failed to start libguestfs's appliance");
        msg += ". Run 'libguestfs-test-tool' to see why";
        if (!options.force_tcg)
            msg += "; where KVM is absent or unusable (a nested VM), try emulation "
                   "(LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg)";
        throw Error(msg);
    }
}

// --- filesystems -------------------------------------------------------------------------

struct Filesystem {
    std::string mountable; // "/dev/sda1"
    std::string type;      // "ext4"
};

// The filesystems on each appliance device, keyed by partition ("" = whole device).
struct DeviceFilesystems {
    std::map<std::string, Filesystem> by_partition;
    // What makes the disk unreadable file by file, for the problem's sentence:
    // "partition 2 (crypto_LUKS)". `encrypted` says which sentence.
    std::vector<std::string> unreadable;
    bool encrypted = false;
};

std::map<std::string, DeviceFilesystems>
filesystems_by_device(guestfs_h* g, const std::vector<std::string>& devices) {
    // Every partition of the appliance's disks: its disk and number.
    struct Partition {
        std::string device, number;
        bool seen = false; // among list_filesystems's answers (whatever the type)
    };
    std::map<std::string, Partition> partitions;
    {
        StringList list(check(g, guestfs_list_partitions(g), "Failed to list the partitions"));
        for (const auto& p : to_vector(list)) {
            CString dev(check(g, guestfs_part_to_dev(g, p.c_str()),
                              "Failed to find the disk of partition " + p));
            const int n = check(g, guestfs_part_to_partnum(g, p.c_str()),
                                "Failed to find the number of partition " + p);
            partitions[p] = Partition{dev.get(), std::to_string(n)};
        }
    }

    std::map<std::string, DeviceFilesystems> out;
    auto where = [](const std::string& partition) {
        return partition.empty() ? std::string("the whole disk") : "partition " + partition;
    };
    StringList fs(check(g, guestfs_list_filesystems(g), "Failed to list the filesystems"));
    const auto pairs = to_vector(fs); // mountable, type, mountable, type, ...
    for (std::size_t i = 0; i + 1 < pairs.size(); i += 2) {
        const std::string& mountable = pairs[i];
        const std::string& type = pairs[i + 1];
        std::string device, partition;
        if (std::find(devices.begin(), devices.end(), mountable) != devices.end()) {
            device = mountable;
        } else if (auto it = partitions.find(mountable); it != partitions.end()) {
            it->second.seen = true;
            device = it->second.device;
            partition = it->second.number;
        } else {
            // An LVM volume, a btrfs subvolume, an md array: on no single partition. The
            // partitions that hold them are dealt with below.
            continue;
        }
        auto& d = out[device];
        if (type == "crypto_LUKS") {
            d.encrypted = true;
            d.unreadable.push_back(where(partition) + " (crypto_LUKS)");
        } else if (type == "unknown" || type == "swap") {
            // No files to compare (swap, a BIOS boot partition, raw data): skipped.
        } else {
            d.by_partition[partition] = Filesystem{mountable, type};
        }
    }

    // A partition that list_filesystems does not show holds an LVM physical volume, a RAID
    // member or an extended partition's table; the first two hide files this comparison
    // would miss (volumes on both sides also share their UUIDs, which LVM cannot sort out).
    for (const auto& [name, p] : partitions) {
        if (p.seen)
            continue;
        CString type(guestfs_vfs_type(g, name.c_str())); // fails for an extended partition
        if (type && *type.get() != '\0')
            out[p.device].unreadable.push_back(where(p.number) + " (" + type.get() + ")");
    }
    // Likewise a whole disk with neither filesystem nor partition (an LVM physical volume
    // without a partition table); a blank disk has no type.
    for (const auto& dev : devices) {
        if (out.count(dev) != 0)
            continue;
        const bool partitioned = std::any_of(partitions.begin(), partitions.end(),
                                             [&](const auto& p) { return p.second.device == dev; });
        if (partitioned)
            continue;
        CString type(guestfs_vfs_type(g, dev.c_str()));
        if (type && *type.get() != '\0')
            out[dev].unreadable.push_back(where("") + " (" + type.get() + ")");
    }
    return out;
}

std::string partition_list(const std::map<std::string, Filesystem>& m) {
    std::string s;
    for (const auto& [part, fs] : m) {
        if (!s.empty())
            s += ", ";
        s += part.empty() ? "whole disk" : part;
        s += " (" + fs.type + ")";
    }
    return s.empty() ? "none" : s;
}

void mount_ro(guestfs_h* g, const Filesystem& fs, const std::string& where) {
    int rc;
    if (fs.type == "xfs") {
        // Both sides share the filesystem's UUID. The drive's overlay is writable, so a
        // dirty log is replayed; norecovery is the fallback when replay fails.
        rc = guestfs_mount_options(g, "ro,nouuid", fs.mountable.c_str(), where.c_str());
        if (rc < 0)
            rc = guestfs_mount_options(g, "ro,nouuid,norecovery", fs.mountable.c_str(),
                                       where.c_str());
    } else {
        // ext4 with a dirty journal is replayed into the overlay too.
        rc = guestfs_mount_ro(g, fs.mountable.c_str(), where.c_str());
    }
    check(g, rc, "cannot mount " + fs.mountable + " (" + fs.type + ")");
}

// --- listing one side --------------------------------------------------------------------

struct Entry {
    std::string type;
    std::uint64_t size = 0;
    std::int64_t mode = 0; // permission bits (07777)
    std::int64_t uid = 0, gid = 0;
    std::int64_t mtime_sec = 0, mtime_nsec = 0, ctime_sec = 0, ctime_nsec = 0;
    std::string link; // symlinks, filled only where both sides are symlinks
};
using Listing = std::map<std::string, Entry>; // by path relative to the mount point

const char* type_name(std::int64_t mode) {
    switch (mode & 0170000) {
    case 0100000:
        return "file";
    case 0040000:
        return "directory";
    case 0120000:
        return "symlink";
    case 0060000:
        return "block";
    case 0020000:
        return "char";
    case 0010000:
        return "fifo";
    case 0140000:
        return "socket";
    default:
        return "unknown";
    }
}

// Calls f(directory, names, paths) for batches of `paths` (relative to `root`) that share a
// directory: lstatnslist and readlinklist take bare file names within one directory, so
// there is one round trip per directory (or per batch of a large one). Batches are bounded
// in count and bytes (libguestfs's messages are limited to a few MiB).
template <typename F>
void by_directory(const std::string& root, const std::vector<std::string>& paths, F&& f) {
    std::map<std::string, std::vector<const std::string*>> dirs;
    for (const auto& p : paths) {
        const auto slash = p.rfind('/');
        dirs[slash == std::string::npos ? std::string() : p.substr(0, slash)].push_back(&p);
    }
    constexpr std::size_t max_names = 1000;
    constexpr std::size_t max_bytes = 1 << 20;
    for (const auto& [dir, members] : dirs) {
        const std::string directory = dir.empty() ? root : root + "/" + dir;
        const std::size_t skip = dir.empty() ? 0 : dir.size() + 1; // "dir/"
        std::vector<std::string> names;
        std::vector<const std::string*> batch_paths;
        std::size_t bytes = 0;
        auto flush = [&] {
            if (names.empty())
                return;
            std::vector<char*> argv;
            for (auto& n : names)
                argv.push_back(n.data());
            argv.push_back(nullptr);
            f(directory, argv, batch_paths);
            names.clear();
            batch_paths.clear();
            bytes = 0;
        };
        for (const std::string* p : members) {
            if (names.size() >= max_names || bytes + p->size() > max_bytes)
                flush();
            names.push_back(p->substr(skip));
            batch_paths.push_back(p);
            bytes += p->size() + 1;
        }
        flush();
    }
}

Listing list_side(guestfs_h* g, const std::string& root, const CancelToken& cancel) {
    TempFile tmp;
    check(g, guestfs_find0(g, root.c_str(), tmp.path().c_str()),
          "cannot list the files under " + root);
    std::vector<std::string> paths;
    {
        std::ifstream in(tmp.path(), std::ios::binary);
        std::string name;
        while (std::getline(in, name, '\0')) {
            // find0 writes "/dir/file" (relative to `root`, with a leading slash).
            const auto start = name.find_first_not_of('/');
            if (start != std::string::npos)
                paths.push_back(name.substr(start));
        }
    }
    Listing out;
    by_directory(
        root, paths,
        [&](const std::string& directory, std::vector<char*>& names,
            const std::vector<const std::string*>& batch_paths) {
            cancel.check("Comparing the disks' files");
            StatnsList st(check(g, guestfs_lstatnslist(g, directory.c_str(), names.data()),
                                "cannot read the attributes of the files in " + directory));
            if (st->len != batch_paths.size())
                throw GuestfsFailure("libguestfs returned " + std::to_string(st->len) +
                                     " attributes for " + std::to_string(batch_paths.size()) +
                                     " files in " + directory);
            for (std::size_t i = 0; i < batch_paths.size(); ++i) {
                const struct guestfs_statns& s = st->val[i];
                if (s.st_ino == -1) // lstatnslist's mark for a file it could not stat
                    continue;
                Entry e;
                e.type = type_name(s.st_mode);
                e.size = static_cast<std::uint64_t>(s.st_size);
                e.mode = s.st_mode & 07777;
                e.uid = s.st_uid;
                e.gid = s.st_gid;
                e.mtime_sec = s.st_mtime_sec;
                e.mtime_nsec = s.st_mtime_nsec;
                e.ctime_sec = s.st_ctime_sec;
                e.ctime_nsec = s.st_ctime_nsec;
                out.emplace(*batch_paths[i], std::move(e));
            }
        });
    return out;
}

// Reads the targets of `paths` (symlinks under `root`) into `listing`.
void read_links(guestfs_h* g, const std::string& root, const std::vector<std::string>& paths,
                Listing& listing) {
    by_directory(
        root, paths,
        [&](const std::string& directory, std::vector<char*>& names,
            const std::vector<const std::string*>& batch_paths) {
            StringList links(check(g, guestfs_readlinklist(g, directory.c_str(), names.data()),
                                   "cannot read the symbolic links in " + directory));
            const auto targets = to_vector(links);
            if (targets.size() != batch_paths.size())
                throw GuestfsFailure("libguestfs returned " + std::to_string(targets.size()) +
                                     " link targets for " + std::to_string(batch_paths.size()) +
                                     " links in " + directory);
            for (std::size_t i = 0; i < batch_paths.size(); ++i)
                listing[*batch_paths[i]].link = targets[i];
        });
}

// --- comparing ---------------------------------------------------------------------------

// SHA-256 of `paths` (sorted; regular files relative to `root`, listed in `listing`). One
// guestfs_checksum per file costs a round trip each (a fork and exec in the appliance, some
// 15 ms under emulation); where many candidates lie in a directory whose whole subtree is
// small, one guestfs_checksums_out over that directory hashes them all in a single trip.
std::map<std::string, std::string> checksums(guestfs_h* g, const std::string& root,
                                             const Listing& listing,
                                             const std::vector<std::string>& paths,
                                             const CancelToken& cancel) {
    // A round trip is taken to cost about as much as hashing this many bytes.
    constexpr std::uint64_t trip_bytes = 256 << 10;
    constexpr std::size_t min_candidates = 8;

    std::map<std::string, std::string> sums;
    // Every directory that holds a candidate somewhere below it, parents first.
    std::set<std::string> dirs;
    for (const auto& p : paths)
        for (auto slash = p.find('/'); slash != std::string::npos; slash = p.find('/', slash + 1))
            dirs.insert(p.substr(0, slash));
    if (!paths.empty())
        dirs.insert("");
    for (const auto& dir : dirs) {
        // A subtree is contiguous in sorted order: from "dir/" up to (not including) "dir0".
        const std::string lo = dir.empty() ? std::string() : dir + "/";
        const std::string hi = dir.empty() ? std::string() : dir + "0";
        const auto pfirst = std::lower_bound(paths.begin(), paths.end(), lo);
        const auto plast = dir.empty() ? paths.end() : std::lower_bound(pfirst, paths.end(), hi);
        const auto lfirst = listing.lower_bound(lo);
        const auto llast = dir.empty() ? listing.end() : listing.lower_bound(hi);
        std::size_t pending = 0;
        std::uint64_t wanted = 0;
        for (auto it = pfirst; it != plast; ++it)
            if (sums.count(*it) == 0) {
                ++pending;
                wanted += listing.at(*it).size;
            }
        if (pending < min_candidates)
            continue;
        std::uint64_t subtree = 0;
        for (auto it = lfirst; it != llast && subtree <= wanted + pending * trip_bytes; ++it)
            if (it->second.type == "file")
                subtree += it->second.size;
        if (subtree > wanted + pending * trip_bytes)
            continue;
        cancel.check("Comparing the disks' files");
        const std::string directory = dir.empty() ? root : root + "/" + dir;
        TempFile tmp;
        check(g, guestfs_checksums_out(g, "sha256", directory.c_str(), tmp.path().c_str()),
              "cannot checksum the files in " + directory);
        // sha256sum's lines: "<hex>  ./sub/file"; a name with a newline or backslash is
        // escaped (the line starts with a backslash) and left to the per-file fallback below.
        std::ifstream in(tmp.path(), std::ios::binary);
        std::string line;
        while (std::getline(in, line)) {
            const auto sep = line.find("  ");
            if (line.empty() || line[0] == '\\' || sep == std::string::npos)
                continue;
            std::string name = line.substr(sep + 2);
            if (name.rfind("./", 0) == 0)
                name.erase(0, 2);
            sums[dir.empty() ? name : dir + "/" + name] = line.substr(0, sep);
        }
    }
    for (const auto& p : paths) {
        if (sums.count(p) != 0)
            continue;
        cancel.check("Comparing the disks' files");
        const std::string path = root + "/" + p;
        CString sum(check(g, guestfs_checksum(g, "sha256", path.c_str()),
                          "cannot checksum '" + path + "'"));
        sums[p] = sum.get();
    }
    return sums;
}

std::string read_whole(guestfs_h* g, const std::string& path, std::uint64_t size) {
    constexpr int chunk = 1 << 20;
    std::string data;
    data.reserve(size);
    while (data.size() < size) {
        size_t got = 0;
        CString buf(guestfs_pread(g, path.c_str(), chunk, static_cast<int64_t>(data.size()), &got));
        check(g, buf.get(), "cannot read '" + path + "'");
        if (got == 0)
            break;
        data.append(buf.get(), got);
    }
    return data;
}

constexpr std::uint64_t max_first_difference_size = 8ull << 20;

std::optional<std::uint64_t> first_difference(guestfs_h* g, const std::string& a,
                                              const std::string& b, std::uint64_t size_a,
                                              std::uint64_t size_b) {
    if (size_a > max_first_difference_size || size_b > max_first_difference_size)
        return std::nullopt;
    const std::string da = read_whole(g, a, size_a);
    const std::string db = read_whole(g, b, size_b);
    const auto [ia, ib] = std::mismatch(da.begin(), da.end(), db.begin(), db.end());
    if (ia == da.end() && ib == db.end())
        return std::nullopt; // equal after all
    return static_cast<std::uint64_t>(ia - da.begin());
}

bool times_equal(const Entry& a, const Entry& b) {
    return a.mtime_sec == b.mtime_sec && a.mtime_nsec == b.mtime_nsec &&
           a.ctime_sec == b.ctime_sec && a.ctime_nsec == b.ctime_nsec;
}

std::vector<FileChange> compare(guestfs_h* g, const std::string& root_a, const std::string& root_b,
                                const CancelToken& cancel) {
    Listing before = list_side(g, root_a, cancel);
    Listing after = list_side(g, root_b, cancel);

    // Link targets only where both sides hold a symlink: the only place they are compared.
    std::vector<std::string> links;
    for (const auto& [path, e] : before) {
        auto it = after.find(path);
        if (e.type == "symlink" && it != after.end() && it->second.type == "symlink")
            links.push_back(path);
    }
    if (!links.empty()) {
        read_links(g, root_a, links, before);
        read_links(g, root_b, links, after);
    }

    // Files whose size, but not times, are the same on both sides: their contents decide.
    std::vector<std::string> candidates;
    for (const auto& [path, a] : before) {
        auto it = after.find(path);
        if (it != after.end() && a.type == "file" && it->second.type == "file" &&
            a.size == it->second.size && !times_equal(a, it->second))
            candidates.push_back(path);
    }
    const auto sums_a = checksums(g, root_a, before, candidates, cancel);
    const auto sums_b = checksums(g, root_b, after, candidates, cancel);

    std::vector<FileChange> changes;
    auto ia = before.begin();
    auto ib = after.begin();
    // Both maps are sorted by relative path, so a merge sorts the changes by "/" + path.
    while (ia != before.end() || ib != after.end()) {
        cancel.check("Comparing the disks' files");
        FileChange c;
        if (ib == after.end() || (ia != before.end() && ia->first < ib->first)) {
            c.kind = FileChange::Kind::removed;
            c.path = "/" + ia->first;
            c.type_before = ia->second.type;
            c.size_before = ia->second.size;
            changes.push_back(std::move(c));
            ++ia;
            continue;
        }
        if (ia == before.end() || ib->first < ia->first) {
            c.kind = FileChange::Kind::added;
            c.path = "/" + ib->first;
            c.type_after = ib->second.type;
            c.size_after = ib->second.size;
            changes.push_back(std::move(c));
            ++ib;
            continue;
        }
        const Entry& a = ia->second;
        const Entry& b = ib->second;
        c.kind = FileChange::Kind::changed;
        c.path = "/" + ia->first;
        c.type_before = a.type;
        c.type_after = b.type;
        c.size_before = a.size;
        c.size_after = b.size;
        if (a.type != b.type) {
            c.what.push_back("type");
        } else {
            if (a.type == "file") {
                bool content = a.size != b.size;
                if (!content && !times_equal(a, b))
                    content = sums_a.at(ia->first) != sums_b.at(ib->first);
                if (content) {
                    c.what.push_back("content");
                    c.first_difference = first_difference(g, root_a + "/" + ia->first,
                                                          root_b + "/" + ib->first, a.size, b.size);
                }
            }
            if (a.mode != b.mode)
                c.what.push_back("mode");
            if (a.uid != b.uid || a.gid != b.gid)
                c.what.push_back("owner");
            if (a.type == "symlink" && a.link != b.link)
                c.what.push_back("link");
        }
        if (!c.what.empty())
            changes.push_back(std::move(c));
        ++ia;
        ++ib;
    }
    return changes;
}

} // namespace

std::vector<DiskDiff> guest_diff(const std::vector<DiskPair>& disks,
                                 const GuestDiffOptions& options) {
    const auto t0 = Clock::now();
    auto progress = [&](const std::string& stage) {
        if (options.progress)
            options.progress(stage, std::chrono::duration<double>(Clock::now() - t0).count());
    };
    const std::string step = "Comparing the disks' files";
    std::vector<DiskDiff> result;
    if (disks.empty())
        return result;
    options.cancel.check(step);

    HandlePtr handle = open_handle(options);
    guestfs_h* g = handle.get();
    // Appliance devices follow the order of addition: before, after, before, after, ...
    for (const auto& d : disks) {
        for (const std::string* path : {&d.before_path, &d.after_path}) {
            if (guestfs_add_drive_opts(g, path->c_str(), GUESTFS_ADD_DRIVE_OPTS_READONLY, 1,
                                       GUESTFS_ADD_DRIVE_OPTS_FORMAT, d.format.c_str(), -1) < 0)
                throw Error(failure_message(g, "Failed to add '" + *path + "' (" + d.target +
                                                   ") to libguestfs's appliance"));
        }
    }
    launch(g, options, t0);
    options.cancel.check(step);
    progress("finding the filesystems"); // list_filesystems probes every device: seconds

    std::vector<std::string> devices;
    try {
        StringList list(check(g, guestfs_list_devices(g), "Failed to list the appliance's disks"));
        devices = to_vector(list);
    } catch (const GuestfsFailure& e) {
        throw Error(e.what());
    }
    if (devices.size() != 2 * disks.size())
        throw Error("libguestfs's appliance shows " + std::to_string(devices.size()) +
                    " disks where " + std::to_string(2 * disks.size()) + " were added");

    std::map<std::string, DeviceFilesystems> fs;
    try {
        fs = filesystems_by_device(g, devices);
    } catch (const GuestfsFailure& e) {
        throw Error(e.what());
    }

    // Decide, per disk, which filesystems are compared; the mount points are all made before
    // anything is mounted (mkmountpoint works only then).
    struct Plan {
        std::size_t disk;
        std::string partition;
        Filesystem a, b;
        std::string root_a, root_b;
    };
    std::vector<Plan> plans;
    result.resize(disks.size());
    for (std::size_t i = 0; i < disks.size(); ++i) {
        DiskDiff& out = result[i];
        const std::string& t = disks[i].target;
        out.target = t;
        const DeviceFilesystems& a = fs[devices[2 * i]];
        const DeviceFilesystems& b = fs[devices[2 * i + 1]];
        if (a.encrypted || b.encrypted) {
            const auto& u = a.encrypted ? a.unreadable : b.unreadable;
            out.problem = t + " holds an encrypted volume (" + u.front() +
                          "); libguestfs cannot read it without its key";
            continue;
        }
        if (!a.unreadable.empty() || !b.unreadable.empty()) {
            const auto& u = !a.unreadable.empty() ? a.unreadable : b.unreadable;
            out.problem = t + " holds " + u.front() +
                          ", not a filesystem libguestfs mounts by itself (LVM and RAID members "
                          "are not read); its files cannot be compared";
            continue;
        }
        if (a.by_partition.empty() && b.by_partition.empty()) {
            out.problem = "no filesystem libguestfs can read on " + t;
            continue;
        }
        bool same = a.by_partition.size() == b.by_partition.size();
        for (const auto& [part, f] : a.by_partition) {
            auto it = b.by_partition.find(part);
            same = same && it != b.by_partition.end() && it->second.type == f.type;
        }
        if (!same) {
            out.problem = t + "'s filesystems differ between the two sides (before: " +
                          partition_list(a.by_partition) +
                          "; after: " + partition_list(b.by_partition) + ")";
            continue;
        }
        for (const auto& [part, f] : a.by_partition) {
            const std::string n = std::to_string(plans.size());
            plans.push_back(Plan{i, part, f, b.by_partition.at(part), "/a" + n, "/b" + n});
        }
    }
    try {
        for (const auto& p : plans) {
            check(g, guestfs_mkmountpoint(g, p.root_a.c_str()), "Failed to make " + p.root_a);
            check(g, guestfs_mkmountpoint(g, p.root_b.c_str()), "Failed to make " + p.root_b);
        }
    } catch (const GuestfsFailure& e) {
        throw Error(e.what());
    }

    for (const auto& p : plans) {
        DiskDiff& out = result[p.disk];
        if (!out.problem.empty()) // an earlier filesystem of this disk failed
            continue;
        options.cancel.check(step);
        const std::string& t = out.target;
        progress("reading " + t + (p.partition.empty() ? "" : " partition " + p.partition));
        try {
            mount_ro(g, p.a, p.root_a);
            mount_ro(g, p.b, p.root_b);
            out.filesystems.push_back(FilesystemDiff{
                p.partition, p.a.type, compare(g, p.root_a, p.root_b, options.cancel)});
        } catch (const GuestfsFailure& e) {
            out.filesystems.clear();
            out.problem = "cannot compare the files of " + t +
                          (p.partition.empty() ? "" : " partition " + p.partition) + ": " +
                          e.what();
        }
        // Unmounted so a later failure's mounts do not pile up; errors here do not matter.
        guestfs_umount(g, p.root_a.c_str());
        guestfs_umount(g, p.root_b.c_str());
    }
    guestfs_shutdown(g); // errors ignored: nothing was written
    progress("done");
    return result;
}

} // namespace forky
