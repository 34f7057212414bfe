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

// ---------------------------------------------------------------------------------------
// GPUs in specs, the pick, IOMMU groups, passthrough support, policies, and `forky up`
// with GPUs on the test driver. The device changes (mdevs, hot-plug) go through a fake:
// libvirt's test driver has none of those calls.

#include "domain_xml.hpp"
#include "vm.hpp"

#include <filesystem>
#include <fstream>
#include <functional>

namespace fs = std::filesystem;

namespace {

const std::string caps_vfio_mdev =
    "<domainCapabilities><devices><hostdev supported='yes'>"
    "<enum name='mode'><value>subsystem</value></enum>"
    "<enum name='subsysType'><value>usb</value><value>pci</value><value>mdev</value></enum>"
    "<enum name='pciBackend'><value>default</value><value>vfio</value></enum>"
    "</hostdev></devices></domainCapabilities>";
// What libvirt says on a host without an IOMMU (this machine): no PCI backend at all.
const std::string caps_no_iommu =
    "<domainCapabilities><devices><hostdev supported='yes'>"
    "<enum name='subsysType'><value>usb</value><value>pci</value><value>scsi</value></enum>"
    "<enum name='pciBackend'/></hostdev></devices></domainCapabilities>";

// libvirt's device calls, recorded; `caps` is what the domain capabilities say.
class FakeDevices : public GpuDevices {
public:
    std::string caps = caps_vfio_mdev;
    std::vector<std::string> calls;
    std::function<void()> on_caps; // runs on each domain_capabilities call
    bool fail_attach = false;

    std::string domain_capabilities(const std::string& virt_type) override {
        calls.push_back("caps " + virt_type);
        if (on_caps)
            on_caps();
        return caps;
    }
    void create_mdev(const std::string& parent, const std::string& type,
                     const std::string& uuid) override {
        calls.push_back("create " + parent + " " + type + " " + uuid);
    }
    void remove_mdev(const std::string& uuid) override { calls.push_back("remove " + uuid); }
    void attach(virDomainPtr dom, const std::string& hostdev, bool persistent) override {
        calls.push_back(
            "attach " + domain_name(dom) + " " +
            describe(domain_gpus("<domain><devices>" + hostdev + "</devices></domain>")[0]) +
            (persistent ? " persistent" : " live"));
        if (fail_attach)
            throw ConflictError("attach refused");
    }
    void detach(virDomainPtr dom, const std::string& hostdev) override {
        calls.push_back(
            "detach " + domain_name(dom) + " " +
            describe(domain_gpus("<domain><devices>" + hostdev + "</devices></domain>")[0]));
    }
};

DomainSpec gpu_spec(const std::string& gpus, const std::string& extra = "") {
    return parse_spec("name: g\nmemory: 64MiB\naccel: tcg\nboot:\n  kernel: ../images/vmlinuz\n"
                      "console: none\n" +
                          gpus + extra,
                      fs::path(FORKY_TEST_DATA) / "golden" / "gpu-test.yaml");
}

std::string spec_error(const std::string& gpus) {
    try {
        gpu_spec(gpus);
    } catch (const SpecError& e) {
        return e.what();
    }
    return "(accepted)";
}

// A host of three H100s (65, 67, 68: alone in their groups) and the RTX 3090 of the
// node description, whose audio function is bound to the host's sound driver.
GpuInventory three_h100s() {
    GpuInventory inv;
    for (const char* a : {"0000:65:00.0", "0000:67:00.0", "0000:68:00.0"}) {
        Gpu g;
        g.address = a;
        g.vendor_id = "0x10de";
        g.vendor = "NVIDIA Corporation";
        g.product_id = "0x2330";
        g.product = "GH100 [H100 SXM5 80GB]";
        g.iommu_group = 40 + static_cast<unsigned>(inv.gpus.size());
        g.mdev_types.push_back({"nvidia-593", "GRID H100-4C", 2});
        inv.gpus.push_back(g);
        inv.functions[a] = {a, "0x030200", "nvidia", g.iommu_group, {}};
    }
    Gpu rtx;
    rtx.address = "0000:66:00.0";
    rtx.vendor_id = "0x10de";
    rtx.product_id = "0x2204";
    rtx.iommu_group = 43;
    inv.gpus.push_back(rtx);
    inv.functions["0000:66:00.0"] = {"0000:66:00.0", "0x030000", "nvidia", 43u, {}};
    inv.functions["0000:66:00.1"] = {"0000:66:00.1", "0x040300", "snd_hda_intel", 43u, {}};
    return inv;
}

std::vector<GpuSpec> want(const std::string& gpus) {
    return gpu_spec(gpus).gpus;
}

class GpusOnTestDriver : public ::testing::Test {
protected:
    void SetUp() override {
        HostOptions o;
        o.uri = node_uri();
        o.pool_dir = "/var/lib/forky-unit-test";
        o.create_pool = true;
        host_.emplace(o);
        up_.image_dirs = {FORKY_TEST_DATA};
        up_.ctx.gpu_devices = devices_;
    }
    Host& host() { return *host_; }
    std::string xml_of(const std::string& name) { return domain_xml(host().domain(name).get()); }

