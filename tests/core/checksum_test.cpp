// SHA-256 as forky checks shipped volumes: known digests, holes hashed as zeros.
#include "checksum.hpp"

#include <gtest/gtest.h>

#include <string>

using namespace forky;

TEST(Checksum, KnownDigestsAndHolesAsZeros) {
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    // A volume read as data and holes hashes as its bytes do.
    Sha256 sparse;
    sparse.update("x");
    sparse.update_zeros(200000);
    sparse.update("y");
    EXPECT_EQ(sparse.hex(), sha256_hex("x" + std::string(200000, '\0') + "y"));
    EXPECT_TRUE(is_sha256_hex(sha256_hex("abc")));
    EXPECT_FALSE(is_sha256_hex("ABC"));
    EXPECT_FALSE(is_sha256_hex(std::string(63, 'a')));
}
