// libforky against libvirt's test driver: a fresh in-memory hypervisor per test, so
// these run anywhere, with no libvirtd and no QEMU.
#include "errors.hpp"
#include "gc.hpp"
#include "host.hpp"
#include "vm.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <pugixml.hpp>

namespace fs = std::filesystem;
using namespace forky;

namespace {

// The test specs live in tests/data/golden and take their images from tests/data/images.
UpOptions test_up_options() {
    UpOptions o;
    o.image_dirs = {FORKY_TEST_DATA};
    return o;
}

class VmOnTestDriver : public ::testing::Test {
protected:
    void SetUp() override {
        // test:///<file> gives each connection its own state; test:///default is shared.
        node_ = fs::temp_directory_path() /
                ("forky-test-node-" + std::to_string(::getpid()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".xml");
        std::ofstream(node_) << "<node/>\n";
        HostOptions o;
        o.uri = "test://" + node_.string();
        o.pool_dir = "/var/lib/forky-unit-test"; // the test driver never touches it
        o.create_pool = true;
        host_.emplace(o);
        spec_ = load_spec(fs::path(FORKY_TEST_DATA) / "golden" / "tiny.yaml");
    }
    void TearDown() override { fs::remove(node_); }

    Host& host() { return *host_; }

    fs::path node_;
    std::optional<Host> host_;
    DomainSpec spec_;
    UpOptions up_ = test_up_options();
};

std::string disk_source(Host& host, const std::string& name) {
    pugi::xml_document doc;
    doc.load_string(domain_xml(host.domain(name).get()).c_str());
    return doc.select_node("/domain/devices/disk/source").node().attribute("file").value();
}

} // namespace

TEST_F(VmOnTestDriver, PoolIsCreatedOnFirstUse) {
    EXPECT_EQ(host().pool_path(), "/var/lib/forky-unit-test");
    int autostart = 0;
    ASSERT_EQ(virStoragePoolGetAutostart(host().pool(), &autostart), 0);
    EXPECT_EQ(autostart, 1);
    EXPECT_EQ(virStoragePoolIsActive(host().pool()), 1);
}

TEST_F(VmOnTestDriver, OnlyAnExplicitRequestCreatesThePool) {
    // A typo in --pool must not make (and autostart) a new pool: only `forky up` and
    // --create-pool may.
    HostOptions o = host().options();
    o.pool = "forkyy";
    o.create_pool = false;
    Host typo(o);
    try {
        typo.pool();
        FAIL() << "a pool was created without being asked for";
    } catch (const NotFoundError& e) {
        EXPECT_NE(std::string(e.what()).find("No storage pool 'forkyy'"), std::string::npos);
    }
    EXPECT_THROW(collect_garbage(typo, GcOptions{true, true}), NotFoundError);
    StoragePoolPtr none(virStoragePoolLookupByName(typo.conn(), "forkyy"));
    EXPECT_FALSE(none);
    clear_libvirt_error();
}

TEST_F(VmOnTestDriver, DeletingAVolumeThatIsGoneIsNotAnError) {
    host().create_raw_volume("x.fp1.mem");
    EXPECT_TRUE(host().delete_volume("x.fp1.mem"));
    EXPECT_FALSE(host().delete_volume("x.fp1.mem")) << "gone already: not counted";
}

TEST_F(VmOnTestDriver, AutoAccelFallsBackToEmulationWithoutKvm) {
    EXPECT_EQ(host().domain_type_for(Accel::automatic), "qemu");
    EXPECT_EQ(host().domain_type_for(Accel::tcg), "qemu");
    EXPECT_THROW(host().domain_type_for(Accel::kvm), ConflictError);
}

TEST_F(VmOnTestDriver, UpDefinesStartsAndRecordsLineage) {
    EXPECT_EQ(vm_up(host(), spec_, up_), "tiny");
    auto vms = vm_list(host());
    ASSERT_EQ(vms.size(), 1u);
    const VmInfo& vm = vms[0];
    EXPECT_EQ(vm.name, "tiny");
    EXPECT_EQ(vm.state, VmState::running);
    EXPECT_EQ(vm.domain_type, "qemu");
    EXPECT_EQ(vm.memory_bytes, 256ULL << 20);
    EXPECT_EQ(vm.lineage.generation, 0u);
    EXPECT_TRUE(vm.lineage.parent.empty());
    EXPECT_EQ(vm.lineage.pool, "forky");
    EXPECT_EQ(vm.lineage.spec, spec_.source.string());
    ASSERT_EQ(vm.lineage.volumes.size(), 2u);
    // The disk is a pool overlay backed by the base image, never the base itself.
    auto vols = host().volumes();
    ASSERT_EQ(vols.size(), 2u);
    bool found_overlay = false;
    for (const auto& v : vols) {
        if (v.name == "tiny.vda.qcow2") {
            found_overlay = true;
            EXPECT_EQ(v.backing, spec_.disks[0].base.path.string());
            EXPECT_EQ(disk_source(host(), "tiny"), v.path);
        }
    }
    EXPECT_TRUE(found_overlay);
}

TEST_F(VmOnTestDriver, UpWithAnotherNameAndNoStart) {
    UpOptions o = up_;
    o.name = "other";
    o.start = false;
    vm_up(host(), spec_, o);
    EXPECT_EQ(vm_info(host(), "other").state, VmState::shut_off);
    EXPECT_TRUE(host().find_volume("other.vda.qcow2"));
    o.name = "bad/name";
    EXPECT_THROW(vm_up(host(), spec_, o), UsageError);
}

TEST_F(VmOnTestDriver, UpRefusesATakenName) {
    vm_up(host(), spec_, up_);
    EXPECT_THROW(vm_up(host(), spec_, up_), ConflictError);
    EXPECT_EQ(host().volumes().size(), 2u);
}

TEST_F(VmOnTestDriver, FailedUpLeavesNothingBehind) {
    // The console volume's name is taken: the disk overlay made before must go again.
    host().create_raw_volume("tiny.console.log");
    EXPECT_THROW(vm_up(host(), spec_, up_), ConflictError);
    EXPECT_FALSE(host().find_volume("tiny.vda.qcow2"));
    EXPECT_FALSE(host().find_domain("tiny"));
    EXPECT_EQ(host().volumes().size(), 1u);
}

TEST_F(VmOnTestDriver, StopAndRemove) {
    vm_up(host(), spec_, up_);
    EXPECT_THROW(vm_remove(host(), "tiny"), ConflictError); // running
    StopOptions force;
    force.force = true;
    EXPECT_TRUE(vm_stop(host(), "tiny", force));
    EXPECT_EQ(vm_info(host(), "tiny").state, VmState::shut_off);
    EXPECT_FALSE(vm_stop(host(), "tiny", force));
    RemoveResult r = vm_remove(host(), "tiny");
    EXPECT_EQ(r.deleted.size(), 2u);
    EXPECT_TRUE(r.kept.empty());
    EXPECT_FALSE(host().find_domain("tiny"));
    EXPECT_TRUE(host().volumes().empty());
}

TEST_F(VmOnTestDriver, RemovingByNameAndUuidSparesAVmThatTookTheName) {
    vm_up(host(), spec_, up_);
    const std::string uuid = domain_uuid(host().domain("tiny").get());
    remove_domain(host(), "tiny", "00000000-0000-4000-8000-000000000000");
    EXPECT_TRUE(host().find_domain("tiny")) << "a VM with another UUID was removed";
    remove_domain(host(), "tiny", uuid);
    EXPECT_FALSE(host().find_domain("tiny"));
    remove_domain(host(), "tiny", uuid); // gone already: fine
}

TEST_F(VmOnTestDriver, RemoveKeepsALayerSomethingElseNeeds) {
    vm_up(host(), spec_, up_);
    std::string top = host().volume_path(host().find_volume("tiny.vda.qcow2").get());
    std::string child_top =
        host().volume_path(host().create_overlay("child.vda.qcow2", top, DiskFormat::qcow2).get());
    // A domain runs on the child layer, so the chain under it is live.
    std::string child_xml = "<domain type='test'><name>child</name><memory>65536</memory>"
                            "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
                            "<source file='" +
                            child_top + "'/><target dev='vda'/></disk></devices></domain>";
    DomainPtr child(virDomainDefineXML(host().conn(), child_xml.c_str()));
    ASSERT_TRUE(child);
    RemoveResult r = vm_remove(host(), "tiny", /*force=*/true);
    ASSERT_EQ(r.kept.size(), 1u);
    EXPECT_NE(r.kept[0].find("tiny.vda.qcow2 (needed by volume 'child.vda.qcow2')"),
              std::string::npos);
    EXPECT_TRUE(host().find_volume("tiny.vda.qcow2"));
    EXPECT_FALSE(host().find_volume("tiny.console.log"));

    // Once nothing runs on the child layer, gc reclaims both layers, newest first.
    ASSERT_EQ(virDomainUndefine(child.get()), 0);
    GcResult gc = collect_garbage(host());
    EXPECT_EQ(gc.deleted_volumes, (std::vector<std::string>{"child.vda.qcow2", "tiny.vda.qcow2"}));
    EXPECT_TRUE(host().volumes().empty());
}

TEST_F(VmOnTestDriver, UnknownAndForeignDomains) {
    EXPECT_THROW(vm_info(host(), "nope"), NotFoundError);
    EXPECT_THROW(vm_remove(host(), "nope"), NotFoundError);
    StopOptions force;
    force.force = true;
    EXPECT_THROW(vm_stop(host(), "nope", force), NotFoundError);
    const char* foreign = "<domain type='test'><name>foreign</name><memory>65536</memory>"
                          "<os><type>hvm</type></os></domain>";
    DomainPtr d(virDomainDefineXML(host().conn(), foreign));
    ASSERT_TRUE(d);
    EXPECT_TRUE(vm_list(host()).empty()); // not forky's
    EXPECT_THROW(vm_remove(host(), "foreign", true), ConflictError);
    ASSERT_EQ(virDomainCreate(d.get()), 0);
    try {
        vm_stop(host(), "foreign", force);
        FAIL() << "stopped a domain forky did not make";
    } catch (const ConflictError& e) {
        EXPECT_NE(std::string(e.what()).find("Domain 'foreign' was not made by forky"),
                  std::string::npos);
    }
    EXPECT_TRUE(host().find_domain("foreign"));
    EXPECT_EQ(virDomainIsActive(d.get()), 1);
}

TEST(VmOnSharedTestDriver, WrongPoolIsRefused) {
    // Two Hosts on one hypervisor need test:///default, the state shared in a process.
    HostOptions o;
    o.uri = "test:///default";
    o.pool_dir = "/var/lib/forky-unit-test";
    o.create_pool = true;
    Host host(o);
    UpOptions up = test_up_options();
    up.name = "wrong-pool-vm";
    vm_up(host, load_spec(fs::path(FORKY_TEST_DATA) / "golden" / "tiny.yaml"), up);
    o.pool = "elsewhere";
    o.pool_dir = "/var/lib/forky-unit-test-elsewhere";
    Host other(o);
    EXPECT_THROW(vm_remove(other, "wrong-pool-vm", true), ConflictError);
    StopOptions force;
    force.force = true;
    EXPECT_THROW(vm_stop(other, "wrong-pool-vm", force), ConflictError);
    EXPECT_EQ(vm_info(host, "wrong-pool-vm").state, VmState::running);
    EXPECT_TRUE(host.find_domain("wrong-pool-vm"));
    EXPECT_EQ(vm_remove(host, "wrong-pool-vm", true).deleted.size(), 2u);
}

TEST(LibvirtErrors, ConnectionFailureIsTyped) {
    HostOptions o;
    o.uri = "qemu+unix:///system?socket=/nonexistent/forky-sock";
    try {
        Host h(o);
        FAIL() << "connected to a missing socket";
    } catch (const LibvirtError& e) {
        EXPECT_NE(std::string(e.what()).find("Failed to connect to libvirt at '"),
                  std::string::npos);
        EXPECT_NE(e.libvirt_code(), 0);
        EXPECT_EQ(e.code(), ExitCode::libvirt);
    }
}

TEST_F(VmOnTestDriver, PrintXmlShowsWhatUpWouldDefineAndMakesNothing) {
    up_.name = "shown";
    const std::string xml = vm_up_xml(host(), spec_, up_);
    EXPECT_NE(xml.find("<name>shown</name>"), std::string::npos) << xml;
    EXPECT_NE(xml.find("/var/lib/forky-unit-test/shown.vda.qcow2"), std::string::npos) << xml;
    EXPECT_NE(xml.find("forky:lineage"), std::string::npos) << xml;
    EXPECT_FALSE(host().find_domain("shown"));
    EXPECT_FALSE(host().find_volume("shown.vda.qcow2"));
    EXPECT_FALSE(host().find_volume(lock_volume_name("shown")));
    // The same checks as up: a bad name is refused.
    up_.name = "bad name";
    EXPECT_THROW(vm_up_xml(host(), spec_, up_), UsageError);
}
