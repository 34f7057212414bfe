// What changed between two versions of a VM's disks, file by file, read from the disk
// images with libguestfs (its C API): one appliance for all the disks of a diff, every
// image opened read-only (libguestfs puts a throwaway overlay in front of each), so
// nothing is ever written to them. The images must be readable on this machine (their
// backing chains included: qemu in the appliance follows them).
#pragma once
#include "cancel.hpp"
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace forky {

struct FileChange {
    enum class Kind { added, removed, changed };
    Kind kind = Kind::changed;
    std::string path;        // absolute within its filesystem: "/dir/file"
    std::string type_before; // "file", "directory", "symlink", "block", "char", "fifo",
    std::string type_after;  // "socket"; empty on the side where it does not exist
    std::optional<std::uint64_t> size_before; // bytes (lstat's size); absent where absent
    std::optional<std::uint64_t> size_after;
    // A changed regular file's first differing byte, found where cheap (both sides small
    // enough to compare); absent otherwise.
    std::optional<std::uint64_t> first_difference;
    // For `changed`: what differs, among "content", "type", "mode", "owner", "link".
    std::vector<std::string> what;
};

const char* to_string(FileChange::Kind k); // "added", "removed", "changed"

struct FilesystemDiff {
    // Where the filesystem lies on its disk: "" for the whole disk, "1" for its first
    // partition, and so on (as on both sides).
    std::string partition;
    std::string fs_type;             // "ext4", "xfs", ... as libguestfs names it
    std::vector<FileChange> changes; // sorted by path
};

// One disk (by target) seen at two instants.
struct DiskPair {
    std::string target;      // "vda"
    std::string before_path; // image files on this machine
    std::string after_path;
    std::string format = "qcow2"; // of both (never probed)
};

struct DiskDiff {
    std::string target;
    std::vector<FilesystemDiff> filesystems;
    // Set when the disk could not be compared file by file (no filesystem libguestfs can
    // read, an encrypted disk, partitions that differ between the two sides): why, in a
    // sentence. The caller falls back to block-level figures.
    std::string problem;
};

struct GuestDiffOptions {
    // Start the appliance under emulation (libguestfs's direct backend with force_tcg):
    // for hosts where KVM is absent or unusable (nested). Without it, libguestfs's own
    // default (or LIBGUESTFS_BACKEND / LIBGUESTFS_BACKEND_SETTINGS when set).
    bool force_tcg = false;
    // Told what it is doing ("starting libguestfs's appliance", "reading vda", ...) and the
    // seconds since the diff began; called from a helper thread about once a second while
    // the appliance starts, so a terminal can show that it is alive.
    std::function<void(const std::string& stage, double seconds)> progress;
    CancelToken cancel;
};

// Compares each pair's filesystems: files added (only after), removed (only before) and
// changed (type, mode, owner, link target or content differ; content is compared by
// size, then SHA-256 for files of equal size whose mtime or ctime differ; a file whose
// size, mode, owner, mtime and ctime are all the same is taken as unchanged, as rsync
// does). Directories are listed when added or removed, never as changed for their
// entries. Throws Error when the appliance cannot start (its message, with what to try).
std::vector<DiskDiff> guest_diff(const std::vector<DiskPair>& disks,
                                 const GuestDiffOptions& options);

} // namespace forky
