// The typed form of a YAML domain spec (domains/*.yaml). load_spec() is strict: an
// unknown key, a wrong type, a missing file or an impossible value is a SpecError that
// names the file, the line and the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace forky {

enum class Accel { automatic, kvm, tcg };
enum class DiskFormat { qcow2, raw };
enum class ConsoleMode { log, none };
enum class NetworkMode { none, user };

const char* to_string(Accel a);
const char* to_string(DiskFormat f);

// Where a value stands in its spec, for messages: line (1-based) and key ("disks[0].base").
struct SpecRef {
    int line = 0;
    std::string key;
};

// A file a spec names (kernel, initrd, disk base): the host reads it on the guest's
// behalf, so it is checked against the image rules (images.hpp) before any use.
struct SpecFile {
    std::filesystem::path path; // absolute, as written (links not resolved)
    SpecRef ref;
    bool empty() const { return path.empty(); }
};

struct BootSpec {
    SpecFile kernel;
    SpecFile initrd; // may be empty
    std::string cmdline;
};

struct DiskSpec {
    SpecFile base; // read-only golden image, never written
    // The format the base is read as: stated by `format:`, or raw for a file without a
    // qcow2 header. A file with a qcow2 header is read as qcow2 only when the spec says
    // so (images.hpp refuses it otherwise): probing a format is how a raw disk whose
    // guest wrote a qcow2 header would reach host files.
    DiskFormat base_format = DiskFormat::raw;
    bool format_stated = false;
    bool has_qcow2_header = false;
    SpecRef format_ref; // the `format:` key, or the disk itself when not stated
    std::string target; // vda, vdb, ...
};

// A GPU a spec asks for (`gpus:`), one of
//   {pci: "0000:65:00.0"}        that PCI function (a GPU, or another member of its group)
//   {vendor: nvidia, count: 2}   any free GPUs of that vendor (nvidia, amd, intel, 0x10de)
//   {mdev_type: nvidia-593}      a new mediated device of that type (count: N for several)
struct GpuSpec {
    enum class Kind { pci, vendor, mdev };
    Kind kind = Kind::pci;
    std::string pci;       // canonical "0000:65:00.0"
    std::string vendor_id; // "0x10de"
    std::string vendor;    // as written, for messages
    std::string mdev_type;
    unsigned count = 1;
    SpecRef ref;
};

// What a fork or snapshot of a VM with a passed-through GPU does: QEMU cannot save a VFIO
// device's state, so the cut needs the devices detached first (the guest sees an unplug,
// then a plug), which only the spec's author can allow.
enum class GpuFork { refuse, detach };

struct DomainSpec {
    std::filesystem::path source; // the spec file, absolute
    std::string name;
    std::uint64_t memory_bytes = 0;
    unsigned vcpus = 1;
    Accel accel = Accel::automatic;
    BootSpec boot;
    std::vector<DiskSpec> disks;
    ConsoleMode console = ConsoleMode::log;
    NetworkMode network = NetworkMode::none;
    std::vector<unsigned> ports; // guest TCP ports forwarded from the host (network: user)
    std::optional<std::chrono::seconds> ttl;
    // A virtio channel for the QEMU guest agent (qemu-guest-agent in the guest), through
    // which forky sets a child's clock after a start from a stored fork point.
    bool guest_agent = false;
    std::vector<GpuSpec> gpus;
    GpuFork gpu_fork = GpuFork::refuse;
};

// "0000:65:00.0" for "0000:65:00.0" or "65:00.0" (any case); nullopt for anything else.
std::optional<std::string> canonical_pci_address(const std::string& text);

// Reads a spec file: a regular file of at most 1 MiB (see yaml_reader.hpp).
DomainSpec load_spec(const std::filesystem::path& file);

// "FILE:LINE: key 'KEY'" for a value of `spec`.
std::string spec_where(const DomainSpec& spec, const SpecRef& ref);

// Parses spec text as if it came from `file` (relative paths resolve against its folder).
DomainSpec parse_spec(const std::string& text, const std::filesystem::path& file);

} // namespace forky
