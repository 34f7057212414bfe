#include "errors.hpp"
#include "spec.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace forky;

namespace {

// Specs are parsed as if they lived in tests/data/golden, so ../images/... exists.
const fs::path spec_file = fs::path(FORKY_TEST_DATA) / "golden" / "case.yaml";

const char* good = R"(name: tiny
memory: 256MiB
vcpus: 2
accel: auto
boot:
  kernel: ../images/vmlinuz
  initrd: ../images/initrd.img
  cmdline: console=ttyS0
disks:
  - base: ../images/data.qcow2
    target: vda
  - base: ../images/data.raw
console: log
network: user
ttl: 90m
ports: [22, 8080]
guest_agent: true
)";

// The SpecError message for `text`, or "" when it parsed.
std::string error_of(const std::string& text) {
    try {
        parse_spec(text, spec_file);
    } catch (const SpecError& e) {
        return e.what();
    }
    return "";
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
    auto pos = text.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return text.replace(pos, from.size(), to);
}

} // namespace

TEST(Spec, ParsesEveryField) {
    DomainSpec s = parse_spec(good, spec_file);
    EXPECT_EQ(s.name, "tiny");
    EXPECT_EQ(s.memory_bytes, 256ULL << 20);
    EXPECT_EQ(s.vcpus, 2u);
    EXPECT_EQ(s.accel, Accel::automatic);
    EXPECT_EQ(s.boot.kernel.path,
              (fs::path(FORKY_TEST_DATA) / "images/vmlinuz").lexically_normal());
    EXPECT_TRUE(s.boot.kernel.path.is_absolute());
    EXPECT_EQ(s.boot.cmdline, "console=ttyS0");
    ASSERT_EQ(s.disks.size(), 2u);
    EXPECT_EQ(s.disks[0].target, "vda");
    EXPECT_EQ(s.disks[0].base_format, DiskFormat::qcow2);
    EXPECT_EQ(s.disks[1].target, "vdb"); // defaulted from its position
    EXPECT_EQ(s.disks[1].base_format, DiskFormat::raw);
    EXPECT_EQ(s.console, ConsoleMode::log);
    EXPECT_EQ(s.network, NetworkMode::user);
    EXPECT_EQ(s.ports, (std::vector<unsigned>{22, 8080}));
    ASSERT_TRUE(s.ttl);
    EXPECT_EQ(s.ttl->count(), 90 * 60);
    EXPECT_TRUE(s.guest_agent);
}

TEST(Spec, DefaultsAreSmall) {
    DomainSpec s =
        parse_spec("name: a\nmemory: 64MiB\nboot:\n  kernel: ../images/vmlinuz\n", spec_file);
    EXPECT_EQ(s.vcpus, 1u);
    EXPECT_EQ(s.accel, Accel::automatic);
    EXPECT_TRUE(s.disks.empty());
    EXPECT_EQ(s.network, NetworkMode::none);
    EXPECT_FALSE(s.ttl);
    EXPECT_FALSE(s.guest_agent);
}

struct BadCase {
    const char* what;
    std::string text;
    std::string expected; // a substring of the message: file, line and key
};

TEST(Spec, BadInputNamesFileLineAndKey) {
    const std::string file = spec_file.string();
    const std::vector<BadCase> cases = {
        {"unknown top-level key", replace(good, "vcpus: 2", "vcpu: 2"),
         file + ":3: key 'vcpu': unknown key"},
        {"unknown nested key", replace(good, "  cmdline:", "  cmdlin:"),
         file + ":8: key 'boot.cmdlin': unknown key"},
        {"unknown disk key", replace(good, "    target: vda", "    targte: vda"),
         file + ":11: key 'disks[0].targte': unknown key"},
        {"memory without unit", replace(good, "256MiB", "256"),
         file + ":2: key 'memory': '256' has no unit"},
        {"memory with a bad unit", replace(good, "256MiB", "256Mb"),
         file + ":2: key 'memory': unknown unit 'Mb'"},
        {"memory too small", replace(good, "256MiB", "1MiB"),
         file + ":2: key 'memory': must be between"},
        {"zero vcpus", replace(good, "vcpus: 2", "vcpus: 0"),
         file + ":3: key 'vcpus': must be between 1 and"},
        {"vcpus not a number", replace(good, "vcpus: 2", "vcpus: two"),
         file + ":3: key 'vcpus': expected a whole number"},
        {"vcpus a list", replace(good, "vcpus: 2", "vcpus: [2]"),
         file + ":3: key 'vcpus': expected a single value"},
        {"bad accel", replace(good, "accel: auto", "accel: xen"),
         file + ":4: key 'accel': must be auto, kvm or tcg"},
        {"missing kernel file", replace(good, "../images/vmlinuz", "../images/nope"),
         file + ":6: key 'boot.kernel': file '"},
        {"missing base image", replace(good, "../images/data.qcow2", "missing.qcow2"),
         file + ":10: key 'disks[0].base': file '"},
        {"bad disk target", replace(good, "target: vda", "target: sda"),
         file + ":11: key 'disks[0].target': 'sda' is not a virtio disk name"},
        {"bad name", replace(good, "name: tiny", "name: ../etc"),
         file + ":1: key 'name': '../etc' is not a valid VM name"},
        {"xml in name", replace(good, "name: tiny", "name: \"a<b>\""),
         file + ":1: key 'name': 'a<b>' is not a valid VM name"},
        {"bad console", replace(good, "console: log", "console: file"),
         file + ":13: key 'console': must be log or none"},
        {"bad ttl", replace(good, "ttl: 90m", "ttl: 90"),
         file + ":15: key 'ttl': '90' has no unit"},
        {"missing name", replace(good, "name: tiny\n", ""), file + ":1: key 'name': is required"},
        {"disks not a list",
         replace(good,
                 "disks:\n  - base: ../images/data.qcow2\n    target: vda\n"
                 "  - base: ../images/data.raw\n",
                 "disks: 3\n"),
         file + ":9: key 'disks': expected a list of disks"},
        {"invalid yaml", replace(good, "vcpus: 2", "vcpus: [2"), file + ":"},
        {"not a mapping", "- a\n- b\n", file + ": a domain spec is a YAML mapping"},
        {"port out of range", replace(good, "ports: [22, 8080]", "ports: [22, 70000]"),
         file + ":16: key 'ports[1]': must be between 1 and 65535"},
        {"port twice", replace(good, "ports: [22, 8080]", "ports: [22, 22]"),
         file + ":16: key 'ports[1]': port 22 is listed twice"},
        {"ports without user network", replace(good, "network: user", "network: none"),
         file + ":16: key 'ports': port forwards need network: user"},
        {"guest_agent not a boolean", replace(good, "guest_agent: true", "guest_agent: yes"),
         file + ":17: key 'guest_agent': must be true or false, got 'yes'"},
    };
    for (const auto& c : cases) {
        std::string msg = error_of(c.text);
        EXPECT_NE(msg.find(c.expected), std::string::npos)
            << c.what << ": expected '" << c.expected << "' in '" << msg << "'";
    }
}

TEST(Spec, DuplicateTargetsAreRefused) {
    std::string text = std::string(good);
    text = text.replace(text.find("  - base: ../images/data.raw"),
                        std::string("  - base: ../images/data.raw").size(),
                        "  - base: ../images/data.raw\n    target: vda");
    EXPECT_NE(error_of(text).find("target 'vda' is used twice"), std::string::npos);
}

TEST(Spec, UnreadableFileIsASpecError) {
    EXPECT_THROW(load_spec("/nonexistent/spec.yaml"), SpecError);
}