    std::optional<Host> host_;
    std::shared_ptr<FakeDevices> devices_ = std::make_shared<FakeDevices>();
    UpOptions up_;
};

} // namespace

TEST(GpuSpecs, EachKindParsesAndBadInputNamesLineAndKey) {
    const DomainSpec s = gpu_spec("gpus:\n  - pci: \"0000:65:00.0\"\n  - vendor: nvidia\n"
                                  "    count: 2\n  - mdev_type: nvidia-593\n",
                                  "gpu_fork: detach\n");
    ASSERT_EQ(s.gpus.size(), 3u);
    EXPECT_EQ(s.gpus[0].kind, GpuSpec::Kind::pci);
    EXPECT_EQ(s.gpus[0].pci, "0000:65:00.0");
    EXPECT_EQ(s.gpus[1].kind, GpuSpec::Kind::vendor);
    EXPECT_EQ(s.gpus[1].vendor_id, "0x10de");
    EXPECT_EQ(s.gpus[1].count, 2u);
    EXPECT_EQ(s.gpus[2].kind, GpuSpec::Kind::mdev);
    EXPECT_EQ(s.gpus[2].mdev_type, "nvidia-593");
    EXPECT_EQ(s.gpu_fork, GpuFork::detach);
    EXPECT_EQ(gpu_spec("").gpu_fork, GpuFork::refuse);
    EXPECT_EQ(gpu_spec("gpus: [{pci: 65:00.0}]\n").gpus[0].pci, "0000:65:00.0");
    EXPECT_EQ(gpu_spec("gpus: [{vendor: \"0x1002\"}]\n").gpus[0].vendor_id, "0x1002");

    EXPECT_NE(spec_error("gpus: [{pci: 0000:65:00.9}]\n")
                  .find("gpu-test.yaml:7: key 'gpus[0].pci': '0000:65:00.9' is not a PCI address"),
              std::string::npos)
        << spec_error("gpus: [{pci: 0000:65:00.9}]\n");
    EXPECT_NE(spec_error("gpus:\n  - pci: 65:00.0\n    vendor: nvidia\n")
                  .find("key 'gpus[0]': give exactly one of pci, vendor or mdev_type"),
              std::string::npos);
    EXPECT_NE(spec_error("gpus: [{vendor: nvida}]\n").find("must be nvidia, amd, intel"),
              std::string::npos);
    EXPECT_NE(spec_error("gpus: [{vendor: nvidia, count: 0}]\n")
                  .find("key 'gpus[0].count': must be between 1 and 16"),
              std::string::npos);
    EXPECT_NE(spec_error("gpus: [{pci: 65:00.0, count: 2}]\n").find("goes with vendor"),
              std::string::npos);
    EXPECT_NE(spec_error("gpus: [{pci: 65:00.0}, {pci: \"0000:65:00.0\"}]\n")
                  .find("0000:65:00.0 is listed twice"),
              std::string::npos);
    EXPECT_NE(spec_error("gpus: [{mdev_type: \"../x\"}]\n").find("not a mediated device type"),
              std::string::npos);
    EXPECT_NE(spec_error("gpus: [{gpu: 1}]\n").find("gpus[0]"), std::string::npos);
    EXPECT_NE(spec_error("gpus: nvidia\n").find("key 'gpus': expected a list"), std::string::npos);
    EXPECT_NE(spec_error("gpu_fork: yes\n").find("key 'gpu_fork': must be refuse or detach"),
              std::string::npos);
}

