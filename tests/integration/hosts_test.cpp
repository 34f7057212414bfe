// The fleet: a host inventory of private libvirtds (this test's and a second one it
// starts) plus one that is down, as `forky hosts` reports them.
#include "harness.hpp"

#include "errors.hpp"
#include "host.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace forky::it;

namespace {

// A private libvirtd of its own, stopped when the test ends (and by its watchdog should
// this process die first).
struct SecondHypervisor {
    fs::path dir = test_dir() / "second";
    std::string uri;
    SecondHypervisor() {
        CommandResult r = run({(source_dir() / "scripts/private-libvirtd").string(), "start",
                               dir.string(), "--watch", std::to_string(::getpid())});
        EXPECT_EQ(r.rc, 0) << r.all();
        uri = r.out.substr(0, r.out.find('\n'));
    }
    ~SecondHypervisor() {
        run({(source_dir() / "scripts/private-libvirtd").string(), "stop", dir.string()});
    }
};

} // namespace

TEST(Hosts, EveryHostOfTheFleetReportsItselfOrWhyNot) {
    SecondHypervisor b;
    ASSERT_FALSE(b.uri.empty());
    up_tiny("hh");
    const fs::path inventory = test_dir() / "hosts.yaml";
    std::ofstream(inventory) << "hosts:\n"
                             << "  - name: a\n    uri: " << libvirt_uri()
                             << "\n    pool: forky-it\n    labels: {rack: r1}\n"
                             << "  - name: b\n    uri: " << b.uri
                             << "\n    pool: forky-b\n    max_forks: 8\n"
                             << "  - name: down\n    uri: qemu+unix:///system?socket="
                             << (test_dir() / "nobody.sock").string() << "\n";
    CommandResult r = run_forky({"--hosts", inventory.string(), "hosts", "--json"});
    ASSERT_EQ(r.rc, 6) << r.all(); // after the listing: a host did not answer
    EXPECT_TRUE(contains(r.err, "1 of 3 hosts did not answer")) << r.err;
    const auto hosts = nlohmann::json::parse(r.out);
    ASSERT_EQ(hosts.size(), 3u) << r.out;
    const auto& a = hosts[0];
    EXPECT_EQ(a["name"], "a");
    EXPECT_EQ(a["reachable"], true) << r.out;
    EXPECT_EQ(a["forky_vms_running"], 1) << r.out;
    EXPECT_EQ(a["pool_exists"], true);
    EXPECT_GT(a["pool_free_bytes"].get<std::uint64_t>(), 0u);
    EXPECT_GT(a["cpus"].get<unsigned>(), 0u);
    EXPECT_GT(a["memory_free_bytes"].get<std::uint64_t>(), 0u);
    EXPECT_FALSE(a["libvirt_version"].get<std::string>().empty());
    EXPECT_FALSE(a["qemu_version"].is_null());
    EXPECT_EQ(a["labels"]["rack"], "r1");
    const auto& second = hosts[1];
    EXPECT_EQ(second["reachable"], true) << r.out;
    EXPECT_EQ(second["forky_vms"], 0);
    EXPECT_EQ(second["pool_exists"], false);
    EXPECT_EQ(second["max_forks"], 8);
    EXPECT_TRUE(contains(second["problem"].get<std::string>(), "no pool 'forky-b'")) << r.out;
    const auto& down = hosts[2];
    EXPECT_EQ(down["reachable"], false);
    EXPECT_TRUE(contains(down["problem"].get<std::string>(), "Failed to connect")) << r.out;

    CommandResult text = run_forky({"--hosts", inventory.string(), "hosts"});
    EXPECT_EQ(text.rc, 6) << text.all();
    EXPECT_TRUE(contains(text.out, "rack=r1")) << text.out;
    EXPECT_TRUE(contains(text.out, "1/1 run")) << text.out;
    EXPECT_TRUE(contains(text.out, "down         no    ")) << text.out;

    // Asking starts nothing: a stopped pool is reported as such and stays stopped.
    ASSERT_EQ(run_forky({"--connect", b.uri, "--pool", "forky-b", "--pool-dir",
                         (test_dir() / "pool-b").string(), "--create-pool", "gc"})
                  .rc,
              0);
    ASSERT_EQ(run({"virsh", "-q", "-c", b.uri, "pool-destroy", "forky-b"}).rc, 0);
    CommandResult stopped = run_forky({"--hosts", inventory.string(), "hosts", "--json"});
    EXPECT_TRUE(contains(stopped.out, "pool 'forky-b' is not running")) << stopped.out;
    EXPECT_TRUE(
        contains(run({"virsh", "-q", "-c", b.uri, "pool-info", "forky-b"}).out, "inactive"));

    // Without an inventory: the one host of --connect.
    CommandResult one = run_forky({"hosts", "--json"});
    EXPECT_EQ(one.rc, 0) << one.all();
    EXPECT_TRUE(contains(one.out, "\"name\":\"default\"")) << one.out;

    // Bad inventories are spec errors naming file, line and key; a named one must exist.
    std::ofstream(inventory) << "hosts:\n  - name: a\n    url: qemu:///system\n";
    CommandResult bad = run_forky({"--hosts", inventory.string(), "hosts"});
    EXPECT_EQ(bad.rc, 3) << bad.all();
    EXPECT_TRUE(contains(bad.err, inventory.string() + ":3: key 'hosts[0].url': unknown key"))
        << bad.err;
    CommandResult missing = run_forky({"hosts"}, {"FORKY_HOSTS=/nonexistent/hosts.yaml"});
    EXPECT_EQ(missing.rc, 3) << missing.all();
    remove_all({"hh"});
}

