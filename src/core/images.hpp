// What a spec may hand to a guest. A kernel, an initrd or a disk's base image is read by
// QEMU as root on the guest's behalf, and a qcow2 file names further files (its backing
// chain, an external data file) that QEMU opens too. So every file a spec reaches, the
// whole chain included, must:
//   - lie under a folder allowed for images: the administrator's `image_dirs`
//     (config.hpp) or, by default, the spec's own folder (unless others can write it, or
//     it is /) and forky's pool;
//   - never lie under /proc, /sys, /dev, /etc, /root or /run, whatever a setting says,
//     nor in another libvirt storage pool's folder (other VMs' disks) unless an image_dir
//     says so, nor be a volume forky made (a VM's layers, memory images, journals);
//   - be changeable only by root or by whoever runs forky: the file and every folder
//     above it (a sticky folder such as /tmp excepted), so nobody else can swap it between
//     forky's check and QEMU's open; and have no second name (hard link) elsewhere.
//
// forky checks twice: before anything is made, with qemu's own image info of each chain
// (qemu-img on the machine that reads the spec; libvirt's storage API sees only files in
// its pools, and only one backing level), and again once QEMU has opened the chain, in the
// live domain XML, before the guest's vCPUs first run.
#pragma once

#include "spec.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

struct ImageRules {
    std::vector<std::filesystem::path> allowed_dirs; // absolute, links resolved
    std::string allowed_by;                          // where the list came from, for messages
    std::vector<std::filesystem::path> denied_dirs;  // other storage pools' folders
    std::filesystem::path pool_dir;                  // forky's own pool
};

// Folders forky never reads images from.
const std::vector<std::filesystem::path>& forbidden_image_dirs();

// Whether `file` is `dir` or lies under it, component by component (both as written).
bool is_under(const std::filesystem::path& file, const std::filesystem::path& dir);

// The rules for `spec`: the administrator's `configured` folders, or, when there are
// none, the spec's own folder and the pool's (`pool_dir`, `pool` for messages).
// `other_pool_dirs`: the folders of the host's other storage pools.
ImageRules image_rules_for(const DomainSpec& spec,
                           const std::vector<std::filesystem::path>& configured,
                           const std::string& pool, const std::string& pool_dir,
                           const std::vector<std::filesystem::path>& other_pool_dirs = {});

// Why `file` may not be read for a guest (nullopt when it may). With `resolve_links`, the
// file must exist here and is judged by where its links lead; without, by its path alone
// (for paths as a remote libvirt reports them).
std::optional<std::string> image_file_problem(const std::string& file, const ImageRules& rules,
                                              bool resolve_links = true);

// One file of a disk chain, as `qemu-img info --backing-chain --output=json` reports it.
struct ImageLayer {
    std::string file;
    std::string format;
    std::string backing;        // the file it is backed by (absolute), empty for none
    std::string backing_format; // the format recorded for that backing file, if any
    std::string data_file;      // a qcow2 external data file, if any
};

// Parses qemu-img's JSON (an array, or one object without --backing-chain). Throws Error.
std::vector<ImageLayer> parse_image_chain(std::string_view json);

// Runs qemu-img info on this machine, the format given (never probed).
std::vector<ImageLayer> inspect_image_chain(const std::filesystem::path& file, DiskFormat format);

// Checks the kernel, the initrd and every disk's whole chain. Throws SpecError naming the
// spec's file, line and key, the chain and the rule broken. Returns the spec with those
// files' links resolved: what forky hands to libvirt is what it checked.
DomainSpec check_spec_images(const DomainSpec& spec, const ImageRules& rules);

// Files a running domain opened (kernel, initrd, every disk's chain in its live XML) that
// break the rules, one message each; empty when all is well. `resolve_links` where the
// hypervisor is this machine: a file swapped for a link since the first check is judged
// by where the link leads.
std::vector<std::string> live_image_problems(std::string_view live_xml, const ImageRules& rules,
                                             bool resolve_links = false);

} // namespace forky