TEST(GpuPick, FreeDevicesAreTakenHeldOnesAndBusyGroupsRefusedWithTheReason) {
    GpuInventory inv = three_h100s();
    auto picked = pick_gpus(inv, want("gpus: [{pci: 65:00.0}]\n"), "me", "'h'");
    ASSERT_EQ(picked.size(), 1u);
    EXPECT_EQ(picked[0].address, "0000:65:00.0");

    // Held by another domain: refused, naming it; held by the VM itself: fine.
    inv.functions["0000:65:00.0"].held_by = {"other"};
    inv.gpus[0].held_by = {"other"};
    try {
        pick_gpus(inv, want("gpus: [{pci: 65:00.0}]\n"), "me", "'h'");
        ADD_FAILURE() << "a held GPU was given out";
    } catch (const ConflictError& e) {
        EXPECT_STREQ(e.what(),
                     "Cannot pass 0000:65:00.0 through on 'h': 0000:65:00.0 is held by 'other'");
    }
    EXPECT_NO_THROW(pick_gpus(inv, want("gpus: [{pci: 65:00.0}]\n"), "other", "'h'"));

    // No such device.
    EXPECT_THROW(
        {
            try {
                pick_gpus(inv, want("gpus: [{pci: 99:00.0}]\n"), "me", "'h'");
            } catch (const ConflictError& e) {
                EXPECT_NE(std::string(e.what()).find("there is no PCI device 0000:99:00.0"),
                          std::string::npos);
                throw;
            }
        },
        ConflictError);

    // The RTX's group holds its audio function, bound to the host's driver: refused
    // unless the spec passes that through too.
    try {
        pick_gpus(inv, want("gpus: [{pci: 66:00.0}]\n"), "me", "'h'");
        ADD_FAILURE() << "a group with a busy member was accepted";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("IOMMU group 43 of 0000:66:00.0 has 0000:66:00.1 "
                                             "bound to the host's driver 'snd_hda_intel'"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_EQ(pick_gpus(inv, want("gpus: [{pci: 66:00.0}, {pci: 66:00.1}]\n"), "me", "'h'").size(),
              2u);
    // A member held by another domain is not free either.
    inv.functions["0000:66:00.1"].driver = "vfio-pci";
    EXPECT_EQ(pick_gpus(inv, want("gpus: [{pci: 66:00.0}]\n"), "me", "'h'").size(), 1u);
    inv.functions["0000:66:00.1"].held_by = {"audio-vm"};
    try {
        pick_gpus(inv, want("gpus: [{pci: 66:00.0}]\n"), "me", "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("has 0000:66:00.1, held by 'audio-vm'"),
                  std::string::npos)
            << e.what();
    }
}

TEST(GpuPick, VendorCountTakesFreeOnesAndSaysWhatIsMissing) {
    GpuInventory inv = three_h100s();
    inv.functions["0000:67:00.0"].held_by = {"busy"};
    inv.gpus[1].held_by = {"busy"};
    auto two = pick_gpus(inv, want("gpus: [{vendor: nvidia, count: 2}]\n"), "me", "'h'");
    ASSERT_EQ(two.size(), 2u);
    EXPECT_EQ(two[0].address, "0000:65:00.0");
    EXPECT_EQ(two[1].address, "0000:68:00.0"); // 67 is held, 66's group is busy
    try {
        pick_gpus(inv, want("gpus: [{vendor: nvidia, count: 3}]\n"), "me", "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("Needs 3 free nvidia GPUs on 'h', found 2 (of 4)"), std::string::npos)
            << m;
        EXPECT_NE(m.find("0000:67:00.0 is held by 'busy'"), std::string::npos) << m;
        EXPECT_NE(m.find("snd_hda_intel"), std::string::npos) << m;
    }
    EXPECT_THROW(pick_gpus(inv, want("gpus: [{vendor: amd}]\n"), "me", "'h'"), ConflictError);
}

TEST(GpuPick, MdevsComeFromGpusWithInstancesLeft) {
    GpuInventory inv = three_h100s();
    auto m = pick_gpus(inv, want("gpus: [{mdev_type: nvidia-593, count: 5}]\n"), "me", "'h'");
    ASSERT_EQ(m.size(), 5u);
    EXPECT_EQ(m[0].kind, GpuAssignment::Kind::mdev);
    EXPECT_EQ(m[0].address, "0000:65:00.0");
    EXPECT_EQ(m[2].address, "0000:67:00.0"); // two instances each
    EXPECT_EQ(m[4].address, "0000:68:00.0");
    try {
        pick_gpus(inv, want("gpus: [{mdev_type: nvidia-593, count: 7}]\n"), "me", "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("no free mediated device of type 'nvidia-593'"),
                  std::string::npos)
            << e.what();
    }
    try {
        pick_gpus(inv, want("gpus: [{mdev_type: nvidia-999}]\n"), "me", "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("no GPU offers mediated devices of type 'nvidia-999'"),
                  std::string::npos);
    }
}

TEST(GpuPassthrough, NoVfioBackendOrNoMdevIsRefusedWithTheReason) {
    EXPECT_NO_THROW(require_passthrough(caps_vfio_mdev, true, true, "'h'"));
    try {
        require_passthrough(caps_no_iommu, true, false, "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("'h' cannot pass devices through: libvirt's domain "
                                             "capabilities list no VFIO PCI backend"),
                  std::string::npos)
            << e.what();
    }
    const std::string vfio_only =
        "<domainCapabilities><devices><hostdev supported='yes'><enum name='subsysType'>"
        "<value>pci</value></enum><enum name='pciBackend'><value>vfio</value></enum>"
        "</hostdev></devices></domainCapabilities>";
    EXPECT_NO_THROW(require_passthrough(vfio_only, true, false, "'h'"));
    EXPECT_THROW(require_passthrough(vfio_only, false, true, "'h'"), ConflictError);
    EXPECT_THROW(require_passthrough("<domainCapabilities><devices><hostdev supported='no'/>"
                                     "</devices></domainCapabilities>",
                                     true, false, "'h'"),
                 ConflictError);
}

TEST(GpuXml, HostdevsAreManagedPciOrVfioMdevsAndReadBack) {
    GpuAssignment pci{GpuAssignment::Kind::pci, "0000:65:00.0", "", ""};
    EXPECT_EQ(hostdev_xml(pci),
              "<hostdev mode=\"subsystem\" type=\"pci\" managed=\"yes\">\n  <source>\n"
              "    <address domain=\"0x0000\" bus=\"0x65\" slot=\"0x00\" function=\"0x0\" />\n"
              "  </source>\n</hostdev>\n");
    GpuAssignment mdev{GpuAssignment::Kind::mdev, "0000:65:00.0", "nvidia-593",
                       "c2177883-f1bb-47f0-914d-32a22e3a8804"};
    EXPECT_EQ(hostdev_xml(mdev),
              "<hostdev mode=\"subsystem\" type=\"mdev\" model=\"vfio-pci\">\n  <source>\n"
              "    <address uuid=\"c2177883-f1bb-47f0-914d-32a22e3a8804\" />\n  </source>\n"
              "</hostdev>\n");
    const std::string domain =
        "<domain><devices><disk/>" + hostdev_xml(pci) + hostdev_xml(mdev) + "</devices></domain>";
    GpuInventory inv;
    inv.mdevs.push_back({mdev.mdev_uuid, "nvidia-593", "0000:65:00.0", {}});
    auto back = domain_gpus(domain, &inv);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back[0], pci);
    EXPECT_EQ(back[1], mdev);
    auto m =
        parse_mdev_device("<device><name>mdev_c2177883_f1bb_47f0_914d_32a22e3a8804_0000_65_00_0"
                          "</name><parent>pci_0000_65_00_0</parent><capability type='mdev'>"
                          "<type id='nvidia-593'/><uuid>c2177883-f1bb-47f0-914d-32a22e3a8804"
                          "</uuid></capability></device>");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->parent, "0000:65:00.0");
    EXPECT_EQ(m->type, "nvidia-593");
}

