// Policies: TTL and quotas (policies/ttl.yaml, policies/quotas.yaml), parsed strictly and
// applied on libvirt's test driver.
#include "errors.hpp"
#include "policies.hpp"
#include "units.hpp"
#include "vm.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>

namespace fs = std::filesystem;
using namespace forky;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(accepted)";
}

// A fresh test-driver hypervisor with forky's pool, and the tiny spec's VM `name` up on it.
struct TinyOnTestDriver {
    fs::path node;
    std::optional<Host> host;
    TinyOnTestDriver(const char* tag, const std::string& name) {
        node = fs::temp_directory_path() /
               ("forky-" + std::string(tag) + "-node-" + std::to_string(::getpid()) + ".xml");
        std::ofstream(node) << "<node/>\n";
        HostOptions o;
        o.uri = "test://" + node.string();
        o.pool_dir = "/var/lib/forky-unit-test";
        o.create_pool = true;
        host.emplace(o);
        up(name);
    }
    void up(const std::string& name) {
        UpOptions o;
        o.image_dirs = {FORKY_TEST_DATA};
        o.name = name;
        vm_up(*host, load_spec(fs::path(FORKY_TEST_DATA) / "golden" / "tiny.yaml"), o);
    }
    ~TinyOnTestDriver() { fs::remove(node); }
};

} // namespace

TEST(Policies, TtlAndQuotasParseStrictly) {
    EXPECT_EQ(parse_ttl_policy("children: 2h\n", "ttl.yaml").children, std::chrono::hours(2));
    EXPECT_FALSE(parse_ttl_policy("{}\n", "ttl.yaml").children);
    EXPECT_NE(error_of([] {
                  parse_ttl_policy("children: soon\n", "ttl.yaml");
              }).find("ttl.yaml:1: key 'children'"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_ttl_policy("child: 2h\n", "ttl.yaml"); }).find("'child'"),
              std::string::npos);
    const QuotaPolicy q = parse_quota_policy(
        "max_children_per_parent: 8\nmax_forks_per_host: 64\nmemory_overcommit: 1.5\n", "q.yaml");
    EXPECT_EQ(q.max_children_per_parent, 8u);
    EXPECT_EQ(q.max_forks_per_host, 64u);
    EXPECT_EQ(q.memory_overcommit, 1.5);
    EXPECT_FALSE(parse_quota_policy("{}\n", "q.yaml").any());
    EXPECT_NE(error_of([] {
                  parse_quota_policy("max_forks_per_host: 0\n", "q.yaml");
              }).find("q.yaml:1: key 'max_forks_per_host': must be between 1 and 100000"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  parse_quota_policy("memory_overcommit: lots\n", "q.yaml");
              }).find("expected a number"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  parse_quota_policy("max_forks_per_host: 1\nmax_forks_per_host: 2\n", "q.yaml");
              }).find("twice"),
              std::string::npos);
    // A folder without the files: no rules; a file that is wrong: an error.
    const fs::path dir =
        fs::temp_directory_path() / ("forky-policies-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    EXPECT_FALSE(load_quota_policy(dir).any());
    EXPECT_FALSE(load_ttl_policy(dir).children);
    std::ofstream(dir / "ttl.yaml") << "children: 0s\n";
    EXPECT_THROW(load_ttl_policy(dir), SpecError);
    fs::remove_all(dir);
    // The repository's examples parse.
    EXPECT_NO_THROW(load_ttl_policy(fs::path(FORKY_SOURCE_DIR) / "policies"));
    EXPECT_NO_THROW(load_quota_policy(fs::path(FORKY_SOURCE_DIR) / "policies"));
}

TEST(Policies, TtlLeftCountsFromCreationAndPinnedNeverExpires) {
    Lineage l;
    l.created_at = "2026-01-01T00:00:00Z";
    const std::int64_t created = *parse_rfc3339(l.created_at);
    EXPECT_FALSE(ttl_left(l, created + 5));
    l.ttl = std::chrono::seconds(60);
    EXPECT_EQ(ttl_left(l, created + 5), 55);
    EXPECT_EQ(ttl_left(l, created + 65), -5);
    l.pinned = true;
    EXPECT_FALSE(ttl_left(l, created + 65));
    EXPECT_EQ(format_duration(45), "45s");
    EXPECT_EQ(format_duration(725), "12m05s");
    EXPECT_EQ(format_duration(12000), "3h20m");
    EXPECT_EQ(format_duration(187200), "2d04h");
}

