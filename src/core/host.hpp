// A Host is a libvirt connection plus forky's storage pool on that hypervisor. Nothing
// here assumes the host is this machine: volumes are made, read and deleted through the
// storage-pool API, so the same code drives qemu+ssh://... as qemu:///system.
#pragma once

#include "handles.hpp"
#include "spec.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

inline constexpr const char* default_uri = "qemu:///system";
inline constexpr const char* default_pool = "forky";
inline constexpr const char* default_pool_dir = "/var/lib/forky";

struct HostOptions {
    std::string uri = default_uri;
    std::string pool = default_pool;
    std::string pool_dir = default_pool_dir; // used only when the pool is first created
};

struct VolumeInfo {
    std::string name;
    std::string path;
    std::string backing; // the path of its backing file, empty for none
    std::uint64_t capacity = 0;
    std::uint64_t allocation = 0;
};

// A slice of a volume read through libvirt's stream API.
struct VolumeChunk {
    std::string data;
    std::uint64_t next_offset = 0; // where the next read starts
    bool restarted = false;        // the volume shrank (truncated or rotated): read from 0
};

class Host {
public:
    explicit Host(HostOptions options);
    Host(Host&&) = default;
    Host& operator=(Host&&) = default;

    virConnectPtr conn() const { return conn_.get(); }
    // Another connection to the same hypervisor, for calls that must run in parallel.
    ConnectPtr open_connection() const;
    const HostOptions& options() const { return options_; }

    // forky's pool, created (dir pool, autostarted) and started on first use.
    virStoragePoolPtr pool();
    std::string pool_path();

    // A qcow2 overlay whose backing file is `backing`; the backing file is never written.
    StorageVolPtr create_overlay(const std::string& name, const std::string& backing,
                                 DiskFormat backing_format);
    // A raw file of `capacity` bytes (sparse), e.g. an empty console log that virtlogd
    // appends to, or the memory image a snapshot writes into.
    StorageVolPtr create_raw_volume(const std::string& name, std::uint64_t capacity = 0);
    StorageVolPtr find_volume(const std::string& name); // null when absent
    std::string volume_path(virStorageVolPtr vol);
    void delete_volume(const std::string& name);
    std::vector<VolumeInfo> volumes();
    VolumeChunk read_volume(const std::string& name, std::uint64_t offset);
    // Exactly [offset, offset + length) of a volume.
    std::string read_volume_range(const std::string& name, std::uint64_t offset,
                                  std::uint64_t length);
    // Overwrites [offset, offset + data.size()) of a volume (virStorageVolUpload).
    void write_volume(const std::string& name, std::uint64_t offset, std::string_view data);
    // Bytes free in the pool.
    std::uint64_t pool_available();

    DomainPtr find_domain(const std::string& name); // null when absent
    DomainPtr domain(const std::string& name);      // NotFoundError when absent
    std::vector<DomainPtr> domains();

    // "kvm" or "qemu" for a spec's accel. auto picks KVM only where it can really run a
    // guest: KVM offered by libvirt and the host not itself a VM (nested KVM hangs while
    // booting 64-bit guests on such hosts); otherwise emulation with one warning.
    std::string domain_type_for(Accel accel);

private:
    HostOptions options_;
    ConnectPtr conn_;
    StoragePoolPtr pool_;
};

// The state of a domain as virsh names it ("running", "paused", "shut off", ...).
std::string domain_state(virDomainPtr dom);
bool domain_is_active(virDomainPtr dom);
std::string domain_name(virDomainPtr dom);
std::string domain_xml(virDomainPtr dom, unsigned flags = 0);

} // namespace forky