TEST(GpuPolicyFile, ParsesStrictly) {
    const fs::path f = fs::path(FORKY_TEST_DATA) / "gpu.yaml";
    EXPECT_EQ(parse_gpu_policy("children: exclusive\n", f).children,
              GpuPolicy::Children::exclusive);
    const GpuPolicy m = parse_gpu_policy("children: mdev\nmdev_type: nvidia-593\n", f);
    EXPECT_EQ(m.children, GpuPolicy::Children::mdev);
    EXPECT_EQ(m.mdev_type, "nvidia-593");
    auto error = [&](const std::string& text) {
        try {
            parse_gpu_policy(text, f);
        } catch (const SpecError& e) {
            return std::string(e.what());
        }
        return std::string("(accepted)");
    };
    EXPECT_NE(error("children: all\n")
                  .find("gpu.yaml:1: key 'children': must be none, exclusive "
                        "or mdev"),
              std::string::npos)
        << error("children: all\n");
    EXPECT_NE(error("children: none\nmdev_type: x\n").find("goes with children: mdev"),
              std::string::npos);
    EXPECT_NE(error("children: none\nchildren: mdev\n").find("twice"), std::string::npos)
        << error("children: none\nchildren: mdev\n");
    EXPECT_NE(error("childs: none\n").find("childs"), std::string::npos);
    // The example policy of the repository parses.
    EXPECT_NO_THROW(load_gpu_policy(fs::path(FORKY_SOURCE_DIR) / "policies" / "gpu.yaml"));
}

