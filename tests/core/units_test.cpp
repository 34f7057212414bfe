#include "names.hpp"
#include "units.hpp"

#include <gtest/gtest.h>

using namespace forky;

TEST(Units, SizesNeedAUnit) {
    EXPECT_EQ(parse_size("256MiB"), 256ULL << 20);
    EXPECT_EQ(parse_size("2GiB"), 2ULL << 30);
    EXPECT_EQ(parse_size("1KiB"), 1024ULL);
    EXPECT_EQ(parse_size("3GB"), 3000000000ULL);
    EXPECT_EQ(parse_size("512B"), 512ULL);
    std::string why;
    EXPECT_FALSE(parse_size("256", &why));
    EXPECT_NE(why.find("no unit"), std::string::npos);
    EXPECT_FALSE(parse_size("MiB", &why));
    EXPECT_FALSE(parse_size("-1MiB", &why));
    EXPECT_FALSE(parse_size("1 MiB", &why));
    EXPECT_FALSE(parse_size("99999999999999TiB", &why));
    EXPECT_NE(why.find("too large"), std::string::npos);
}

TEST(Units, Durations) {
    EXPECT_EQ(parse_duration("90s")->count(), 90);
    EXPECT_EQ(parse_duration("2h")->count(), 7200);
    EXPECT_EQ(parse_duration("1d")->count(), 86400);
    EXPECT_FALSE(parse_duration("5"));
    EXPECT_FALSE(parse_duration("5w"));
}

TEST(Units, FormatSize) {
    EXPECT_EQ(format_size(256ULL << 20), "256MiB");
    EXPECT_EQ(format_size(1ULL << 30), "1GiB");
    EXPECT_EQ(format_size(1536ULL << 20), "1.5GiB");
    EXPECT_EQ(format_size(100), "100B");
}

TEST(Names, SafeCharsetAndLength) {
    EXPECT_FALSE(name_problem("tiny"));
    EXPECT_FALSE(name_problem("web-1_a"));
    EXPECT_FALSE(name_problem(std::string(63, 'a')));
    EXPECT_TRUE(name_problem(std::string(64, 'a')));
    EXPECT_TRUE(name_problem(""));
    EXPECT_TRUE(name_problem("-x"));
    EXPECT_TRUE(name_problem("a/b"));
    EXPECT_TRUE(name_problem(".."));
    EXPECT_TRUE(name_problem("a.b"));
    EXPECT_TRUE(name_problem("a b"));
    EXPECT_TRUE(name_problem("a<b"));
    EXPECT_TRUE(name_problem("a&b"));
    EXPECT_TRUE(name_problem("\xc3\xa9t\xc3\xa9"));
}
