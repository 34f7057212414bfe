// Warm pools: the record and policies/pools.yaml, parsed strictly; a ready child's TTL
// does not run.
#include "errors.hpp"
#include "lineage.hpp"
#include "policies.hpp"
#include "warm_pool.hpp"

#include <gtest/gtest.h>

using namespace forky;

namespace {

std::string pools_error(const std::string& yaml) {
    try {
        parse_pools_policy(yaml, "/etc/forky/policies/pools.yaml");
    } catch (const Error& e) {
        return e.what();
    }
    return "(accepted)";
}

} // namespace

TEST(WarmPool, RecordRoundTrips) {
    WarmPool p;
    p.name = "sandbox";
    p.source = "web@seeded";
    p.size = 8;
    p.host = "b";
    p.created_at = "2026-11-28T10:00:00Z";
    p.declared = true;
    EXPECT_EQ(warm_pool_from_xml(warm_pool_to_xml(p)), p);
    p.host.clear();
    p.spread = true;
    p.declared = false;
    EXPECT_EQ(warm_pool_from_xml(warm_pool_to_xml(p)), p);
    EXPECT_EQ(warm_pool_record_name("sandbox"), "sandbox.warmpool");
}

TEST(WarmPool, MalformedRecordsAreRefused) {
    for (const char* xml : {
             "<warm-pool/>",
             "not xml",
             "<warm-pool><name>a/b</name><source>x@y</source><size>1</size></warm-pool>",
             "<warm-pool><name>a</name><source>x</source><size>1</size></warm-pool>",
             "<warm-pool><name>a</name><source>x@y</source><size>-1</size></warm-pool>",
             "<warm-pool><name>a</name><source>x@y</source><size>9999</size></warm-pool>",
             "<warm-pool><name>a</name><source>x@y</source><size>1</size><host>../h</host>"
             "</warm-pool>",
         })
        EXPECT_THROW(warm_pool_from_xml(xml), Error) << xml;
}

TEST(WarmPool, PoolsPolicyParses) {
    auto pools = parse_pools_policy("pools:\n"
                                    "  - name: sandbox\n"
                                    "    from: web@seeded\n"
                                    "    size: 4\n"
                                    "  - name: gpu\n"
                                    "    from: trainer@warm\n"
                                    "    size: 0\n"
                                    "    host: b\n",
                                    "pools.yaml");
    ASSERT_EQ(pools.size(), 2u);
    EXPECT_EQ(pools[0].name, "sandbox");
    EXPECT_EQ(pools[0].source, "web@seeded");
    EXPECT_EQ(pools[0].size, 4u);
    EXPECT_TRUE(pools[0].declared);
    EXPECT_EQ(pools[1].host, "b");
    EXPECT_TRUE(parse_pools_policy("", "pools.yaml").empty());
    EXPECT_TRUE(parse_pools_policy("pools: []\n", "pools.yaml").empty());
}

TEST(WarmPool, PoolsPolicyErrorsNameFileLineAndKey) {
    EXPECT_NE(pools_error("pools:\n  - name: a\n    from: web\n    size: 1\n")
                  .find("pools.yaml:3: key 'pools[0].from'"),
              std::string::npos)
        << pools_error("pools:\n  - name: a\n    from: web\n    size: 1\n");
    EXPECT_NE(
        pools_error("pools:\n  - name: a\n    from: w@s\n    size: 1000\n").find("pools[0].size"),
        std::string::npos);
    EXPECT_NE(pools_error("pools:\n  - name: a\n    from: w@s\n").find("pools[0].size"),
              std::string::npos);
    EXPECT_NE(pools_error("pools:\n  - {name: a, from: w@s, size: 1}\n"
                          "  - {name: a, from: w@s, size: 2}\n")
                  .find("declared twice"),
              std::string::npos);
    EXPECT_NE(
        pools_error("pools:\n  - {name: a, from: w@s, size: 1, colour: red}\n").find("colour"),
        std::string::npos);
    EXPECT_NE(pools_error("pools:\n  - {name: a, from: w@s, size: 1, host: b, spread: true}\n")
                  .find("one or the other"),
              std::string::npos);
    EXPECT_NE(
        pools_error("pools:\n  - {name: 'a b', from: w@s, size: 1}\n").find("Invalid pool name"),
        std::string::npos);
    EXPECT_NE(pools_error("[1, 2]").find("a YAML mapping"), std::string::npos);
}

TEST(WarmPool, AReadyChildsTtlDoesNotRun) {
    Lineage l;
    l.ttl = std::chrono::seconds(60);
    l.created_at = "2000-01-01T00:00:00Z";
    EXPECT_LE(*ttl_left(l, 2000000000), 0);
    l.warm_pool = "sandbox";
    EXPECT_FALSE(ttl_left(l, 2000000000).has_value());
}

TEST(WarmPool, LineageKeepsThePoolMarks) {
    Lineage l;
    l.generation = 1;
    l.created_at = "2026-11-28T10:00:00Z";
    l.pool = "forky";
    l.warm_pool = "sandbox";
    EXPECT_EQ(lineage_from_xml(lineage_to_xml(l)).warm_pool, "sandbox");
    l.warm_pool.clear();
    l.acquired_from = "sandbox";
    const Lineage back = lineage_from_xml(lineage_to_xml(l));
    EXPECT_EQ(back.acquired_from, "sandbox");
    EXPECT_TRUE(back.warm_pool.empty());
}
