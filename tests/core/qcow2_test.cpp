// The backing file name of a qcow2 layer, renamed in place (a layer shipped to another
// host), checked by qemu-img itself.
#include "errors.hpp"
#include "process.hpp"
#include "qcow2.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;
using namespace forky;

namespace {

class Qcow2Test : public ::testing::Test {
protected:
    fs::path dir_;
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("forky-qcow2-" + std::to_string(::getpid()));
        fs::create_directories(dir_ / "a");
        fs::create_directories(dir_ / "a-much-longer-folder-name-on-the-other-host");
        qemu_img({"create", "-q", "-f", "qcow2", path("a/base.qcow2"), "16M"});
        qemu_img({"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", path("a/base.qcow2"),
                  path("a/top.qcow2")});
        fs::copy_file(path("a/base.qcow2"),
                      path("a-much-longer-folder-name-on-the-other-host/base.qcow2"));
    }
    void TearDown() override { fs::remove_all(dir_); }

    ProcessResult qemu_img(std::vector<std::string> args) {
        args.insert(args.begin(), "qemu-img");
        ProcessResult r = run_process(args);
        EXPECT_EQ(r.rc, 0) << r.err;
        return r;
    }
    std::string path(const std::string& rel) const { return (dir_ / rel).string(); }
    std::string read(const std::string& rel, std::size_t n) const {
        std::ifstream in(path(rel), std::ios::binary);
        std::string s(n, '\0');
        in.read(s.data(), static_cast<std::streamsize>(n));
        s.resize(static_cast<std::size_t>(in.gcount()));
        return s;
    }
    void apply(const std::string& rel, const std::vector<ByteEdit>& edits) {
        std::fstream f(path(rel), std::ios::in | std::ios::out | std::ios::binary);
        for (const auto& e : edits) {
            f.seekp(static_cast<std::streamoff>(e.offset));
            f.write(e.bytes.data(), static_cast<std::streamsize>(e.bytes.size()));
        }
    }
};

} // namespace

TEST_F(Qcow2Test, ABackingNameIsRenamedLongerOrShorterAndQemuImgAgrees) {
    const std::string start = read("a/top.qcow2", 72);
    const std::uint64_t cluster = qcow2_first_cluster_size(start);
    EXPECT_EQ(cluster, 65536u);
    std::string header = read("a/top.qcow2", cluster);
    EXPECT_EQ(qcow2_backing_name(header), path("a/base.qcow2"));

    const std::string longer = path("a-much-longer-folder-name-on-the-other-host/base.qcow2");
    apply("a/top.qcow2", qcow2_set_backing(header, longer));
    ProcessResult info = qemu_img({"info", "--output=json", path("a/top.qcow2")});
    EXPECT_NE(info.out.find("\"backing-filename\": \"" + longer + "\""), std::string::npos)
        << info.out;
    EXPECT_NE(info.out.find("\"backing-filename-format\": \"qcow2\""), std::string::npos)
        << info.out;
    qemu_img({"check", path("a/top.qcow2")});

    header = read("a/top.qcow2", cluster);
    EXPECT_EQ(qcow2_backing_name(header), longer);
    apply("a/top.qcow2", qcow2_set_backing(header, path("a/base.qcow2")));
    info = qemu_img({"info", "--output=json", "--backing-chain", path("a/top.qcow2")});
    EXPECT_NE(info.out.find("\"backing-filename\": \"" + path("a/base.qcow2") + "\""),
              std::string::npos)
        << info.out;
    qemu_img({"check", path("a/top.qcow2")});
    EXPECT_EQ(qcow2_backing_name(read("a/top.qcow2", cluster)), path("a/base.qcow2"));
}

TEST_F(Qcow2Test, WhatCannotBeRenamedIsAnError) {
    const std::string top = read("a/top.qcow2", 65536);
    EXPECT_THROW(qcow2_set_backing(top, std::string(70000, 'x')), Error);
    EXPECT_THROW(qcow2_set_backing(top, ""), Error);
    EXPECT_THROW(qcow2_set_backing(top.substr(0, 4096), "/x"), Error); // short of a cluster
    const std::string base = read("a/base.qcow2", 65536);
    EXPECT_EQ(qcow2_backing_name(base), "");
    EXPECT_THROW(qcow2_set_backing(base, "/x"), Error); // no backing file
    EXPECT_THROW(qcow2_backing_name(std::string(100, 'r')), Error);
}
