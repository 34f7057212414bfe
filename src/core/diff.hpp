// forky diff: what a branch changed. Two states of a family (a VM as it is now, or a
// snapshot or fork point VM@SNAP) compared disk by disk: file by file with libguestfs
// (guest_diff.hpp), or, with `blocks`, by the bytes each side wrote since the layer they
// share (libvirt's allocation of each layer above it: milliseconds, any filesystem).
#pragma once
#include "guest_diff.hpp"
#include "history.hpp"
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace forky {

struct DiffOptions : HistoryOptions {
    bool blocks = false;      // the bytes written, not the files
    bool no_snapshot = false; // refuse a running VM instead of freezing its disks to read them
    // Told what it is doing, as GuestDiffOptions::progress.
    std::function<void(const std::string& stage, double seconds)> progress;
};

struct LayerBytes {
    std::string volume;
    std::uint64_t bytes = 0; // libvirt's allocation of the layer's file
};

// One disk's block-level answer.
struct BlockDiff {
    std::string target;
    std::string common; // the newest layer both sides stand on; empty: none (no shared past)
    std::vector<LayerBytes> before_layers; // above `common`, newest first
    std::vector<LayerBytes> after_layers;
    std::uint64_t before_bytes = 0; // their sum
    std::uint64_t after_bytes = 0;
};

struct DiffResult {
    std::string before;                // B as given ("tiny@fp1")
    std::string after;                 // A as given ("child")
    std::vector<BlockDiff> blocks;     // with `blocks`, and for disks files could not read
    std::vector<DiskDiff> files;       // without `blocks`
    std::vector<std::string> problems; // disks not compared (only on one side, ...)
    bool froze = false;                // a running VM's disks were frozen to be read
    double appliance_s = 0;            // libguestfs, start to end
    double ms = 0;
};

// How `after` differs from `before` (`forky diff A B`: A after, B before): files in A and
// not in B are "added". Each is "VM" or "VM@SNAP". A running or paused VM is read through
// a disk-only fork point taken for the purpose and removed afterwards (the VM keeps
// running, one layer deeper), or refused with `no_snapshot`; nothing is opened for writing.
// File-level diffs read the images on this machine (the host must be local).
DiffResult vm_diff(Host& host, const std::string& after, const std::string& before,
                   const DiffOptions& options);

// Whether libguestfs must run its appliance under emulation here: no usable /dev/kvm, or
// this machine is itself a virtual machine (nested KVM hangs).
bool guestfs_needs_tcg();

} // namespace forky
