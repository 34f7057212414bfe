// The pure parts of the fork: the save-image header, the child's XML, the journal, gc's
// naming rule.
#include "child_xml.hpp"
#include "errors.hpp"
#include "gc.hpp"
#include "lineage.hpp"
#include "names.hpp"
#include "network.hpp"
#include "save_image.hpp"
#include "vm_lock.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace forky;

namespace {

const fs::path data_dir = FORKY_TEST_DATA;

std::string read_file(const fs::path& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// A header as libvirt writes it: 92 bytes, XML + NUL, cookie + NUL, 64 KiB of padding.
std::string libvirt_header(const std::string& xml, const std::string& cookie) {
    std::uint32_t fields[19] = {};
    fields[0] = 2; // version
    fields[1] = static_cast<std::uint32_t>(xml.size() + 1 + cookie.size() + 1 + 65536);
    fields[2] = 1;                                          // was_running
    fields[4] = static_cast<std::uint32_t>(xml.size() + 1); // cookieOffset
    std::string out = "LibvirtQemudSave";
    out.append(reinterpret_cast<const char*>(fields), sizeof fields);
    out += xml;
    out += '\0';
    out += cookie;
    out += '\0';
    out.append(65536, '\0');
    return out;
}

} // namespace

TEST(SaveImage, ParsesWhatLibvirtWrites) {
    std::string bytes = libvirt_header("<domain><name>p</name></domain>", "<cookie/>");
    ASSERT_EQ(save_header_data_len(bytes), bytes.size() - save_header_size);
    SaveImageHeader h = parse_save_header(bytes + "QEVM...stream");
    EXPECT_EQ(h.version, 2u);
    EXPECT_EQ(h.was_running, 1u);
    EXPECT_EQ(h.xml, "<domain><name>p</name></domain>");
    EXPECT_EQ(h.cookie, "<cookie/>");
    EXPECT_EQ(h.size(), bytes.size());
}

TEST(SaveImage, EncodesAChildHeaderOfTheSameSize) {
    std::string bytes = libvirt_header("<domain><name>p</name></domain>", "<cookie/>");
    SaveImageHeader h = parse_save_header(bytes);
    std::string child = encode_save_header(h, "<domain><name>p-12</name></domain>");
    ASSERT_EQ(child.size(), bytes.size()) << "the migration stream must stay where it is";
    SaveImageHeader back = parse_save_header(child);
    EXPECT_EQ(back.xml, "<domain><name>p-12</name></domain>");
    EXPECT_EQ(back.cookie, "<cookie/>");
    EXPECT_EQ(back.was_running, 1u);
    // Unchanged XML gives back the very bytes libvirt wrote.
    EXPECT_EQ(encode_save_header(h, h.xml), bytes);
}

TEST(SaveImage, RefusesWhatItCannotHandle) {
    std::string bytes = libvirt_header("<domain/>", "<cookie/>");
    SaveImageHeader h = parse_save_header(bytes);
    EXPECT_THROW(encode_save_header(h, std::string(h.data_len, 'x')), Error);
    std::string partial = bytes;
    std::memcpy(partial.data(), "LibvirtQemudPart", 16);
    EXPECT_THROW(parse_save_header(partial), Error);
    std::string garbage = bytes;
    garbage[0] = 'X';
    EXPECT_THROW(parse_save_header(garbage), Error);
    std::string compressed = bytes;
    compressed[16 + 12] = 1; // format: gzip
    EXPECT_THROW(parse_save_header(compressed), Error);
    EXPECT_THROW(parse_save_header(bytes.substr(0, 200)), Error);
    EXPECT_THROW(save_header_data_len(bytes.substr(0, 50)), Error);
}

// tests/data/child/parent.xml is the XML libvirt put in a real memory image of the test
// guest; child.xml is what a child gets. FORKY_REGENERATE_GOLDEN=1 rewrites it.
TEST(ChildXml, GoldenChildOfTheTestGuest) {
    std::string parent = read_file(data_dir / "child/parent.xml");
    ChildPlan plan;
    plan.name = "tiny-3";
    plan.uuid = "11111111-2222-4333-8444-555555555555";
    plan.disk_paths["vda"] = "/var/lib/forky/tiny-3.vda.qcow2";
    plan.console_log_path = "/var/lib/forky/tiny-3.console.log";
    plan.lineage.parent = "tiny";
    plan.lineage.fork_point = "tiny.fp2";
    plan.lineage.generation = 1;
    plan.lineage.created_at = "2026-01-01T00:00:00Z";
    plan.lineage.pool = "forky";
    plan.lineage.volumes = {{"disk", "vda", "tiny-3.vda.qcow2"},
                            {"console", "", "tiny-3.console.log"}};
    plan.lineage.memory_image = "tiny.fp2.mem";
    plan.lineage.layers = {{"layer", "vda", "tiny.vda.fp1.qcow2"}};
    std::string child = make_child_xml(parent, plan);
    fs::path expected = data_dir / "child/child.xml";
    if (std::getenv("FORKY_REGENERATE_GOLDEN"))
        std::ofstream(expected) << child;
    EXPECT_EQ(read_file(expected), child);

    // What must hold whatever the formatting.
    EXPECT_EQ(child.find("backingStore"), std::string::npos);
    EXPECT_EQ(child.find("/dev/pts/"), std::string::npos);
    EXPECT_EQ(child.find(" id="), std::string::npos);
    EXPECT_EQ(child.find("tiny.console.log'"), std::string::npos);
    EXPECT_EQ(disk_sources(child).at("vda"), "/var/lib/forky/tiny-3.vda.qcow2");
    EXPECT_NE(child.find("<mac address=\"52:54:00"), std::string::npos) << "MAC must stay";
    EXPECT_NE(child.find("<forky:parent>tiny</forky:parent>"), std::string::npos);
}

// Every child runs under a VM generation ID of its own where its parent has the device;
// one is never added to a parent's XML that has none (the device is in the migration
// stream: QEMU would refuse the image).
TEST(ChildXml, AChildGetsItsOwnGenerationId) {
    const std::string without = read_file(data_dir / "child/parent.xml");
    const std::string parent_genid = "0a0b0c0d-0000-4000-8000-000000000001";
    std::string with = without;
    const auto uuid_end = with.find("</uuid>");
    ASSERT_NE(uuid_end, std::string::npos);
    with.insert(uuid_end + 7, "\n  <genid>" + parent_genid + "</genid>");
    ASSERT_EQ(domain_genid(with), parent_genid);
    ASSERT_EQ(domain_genid(without), "");

    ChildPlan plan;
    plan.name = "tiny-1";
    plan.uuid = random_uuid();
    plan.disk_paths["vda"] = "/var/lib/forky/tiny-1.vda.qcow2";
    plan.lineage.genid = random_uuid();
    const std::string child = make_child_xml(with, plan);
    EXPECT_EQ(domain_genid(child), plan.lineage.genid);
    EXPECT_EQ(child.find(parent_genid + "</genid>"), std::string::npos);
    EXPECT_NE(child.find("<forky:genid>" + plan.lineage.genid + "</forky:genid>"),
              std::string::npos)
        << "the lineage records it";
    EXPECT_EQ(domain_genid(make_child_xml(without, plan)), "");
}

TEST(ChildXml, RefusesADiskItDidNotPlanFor) {
    std::string parent = read_file(data_dir / "child/parent.xml");
    ChildPlan plan;
    plan.name = "x-1";
    plan.uuid = random_uuid();
    EXPECT_THROW(make_child_xml(parent, plan), Error);
}

TEST(ChildXml, RandomUuidsAreVersion4AndDistinct) {
    std::string a = random_uuid();
    std::string b = random_uuid();
    EXPECT_EQ(a.size(), 36u);
    EXPECT_EQ(a[14], '4');
    EXPECT_NE(a, b);
}

namespace {

unsigned long long own_start_time() {
    std::ifstream stat("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream fields(text.substr(text.rfind(')') + 2));
    std::string f;
    for (int i = 3; i <= 22; ++i)
        fields >> f;
    return std::stoull(f);
}

Journal own_journal() {
    Journal j;
    j.state = Journal::State::valid;
    j.operation = "fork";
    j.vm = "web";
    j.holder_host = "vm";
    j.holder_id = this_machine_id();
    j.holder_pid = getpid();
    j.holder_start = own_start_time();
    j.since = 1800000000;
    j.op = "0f0f0f0f-2222-4333-8444-555555555555";
    return j;
}

} // namespace

TEST(Journal, RoundTripsAndKnowsItsHolder) {
    Journal j = own_journal();
    j.children = {{"web-1", "11111111-2222-4333-8444-555555555555"},
                  {"web-2", "66666666-2222-4333-8444-555555555555"}};
    j.volumes = {"web.fp1.mem", "web-1.vda.qcow2"};
    j.paused = "77777777-2222-4333-8444-555555555555";
    j.committed = true;
    j.mdevs = {"88888888-2222-4333-8444-555555555555"};
    j.detached = j.paused;

    Journal back = Journal::decode(j.encode() + std::string(100, '\0'));
    EXPECT_EQ(back.state, Journal::State::valid) << back.problem;
    EXPECT_EQ(back.operation, "fork");
    EXPECT_EQ(back.vm, "web");
    EXPECT_EQ(back.children, j.children);
    EXPECT_EQ(back.volumes, j.volumes);
    EXPECT_EQ(back.paused, j.paused);
    EXPECT_EQ(back.mdevs, j.mdevs);
    EXPECT_EQ(back.detached, j.detached);
    EXPECT_FALSE(back.reattached);
    EXPECT_EQ(back.op, j.op);
    EXPECT_FALSE(back.resumed);
    EXPECT_TRUE(back.committed);
    EXPECT_TRUE(back.holder_alive()) << "this very process holds it";
    back.holder_start += 1; // the pid was reused by another process
    EXPECT_FALSE(back.holder_alive());
    EXPECT_EQ(Journal::decode(std::string(64, '\0')).state, Journal::State::blank);
    // A planted entry that names no UUID is malformed, never acted on.
    EXPECT_EQ(Journal::decode(j.encode() + "mdev ../../x\n").state, Journal::State::malformed);
}

TEST(Journal, AHostOfTheSameNameIsAnotherHost) {
    // Two machines both called 'vm': a live lock of the other one is not judged by a pid
    // of this one, whatever the names say.
    Journal other = own_journal();
    other.holder_id = "another-machine-id:another-boot:4026531836";
    other.holder_pid = 1; // alive here, meaningless there
    other.since = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    EXPECT_TRUE(other.holder_alive()) << "a recent lock of another machine counts as alive";
    other.since -= 2 * 3600;
    EXPECT_FALSE(other.holder_alive()) << "until it is stale";
    other.since += 2 * 3600 + 24 * 3600;
    EXPECT_FALSE(other.holder_alive()) << "a start a day ahead (a wrong clock, a forgery) is "
                                          "no reason to wait forever";
    // The identity carries the boot and the pid namespace, not only the machine-id.
    EXPECT_EQ(std::count(this_machine_id().begin(), this_machine_id().end(), ':'), 2);
}

TEST(Journal, WhatDoesNotParseIsMalformedNotGuessed) {
    const std::string good = own_journal().encode();
    auto state_of = [](const std::string& text) { return Journal::decode(text); };
    EXPECT_EQ(state_of(good).state, Journal::State::valid);
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"forky-journal 1\noperation fork\n", "not a forky journal"},
        {good + "child web-3\n", "line 7: malformed 'child' entry"},
        {good + "child web-3 not-a-uuid\n", "malformed 'child' entry"},
        {good + "child ../etc 11111111-2222-4333-8444-555555555555\n", "malformed 'child'"},
        {good + "volume ../../etc/passwd\n", "malformed 'volume' entry"},
        {good + "rm -rf /\n", "unknown entry 'rm'"},
        {good + "child a 11111111-2222-4333-8444-555555555555 extra\n", "malformed 'child'"},
        {"forky-journal 2\noperation fork\nvm web\nsince 5\n", "holder, since or op is missing"},
    };
    for (const auto& [text, why] : bad) {
        Journal j = state_of(text);
        EXPECT_EQ(j.state, Journal::State::malformed) << text;
        EXPECT_NE(j.problem.find(why), std::string::npos) << j.problem;
        EXPECT_TRUE(j.children.empty());
        EXPECT_TRUE(j.volumes.empty());
    }
}

