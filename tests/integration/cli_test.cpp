// The forky CLI end to end: real libvirtd, real QEMU (software emulation), the tiny
// test guest from scripts/build-test-guest.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <thread>

namespace fs = std::filesystem;
using namespace forky::it;

namespace {

const fs::path tiny_spec() {
    return source_dir() / "domains/tiny.yaml";
}
const fs::path base_image() {
    return source_dir() / "domains/images/data.qcow2";
}

std::string first_match(const std::string& text, const std::string& pattern) {
    std::smatch m;
    if (std::regex_search(text, m, std::regex(pattern)) && m.size() > 1)
        return m[1];
    return "";
}

} // namespace

TEST(Cli, UpBootsTheGuestAndItIsAnOrdinaryLibvirtDomain) {
    const std::string base_sum = sha256_of(base_image());
    ASSERT_FALSE(base_sum.empty());

    CommandResult up = run_forky({"up", "-f", tiny_spec().string(), "--name", "it-up"});
    ASSERT_EQ(up.rc, 0) << up.all();
    EXPECT_NE(up.out.find("Started VM 'it-up'"), std::string::npos) << up.out;

    // The guest really booted, keeps its token in memory, wrote it to its disk and
    // reads it back with the page cache dropped.
    std::string log = wait_for_console("it-up", "FORKY-BOOT token=([0-9a-f]{16}) disk=/dev/vda");
    std::string token = first_match(log, "FORKY-BOOT token=([0-9a-f]{16})");
    ASSERT_EQ(token.size(), 16u) << log;
    wait_for_console("it-up", "FORKY-TICK token=" + token + " counter=[0-9]+ disk=" + token);

    // forky ls --json and virsh both see it.
    CommandResult ls = run_forky({"ls", "--json"});
    ASSERT_EQ(ls.rc, 0) << ls.all();
    EXPECT_NE(ls.out.find("\"name\":\"it-up\""), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("\"state\":\"running\""), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("\"generation\":0"), std::string::npos) << ls.out;
    EXPECT_TRUE(has(domain_names(), "it-up"));

    // virsh dumpxml shows forky's lineage metadata.
    CommandResult xml = run({"virsh", "-c", libvirt_uri(), "dumpxml", "it-up"});
    ASSERT_EQ(xml.rc, 0) << xml.all();
    EXPECT_NE(xml.out.find("<forky:lineage xmlns:forky=\"https://forky.dev/xmlns/lineage/1\">"),
              std::string::npos)
        << xml.out;
    EXPECT_NE(xml.out.find("<forky:generation>0</forky:generation>"), std::string::npos);

    // The disk is an overlay in the pool backed by the untouched base image.
    fs::path overlay = pool_dir() / "it-up.vda.qcow2";
    CommandResult info = run({"qemu-img", "info", "-U", "--output=json", overlay.string()});
    ASSERT_EQ(info.rc, 0) << info.all();
    EXPECT_NE(info.out.find("\"backing-filename\": \"" + base_image().string() + "\""),
              std::string::npos)
        << info.out;
    EXPECT_NE(xml.out.find("<source file='" + overlay.string() + "'"), std::string::npos);

    // A guest without an ACPI daemon ignores the shutdown request: stop powers it off
    // after the timeout.
    CommandResult stop = run_forky({"stop", "it-up", "--timeout", "1"});
    ASSERT_EQ(stop.rc, 0) << stop.all();
    ls = run_forky({"ls", "--json"});
    EXPECT_NE(ls.out.find("\"state\":\"shut off\""), std::string::npos) << ls.out;
    EXPECT_EQ(run_forky({"stop", "it-up"}).out, "VM 'it-up' was not running\n");

    // Started again it boots anew (new token) on the same disk; the log keeps both boots.
    ASSERT_EQ(run({"virsh", "-c", libvirt_uri(), "start", "it-up"}).rc, 0);
    std::string again = wait_for_console("it-up", "FORKY-BOOT token=" + token +
                                                      "[^]*FORKY-BOOT token=(?!" + token + ")");
    EXPECT_FALSE(again.empty());

    CommandResult rm_running = run_forky({"rm", "it-up"});
    EXPECT_EQ(rm_running.rc, 5) << rm_running.all();
    CommandResult rm = run_forky({"rm", "--force", "it-up"});
    ASSERT_EQ(rm.rc, 0) << rm.all();
    EXPECT_FALSE(has(domain_names(), "it-up"));
    EXPECT_FALSE(has(pool_files(), "it-up.vda.qcow2"));
    EXPECT_FALSE(has(pool_files(), "it-up.console.log"));
    EXPECT_EQ(sha256_of(base_image()), base_sum) << "the base image was written to";
    EXPECT_EQ(run_forky({"logs", "it-up"}).rc, 4);
}