TEST(Policies, AForkBreakingAQuotaIsRefusedWithTheRuleAndFigures) {
    TinyOnTestDriver t("quota", "web");
    Host& host = *t.host;
    const HostOptions& o = host.options();
    const std::string parent_uuid = domain_uuid(host.domain("web").get());
    // Two children of web, as a fork would have made them.
    for (const char* child : {"web-1", "web-2"}) {
        t.up(child);
        DomainPtr d = host.domain(child);
        Lineage l = *read_lineage(d.get());
        l.parent = "web";
        l.parent_uuid = parent_uuid;
        l.generation = 1;
        write_lineage(d.get(), child, l);
    }
    QuotaPolicy q;
    q.source = "quotas.yaml";
    q.max_children_per_parent = 4;
    EXPECT_NO_THROW(check_fork_quotas(host, q, "web", parent_uuid, 256 << 20, 2, 2));
    EXPECT_EQ(error_of([&] { check_fork_quotas(host, q, "web", parent_uuid, 256 << 20, 3, 3); }),
              "Quota 'max_children_per_parent' (quotas.yaml): 'web' has 2 children; 3 more would "
              "make 5, over 4; nothing was made");
    q = {};
    q.source = "quotas.yaml";
    q.max_forks_per_host = 3;
    EXPECT_NE(error_of([&] { check_fork_quotas(host, q, "web", parent_uuid, 256 << 20, 2, 2); })
                  .find("Quota 'max_forks_per_host' (quotas.yaml): '" + o.uri +
                        "' runs 2 forked VMs; 2 more would make 4, over 3"),
              std::string::npos);
    q = {};
    q.source = "quotas.yaml";
    q.memory_overcommit = 1.0;
    virNodeInfo info{};
    ASSERT_EQ(virNodeGetInfo(host.conn(), &info), 0);
    const std::uint64_t host_bytes = static_cast<std::uint64_t>(info.memory) * 1024;
    EXPECT_NO_THROW(check_fork_quotas(host, q, "web", parent_uuid, 1 << 20, 4, 4));
    EXPECT_NE(error_of([&] {
                  check_fork_quotas(host, q, "web", parent_uuid, host_bytes / 2, 4, 4);
              }).find("Quota 'memory_overcommit' (quotas.yaml): the running VMs have 768MiB"),
              std::string::npos)
        << error_of([&] { check_fork_quotas(host, q, "web", parent_uuid, host_bytes / 2, 4, 4); });
}

TEST(Policies, HandEditedTtlsNeverExpireAtOnceAndNumbersAreDecimal) {
    // A TTL that does not parse is no TTL (never "0s, ran out").
    for (const char* bad : {"forever", "", "-5", "0", "99999999999999"}) {
        const Lineage l = lineage_from_xml(std::string("<lineage><generation>1</generation><ttl>") +
                                           bad + "</ttl></lineage>");
        EXPECT_FALSE(l.ttl) << bad;
    }
    // A creation time in the future counts from now, without overflow.
    Lineage l;
    l.created_at = "2099-01-01T00:00:00Z";
    l.ttl = std::chrono::seconds(100LL * 365 * 86400);
    EXPECT_EQ(ttl_left(l, 1800000000), l.ttl->count());
    // Decimal, as written: 010 is ten (YAML would say 8), 0x10 is refused.
    EXPECT_EQ(
        parse_quota_policy("max_children_per_parent: 010\n", "q.yaml").max_children_per_parent,
        10u);
    EXPECT_NE(error_of([] {
                  parse_quota_policy("max_children_per_parent: 0x10\n", "q.yaml");
              }).find("expected a whole number"),
              std::string::npos);
    EXPECT_FALSE(parse_quota_policy("", "q.yaml").any());
    EXPECT_FALSE(parse_ttl_policy("# nothing yet\n", "ttl.yaml").children);
}

TEST(Policies, TheReapersRemovalLooksAgainUnderTheLock) {
    TinyOnTestDriver t("reap", "kept");
    Host& host = *t.host;
    // Pinned meanwhile: the condition, read under the lock, says no; nothing is removed.
    EXPECT_FALSE(vm_remove_if(
        host, "kept", [](const Lineage&) { return false; }, std::chrono::milliseconds(0)));
    EXPECT_TRUE(host.find_domain("kept"));
    EXPECT_TRUE(vm_pin(host, "kept", true));
    EXPECT_TRUE(read_lineage(host.domain("kept").get())->pinned);
    EXPECT_FALSE(vm_pin(host, "kept", true)); // already
    EXPECT_TRUE(vm_remove_if(
        host, "kept", [](const Lineage&) { return true; }, std::chrono::milliseconds(0)));
    EXPECT_FALSE(host.find_domain("kept"));
}
