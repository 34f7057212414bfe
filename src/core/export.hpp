// forky export and import: a VM (or one of its snapshots) carried to another machine as a
// directory of plain files, and brought back there as a new family root.
//
// An export directory holds:
//   manifest.json    what follows, with each file's size and SHA-256, the QEMU machine
//                    type, architecture, accelerator and CPU model a memory image needs
//   disk-<T>.qcow2   each disk flattened to one qcow2 (no backing file), compressed on ask
//   memory.img       the memory image (libvirt's save format), when the source has one
//   vmlinuz, initrd.img   the kernel and initrd the VM boots, when it boots one
//   domain.xml       the VM's definition at that instant
//   lineage.xml      its forky lineage at that instant (parent, fork point, spec, ...)
//   spec.yaml        the spec it came from, when that file is readable here
// Everything travels through libvirt's storage streams (the disks flattened on the host by
// libvirt, then downloaded; uploads into the target host's pool), so either side may be a
// remote host. The directory appears whole or not at all (written beside it, renamed).
#pragma once
#include "history.hpp"
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace forky {

inline constexpr const char* export_format = "forky-export";
inline constexpr int export_version = 1;

// A progress reporter for one file (what it is: "disk vda", "memory image", ...).
using ProgressFor = std::function<ProgressFn(const std::string& what)>;

struct ExportOptions : HistoryOptions {
    bool compress = false; // the disks as compressed qcow2 (qemu-img convert -c, here)
    ProgressFor progress;
};

struct ExportedFile {
    std::string name;   // in the directory
    std::string role;   // "disk", "memory", "kernel", "initrd", "domain", "lineage", "spec"
    std::string target; // a disk's
    std::uint64_t bytes = 0;
    std::string sha256;
};

struct ExportResult {
    std::filesystem::path dir;
    std::string source;  // as given
    std::string point;   // the fork point read (VM@fpN taken for it, or VM@SNAP)
    bool memory = false; // a memory image is in it
    std::vector<ExportedFile> files;
    std::uint64_t bytes = 0; // all files' sizes
    double ms = 0;
};

// Exports `ref` ("VM", or "VM@SNAP") into new directory `dir` (which must not exist). A VM
// that runs is read through a fork point taken for the purpose (with its memory: the VM
// pauses only for the switch-over, as for a snapshot) and removed afterwards; a VM that is
// off, through one of its disks.
ExportResult vm_export(Host& host, const std::string& ref, const std::filesystem::path& dir,
                       const ExportOptions& options);

struct ImportOptions : HistoryOptions {
    std::string name;                      // the new VM's name; empty: the exported VM's
    std::set<std::string> names_elsewhere; // VMs on the fleet's other hosts: not the new name
    ProgressFor progress;
};

struct ImportResult {
    std::string vm;
    std::string snapshot; // VM@imported: the imported state, kept (forky revert)
    bool resumed = false; // from its memory image (else booted from its disks)
    std::vector<std::string> clock_not_set;
    std::uint64_t bytes_uploaded = 0;
    unsigned images_reused = 0; // kernel, initrd or disks the host had already
    double ms = 0;
};

// Imports export directory `dir` into `host` as a new family root: every file is checked
// against the manifest (size, SHA-256) before anything is made, disks must be whole
// qcow2 images, the definition may reach no host device or file, and a memory image must
// be restorable there (its machine type, accelerator and CPU model offered by the host's
// QEMU, else refused with the reason). The VM resumes from its memory image when there is
// one, else boots from its disks; either way the imported state is kept as its snapshot
// 'imported'.
ImportResult vm_import(Host& host, const std::filesystem::path& dir, const ImportOptions& options);

// Why domain XML `xml` of an export may not be defined on a host (one sentence each):
// devices that reach the host (host devices, shared folders, block devices, files other
// than the disks forky replaces), disks other than `disk_targets`, firmware files.
std::vector<std::string> imported_xml_problems(std::string_view xml,
                                               const std::vector<std::string>& disk_targets);

} // namespace forky