TEST(Cli, BadSpecsGiveTheDocumentedErrorAndCreateNothing) {
    const auto domains_before = domain_names();
    const auto files_before = pool_files();
    struct Case {
        std::string body;
        std::string expected;
    };
    const fs::path images = source_dir() / "domains/images";
    const std::string boot = "boot:\n  kernel: " + (images / "vmlinuz").string() + "\n";
    const std::vector<Case> cases = {
        {"name: b1\nmemory: 256\n" + boot, ":2: key 'memory': '256' has no unit"},
        {"name: b2\nmemory: 256MiB\nvcpus: 0\n" + boot, ":3: key 'vcpus': must be between"},
        {"name: b3\nmemory: 256MiB\ncolour: red\n" + boot, ":3: key 'colour': unknown key"},
        {"name: b4\nmemory: 256MiB\n" + boot + "disks:\n  - base: nowhere.qcow2\n",
         ":6: key 'disks[0].base': file '"},
        {"name: ../b5\nmemory: 256MiB\n" + boot, ":1: key 'name': '../b5' is not a valid"},
    };
    int i = 0;
    for (const auto& c : cases) {
        fs::path file = test_dir() / ("bad-" + std::to_string(i++) + ".yaml");
        std::ofstream(file) << c.body;
        CommandResult r = run_forky({"up", "-f", file.string()});
        EXPECT_EQ(r.rc, 3) << r.all();
        EXPECT_NE(r.err.find(file.string() + c.expected), std::string::npos)
            << "expected '" << file.string() + c.expected << "' in: " << r.err;
    }
    EXPECT_EQ(domain_names(), domains_before);
    EXPECT_EQ(pool_files(), files_before);
}

TEST(Cli, BadNamesAndUnknownVmsAreClearErrors) {
    for (const char* cmd : {"logs", "stop", "rm"}) {
        CommandResult r = run_forky({cmd, "no-such-vm"});
        EXPECT_EQ(r.rc, 4) << cmd << ": " << r.all();
        EXPECT_NE(r.err.find("No VM named 'no-such-vm'"), std::string::npos) << r.err;
        CommandResult bad = run_forky({cmd, "../etc/passwd"});
        EXPECT_EQ(bad.rc, 2) << cmd << ": " << bad.all();
        EXPECT_NE(bad.err.find("Invalid VM name '../etc/passwd'"), std::string::npos) << bad.err;
    }
    CommandResult up = run_forky({"up", "-f", tiny_spec().string(), "--name", "a'b"});
    EXPECT_EQ(up.rc, 2) << up.all();
    EXPECT_EQ(run_forky({"frobnicate"}).rc, 2);
    CommandResult help = run_forky({"--help"});
    EXPECT_EQ(help.rc, 0);
    EXPECT_NE(help.out.find("Exit codes:"), std::string::npos) << help.out;
}

TEST(Cli, UpRefusesATakenNameAndLeavesTheFirstAlone) {
    ASSERT_EQ(run_forky({"up", "-f", tiny_spec().string(), "--name", "it-dup", "--no-start"}).rc,
              0);
    const auto files_before = pool_files();
    CommandResult again = run_forky({"up", "-f", tiny_spec().string(), "--name", "it-dup"});
    EXPECT_EQ(again.rc, 5) << again.all();
    EXPECT_NE(again.err.find("A VM named 'it-dup' already exists"), std::string::npos);
    EXPECT_EQ(pool_files(), files_before);
    CommandResult ls = run_forky({"ls", "--json"});
    EXPECT_NE(ls.out.find("\"name\":\"it-dup\""), std::string::npos);
    ASSERT_EQ(run_forky({"rm", "it-dup"}).rc, 0);
    EXPECT_FALSE(has(pool_files(), "it-dup.vda.qcow2"));
}

