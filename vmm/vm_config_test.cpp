#include "vmm/vm_config.hpp"

#include <doctest/doctest.h>

using namespace kestrel;

TEST_CASE("memory sizes: suffixes, limits and garbage") {
    CHECK(*parse_memory_size("512") == 512ull << 20);
    CHECK(*parse_memory_size("512M") == 512ull << 20);
    CHECK(*parse_memory_size("2G") == 2ull << 30);
    CHECK(*parse_memory_size("65536K") == 64ull << 20);
    CHECK_FALSE(parse_memory_size("15M"));
    CHECK_FALSE(parse_memory_size("1000K"));  // not whole MiB
    CHECK_FALSE(parse_memory_size("2T"));
    CHECK_FALSE(parse_memory_size("lots"));
    CHECK_FALSE(parse_memory_size(""));
    CHECK_FALSE(parse_memory_size("99999999999999999999G"));
    CHECK_FALSE(parse_memory_size("2048G"));
    auto e = parse_memory_size("12X");
    REQUIRE_FALSE(e);
    CHECK(e.error().message.find("suffix") != std::string::npos);
}

TEST_CASE("serial targets") {
    CHECK(parse_serial("stdio")->kind == SerialTarget::Kind::Stdio);
    CHECK(parse_serial("none")->kind == SerialTarget::Kind::None);
    auto f = parse_serial("file:/tmp/x.log");
    REQUIRE(f);
    CHECK(f->kind == SerialTarget::Kind::File);
    CHECK(f->path == "/tmp/x.log");
    CHECK_FALSE(parse_serial("file:"));
    CHECK_FALSE(parse_serial("tcp:1234"));
}

TEST_CASE("--disk, --net and --vsock values") {
    auto d = parse_disk("/img/root.raw,ro,serial=disk-0,queues=2,direct");
    REQUIRE(d);
    CHECK(d->path == "/img/root.raw");
    CHECK(d->read_only);
    CHECK(d->direct);
    CHECK(d->serial == "disk-0");
    CHECK(d->queues == 2);
    CHECK(parse_disk("a.img")->queues == 0);
    CHECK_FALSE(parse_disk(",ro"));
    CHECK_FALSE(parse_disk("a.img,rw"));
    CHECK_FALSE(parse_disk("a.img,serial=123456789012345678901"));
    CHECK_FALSE(parse_disk("a.img,queues=0"));
    CHECK_FALSE(parse_disk("a.img,queues=9x"));

    auto n = parse_net("tap=tap0,mac=52:54:00:ab:CD:0f");
    REQUIRE(n);
    CHECK(n->tap == "tap0");
    REQUIRE(n->mac);
    CHECK((*n->mac)[4] == 0xcd);
    CHECK_FALSE(parse_net("mac=52:54:00:ab:cd:0f"));
    auto f = parse_net("fd=7");
    REQUIRE(f);
    CHECK(f->fd == 7);
    CHECK(f->tap.empty());
    CHECK_FALSE(parse_net("fd=7,tap=tap0"));  // one or the other
    CHECK_FALSE(parse_net("fd=-3"));
    CHECK_FALSE(parse_net("tap=t,mac=01:00:5e:00:00:01"));  // multicast
    CHECK_FALSE(parse_net("tap=t,mac=52:54:00:ab:cd"));
    CHECK_FALSE(parse_net("tap=a-name-longer-than-15"));

    auto v = parse_vsock("cid=3,socket=/run/v.sock");
    REQUIRE(v);
    CHECK(v->cid == 3);
    CHECK(v->socket == "/run/v.sock");
    CHECK_FALSE(parse_vsock("cid=2,socket=/x"));
    CHECK_FALSE(parse_vsock("cid=3"));
    CHECK_FALSE(parse_vsock("socket=/x"));
    CHECK_FALSE(parse_vsock("cid=-1,socket=/x"));
}

TEST_CASE("open order: as written, then what was left out, no repeats") {
    using K = ConfigItem::Kind;
    VmConfig cfg;
    cfg.disks.resize(2);
    cfg.nets.resize(1);
    // Default order for a VmConfig built in code.
    CHECK(open_order(cfg) == std::vector<ConfigItem>{{K::Kernel}, {K::Disk, 0}, {K::Disk, 1},
                                                     {K::Net, 0}, {K::Serial}, {K::Memory}});
    // --disk b --serial … --kernel k --disk a --kernel k: written order wins, repeats dropped,
    // items naming nothing (no initrd, a third disk) skipped, the rest appended.
    cfg.order = {{K::Disk, 0}, {K::Serial}, {K::Kernel}, {K::Disk, 1}, {K::Kernel},
                 {K::Initrd}, {K::Disk, 2}};
    CHECK(open_order(cfg) == std::vector<ConfigItem>{{K::Disk, 0}, {K::Serial}, {K::Kernel},
                                                     {K::Disk, 1}, {K::Net, 0}, {K::Memory}});
}

TEST_CASE("host memory: /proc/meminfo and the RAM + swap limit") {
    auto m = parse_meminfo("MemTotal:       24683636 kB\nMemFree:  100 kB\n"
                           "HugePages_Total:       0\nSwapTotal:       1048576 kB\n");
    REQUIRE(m);
    CHECK(m->ram_bytes == 24683636ull << 10);
    CHECK(m->swap_bytes == 1ull << 30);
    CHECK_FALSE(parse_meminfo("MemTotal: 5 kB\n"));

    HostMemory host{4ull << 30, 1ull << 30};
    CHECK(check_memory_fits(5ull << 30, host));
    auto e = check_memory_fits((5ull << 30) + (1u << 20), host);
    REQUIRE_FALSE(e);
    CHECK(e.error().what() ==
          "--memory 5121 MiB is more than this host's RAM + swap: 4096 MiB RAM + 1024 MiB swap = 5120 MiB");

    auto real = read_host_memory();
    REQUIRE(real);
    CHECK(real->ram_bytes > 0);
}