TEST(Gc, RemovesOnlyDomainsWithTheOperationsOwnLineage) {
    Journal j = own_journal(); // a fork of 'web' that started at `since`
    Lineage child;
    child.parent = "web";
    child.pool = "forky";
    child.operation = j.op;
    child.created_at = "2027-01-15T08:00:00Z"; // after since (2027-01-15T08:00:00Z)
    ASSERT_EQ(parse_rfc3339(child.created_at), std::optional<std::int64_t>(1800000000));
    EXPECT_EQ(journal_child_problem(j, "web-1", child, "forky"), std::nullopt);

    EXPECT_NE(journal_child_problem(j, "web-1", std::nullopt, "forky"), std::nullopt)
        << "a domain without forky's metadata (defined with plain virsh)";
    Lineage other_parent = child;
    other_parent.parent = "db";
    EXPECT_NE(journal_child_problem(j, "web-1", other_parent, "forky"), std::nullopt);
    Lineage other_pool = child;
    other_pool.pool = "elsewhere";
    EXPECT_NE(journal_child_problem(j, "web-1", other_pool, "forky"), std::nullopt);
    Lineage older = child;
    older.created_at = "2027-01-15T07:59:59Z";
    EXPECT_NE(journal_child_problem(j, "web-1", older, "forky"), std::nullopt)
        << "made before the operation began: not its child";
    Lineage garbled = child;
    garbled.created_at = "yesterday";
    EXPECT_NE(journal_child_problem(j, "web-1", garbled, "forky"), std::nullopt);
    Lineage another_op = child;
    another_op.operation = "1f1f1f1f-2222-4333-8444-555555555555";
    EXPECT_NE(journal_child_problem(j, "web-1", another_op, "forky"), std::nullopt)
        << "a finished child of another fork, named by a journal that copied its UUID";
    Lineage no_op = child;
    no_op.operation.clear();
    EXPECT_NE(journal_child_problem(j, "web-1", no_op, "forky"), std::nullopt);

    // `forky up` made exactly its own VM, with no parent.
    Journal up = own_journal();
    up.operation = "up";
    Lineage root = child;
    root.parent.clear();
    EXPECT_EQ(journal_child_problem(up, "web", root, "forky"), std::nullopt);
    EXPECT_NE(journal_child_problem(up, "web-9", root, "forky"), std::nullopt);
    EXPECT_NE(journal_child_problem(up, "web", child, "forky"), std::nullopt);
    // Operations that make no VMs remove none.
    for (const char* op : {"rm", "stop", "child"}) {
        Journal none = own_journal();
        none.operation = op;
        EXPECT_NE(journal_child_problem(none, "web", root, "forky"), std::nullopt) << op;
    }
}