TEST(Cli, LogsFollowStreamsUntilTheVmIsRemoved) {
    up_tiny("it-follow");
    Background follow = start_forky({"logs", "it-follow", "--follow"});
    const unsigned long from = last_counter("it-follow");
    const std::string later = "counter=" + std::to_string(from + 15) + " ";
    // Removed only once follow has printed a line written after it started: it polls
    // every 200 ms, and what is still unread when the log goes is gone with it.
    for (int i = 0; i < 600 && slurp_file(follow.out_file).find(later) == std::string::npos; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // Ctrl-C ends a follow, with the exit code of an interrupted command.
    Background other = start_forky({"logs", "it-follow", "--follow"});
    ASSERT_TRUE(eventually([&] { return contains(slurp_file(other.out_file), "FORKY-BOOT"); }));
    ::kill(other.pid, SIGINT);
    CommandResult stopped = finish(other, std::chrono::seconds(30));
    EXPECT_EQ(stopped.rc, 130) << stopped.all();
    ASSERT_EQ(run_forky({"rm", "--force", "it-follow"}).rc, 0);
    CommandResult r = finish(follow, std::chrono::seconds(30)); // ends once the VM is gone
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("FORKY-BOOT"), std::string::npos);
    EXPECT_NE(r.out.find(later), std::string::npos)
        << "follow did not stream what came after it started";
}

// A spec with a GPU on this machine (no IOMMU, no VFIO: libvirt's domain capabilities list
// no PCI backend): refused before anything is made, by up and --print-xml alike; the
// inventory comes from the real libvirtd's node devices.
TEST(Cli, GpusNeedPassthroughAndTheRefusalComesFirst) {
    const auto domains_before = domain_names();
    const auto files_before = pool_files();
    // The kernel beside the spec: a folder allowed for images by default.
    const fs::path images = test_dir();
    fs::copy_file(source_dir() / "domains/images/vmlinuz", images / "vmlinuz",
                  fs::copy_options::skip_existing);
    const fs::path spec = test_dir() / "gpu.yaml";
    std::ofstream(spec) << "name: it-gpu\nmemory: 256MiB\naccel: tcg\nboot:\n  kernel: "
                        << (images / "vmlinuz").string()
                        << "\ngpus:\n  - vendor: nvidia\ngpu_fork: detach\n";
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"up", "-f", spec.string()},
          std::vector<std::string>{"up", "-f", spec.string(), "--print-xml"}}) {
        CommandResult r = run_forky(args);
        EXPECT_EQ(r.rc, 5) << r.all();
        EXPECT_NE(r.err.find("cannot pass devices through: libvirt's domain capabilities list no "
                             "VFIO PCI backend"),
                  std::string::npos)
            << r.err;
    }
    EXPECT_EQ(domain_names(), domains_before);
    EXPECT_EQ(pool_files(), files_before);
    // A bad GPU entry is a spec error with file, line and key.
    std::ofstream(spec) << "name: it-gpu\nmemory: 256MiB\nboot:\n  kernel: "
                        << (images / "vmlinuz").string() << "\ngpus:\n  - pci: 0000:zz:00.0\n";
    CommandResult bad = run_forky({"up", "-f", spec.string()});
    EXPECT_EQ(bad.rc, 3) << bad.all();
    EXPECT_NE(bad.err.find(spec.string() + ":6: key 'gpus[0].pci'"), std::string::npos) << bad.err;
    CommandResult gpus = run_forky({"gpus", "--json"});
    EXPECT_EQ(gpus.rc, 0) << gpus.all();
    EXPECT_EQ(gpus.out.substr(0, 1), "[") << gpus.out;
}
