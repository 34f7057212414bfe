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

struct BootSpec {
    std::filesystem::path kernel; // absolute
    std::filesystem::path initrd; // absolute, may be empty
    std::string cmdline;
};

struct DiskSpec {
    std::filesystem::path base; // absolute; read-only golden image, never written
    DiskFormat base_format = DiskFormat::qcow2;
    std::string target; // vda, vdb, ...
};

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
};

DomainSpec load_spec(const std::filesystem::path& file);

// Parses spec text as if it came from `file` (relative paths resolve against its folder).
DomainSpec parse_spec(const std::string& text, const std::filesystem::path& file);

} // namespace forky
