#include "lineage.hpp"
#include "transaction.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

using namespace forky;

TEST(Lineage, RoundTripsThroughXml) {
    Lineage l;
    l.parent = "web";
    l.fork_point = "web@1";
    l.generation = 2;
    l.created_at = "2026-11-26T19:40:00Z";
    l.ttl = std::chrono::seconds(3600);
    l.pool = "forky";
    l.volumes = {{"disk", "vda", "web-1.vda.qcow2"}, {"console", "", "web-1.console.log"}};
    l.spec = "/srv/specs/web.yaml";
    l.genid = "3f2b7c1e-58a4-4d2e-9b7a-0c1d2e3f4a5b";
    l.parent_host = "rack1-a";
    std::string xml = lineage_to_xml(l);
    EXPECT_NE(xml.find(std::string("xmlns:forky=\"") + lineage_namespace + "\""),
              std::string::npos);
    EXPECT_EQ(lineage_from_xml(xml), l);
    ASSERT_NE(l.console_volume(), nullptr);
    EXPECT_EQ(l.console_volume()->name, "web-1.console.log");
}

TEST(Lineage, ReadsWhatLibvirtHandsBackWithoutPrefix) {
    // virDomainGetMetadata may return the element under a default namespace.
    Lineage l = lineage_from_xml(R"(<lineage xmlns="https://forky.dev/xmlns/lineage/1">
        <generation>0</generation><created-at>t</created-at><pool>p</pool>
        <volume role="disk" target="vda">a.vda.qcow2</volume></lineage>)");
    EXPECT_EQ(l.generation, 0u);
    EXPECT_EQ(l.pool, "p");
    ASSERT_EQ(l.volumes.size(), 1u);
    EXPECT_EQ(l.volumes[0].target, "vda");
    EXPECT_EQ(l.console_volume(), nullptr);
}

TEST(Lineage, MalformedRecordIsAnError) {
    EXPECT_THROW(lineage_from_xml("<lineage><generation>x</generation></lineage>"), std::exception);
    EXPECT_THROW(lineage_from_xml("not xml"), std::exception);
}

TEST(Transaction, UndoesInReverseUnlessCommitted) {
    std::vector<int> undone;
    {
        Transaction t;
        t.on_rollback("one", [&] { undone.push_back(1); });
        t.on_rollback("two", [&] { undone.push_back(2); });
        t.on_rollback("fails", [] { throw std::runtime_error("undo failed"); });
        t.on_rollback("three", [&] { undone.push_back(3); });
    }
    EXPECT_EQ(undone, (std::vector<int>{3, 2, 1}));
    undone.clear();
    {
        Transaction t;
        t.on_rollback("one", [&] { undone.push_back(1); });
        t.commit();
    }
    EXPECT_TRUE(undone.empty());
}

TEST(Transaction, TellsWhenARollbackCouldNotUndoEverything) {
    int told = 0;
    {
        Transaction t;
        t.if_rollback_fails([&] { ++told; });
        t.on_rollback("fine", [] {});
    }
    EXPECT_EQ(told, 0);
    {
        Transaction t;
        t.if_rollback_fails([&] { ++told; });
        t.on_rollback("fails", [] { throw std::runtime_error("no"); });
        t.on_rollback("fine", [] {});
    }
    EXPECT_EQ(told, 1);
}
