// RAII owners for libvirt's C handles: one deleter per type, no raw virXxxPtr
// outlives the statement that produced it.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdlib>
#include <memory>

namespace forky {

struct ConnectDeleter {
    void operator()(virConnectPtr p) const { virConnectClose(p); }
};
struct DomainDeleter {
    void operator()(virDomainPtr p) const { virDomainFree(p); }
};
struct SnapshotDeleter {
    void operator()(virDomainSnapshotPtr p) const { virDomainSnapshotFree(p); }
};
struct StoragePoolDeleter {
    void operator()(virStoragePoolPtr p) const { virStoragePoolFree(p); }
};
struct StorageVolDeleter {
    void operator()(virStorageVolPtr p) const { virStorageVolFree(p); }
};
struct StreamDeleter {
    // Whoever runs a transfer finishes or aborts it; this only drops the reference.
    void operator()(virStreamPtr p) const { virStreamFree(p); }
};
struct CStringDeleter {
    void operator()(char* p) const { std::free(p); }
};

using ConnectPtr = std::unique_ptr<virConnect, ConnectDeleter>;
using DomainPtr = std::unique_ptr<virDomain, DomainDeleter>;
using SnapshotPtr = std::unique_ptr<virDomainSnapshot, SnapshotDeleter>;
using StoragePoolPtr = std::unique_ptr<virStoragePool, StoragePoolDeleter>;
using StorageVolPtr = std::unique_ptr<virStorageVol, StorageVolDeleter>;
using StreamPtr = std::unique_ptr<virStream, StreamDeleter>;
using CString = std::unique_ptr<char, CStringDeleter>;

} // namespace forky