TEST(GpuPolicyDecisions, ChildrenGetFreeGpusOfTheSameModelOrNewMdevsOrNothing) {
    GpuInventory inv = three_h100s();
    inv.functions["0000:65:00.0"].held_by = {"parent"};
    inv.gpus[0].held_by = {"parent"};
    const std::vector<GpuAssignment> parent{{GpuAssignment::Kind::pci, "0000:65:00.0", "", ""}};

    GpuPolicy none;
    auto n = pick_child_gpus(inv, parent, none, 3, "'h'");
    ASSERT_EQ(n.size(), 3u);
    EXPECT_TRUE(n[0].empty() && n[1].empty() && n[2].empty());

    GpuPolicy exclusive;
    exclusive.children = GpuPolicy::Children::exclusive;
    exclusive.source = "gpu.yaml";
    auto e = pick_child_gpus(inv, parent, exclusive, 2, "'h'");
    ASSERT_EQ(e.size(), 2u);
    EXPECT_EQ(e[0].at(0).address, "0000:67:00.0");
    EXPECT_EQ(e[1].at(0).address, "0000:68:00.0"); // never the parent's, never one twice
    try {
        pick_child_gpus(inv, parent, exclusive, 3, "'h'");
        ADD_FAILURE() << "a GPU was given twice";
    } catch (const ConflictError& err) {
        const std::string m = err.what();
        EXPECT_NE(m.find("Not enough free GPUs like 0000:65:00.0 (NVIDIA Corporation GH100 [H100 "
                         "SXM5 80GB]) on 'h': the fork needs 3, 2 free"),
                  std::string::npos)
            << m;
        EXPECT_NE(m.find("(GPU policy gpu.yaml: children: exclusive)"), std::string::npos) << m;
    }

    GpuPolicy mdev;
    mdev.children = GpuPolicy::Children::mdev;
    EXPECT_THROW(pick_child_gpus(inv, parent, mdev, 1, "'h'"), ConflictError); // no type named
    mdev.mdev_type = "nvidia-593";
    // 65 is the parent's whole: its slices are out; 67 and 68 have two each.
    auto m = pick_child_gpus(inv, parent, mdev, 4, "'h'");
    ASSERT_EQ(m.size(), 4u);
    EXPECT_EQ(m[0].at(0).kind, GpuAssignment::Kind::mdev);
    EXPECT_EQ(m[0].at(0).address, "0000:67:00.0");
    EXPECT_EQ(m[3].at(0).address, "0000:68:00.0");
    EXPECT_THROW(pick_child_gpus(inv, parent, mdev, 5, "'h'"), ConflictError);

    // A parent with an mdev: its children get new ones of its type.
    const std::vector<GpuAssignment> sliced{
        {GpuAssignment::Kind::mdev, "0000:67:00.0", "nvidia-593", "u"}};
    GpuPolicy by_type;
    by_type.children = GpuPolicy::Children::mdev;
    auto s = pick_child_gpus(inv, sliced, by_type, 2, "'h'");
    EXPECT_EQ(s[1].at(0).mdev_type, "nvidia-593");
}

TEST_F(GpusOnTestDriver, UpPassesTheGpuThroughAndAGpuIsNeverGivenTwice) {
    const DomainSpec spec = gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n", "gpu_fork: detach\n");
    up_.name = "first";
    vm_up(host(), spec, up_);
    const std::string xml = xml_of("first");
    EXPECT_NE(xml.find("<hostdev mode='subsystem' type='pci' managed='yes'>"), std::string::npos)
        << xml;
    EXPECT_EQ(domain_pci_hostdevs(xml), std::vector<std::string>{"0000:65:00.0"});
    EXPECT_TRUE(read_lineage(host().domain("first").get())->gpu_fork_detach);
    EXPECT_EQ(list_gpus(host())[0].held_by, std::vector<std::string>{"first"});
    // The same GPU for a second VM: refused before anything is made.
    up_.name = "second";
    try {
        vm_up(host(), spec, up_);
        ADD_FAILURE() << "one GPU went to two domains";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("0000:65:00.0 is held by 'first'"), std::string::npos)
            << e.what();
    }
    EXPECT_FALSE(host().find_domain("second"));
    EXPECT_FALSE(host().find_volume(lock_volume_name("second")));
    // The RTX is held by 'holder' (the node description's domain).
    up_.name = "third";
    EXPECT_THROW(vm_up(host(), gpu_spec("gpus: [{vendor: nvidia, count: 1}]\n"), up_),
                 ConflictError);
    EXPECT_FALSE(host().find_domain("third"));
    // The GPU lock is free again.
    EXPECT_FALSE(host().find_volume(lock_volume_name(gpus_lock_name)));
}

