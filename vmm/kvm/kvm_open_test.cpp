// What kestrel says when /dev/kvm is not KVM (hardening issue item 9): no KVM needed.
#include "vmm/kvm/kvm.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

using namespace kestrel;
using kestrel::kvm::System;

namespace {
bool has(const Result<System>& r, const std::string& text) {
    return !r && r.error().what().find(text) != std::string::npos;
}
}  // namespace

TEST_CASE("System::open: a missing node is named as missing") {
    auto r = System::open("/nonexistent-kestrel-test/kvm");
    CHECK(has(r, "/nonexistent-kestrel-test/kvm does not exist"));
    CHECK(has(r, "kvm module is not loaded"));
}

TEST_CASE("System::open: a regular file (what a shell's read-write redirection leaves as root) is named, not ioctl'd") {
    char path[] = "/tmp/kestrel-kvm-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    auto r = System::open(path);
    ::unlink(path);
    CHECK(has(r, "is not the KVM character device but a regular file"));
    CHECK(has(r, "read-write redirection"));
    CHECK(has(r, "[ -c PATH ]"));
}

TEST_CASE("System::open: another character device is not taken for KVM") {
    auto r = System::open("/dev/null");
    CHECK(has(r, "/dev/null is a character device but not KVM's"));
}

TEST_CASE("System::open: a directory is not KVM") {
    auto r = System::open("/tmp");
    REQUIRE_FALSE(r);  // open(O_RDWR) of a directory: EISDIR, said with the path
    CHECK(r.error().what().find("/tmp") != std::string::npos);
}
