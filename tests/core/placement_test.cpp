// Placement over a fleet as `forky hosts` reports it: synthetic reports, and reports of
// libvirt test-driver hosts.
#include "errors.hpp"
#include "placement.hpp"

#include <gtest/gtest.h>

#include <map>

using namespace forky;

namespace {

constexpr std::uint64_t GiB = 1ULL << 30;

HostReport host(const std::string& name, std::uint64_t mem_free, std::uint64_t pool_free,
                std::map<std::string, std::string> labels = {},
                std::optional<unsigned> max_forks = std::nullopt, unsigned running = 0) {
    HostReport r;
    r.entry.name = name;
    r.entry.uri = "test:///" + name;
    r.entry.labels = std::move(labels);
    r.entry.max_forks = max_forks;
    r.reachable = true;
    r.pool_exists = true;
    r.memory_free_bytes = mem_free;
    r.pool_free_bytes = pool_free;
    r.forky_vms_running = running;
    return r;
}

std::map<std::string, int> tally(const Placement& p) {
    std::map<std::string, int> t;
    for (const auto& h : p.hosts)
        ++t[h];
    return t;
}

std::string conflict_of(const PlacementPolicy& p, const std::vector<HostReport>& fleet,
                        const PlacementRequest& r) {
    try {
        place(p, fleet, r);
    } catch (const ConflictError& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST(Placement, SpreadEvensOutAndPackFillsTheFirstHost) {
    const std::vector<HostReport> fleet = {host("a", 8 * GiB, 100 * GiB),
                                           host("b", 16 * GiB, 100 * GiB)};
    PlacementRequest req;
    req.count = 6;
    req.memory_bytes = GiB;
    req.disk_bytes = GiB;
    PlacementPolicy spread;
    EXPECT_EQ(tally(place(spread, fleet, req)), (std::map<std::string, int>{{"a", 3}, {"b", 3}}));
    PlacementPolicy pack;
    pack.strategy = PlacementPolicy::Strategy::pack;
    // b first (most free memory), filled to its room: 16 GiB - 512 MiB kept = 15 VMs.
    EXPECT_EQ(tally(place(pack, fleet, req)), (std::map<std::string, int>{{"b", 6}}));
}

TEST(Placement, TheForkPointsHostComesFirstAndOthersPayForShipping) {
    const std::vector<HostReport> fleet = {host("a", 4 * GiB, 3 * GiB),
                                           host("b", 64 * GiB, 100 * GiB)};
    PlacementRequest req;
    req.count = 2;
    req.memory_bytes = GiB;
    req.disk_bytes = 1 << 20;
    req.fork_point_host = "a";
    req.ship_bytes = 2 * GiB;
    PlacementPolicy pack;
    pack.strategy = PlacementPolicy::Strategy::pack;
    EXPECT_EQ(place(pack, fleet, req).hosts, (std::vector<std::string>{"a", "a"}));
    // A host that cannot hold the shipped fork point takes nothing.
    const std::vector<HostReport> small = {host("a", 4 * GiB, 3 * GiB),
                                           host("c", 64 * GiB, 2 * GiB)};
    req.count = 5;
    const std::string why = conflict_of(pack, small, req);
    EXPECT_NE(why.find("No room for 5 VMs in the fleet (3 at most)"), std::string::npos) << why;
    EXPECT_NE(why.find("c: pool (after 2GiB shipped)"), std::string::npos) << why;
}

TEST(Placement, HostsHoldingACopyRankWithTheForkPointsHost) {
    const std::vector<HostReport> fleet = {host("a", 4 * GiB, 3 * GiB),
                                           host("b", 64 * GiB, 100 * GiB),
                                           host("c", 32 * GiB, 100 * GiB)};
    PlacementRequest req;
    req.count = 1;
    req.memory_bytes = GiB;
    req.disk_bytes = 1 << 20;
    req.fork_point_host = "x"; // not in this fleet
    req.ship_bytes = 2 * GiB;
    PlacementPolicy pack;
    pack.strategy = PlacementPolicy::Strategy::pack;
    EXPECT_EQ(place(pack, fleet, req).hosts, (std::vector<std::string>{"b"})); // most memory
    req.holding = {"c"};
    EXPECT_EQ(place(pack, fleet, req).hosts, (std::vector<std::string>{"c"})); // nothing to ship
    pack.prefer_fork_point_host = false;
    EXPECT_EQ(place(pack, fleet, req).hosts, (std::vector<std::string>{"b"}));
}

TEST(Placement, FiltersSayWhyEachHostWasRuledOut) {
    HostReport down = host("down", 0, 0);
    down.reachable = false;
    down.problem = "Failed to connect";
    HostReport nopool = host("nopool", 8 * GiB, 8 * GiB, {{"rack", "r1"}});
    nopool.pool_exists = false;
    const std::vector<HostReport> fleet = {
        host("a", 8 * GiB, 8 * GiB, {{"rack", "r2"}}),
        host("b", 8 * GiB, 8 * GiB, {{"rack", "r1"}}, 4, 4),
        host("c", 8 * GiB, 8 * GiB, {{"rack", "r1"}}, 10, 8),
        down,
        nopool,
    };
    PlacementPolicy p;
    p.labels = {{"rack", "r1"}};
    PlacementRequest req;
    req.count = 3;
    req.memory_bytes = GiB;
    const std::string why = conflict_of(p, fleet, req);
    EXPECT_NE(why.find("a: label rack=r1 wanted, it has rack=r2"), std::string::npos) << why;
    EXPECT_NE(why.find("b: max_forks 4, 4 running"), std::string::npos) << why;
    EXPECT_NE(why.find("c: room for 2 (max_forks 10, 8 running)"), std::string::npos) << why;
    EXPECT_NE(why.find("down: not reachable (Failed to connect)"), std::string::npos) << why;
    EXPECT_NE(why.find("nopool: no pool"), std::string::npos) << why;
    req.count = 2;
    EXPECT_EQ(place(p, fleet, req).hosts, (std::vector<std::string>{"c", "c"}));
    p.respect_max_forks = false;
    req.count = 3;
    EXPECT_EQ(tally(place(p, fleet, req)), (std::map<std::string, int>{{"b", 2}, {"c", 1}}));
}

TEST(Placement, HostOptionPinsTheChoice) {
    const std::vector<HostReport> fleet = {host("a", 8 * GiB, 8 * GiB),
                                           host("b", 64 * GiB, 64 * GiB)};
    PlacementRequest req;
    req.count = 2;
    req.memory_bytes = GiB;
    req.host = "a";
    EXPECT_EQ(place({}, fleet, req).hosts, (std::vector<std::string>{"a", "a"}));
    req.host = "zz";
    EXPECT_THROW(place({}, fleet, req), UsageError);
}

TEST(Placement, WorksOnTestDriverHosts) {
    // Two hosts of libvirt's test driver, surveyed as `forky hosts` does: no forky pool
    // there, so both are ruled out, each with its reason.
    Inventory inv;
    HostEntry a;
    a.name = "a";
    a.uri = "test:///default";
    inv.hosts.push_back(a);
    const auto fleet = survey_hosts(inv, std::chrono::seconds(30));
    ASSERT_EQ(fleet.size(), 1u);
    ASSERT_TRUE(fleet[0].reachable) << fleet[0].problem;
    PlacementRequest req;
    req.memory_bytes = GiB;
    const std::string why = conflict_of({}, fleet, req);
    EXPECT_NE(why.find("a: no pool 'forky'"), std::string::npos) << why;
    std::vector<HostReport> with_pool = fleet;
    with_pool[0].pool_exists = true;
    with_pool[0].pool_free_bytes = 100 * GiB;
    // As much room as the node reports free memory, nothing kept back (the test driver
    // reports little: a few VMs of 1 MiB).
    const unsigned room = static_cast<unsigned>(fleet[0].memory_free_bytes >> 20);
    ASSERT_GT(room, 0u);
    PlacementPolicy lenient;
    lenient.min_free_memory = 0;
    lenient.min_pool_free = 0;
    req.memory_bytes = 1 << 20;
    req.count = room;
    EXPECT_EQ(place(lenient, with_pool, req).hosts.size(), room);
    req.count = room + 1;
    const std::string full = conflict_of(lenient, with_pool, req);
    EXPECT_NE(full.find("a: room for " + std::to_string(room) + " (memory: "), std::string::npos)
        << full;
}

TEST(Placement, PolicyFileIsStrict) {
    const std::filesystem::path f = "/etc/forky/placement.yaml";
    PlacementPolicy p = parse_placement_policy(
        "filters:\n  labels: {rack: r1}\n  min_free_memory: 1GiB\n  respect_max_forks: false\n"
        "rank:\n  strategy: pack\n  prefer_fork_point_host: false\n",
        f);
    EXPECT_EQ(p.labels.at("rack"), "r1");
    EXPECT_EQ(p.min_free_memory, GiB);
    EXPECT_FALSE(p.respect_max_forks);
    EXPECT_FALSE(p.prefer_fork_point_host);
    EXPECT_EQ(p.strategy, PlacementPolicy::Strategy::pack);
    auto error_of = [&](const std::string& text) {
        try {
            parse_placement_policy(text, f);
        } catch (const SpecError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(error_of("rank:\n  strategy: random\n")
                  .find(f.string() + ":2: key 'rank.strategy': must be spread or pack"),
              std::string::npos);
    EXPECT_NE(error_of("filters:\n  min_free_memory: lots\n")
                  .find(f.string() + ":2: key 'filters.min_free_memory'"),
              std::string::npos);
    EXPECT_NE(error_of("filter: {}\n").find(f.string() + ":1: key 'filter': unknown key"),
              std::string::npos);
    // The policy shipped in policies/ parses and is the defaults.
    const PlacementPolicy shipped = load_placement_policy(std::filesystem::path(FORKY_TEST_DATA) /
                                                          "../../policies/placement.yaml");
    EXPECT_FALSE(shipped.source.empty());
    EXPECT_EQ(shipped.min_free_memory, PlacementPolicy{}.min_free_memory);
    EXPECT_EQ(shipped.min_pool_free, PlacementPolicy{}.min_pool_free);
    EXPECT_EQ(shipped.strategy, PlacementPolicy::Strategy::spread);
}