TEST_F(GpusOnTestDriver, AGpuTakenWhileUpWaitedForTheLockIsSeen) {
    // Another forky defines a domain holding the GPU between up's first look and its pick
    // under the lock: the pick under the lock sees it.
    int calls = 0;
    devices_->on_caps = [&] {
        if (++calls != 2)
            return;
        const std::string other =
            "<domain type='test'><name>sneaky</name><memory>65536</memory><os><type>hvm</type>"
            "</os><devices>" +
            hostdev_xml({GpuAssignment::Kind::pci, "0000:65:00.0", "", ""}) + "</devices></domain>";
        DomainPtr d(virDomainDefineXML(host().conn(), other.c_str()));
        ASSERT_TRUE(d);
    };
    up_.name = "late";
    try {
        vm_up(host(), gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n"), up_);
        ADD_FAILURE() << "the GPU went to two domains";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("held by 'sneaky'"), std::string::npos) << e.what();
    }
    EXPECT_EQ(calls, 2);
    EXPECT_FALSE(host().find_domain("late"));
}

TEST_F(GpusOnTestDriver, NoPassthroughIsRefusedBeforeAnythingChanges) {
    devices_->caps = caps_no_iommu;
    up_.name = "nope";
    try {
        vm_up(host(), gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n"), up_);
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("no VFIO PCI backend"), std::string::npos);
    }
    EXPECT_FALSE(host().find_domain("nope"));
    EXPECT_FALSE(host().find_volume(lock_volume_name("nope")));
    EXPECT_THROW(vm_up_xml(host(), gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n"), up_),
                 ConflictError);
}

TEST_F(GpusOnTestDriver, MdevsAreMadeForTheVmRemovedOnFailureAndPrintXmlMakesNone) {
    const DomainSpec spec = gpu_spec("gpus: [{mdev_type: nvidia-593}]\n");
    up_.name = "shown";
    const std::string shown = vm_up_xml(host(), spec, up_);
    EXPECT_NE(shown.find("type=\"mdev\" model=\"vfio-pci\""), std::string::npos) << shown;
    for (const auto& c : devices_->calls)
        EXPECT_EQ(c.rfind("create", 0), std::string::npos) << "print-xml made an mdev";

    // A failure after the mdev was made: it goes again.
    devices_->calls.clear();
    up_.name = "failing";
    up_.ctx.faults.fail = "up-define";
    EXPECT_THROW(vm_up(host(), spec, up_), Error);
    ASSERT_GE(devices_->calls.size(), 3u);
    std::string made;
    for (const auto& c : devices_->calls)
        if (c.rfind("create 0000:65:00.0 nvidia-593 ", 0) == 0)
            made = c.substr(c.rfind(' ') + 1);
    ASSERT_FALSE(made.empty());
    EXPECT_EQ(devices_->calls.back(), "remove " + made);
    EXPECT_FALSE(host().find_domain("failing"));

    // Made, named in the domain and its lineage.
    devices_->calls.clear();
    up_.ctx.faults.fail.clear();
    up_.name = "sliced";
    vm_up(host(), spec, up_);
    const Lineage l = *read_lineage(host().domain("sliced").get());
    ASSERT_EQ(l.mdevs.size(), 1u);
    EXPECT_NE(xml_of("sliced").find(l.mdevs[0]), std::string::npos);
    EXPECT_EQ(devices_->calls.back(), "create 0000:65:00.0 nvidia-593 " + l.mdevs[0]);
}

TEST_F(GpusOnTestDriver, ACutDetachesAndReattachesAndIsRefusedUnlessTheSpecAllowsIt) {
    const std::vector<GpuAssignment> gpus{{GpuAssignment::Kind::pci, "0000:65:00.0", "", ""}};
    try {
        require_gpu_cut_allowed("web", false, gpus, "a fork");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("VM 'web' has GPUs passed through (0000:65:00.0)"),
                  std::string::npos);
        EXPECT_NE(std::string(e.what()).find("'gpu_fork: detach'"), std::string::npos);
    }
    EXPECT_NO_THROW(require_gpu_cut_allowed("web", true, gpus, "a fork"));
    EXPECT_NO_THROW(require_gpu_cut_allowed("web", false, {}, "a fork"));

    up_.name = "web";
    vm_up(host(), gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n"), up_);
    DomainPtr dom = host().domain("web");
    devices_->calls.clear();
    {
        GpusDetached cut(devices_, dom.get(), "web", gpus);
        EXPECT_EQ(devices_->calls.back(), "detach web 0000:65:00.0");
    }
    EXPECT_EQ(devices_->calls.back(), "attach web 0000:65:00.0 live");
    // A failed cut still gives the GPU back.
    devices_->calls.clear();
    try {
        GpusDetached cut(devices_, dom.get(), "web", gpus);
        throw Error("the snapshot failed");
    } catch (const Error&) {
    }
    EXPECT_EQ(devices_->calls, (std::vector<std::string>{"detach web 0000:65:00.0",
                                                         "attach web 0000:65:00.0 live"}));

    // The children's plan: the policy on this host's inventory, before anything changes.
    GpuPolicy exclusive;
    exclusive.children = GpuPolicy::Children::exclusive;
    // 66 (the only other NVIDIA) is held by 'holder': nothing for the child.
    EXPECT_THROW(plan_child_gpus(host(), *devices_, xml_of("web"), exclusive, 1), ConflictError);
    GpuPolicy mdev;
    mdev.children = GpuPolicy::Children::mdev;
    mdev.mdev_type = "nvidia-593";
    // The parent holds 65 whole: no slices of it either.
    EXPECT_THROW(plan_child_gpus(host(), *devices_, xml_of("web"), mdev, 1), ConflictError);
    const ChildGpuPlan none = plan_child_gpus(host(), *devices_, xml_of("web"), {}, 2);
    EXPECT_EQ(none.parent, gpus);
    EXPECT_EQ(none.children.size(), 2u);
}

#include "fork.hpp"

TEST_F(GpusOnTestDriver, AForkOfAVmWithAGpuIsRefusedOrDetachesAndGivesItBack) {
    up_.name = "plain";
    vm_up(host(), gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n"), up_);
    ForkOptions fo;
    fo.ctx.gpu_devices = devices_;
    fo.lock_wait = std::chrono::seconds(0);
    devices_->calls.clear();
    try {
        vm_fork(host(), "plain", fo);
        ADD_FAILURE() << "forked without gpu_fork: detach";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("'gpu_fork: detach'"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(devices_->calls.empty());
    EXPECT_FALSE(host().find_domain("plain-1"));
    EXPECT_FALSE(host().find_volume(lock_volume_name("plain")));
    ASSERT_NO_THROW(vm_remove(host(), "plain", true));

    // Allowed, with a policy the host cannot satisfy: refused before anything changes.
    up_.name = "web";
    vm_up(host(),
          gpu_spec("gpus: [{pci: \"0000:65:00.0\"}]\n",
                   "gpu_fork: detach\ndisks: [{base: ../images/data.qcow2, format: qcow2}]\n"),
          up_);
    fo.gpu_policy.children = GpuPolicy::Children::exclusive;
    devices_->calls.clear();
    try {
        vm_fork(host(), "web", fo);
        ADD_FAILURE() << "a fork went on without GPUs for its children";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("Not enough free GPUs like 0000:65:00.0"),
                  std::string::npos)
            << e.what();
    }
    for (const auto& c : devices_->calls)
        EXPECT_EQ(c.rfind("caps", 0), 0u) << "changed a device: " << c;
    EXPECT_FALSE(host().find_domain("web-1"));
    EXPECT_FALSE(host().find_volume(lock_volume_name("web-1")));
    EXPECT_FALSE(host().find_volume(lock_volume_name(gpus_lock_name)));

    // Children get none: the parent's GPU is detached for the cut and given back, whatever
    // happens to the cut (the test driver cannot make its snapshot).
    fo.gpu_policy = {};
    devices_->calls.clear();
    try {
        vm_fork(host(), "web", fo);
    } catch (const Error& e) {
        std::cerr << "fork: " << e.what() << "\n";
    }
    ASSERT_GE(devices_->calls.size(), 2u);
    EXPECT_EQ(devices_->calls.front(), "detach web 0000:65:00.0");
    EXPECT_EQ(devices_->calls.back(), "attach web 0000:65:00.0 live");
}

TEST(GpuPick, AGpuIsNeverBothWholeAndSlicedAndOnlyGpusArePassedThrough) {
    GpuInventory inv = three_h100s();
    for (const char* spec : {"gpus: [{pci: 65:00.0}, {mdev_type: nvidia-593, count: 2}]\n",
                             "gpus: [{mdev_type: nvidia-593, count: 2}, {pci: 65:00.0}]\n"}) {
        auto picked = pick_gpus(inv, want(spec), "me", "'h'");
        ASSERT_EQ(picked.size(), 3u) << spec;
        for (const auto& p : picked) {
            if (p.kind == GpuAssignment::Kind::mdev) {
                EXPECT_NE(p.address, "0000:65:00.0") << spec << ": sliced the GPU it passes whole";
            }
        }
    }
    // All three H100s whole, and a slice: nothing left to slice.
    EXPECT_THROW(pick_gpus(inv,
                           want("gpus: [{vendor: nvidia, count: 3}, {mdev_type: nvidia-593}]\n"),
                           "me", "'h'"),
                 ConflictError);
    // The NIC is no GPU: refused; the audio function only beside its GPU.
    inv.functions["0000:03:00.0"] = {"0000:03:00.0", "0x020000", "igb", 7u, {}};
    try {
        pick_gpus(inv, want("gpus: [{pci: 03:00.0}]\n"), "me", "'h'");
        ADD_FAILURE() << "a NIC was passed through";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("it is no GPU (PCI class 0x020000)"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_THROW(pick_gpus(inv, want("gpus: [{pci: 66:00.1}]\n"), "me", "'h'"), ConflictError);
    // Picks forky makes on its own take only GPUs set aside for guests.
    inv.gpus[0].driver = "nvidia";
    auto one = pick_gpus(inv, want("gpus: [{vendor: nvidia}]\n"), "me", "'h'");
    EXPECT_EQ(one.at(0).address, "0000:67:00.0");
    inv.gpus[1].driver = inv.gpus[2].driver = "nvidia";
    try {
        pick_gpus(inv, want("gpus: [{vendor: nvidia}]\n"), "me", "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("bound to the host's driver 'nvidia'"),
                  std::string::npos)
            << e.what();
    }
    // Named, it is the user's call.
    EXPECT_NO_THROW(pick_gpus(inv, want("gpus: [{pci: 65:00.0}]\n"), "me", "'h'"));
}

TEST(GpuPolicyDecisions, AGpusAudioFunctionGoesWithItAndIsNoGpuOfItsOwn) {
    GpuInventory inv = three_h100s();
    // Two RTX 3090s, each with its audio function bound to the host's sound driver.
    Gpu second = *inv.gpu("0000:66:00.0");
    second.address = "0000:69:00.0";
    second.iommu_group = 44;
    inv.gpus.push_back(second);
    inv.functions["0000:69:00.0"] = {"0000:69:00.0", "0x030000", "", 44u, {}};
    inv.functions["0000:69:00.1"] = {"0000:69:00.1", "0x040300", "snd_hda_intel", 44u, {}};
    for (const char* a : {"0000:66:00.0", "0000:66:00.1"})
        inv.functions[a].held_by = {"parent"};
    inv.gpus[3].held_by = {"parent"};
    const std::vector<GpuAssignment> parent{{GpuAssignment::Kind::pci, "0000:66:00.0", "", ""},
                                            {GpuAssignment::Kind::pci, "0000:66:00.1", "", ""}};
    GpuPolicy exclusive;
    exclusive.children = GpuPolicy::Children::exclusive;
    auto e = pick_child_gpus(inv, parent, exclusive, 1, "'h'");
    ASSERT_EQ(e.at(0).size(), 2u);
    EXPECT_EQ(e[0][0].address, "0000:69:00.0");
    EXPECT_EQ(e[0][1].address, "0000:69:00.1"); // its audio function with it
    EXPECT_THROW(pick_child_gpus(inv, parent, exclusive, 2, "'h'"), ConflictError);
    GpuPolicy mdev;
    mdev.children = GpuPolicy::Children::mdev;
    mdev.mdev_type = "nvidia-593";
    auto m = pick_child_gpus(inv, parent, mdev, 2, "'h'");
    EXPECT_EQ(m.at(0).size(), 1u); // one slice for the one GPU, none for its audio
    // A parent mdev the host does not list: a clear refusal, no empty names.
    const std::vector<GpuAssignment> lost{{GpuAssignment::Kind::mdev, "", "", "abc"}};
    try {
        pick_child_gpus(inv, lost, mdev, 1, "'h'");
        ADD_FAILURE();
    } catch (const ConflictError& err) {
        EXPECT_NE(std::string(err.what()).find("mediated device abc is not among the node devices"),
                  std::string::npos)
            << err.what();
    }
}

TEST(GpuPolicyFile, ASecondYamlDocumentIsRefused) {
    try {
        parse_gpu_policy("children: none\n---\nchildren: exclusive\n", "gpu.yaml");
        ADD_FAILURE();
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("a second YAML document"), std::string::npos)
            << e.what();
    }
}