// A fork point's volumes reach another host through libvirt streams: a memory image
// (sparse) and a qcow2 layer arrive byte for byte, holes stay holes.
TEST(Hosts, VolumesCrossToAnotherHostByteForByteAndSparse) {
    SecondHypervisor b;
    ASSERT_FALSE(b.uri.empty());
    up_tiny("hv");
    ASSERT_EQ(run_forky({"snapshot", "hv", "s"}).rc, 0);
    const fs::path b_pool = test_dir() / "pool-b";
    ASSERT_EQ(run_forky({"--connect", b.uri, "--pool", "forky-b", "--pool-dir", b_pool.string(),
                         "--create-pool", "gc"})
                  .rc,
              0);

    forky::HostOptions ao;
    ao.uri = libvirt_uri();
    ao.pool = "forky-it";
    forky::Host a_host(ao);
    forky::HostOptions bo;
    bo.uri = b.uri;
    bo.pool = "forky-b";
    forky::Host b_host(bo);

    std::uint64_t last_done = 0;
    std::uint64_t calls = 0;
    const auto mem = a_host.ship_volume("hv.fp1.mem", b_host, "hv.fp1.mem",
                                        [&](std::uint64_t done, std::uint64_t total) {
                                            EXPECT_GE(done, last_done);
                                            EXPECT_LE(done, total);
                                            last_done = done;
                                            ++calls;
                                        });
    EXPECT_EQ(mem.size, fs::file_size(pool_dir() / "hv.fp1.mem"));
    EXPECT_EQ(last_done, mem.size);
    EXPECT_GT(calls, 1u) << "progress is reported as it goes";
    EXPECT_EQ(sha256_of(b_pool / "hv.fp1.mem"), sha256_of(pool_dir() / "hv.fp1.mem"));
    // Holes stay holes: what arrives takes no more disk than what left (plus a block per
    // run of data that the file system rounds up).
    struct stat sa {};
    struct stat sb {};
    ASSERT_EQ(::stat((pool_dir() / "hv.fp1.mem").c_str(), &sa), 0);
    ASSERT_EQ(::stat((b_pool / "hv.fp1.mem").c_str(), &sb), 0);
    EXPECT_LE(sb.st_blocks * 512, sa.st_blocks * 512 + (4 << 20));
    EXPECT_LE(mem.data_bytes, mem.size);

    const auto layer = a_host.ship_volume("hv.vda.qcow2", b_host, "hv.vda.qcow2");
    EXPECT_EQ(sha256_of(b_pool / "hv.vda.qcow2"), sha256_of(pool_dir() / "hv.vda.qcow2"));
    EXPECT_EQ(layer.size, fs::file_size(pool_dir() / "hv.vda.qcow2"));

    // A layer backed by another layer of the pool: shipped, then renamed to name the copy
    // of its backing file there; qemu-img follows the chain on B and checks it clean.
    ASSERT_EQ(run_forky({"snapshot", "hv", "s2"}).rc, 0); // freezes hv.vda.fp1.qcow2
    a_host.ship_volume("hv.vda.fp1.qcow2", b_host, "hv.vda.fp1.qcow2");
    b_host.set_qcow2_backing("hv.vda.fp1.qcow2", (b_pool / "hv.vda.qcow2").string());
    CommandResult chain = run({"qemu-img", "info", "-U", "--output=json", "--backing-chain",
                               (b_pool / "hv.vda.fp1.qcow2").string()});
    EXPECT_TRUE(
        contains(chain.out, "\"backing-filename\": \"" + (b_pool / "hv.vda.qcow2").string() + "\""))
        << chain.all();
    EXPECT_EQ(run({"qemu-img", "check", "-U", (b_pool / "hv.vda.fp1.qcow2").string()}).rc, 0);

    // A volume that is not there: NotFound, and nothing is made on the other side.
    EXPECT_THROW(a_host.ship_volume("nope.mem", b_host, "nope.mem"), forky::NotFoundError);
    EXPECT_FALSE(fs::exists(b_pool / "nope.mem"));
    // A name taken on the other side: an error, and the volume there is left as it was.
    const std::string before = sha256_of(b_pool / "hv.vda.qcow2");
    EXPECT_THROW(a_host.ship_volume("hv.fp1.mem", b_host, "hv.vda.qcow2"), forky::Error);
    EXPECT_EQ(sha256_of(b_pool / "hv.vda.qcow2"), before);
    remove_all({"hv"});
}
