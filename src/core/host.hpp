// A Host is a libvirt connection plus forky's storage pool on that hypervisor. Nothing
// here assumes the host is this machine: volumes are made, read and deleted through the
// storage-pool API, so the same code drives qemu+ssh://... as qemu:///system.
#pragma once

#include "handles.hpp"
#include "spec.hpp"

#include <cstdint>
#include <functional>
#include <optional>
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
    // Whether a missing pool is created (forky up, --create-pool). Everything else says it
    // does not exist, so a typo in --pool never makes a new pool.
    bool create_pool = false;
};

struct VolumeInfo {
    std::string name;
    std::string path;
    std::string backing; // the path of its backing file, empty for none
    std::uint64_t capacity = 0;
    std::uint64_t allocation = 0;
    long long owner = -1; // uid of the file, -1 when libvirt does not say
};

// Progress of a long copy: bytes of the volume covered so far (data and holes), of `total`.
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct ShipResult {
    std::uint64_t size = 0;       // the volume's length in bytes (the file's, not a
                                  // qcow2's virtual size)
    std::uint64_t data_bytes = 0; // sent as data; the rest went as holes
    std::string sha256;           // of the content sent (holes as zeros)
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
    // Whether the hypervisor is this machine (a URI without a host name: qemu:///system,
    // qemu+unix:///system?socket=...), so its files can be looked at here as well.
    bool is_local() const;

    // forky's pool, started on first use; created (a dir pool, autostarted, mode 0711)
    // only with options().create_pool. A pool whose folder others can write is refused:
    // forky keeps its journals and memory images there.
    virStoragePoolPtr pool();
    std::string pool_path();
    // The pool's folder if the pool exists, else the folder it would be created at;
    // creates nothing.
    std::string pool_dir_if_any();
    // The folders of the hypervisor's other storage pools (where other VMs' disks are).
    std::vector<std::string> other_pool_dirs();
    // The owner (uid) of the pool's folder, -1 when libvirt does not say.
    long long pool_owner();

    // When the connection to libvirtd was lost (libvirtd restarted, the client
    // disconnected), opens a new one, so an undo can still run. Returns false when
    // libvirtd does not answer.
    bool reconnect_if_lost() noexcept;

    // A qcow2 overlay whose backing file is `backing`; the backing file is never written.
    StorageVolPtr create_overlay(const std::string& name, const std::string& backing,
                                 DiskFormat backing_format);
    // A raw file of `capacity` bytes (sparse), e.g. an empty console log that virtlogd
    // appends to, or the memory image a snapshot writes into.
    StorageVolPtr create_raw_volume(const std::string& name, std::uint64_t capacity = 0);
    StorageVolPtr find_volume(const std::string& name);             // null when absent
    std::optional<VolumeInfo> volume_info(const std::string& name); // nullopt when absent
    std::string volume_path(virStorageVolPtr vol);
    // Returns false when the volume was not there (or went meanwhile): deleted by someone
    // else, which is not an error.
    bool delete_volume(const std::string& name);
    void resize_volume(const std::string& name, std::uint64_t capacity);
    std::vector<VolumeInfo> volumes();
    VolumeChunk read_volume(const std::string& name, std::uint64_t offset);
    // Exactly [offset, offset + length) of a volume.
    std::string read_volume_range(const std::string& name, std::uint64_t offset,
                                  std::uint64_t length);
    // Overwrites [offset, offset + data.size()) of a volume (virStorageVolUpload).
    void write_volume(const std::string& name, std::uint64_t offset, std::string_view data);
    // Copies volume `name` into a new volume `to_name` of `to`'s pool (another host, or
    // this one) through libvirt streams, download to upload, in bounded memory (1 MiB at
    // a time); holes stay holes (sparse streams). The new volume goes again if the copy
    // fails. Its file is byte for byte the source's; a qcow2 keeps the backing path it
    // names.
    ShipResult ship_volume(const std::string& name, Host& to, const std::string& to_name,
                           const ProgressFn& progress = {});
    // Uploads local file `file` (on the machine forky runs on) as a new volume `to_name`
    // of this host's pool, blocks of zeros as holes; the volume goes again if it fails.
    ShipResult upload_file(const std::string& file, const std::string& to_name,
                           const ProgressFn& progress = {});
    // Downloads volume `name` into new local file `file` (on the machine forky runs on;
    // never an existing one), holes as holes; the file goes again if it fails.
    ShipResult download_file(const std::string& name, const std::string& file,
                             const ProgressFn& progress = {});
    // A new qcow2 volume `to_name` holding what volume `from` shows through its whole
    // backing chain, with no backing file of its own (libvirt copies it with qemu-img
    // convert on the host).
    StorageVolPtr flatten_volume(const std::string& from, const std::string& to_name);
    // SHA-256 of a volume's file as read through libvirt (holes as zeros).
    std::string volume_sha256(const std::string& name);
    // Makes qcow2 volume `name` name `backing` as its backing file (a layer shipped here
    // from another host: its backing file is in this host's pool now). Only the name in
    // the header changes; nothing else of the image is touched.
    void set_qcow2_backing(const std::string& name, const std::string& backing);
    // Makes libvirt look at the pool's files again (a volume's content changed through a
    // stream: its format and backing file as qemu sees them now).
    void refresh_pool();
    // Bytes free in the pool.
    std::uint64_t pool_available();

    DomainPtr find_domain(const std::string& name); // null when absent
    DomainPtr domain(const std::string& name);      // NotFoundError when absent
    std::vector<DomainPtr> domains();

    // libvirt's capabilities of the hypervisor (virConnectGetCapabilities), and its domain
    // capabilities for an architecture, machine type and domain type (an empty one:
    // libvirt's default).
    std::string capabilities();
    std::string domain_capabilities(const std::string& arch, const std::string& machine,
                                    const std::string& virt_type);
    // "kvm" or "qemu" for a spec's accel. auto picks KVM only where it can really run a
    // guest: KVM offered by libvirt and the host not itself a VM (nested KVM hangs while
    // booting 64-bit guests on such hosts); otherwise emulation with one warning.
    std::string domain_type_for(Accel accel);

private:
    void build_new_pool(virStoragePoolPtr pool, const std::string& xml);
    void check_pool_is_safe();

    HostOptions options_;
    ConnectPtr conn_;
    StoragePoolPtr pool_;
    long long pool_owner_ = -1;
};

// A domain's state; to_string() names it as virsh does ("running", "shut off", ...).
enum class VmState { running, idle, paused, shutting_down, shut_off, crashed, suspended, unknown };
const char* to_string(VmState s);
VmState domain_state(virDomainPtr dom);
bool domain_is_active(virDomainPtr dom);
std::string domain_name(virDomainPtr dom);
std::string domain_xml(virDomainPtr dom, unsigned flags = 0);

} // namespace forky
