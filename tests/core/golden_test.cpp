// Golden tests: tests/data/golden/<case>.yaml -> the domain XML in <case>.xml.
// FORKY_REGENERATE_GOLDEN=1 rewrites the expected files (review the diff, then commit).
#include "domain_xml.hpp"
#include "gpus.hpp"
#include "spec.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace forky;

namespace {

const fs::path data_dir = FORKY_TEST_DATA;

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
        s.replace(pos, from.size(), to);
    return s;
}

// The plan `forky up` would make on a host with the default pool, at a fixed time.
std::string render(const fs::path& yaml) {
    DomainSpec spec = load_spec(yaml);
    DomainPlan plan;
    plan.name = spec.name;
    plan.domain_type = spec.accel == Accel::kvm ? "kvm" : "qemu";
    plan.lineage.created_at = "2026-01-01T00:00:00Z";
    plan.lineage.pool = "forky";
    plan.lineage.ttl = spec.ttl;
    plan.lineage.spec = spec.source.string();
    plan.lineage.genid = "00000000-0000-4000-8000-00000000000" + std::to_string(spec.disks.size());
    for (const auto& d : spec.disks) {
        std::string vol = spec.name + "." + d.target + ".qcow2";
        plan.disk_paths.push_back("/var/lib/forky/" + vol);
        plan.lineage.volumes.push_back({"disk", d.target, vol});
    }
    if (spec.console == ConsoleMode::log) {
        plan.console_log_path = "/var/lib/forky/" + spec.name + ".console.log";
        plan.lineage.volumes.push_back({"console", "", spec.name + ".console.log"});
    }
    // GPUs as up picks them; mdevs under fixed UUIDs.
    plan.lineage.gpu_fork_detach = spec.gpu_fork == GpuFork::detach;
    for (std::size_t i = 0; i < spec.gpus.size(); ++i) {
        const GpuSpec& g = spec.gpus[i];
        GpuAssignment a;
        if (g.kind == GpuSpec::Kind::pci) {
            a.address = g.pci;
        } else {
            a.kind = GpuAssignment::Kind::mdev;
            a.address = "0000:65:00.0";
            a.mdev_type = g.mdev_type;
            a.mdev_uuid = "11111111-0000-4000-8000-00000000000" + std::to_string(i);
            plan.lineage.mdevs.push_back(a.mdev_uuid);
        }
        plan.hostdevs.push_back(hostdev_xml(a));
    }
    // Checkout-independent: absolute paths into tests/data read @DATA@.
    return replace_all(build_domain_xml(spec, plan),
                       fs::absolute(data_dir).lexically_normal().string(), "@DATA@");
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

} // namespace

TEST(Golden, EveryCaseMatchesItsExpectedXml) {
    bool regenerate = std::getenv("FORKY_REGENERATE_GOLDEN") != nullptr;
    int cases = 0;
    for (const auto& entry : fs::directory_iterator(data_dir / "golden")) {
        if (entry.path().extension() != ".yaml")
            continue;
        ++cases;
        fs::path expected_file = fs::path(entry.path()).replace_extension(".xml");
        std::string actual = render(entry.path());
        if (regenerate) {
            std::ofstream(expected_file) << actual;
            continue;
        }
        ASSERT_TRUE(fs::exists(expected_file))
            << expected_file << " is missing; run with FORKY_REGENERATE_GOLDEN=1";
        EXPECT_EQ(read_file(expected_file), actual) << "golden case " << entry.path();
    }
    EXPECT_GE(cases, 3);
}
