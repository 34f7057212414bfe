// GPUs of a host, from libvirt's node-device API (virConnectListAllNodeDevices): every
// PCI display or 3D controller (class 0x03xxxx) with its vendor and product, the driver
// bound to it, its IOMMU group and the group's other members, its NUMA node, the mediated
// device types it offers, and which domain holds it now. Read-only: works on a remote host
// through its URI, and changes nothing on any device.
#pragma once

#include "host.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

struct MdevType {
    std::string id;   // "nvidia-593"
    std::string name; // "GRID T4-2Q"
    unsigned available = 0;
};

struct Gpu {
    std::string device;              // libvirt's node-device name, "pci_0000_65_00_0"
    std::string address;             // "0000:65:00.0"
    std::string pci_class;           // "0x030200"
    std::string vendor_id, vendor;   // "0x10de", "NVIDIA Corporation"
    std::string product_id, product; // "0x2330", "GH100 [H100 SXM5 80GB]"
    std::string driver;              // "vfio-pci", "nvidia"; empty when libvirt does not say
    std::optional<unsigned> iommu_group;
    std::vector<std::string> group_members; // the group's other PCI functions
    std::optional<int> numa_node;
    std::vector<MdevType> mdev_types;
    std::vector<std::string> held_by; // domains whose XML names it (a hostdev), running or not
};

// "0000:65:00.0" from libvirt's <address domain='0x0000' bus='0x65' slot='0x00' function='0x0'/>
// values (hex or decimal, as libvirt writes them).
std::string pci_address(unsigned domain, unsigned bus, unsigned slot, unsigned function);

// The GPU a node device's XML describes; nullopt for anything else (not PCI, or not a
// display/3D controller). Throws Error on XML that does not parse.
std::optional<Gpu> parse_gpu_device(std::string_view xml);

// PCI addresses of the host devices a domain's XML passes through (<hostdev type='pci'>).
std::vector<std::string> domain_pci_hostdevs(std::string_view domain_xml);

// Every GPU of the host, by PCI address, each with the domains that hold it.
std::vector<Gpu> list_gpus(Host& host);

} // namespace forky
