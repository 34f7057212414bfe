// The host inventory (strict, like a domain spec) and `forky hosts`' survey, on libvirt's
// test driver and on a socket nobody listens on.
#include "errors.hpp"
#include "hosts.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace forky;

namespace {

const fs::path file = "/etc/forky/hosts.yaml";

const char* good = R"(hosts:
  - name: a
    uri: qemu+tls://a.example.org/system
    pool: forky
    labels: {rack: r1, gpu: "no"}
    max_forks: 64
  - name: b
    uri: qemu+ssh://root@b.example.org/system?keyfile=/root/.ssh/forky&no_tty=1
  - name: c
    uri: qemu+unix:///system?socket=/run/c/libvirt-sock
)";

std::string error_of(const std::string& text) {
    try {
        parse_inventory(text, file);
    } catch (const SpecError& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST(Inventory, ParsesEveryField) {
    Inventory inv = parse_inventory(good, file);
    ASSERT_EQ(inv.hosts.size(), 3u);
    const HostEntry& a = inv.hosts[0];
    EXPECT_EQ(a.name, "a");
    EXPECT_EQ(a.uri, "qemu+tls://a.example.org/system");
    EXPECT_EQ(a.pool, "forky");
    EXPECT_EQ(a.labels.at("rack"), "r1");
    EXPECT_EQ(a.labels.at("gpu"), "no");
    EXPECT_EQ(a.max_forks, 64u);
    EXPECT_EQ(a.line, 2);
    EXPECT_EQ(inv.hosts[1].pool, "forky"); // the default
    EXPECT_FALSE(inv.hosts[1].max_forks);
    EXPECT_EQ(inv.find("b"), &inv.hosts[1]);
    EXPECT_EQ(inv.find("zz"), nullptr);
}

TEST(Inventory, BadInputNamesFileLineAndKey) {
    const std::string f = file.string();
    struct Case {
        std::string text;
        std::string expected;
    };
    const std::vector<Case> cases = {
        {"hosts: []\n", f + ":1: key 'hosts': expected a list of hosts"},
        {"host:\n  - name: a\n", f + ":1: key 'host': unknown key"},
        {"hosts:\n  - name: a\n", f + ":2: key 'hosts[0].uri': is required"},
        {"hosts:\n  - uri: qemu:///system\n", f + ":2: key 'hosts[0].name': is required"},
        {"hosts:\n  - name: a\n    uri: http://a/\n",
         f + ":3: key 'hosts[0].uri': 'http://a/' is not a libvirt URI forky drives"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n    cpus: 4\n",
         f + ":4: key 'hosts[0].cpus': unknown key"},
        {"hosts:\n  - name: ../a\n    uri: qemu:///system\n",
         f + ":2: key 'hosts[0].name': '../a' is not a valid host name"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n  - name: a\n    uri: test:///default\n",
         f + ":4: key 'hosts[1].name': host 'a' is listed twice (first on line 2)"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n  - name: b\n    uri: qemu:///system\n",
         f + ":5: key 'hosts[1].uri': 'qemu:///system' is host 'a' already"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n    max_forks: 0\n",
         f + ":4: key 'hosts[0].max_forks': must be between 1 and 100000"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n    max_forks: lots\n",
         f + ":4: key 'hosts[0].max_forks': expected a whole number, got 'lots'"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n    labels: [r1]\n",
         f + ":4: key 'hosts[0].labels': expected a mapping"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n    pool: a/b\n",
         f + ":4: key 'hosts[0].pool': 'a/b' is not a valid pool name"},
        {"hosts:\n  - name: a\n    uri: \"qemu:///system\\n\"\n", f + ":3: key 'hosts[0].uri'"},
        {"- a\n", f + ": a host inventory is a YAML mapping"},
        {"hosts:\n  - name: a\n    uri: qemu+ssh://h/system?command=/tmp/x\n",
         f + ":3: key 'hosts[0].uri': 'qemu+ssh://h/system?command=/tmp/x' is not a libvirt URI"},
        {"hosts:\n  - name: a\n    uri: qemu+tls://h/system?no_verify=1\n",
         f + ":3: key 'hosts[0].uri'"},
        {"hosts:\n  - name: a\n    uri: qemu:///embed?root=/tmp/x\n", f + ":3: key 'hosts[0].uri'"},
        {"hosts:\n  - name: a\n    uri: \"qemu://h\\xff/system\"\n", f + ":3: key 'hosts[0].uri'"},
        {"hosts:\n  - name: a\n    uri: qemu:///system\n    labels: {note: \"x\\ny\"}\n",
         f + ":4: key 'hosts[0].labels.note': 'x\\x0ay' is not a valid label value"},
    };
    for (const auto& c : cases) {
        const std::string msg = error_of(c.text);
        EXPECT_NE(msg.find(c.expected), std::string::npos)
            << "expected '" << c.expected << "' in '" << msg << "' for:\n"
            << c.text;
    }
}

TEST(Inventory, AMissingFileIsNoInventoryUnlessNamed) {
    EXPECT_TRUE(load_inventory("/nonexistent/hosts.yaml", false).hosts.empty());
    EXPECT_THROW(load_inventory("/nonexistent/hosts.yaml", true), SpecError);
}

TEST(Inventory, SurveyReportsEachHostOrWhyNot) {
    Inventory inv;
    HostEntry test;
    test.name = "t";
    test.uri = "test:///default";
    inv.hosts.push_back(test);
    HostEntry down;
    down.name = "down";
    down.uri = "qemu+unix:///system?socket=/nonexistent/forky-test-sock";
    inv.hosts.push_back(down);
    const auto reports = survey_hosts(inv, std::chrono::seconds(30));
    ASSERT_EQ(reports.size(), 2u);
    EXPECT_TRUE(reports[0].reachable) << reports[0].problem;
    EXPECT_GT(reports[0].cpus, 0u);
    EXPECT_FALSE(reports[0].libvirt_version.empty());
    EXPECT_FALSE(reports[0].pool_exists);
    EXPECT_NE(reports[0].problem.find("no pool 'forky'"), std::string::npos) << reports[0].problem;
    EXPECT_FALSE(reports[1].reachable);
    EXPECT_NE(reports[1].problem.find("Failed to connect"), std::string::npos)
        << reports[1].problem;
    EXPECT_EQ(version_string(9000000), "9.0.0");
    EXPECT_EQ(version_string(7002001), "7.2.1");
}
