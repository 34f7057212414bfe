// The GPU inventory on libvirt's test driver, with a node description holding fake NVIDIA
// GPUs in IOMMU groups (tests/data/gpus/node.xml): what `forky gpus` lists.
#include "errors.hpp"
#include "gpus.hpp"

#include <gtest/gtest.h>

using namespace forky;

namespace {

std::string node_uri() {
    return std::string("test://") + FORKY_TEST_DATA + "/gpus/node.xml";
}

} // namespace

TEST(Gpus, ListsDisplayControllersWithGroupsMdevTypesAndHolders) {
    HostOptions o;
    o.uri = node_uri();
    Host host(o);
    const std::vector<Gpu> gpus = list_gpus(host);
    ASSERT_EQ(gpus.size(), 2u); // the NIC and the audio function are no GPUs
    const Gpu& h100 = gpus[0];
    EXPECT_EQ(h100.address, "0000:65:00.0");
    EXPECT_EQ(h100.device, "pci_0000_65_00_0");
    EXPECT_EQ(h100.vendor_id, "0x10de");
    EXPECT_EQ(h100.vendor, "NVIDIA Corporation");
    EXPECT_EQ(h100.product, "GH100 [H100 SXM5 80GB]");
    EXPECT_EQ(h100.iommu_group, 42u);
    EXPECT_TRUE(h100.group_members.empty());
    EXPECT_EQ(h100.numa_node, 0);
    ASSERT_EQ(h100.mdev_types.size(), 1u);
    EXPECT_EQ(h100.mdev_types[0].id, "nvidia-593");
    EXPECT_EQ(h100.mdev_types[0].name, "GRID H100-4C");
    EXPECT_EQ(h100.mdev_types[0].available, 20u);
    EXPECT_TRUE(h100.held_by.empty());
    const Gpu& rtx = gpus[1];
    EXPECT_EQ(rtx.address, "0000:66:00.0");
    EXPECT_EQ(rtx.iommu_group, 43u);
    EXPECT_EQ(rtx.group_members, std::vector<std::string>{"0000:66:00.1"});
    EXPECT_EQ(rtx.numa_node, 1);
    EXPECT_EQ(rtx.held_by, std::vector<std::string>{"holder"});
}

TEST(Gpus, ParsingKeepsOnlyPciDisplayControllers) {
    EXPECT_FALSE(parse_gpu_device("<device><name>computer</name>"
                                  "<capability type='system'/></device>"));
    EXPECT_FALSE(parse_gpu_device("<device><name>n</name><capability type='pci'>"
                                  "<class>0x020000</class></capability></device>"));
    auto g = parse_gpu_device("<device><name>pci_0000_01_00_0</name><driver><name>vfio-pci"
                              "</name></driver><capability type='pci'><class>0x030000</class>"
                              "<domain>0</domain><bus>1</bus><slot>0</slot><function>0</function>"
                              "</capability></device>");
    ASSERT_TRUE(g);
    EXPECT_EQ(g->address, "0000:01:00.0");
    EXPECT_EQ(g->driver, "vfio-pci");
    EXPECT_FALSE(g->iommu_group);
    EXPECT_THROW(parse_gpu_device("<device"), Error);
    EXPECT_EQ(domain_pci_hostdevs("<domain><devices><hostdev type='pci'><source><address "
                                  "domain='0x0000' bus='0x65' slot='0x00' function='0x1'/>"
                                  "</source></hostdev></devices></domain>"),
              std::vector<std::string>{"0000:65:00.1"});
}