TEST(Gc, CollectsOnlyNamesForkyMakes) {
    for (const char* n : {"tiny.vda.qcow2", "tiny-1.vdb.qcow2", "tiny.vda.fp12.qcow2",
                          "tiny.console.log", "tiny.fp3.mem", "tiny.fp3.point", "a_b-c.vdaa.qcow2"})
        EXPECT_TRUE(is_forky_volume_name(n)) << n;
    for (const char* n : {"data.qcow2", "tiny.lock", "golden.img", "tiny.vda.qcow2.bak",
                          "../x.vda.qcow2", "tiny.fp.mem", "debian-12.qcow2"})
        EXPECT_FALSE(is_forky_volume_name(n)) << n;
}

TEST(Network, ReadsForwardsFromInfoUsernet) {
    const std::string info = "Hub -1 (hostnet0):\r\n"
                             "  Protocol[State]    FD  Source Address  Port   Dest. Address  "
                             "Port RecvQ SendQ\r\n"
                             "  TCP[HOST_FORWARD]  21       127.0.0.1 42773       10.0.2.15    "
                             "22     0     0\r\n"
                             "  TCP[HOST_FORWARD]  22       127.0.0.1 40001       10.0.2.15    "
                             "80     0     0\r\n"
                             "  TCP[ESTABLISHED]   23       10.0.2.15 51000       10.0.2.2     "
                             "80     0     0\r\n";
    auto fwd = parse_usernet(info);
    ASSERT_EQ(fwd.size(), 2u);
    EXPECT_EQ(fwd[0], (PortForward{22, 42773}));
    EXPECT_EQ(fwd[1], (PortForward{80, 40001}));
    EXPECT_TRUE(parse_usernet("").empty());
}
